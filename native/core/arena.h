// arena.h — one node's shared-memory segment: creation, validation, crash
// recovery of the segment itself, the robust arena lock, and typed access to
// the sections laid out in layout.h.
#pragma once
#include <string>
#include "layout.h"

namespace dvs {

struct ArenaOptions {
  std::string name;   // shm name without the leading '/'
  uint32_t node_id = 0;
  ArenaConfig cfg{};  // used when this process creates the segment
  bool create = true; // create the segment when it does not exist
};

// Fills in defaults and validates a requested configuration.
int make_config(uint32_t max_procs, uint32_t max_endpoints, uint32_t inbox_cells,
                uint32_t reply_cells, uint32_t pool_mib, ArenaConfig *out);

class Arena {
 public:
  // Opens the named segment, creating it if absent. Returns 0 or an EDVS code
  // (detail in last_error_detail()).
  static int open(const ArenaOptions &opts, Arena **out);
  ~Arena();

  ArenaHeader *hdr() const { return hdr_; }
  uint8_t *base() const { return base_; }
  size_t size() const { return size_; }
  const std::string &name() const { return name_; }
  bool created() const { return created_; }

  ProcSlot *proc(uint32_t i) const {
    return reinterpret_cast<ProcSlot *>(base_ + hdr_->off_procs) + i;
  }
  EndpointSlot *endpoint(uint32_t i) const {
    return reinterpret_cast<EndpointSlot *>(base_ + hdr_->off_endpoints) + i;
  }
  std::atomic<uint32_t> *index() const {
    return reinterpret_cast<std::atomic<uint32_t> *>(base_ + hdr_->off_index);
  }
  Cell *ring(uint32_t slot, uint32_t which) const {
    uint8_t *p = base_ + hdr_->off_rings + hdr_->ring_stride * slot;
    if (which == kReplies) p += uint64_t(hdr_->cfg.inbox_cells) * sizeof(Cell);
    return reinterpret_cast<Cell *>(p);
  }
  uint32_t ring_cells(uint32_t which) const {
    return which == kInbox ? hdr_->cfg.inbox_cells : hdr_->cfg.reply_cells;
  }
  // A block's header line (its owner word); the payload follows it.
  BlockMeta *block(uint32_t id) const { return reinterpret_cast<BlockMeta *>(base_ + block_meta_offset(id)); }
  uint32_t block_class(uint32_t id) const;
  uint64_t block_meta_offset(uint32_t id) const;
  uint64_t block_offset(uint32_t id) const { return block_meta_offset(id) + kBlockHeader; }
  uint32_t block_capacity(uint32_t id) const { return hdr_->classes[block_class(id)].size; }
  // Maps a payload offset back to its block id (kNone if not a block start).
  uint32_t block_at(uint64_t offset) const;

  // Robust arena lock. lock() returns true when it recovered the lock from a
  // dead owner (the caller then repairs what that owner may have left half done).
  bool lock();
  void unlock();

  // Marks the segment as going away and unlinks its name (called by the last
  // process to detach, under the lock).
  void unlink_name();
  // True while the name in /dev/shm still refers to this mapping.
  bool name_is_current() const;

 private:
  Arena() = default;
  static int create(const ArenaOptions &opts, int fd, Arena *a);
  static int attach_existing(const ArenaOptions &opts, int fd, Arena *a);
  int validate() const;

  std::string name_;
  uint8_t *base_ = nullptr;
  size_t size_ = 0;
  ArenaHeader *hdr_ = nullptr;
  uint64_t dev_ = 0, ino_ = 0;
  bool created_ = false;
};

uint64_t header_checksum(const ArenaHeader *h);

}  // namespace dvs
