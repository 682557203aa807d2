#include "arena.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <new>

#include "../include/dvs.h"
#include "errors.h"
#include "futex.h"
#include "proc_table.h"

namespace dvs {
namespace {

constexpr uint64_t kPage = 4096;
uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
bool pow2(uint32_t v) { return v && !(v & (v - 1)); }

// Default payload classes at pool_mib = 96: 4 + 8 + 16 + 64 MiB.
constexpr uint32_t kDefaultSizes[] = {256, 4096, 65536, 1u << 20};
constexpr uint32_t kDefaultCounts[] = {16384, 2048, 256, 64};
constexpr uint32_t kDefaultPoolMib = 92;

struct Layout {
  uint64_t off_procs, off_endpoints, off_index, off_rings, off_blocks, off_pools, ring_stride, total;
  uint32_t total_blocks;
  uint64_t pool_off[kMaxClasses];
};

Layout compute_layout(const ArenaConfig &c) {
  Layout l{};
  uint64_t off = round_up(sizeof(ArenaHeader), kPage);
  l.off_procs = off;
  off = round_up(off + uint64_t(c.max_procs) * sizeof(ProcSlot), kLine);
  l.off_endpoints = off;
  off = round_up(off + uint64_t(c.max_endpoints) * sizeof(EndpointSlot), kLine);
  l.off_index = off;
  off = round_up(off + uint64_t(c.index_size) * sizeof(uint32_t), kPage);
  l.ring_stride = uint64_t(c.inbox_cells + c.reply_cells) * sizeof(Cell);
  l.off_rings = off;
  off = round_up(off + l.ring_stride * c.max_endpoints, kPage);
  for (uint32_t i = 0; i < c.class_count; i++) l.total_blocks += c.class_blocks[i];
  l.off_blocks = 0;
  l.off_pools = off;
  for (uint32_t i = 0; i < c.class_count; i++) {
    l.pool_off[i] = off;
    off = round_up(off + (uint64_t(kBlockHeader) + c.class_size[i]) * c.class_blocks[i], kPage);
  }
  l.total = off;
  return l;
}

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

int make_config(uint32_t max_procs, uint32_t max_endpoints, uint32_t inbox_cells,
                uint32_t reply_cells, uint32_t pool_mib, ArenaConfig *out) {
  ArenaConfig c{};
  c.max_procs = max_procs ? max_procs : 256;
  c.max_endpoints = max_endpoints ? max_endpoints : 1024;
  c.inbox_cells = inbox_cells ? inbox_cells : 1024;
  c.reply_cells = reply_cells ? reply_cells : 256;
  if (c.max_procs > 256) return fail(EDVSBADRANGE, "max_procs must be <= 256");
  if (c.max_endpoints > (1u << 20)) return fail(EDVSBADRANGE, "max_endpoints must be <= 1048576");
  if (!pow2(c.inbox_cells) || c.inbox_cells < 4 || c.inbox_cells > (1u << 20))
    return fail(EDVSBADRANGE, "inbox_cells must be a power of two in [4, 1048576]");
  if (!pow2(c.reply_cells) || c.reply_cells < 4 || c.reply_cells > (1u << 16))
    return fail(EDVSBADRANGE, "reply_cells must be a power of two in [4, 65536]");
  uint32_t mibs = pool_mib ? pool_mib : kDefaultPoolMib;
  if (mibs < 4 || mibs > 65536) return fail(EDVSBADRANGE, "pool_mib must be in [4, 65536]");
  c.index_size = 1;
  while (c.index_size < 2 * c.max_endpoints) c.index_size <<= 1;
  c.class_count = 4;
  for (uint32_t i = 0; i < 4; i++) {
    c.class_size[i] = kDefaultSizes[i];
    uint64_t n = uint64_t(kDefaultCounts[i]) * mibs / kDefaultPoolMib;
    if (i == 3 && n < 4) n = 4;  // at least a few 1 MiB blocks
    if (n < 16 && i < 3) n = 16;
    c.class_blocks[i] = uint32_t(n);
  }
  *out = c;
  return 0;
}

uint64_t header_checksum(const ArenaHeader *h) {
  // FNV-1a over the immutable prefix (everything before `checksum`).
  const uint8_t *p = reinterpret_cast<const uint8_t *>(h);
  size_t n = offsetof(ArenaHeader, checksum);
  uint64_t x = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) x = (x ^ p[i]) * 0x100000001b3ULL;
  return x;
}

uint32_t Arena::block_class(uint32_t id) const {
  const ArenaHeader *h = hdr_;
  for (uint32_t c = h->cfg.class_count; c-- > 0;)
    if (id >= h->classes[c].first_block) return c;
  return 0;
}

uint64_t Arena::block_meta_offset(uint32_t id) const {
  const ClassState &cs = hdr_->classes[block_class(id)];
  return cs.pool_off + uint64_t(id - cs.first_block) * cs.stride;
}

uint32_t Arena::block_at(uint64_t offset) const {
  const ArenaHeader *h = hdr_;
  for (uint32_t c = 0; c < h->cfg.class_count; c++) {
    const ClassState &cs = h->classes[c];
    if (offset < cs.pool_off + kBlockHeader) continue;
    uint64_t rel = offset - cs.pool_off - kBlockHeader;
    if (rel >= cs.stride * cs.count) continue;
    if (rel % cs.stride) return kNone;
    return cs.first_block + uint32_t(rel / cs.stride);
  }
  return kNone;
}

int Arena::create(const ArenaOptions &opts, int fd, Arena *a) {
  Layout l = compute_layout(opts.cfg);
  struct statvfs vfs;
  if (statvfs("/dev/shm", &vfs) == 0) {
    uint64_t avail = uint64_t(vfs.f_bavail) * vfs.f_frsize;
    if (avail < l.total)
      return fail(EDVSNOMEM, "the arena needs " + mib(l.total) + " of /dev/shm but only " + mib(avail) +
                                 " is free (enlarge /dev/shm or attach with a smaller poolMib)");
  }
  if (ftruncate(fd, off_t(l.total)) != 0)
    return fail(EDVSNOMEM, std::string("ftruncate of the arena failed: ") + strerror(errno));
  void *p = mmap(nullptr, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail(EDVSNOMEM, std::string("mmap of the arena failed: ") + strerror(errno));
  a->base_ = static_cast<uint8_t *>(p);
  a->size_ = l.total;
  auto *h = new (p) ArenaHeader();
  a->hdr_ = h;
  h->magic = kMagic;
  h->layout_version = kLayoutVersion;
  h->header_size = sizeof(ArenaHeader);
  h->total_size = l.total;
  h->node_id = opts.node_id;
  h->total_blocks = l.total_blocks;
  h->cfg = opts.cfg;
  h->off_procs = l.off_procs;
  h->off_endpoints = l.off_endpoints;
  h->off_index = l.off_index;
  h->off_rings = l.off_rings;
  h->off_blocks = l.off_blocks;
  h->off_pools = l.off_pools;
  h->ring_stride = l.ring_stride;
  h->checksum = header_checksum(h);
  h->creator_pid = uint32_t(getpid());
  h->created_ns = now_ns();
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&h->lock, &attr);
  pthread_mutexattr_destroy(&attr);
  uint32_t first = 0;
  for (uint32_t c = 0; c < h->cfg.class_count; c++) {
    ClassState &cs = h->classes[c];
    cs.first_block = first;
    cs.size = h->cfg.class_size[c];
    cs.count = h->cfg.class_blocks[c];
    cs.pool_off = l.pool_off[c];
    cs.stride = uint64_t(kBlockHeader) + cs.size;
    first += cs.count;
  }
  // Rings need no initialisation: a zero cell word means "empty, claimable
  // for round 0" (see mailbox.h), which is what ftruncate gives us.
  h->state.store(kArenaReady, std::memory_order_release);
  a->created_ = true;
  return 0;
}

int Arena::validate() const {
  const ArenaHeader *h = hdr_;
  if (h->magic != kMagic) return fail(EDVSARENA, "segment /dev/shm/" + name_ + " is not a dvs arena (bad magic)");
  if (h->layout_version != kLayoutVersion)
    return fail(EDVSARENA, "segment /dev/shm/" + name_ + " has layout version " + std::to_string(h->layout_version) +
                               ", this build uses " + std::to_string(kLayoutVersion) +
                               " (stop the processes using it, or remove the segment)");
  if (h->header_size != sizeof(ArenaHeader))
    return fail(EDVSARENA, "segment /dev/shm/" + name_ + " has an incompatible header size");
  if (h->total_size != size_)
    return fail(EDVSARENA, "segment /dev/shm/" + name_ + " size " + std::to_string(size_) +
                               " does not match its header (" + std::to_string(h->total_size) + ")");
  if (h->checksum != header_checksum(h))
    return fail(EDVSARENA, "segment /dev/shm/" + name_ + " header checksum mismatch (corrupt)");
  return 0;
}

int Arena::attach_existing(const ArenaOptions &opts, int fd, Arena *a) {
  // The creator may be between shm_open and ftruncate/initialisation: wait a little.
  struct stat st;
  uint64_t until = now_ns() + 2000000000ULL;
  for (;;) {
    if (fstat(fd, &st) != 0) return fail(EDVSARENA, std::string("fstat: ") + strerror(errno));
    if (uint64_t(st.st_size) >= sizeof(ArenaHeader)) break;
    if (now_ns() > until)
      return fail(EDVSARENA, "segment /dev/shm/" + a->name_ + " is truncated (" + std::to_string(st.st_size) +
                                 " bytes); remove it");
    usleep(1000);
  }
  void *p = mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail(EDVSNOMEM, std::string("mmap: ") + strerror(errno));
  a->base_ = static_cast<uint8_t *>(p);
  a->size_ = size_t(st.st_size);
  a->hdr_ = static_cast<ArenaHeader *>(p);
  ArenaHeader *h = a->hdr_;
  for (;;) {
    uint32_t s = h->state.load(std::memory_order_acquire);
    if (s == kArenaReady) break;
    if (s == kArenaUnlinked) return EDVSAGAIN;  // the caller retries from shm_open
    if (s != kArenaInit) {  // not a state of ours: say what is wrong with the header, if anything
      int bad = a->validate();
      return bad ? bad : fail(EDVSARENA, "segment /dev/shm/" + a->name_ + " has an unknown state");
    }
    if (h->magic != kMagic && h->magic != 0)  // not ours (a dvs creator writes the magic or nothing)
      return fail(EDVSARENA, "segment /dev/shm/" + a->name_ + " is not a dvs arena (bad magic)");
    if (h->creator_pid && !pid_alive(h->creator_pid, 0)) return EDVSBUSY;  // creator died mid-init
    if (now_ns() > until) return fail(EDVSARENA, "segment /dev/shm/" + a->name_ + " never finished initialising");
    usleep(1000);
  }
  int r = a->validate();
  if (r) return r;
  if (opts.node_id != h->node_id)
    return fail(EDVSBADNODEID, "segment /dev/shm/" + a->name_ + " belongs to node " + std::to_string(h->node_id) +
                                   ", not node " + std::to_string(opts.node_id));
  return 0;
}

int Arena::open(const ArenaOptions &opts, Arena **out) {
  if (opts.name.empty() || opts.name.size() > 200 || opts.name.find('/') != std::string::npos)
    return fail(EDVSINVAL, "invalid segment name '" + opts.name + "'");
  std::string path = "/" + opts.name;
  for (int attempt = 0; attempt < 50; attempt++) {
    auto *a = new Arena();
    a->name_ = opts.name;
    int fd = opts.create ? shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600) : -1;
    if (!opts.create) errno = EEXIST;
    int r;
    if (fd >= 0) {
      fchmod(fd, 0600);
      r = create(opts, fd, a);
      if (r) shm_unlink(path.c_str());
    } else if (errno == EEXIST) {
      fd = shm_open(path.c_str(), O_RDWR, 0600);
      if (fd < 0) {
        delete a;
        if (errno == ENOENT && !opts.create)
          return fail(EDVSDVSINIT, "node " + std::to_string(opts.node_id) + " has no arena (/dev/shm" + path +
                                       "): no process is attached to it");
        if (errno == ENOENT) continue;  // unlinked meanwhile
        return fail(EDVSARENA, "cannot open /dev/shm" + path + ": " + strerror(errno));
      }
      r = attach_existing(opts, fd, a);
      if (r == EDVSBUSY) {  // a creator died before finishing: the segment is garbage
        shm_unlink(path.c_str());
        close(fd);
        delete a;
        continue;
      }
    } else {
      delete a;
      return fail(EDVSNOMEM, "cannot create /dev/shm" + path + ": " + strerror(errno));
    }
    if (r == 0) {
      struct stat st;
      fstat(fd, &st);
      a->dev_ = st.st_dev;
      a->ino_ = st.st_ino;
    }
    close(fd);
    if (r == EDVSAGAIN) {  // segment being unlinked by its last user: start over
      delete a;
      usleep(500);
      continue;
    }
    if (r) {
      delete a;
      return r;
    }
    *out = a;
    return 0;
  }
  return fail(EDVSBUSY, "could not open /dev/shm" + path + " (it kept being removed and re-created)");
}

Arena::~Arena() {
  if (base_) munmap(base_, size_);
}

bool Arena::lock() {
  int r = pthread_mutex_lock(&hdr_->lock);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&hdr_->lock);
    hdr_->recoveries.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void Arena::unlock() { pthread_mutex_unlock(&hdr_->lock); }

void Arena::unlink_name() {
  if (!name_is_current()) return;
  hdr_->state.store(kArenaUnlinked, std::memory_order_release);
  shm_unlink(("/" + name_).c_str());
}

bool Arena::name_is_current() const {
  struct stat st;
  if (stat(("/dev/shm/" + name_).c_str(), &st) != 0) return false;
  return uint64_t(st.st_dev) == dev_ && uint64_t(st.st_ino) == ino_;
}

}  // namespace dvs
