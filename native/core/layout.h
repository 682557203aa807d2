// layout.h — the shared-memory arena layout (version 7). Every structure here
// lives in the segment and is shared by all processes attached to the node,
// so: fixed-size types only, no pointers (offsets instead), cache-line
// alignment where producers and consumers would otherwise share a line.
// docs/DESIGN.md describes the same layout for readers.
#pragma once
#include <pthread.h>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace dvs {

constexpr uint64_t kMagic = 0x314e524153564431ULL;  // "1DVSARN1"
constexpr uint32_t kLayoutVersion = 7;
// Each payload block is preceded by one cache line holding its owner word, so
// that a producer and a consumer touch one line per block, not two.
constexpr uint32_t kBlockHeader = 64;
constexpr size_t kLine = 64;
constexpr uint32_t kMaxClasses = 6;
constexpr uint32_t kNotifySlots = 64;
constexpr uint32_t kNone = 0xffffffffu;
constexpr uint32_t kNameBytes = 32;  // endpoint name: up to 31 bytes of UTF-8, NUL-terminated
constexpr uint32_t kDcWords = 64;    // DC bitmaps: 4096 DCs (DVS_MAX_DC + 1)

enum ArenaState : uint32_t { kArenaInit = 0, kArenaReady = 1, kArenaUnlinked = 2 };
enum ProcState : uint32_t { kProcFree = 0, kProcLive = 1 };
enum EpState : uint32_t { kEpFree = 0, kEpBound = 1 };
// What a bound slot stands for (EndpointSlot::kind):
//   kEpLocal   an endpoint of a process on this node (its owner consumes the inbox);
//   kEpRemote  a proxy for an endpoint on node `remote_node`: the agent's engine
//              consumes the inbox and forwards over the cluster transport;
//   kEpPeer    the route back to node `remote_node` (replies to its callers),
//              keyed (kPeerDc, node); consumed by the engine as well.
enum EpKind : uint32_t { kEpLocal = 0, kEpRemote = 1, kEpPeer = 2 };
constexpr uint32_t kPeerDc = 0x80000000u;
// Cell::flags
constexpr uint32_t kCellAck = 1;  // a SEND to a remote endpoint: the sender waits for its outcome (a REPLY cell)
enum CellKind : uint32_t { kKindSend = 1, kKindCall = 2, kKindReply = 3, kKindNotify = 4, kKindSkip = 5, kKindFence = 6 };
enum Ring : uint32_t { kInbox = 0, kReplies = 1 };

// Wake word bits (EndpointSlot::wake). The upper bits count wake-ups.
constexpr uint32_t kWakeFutex = 1;    // a thread sleeps on the futex
constexpr uint32_t kWakeBell = 2;     // the owner wants a doorbell
constexpr uint32_t kWakeStep = 4;

// Block ownership word (BlockMeta::owner), one atomic 64-bit value so that
// each change of hands is a single store/CAS and a crash leaves no ambiguity.
//   0                                   free
//   kOwnAlloc  | proc << 32 | proc_gen   allocated by a sender, not yet sent
//   kOwnRecv   | proc << 32 | proc_gen   received, held until release
//   kOwnQueued | ring << 59 | slot << 32 | pos   published (or being) in a ring
constexpr uint64_t kOwnKindShift = 60;
constexpr uint64_t kOwnAlloc = 1ULL << kOwnKindShift;
constexpr uint64_t kOwnRecv = 2ULL << kOwnKindShift;
constexpr uint64_t kOwnQueued = 3ULL << kOwnKindShift;
inline uint64_t own_kind(uint64_t w) { return w & (0xfULL << kOwnKindShift); }
inline uint64_t own_proc(uint64_t kind, uint32_t proc, uint32_t gen) {
  return kind | (uint64_t(proc) << 32) | gen;
}
inline uint64_t own_queued(uint32_t ring, uint32_t slot, uint32_t pos) {
  return kOwnQueued | (uint64_t(ring) << 59) | (uint64_t(slot & 0x7ffffff) << 32) | pos;
}
inline uint32_t own_index(uint64_t w) { return uint32_t(w >> 32) & 0x7ffffff; }
inline uint32_t own_ring(uint64_t w) { return uint32_t(w >> 59) & 1; }
inline uint32_t own_low(uint64_t w) { return uint32_t(w); }

struct ArenaConfig {
  uint32_t max_procs;
  uint32_t max_endpoints;
  uint32_t inbox_cells;
  uint32_t reply_cells;
  uint32_t index_size;  // hash index entries, power of two >= 2*max_endpoints
  uint32_t class_count;
  uint32_t class_size[kMaxClasses];    // block size per class, ascending
  uint32_t class_blocks[kMaxClasses];  // block count per class
};

// A mailbox cell: one cache line. `word` = seq (low 32) | claimer (high 32,
// process slot + 1 while a producer owns it, 0 otherwise).
struct alignas(kLine) Cell {
  std::atomic<uint64_t> word;
  uint32_t block;     // payload block id, kNone for empty payloads
  uint32_t len;
  uint32_t kind;      // CellKind
  int32_t src_ep;
  uint32_t src_dc;
  uint32_t src_gen;   // sender endpoint incarnation (reply routing)
  uint32_t src_node;
  uint32_t call_id;
  int32_t status;     // replies: 0 or an error code
  uint32_t dst_gen;   // destination incarnation at enqueue (stale detection)
  uint32_t bits;      // notify overflow
  uint32_t flags;
  uint64_t reserved;
};
static_assert(sizeof(Cell) == 64, "cell is one cache line");

struct NotifySlot {
  std::atomic<uint32_t> src;   // source endpoint + 1; 0 = unused
  std::atomic<uint32_t> bits;
};

struct alignas(kLine) EndpointSlot {
  // --- identity (written under the arena lock) ---
  std::atomic<uint32_t> state;  // EpState
  std::atomic<uint32_t> gen;    // incarnation, bumped at bind and unbind
  uint32_t dc;
  int32_t ep;
  uint32_t owner_proc;
  uint32_t owner_pid;
  uint32_t owner_gen;
  uint32_t keyed;     // 1 once (dc, ep) has been set and indexed
  uint32_t closed_gen;   // incarnation most recently unbound
  uint32_t closed_head;  // inbox position its owner had consumed up to (exclusive)
  uint32_t kind;         // EpKind
  std::atomic<uint32_t> remote_node;  // kEpRemote/kEpPeer: the node it stands for
  std::atomic<uint32_t> remote_gen;   // kEpRemote: the endpoint's incarnation on that node
  char name[kNameBytes];              // kEpLocal: the name given at bind ("" = none), for the directory
  // Set while the endpoint is being migrated: senders into this slot wait as
  // for a full inbox (never fail); the engine's own deliveries ignore it.
  std::atomic<uint32_t> migrating;
  // --- owner side (written by the owning process only) ---
  alignas(kLine) std::atomic<uint32_t> inbox_head;
  std::atomic<uint32_t> reply_head;
  std::atomic<uint64_t> msgs_in;    // messages taken from the inbox
  std::atomic<uint64_t> msgs_out;   // messages sent from this endpoint
  // --- wake-ups ---
  alignas(kLine) std::atomic<uint32_t> wake;         // kWake* bits + counter
  std::atomic<uint32_t> space_seq;                   // futex: inbox space freed
  std::atomic<uint32_t> space_sleepers;              // producers sleeping on space_seq
  std::atomic<uint32_t> notify_pending;
  std::atomic<uint64_t> space_bells[4];              // procs (bitmap) awaiting space
  // --- producer side ---
  alignas(kLine) std::atomic<uint32_t> inbox_tail;
  alignas(kLine) std::atomic<uint32_t> reply_tail;
  alignas(kLine) NotifySlot notify[kNotifySlots];
};

struct alignas(kLine) ProcSlot {
  std::atomic<uint32_t> state;  // ProcState
  uint32_t pid;
  uint32_t gen;
  uint32_t bell_mode;           // 0 = socket doorbell, 1 = futex (waiter thread)
  uint64_t start_time;          // /proc/<pid>/stat field 22, guards against pid reuse
  std::atomic<uint32_t> bell;   // futex word for bell_mode 1
  std::atomic<uint32_t> bell_armed;
  std::atomic<uint64_t> msgs_sent;
  std::atomic<uint64_t> msgs_received;
};

struct alignas(kLine) ClassState {
  uint32_t first_block;   // global id of this class's first block
  uint32_t size;
  uint32_t count;
  uint32_t reserved;
  uint64_t pool_off;      // offset of the class's first block (header line, then payload)
  uint64_t stride;        // kBlockHeader + size
  uint64_t reserved2[4];
};

struct alignas(kLine) ArenaHeader {
  // immutable after init (covered by `checksum`)
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_size;
  uint64_t total_size;
  uint32_t node_id;
  uint32_t total_blocks;
  ArenaConfig cfg;
  uint64_t off_procs;
  uint64_t off_endpoints;
  uint64_t off_index;
  uint64_t off_rings;
  uint64_t off_blocks;    // unused since layout 4 (owner words live in the block headers)
  uint64_t off_pools;
  uint64_t ring_stride;   // bytes of rings per endpoint
  uint64_t checksum;
  // mutable
  alignas(kLine) std::atomic<uint32_t> state;   // ArenaState
  uint32_t creator_pid;
  uint64_t created_ns;
  std::atomic<uint32_t> bind_seq;    // bumped at every bind/unbind (the agent re-reads the table)
  std::atomic<uint32_t> agent_pid;   // the node agent serving this arena (0 = none)
  std::atomic<uint64_t> agent_start; // its start time (liveness, like ProcSlot::start_time)
  std::atomic<uint32_t> agent_bell;  // its engine's process slot + 1 (0 = none): rung at every bind/unbind
  // DCs (set by the agent from the cluster's DC table): bit d of dc_defined = DC d
  // exists in the table; of dc_member = this node is one of its nodes. DC d is
  // usable here iff it is not defined or this node is a member (dc_usable).
  alignas(kLine) std::atomic<uint64_t> dc_defined[kDcWords];
  std::atomic<uint64_t> dc_member[kDcWords];
  alignas(kLine) pthread_mutex_t lock;           // robust, process-shared
  alignas(kLine) std::atomic<uint32_t> index_version;  // seqlock for the index
  alignas(kLine) std::atomic<uint32_t> space_seq;      // futex: blocks freed
  std::atomic<uint32_t> space_sleepers;
  std::atomic<uint64_t> space_bells[4];
  alignas(kLine) std::atomic<uint64_t> reaped_procs;
  std::atomic<uint64_t> recoveries;
  std::atomic<uint64_t> dropped_replies;
  alignas(kLine) ClassState classes[kMaxClasses];
};

struct alignas(kLine) BlockMeta {
  std::atomic<uint64_t> owner;
};

// Whether DC `dc` (<= DVS_MAX_DC) may be used on this node.
inline bool dc_usable(const ArenaHeader *h, uint32_t dc) {
  uint64_t bit = 1ULL << (dc & 63);
  if (!(h->dc_defined[dc >> 6].load(std::memory_order_relaxed) & bit)) return true;
  return (h->dc_member[dc >> 6].load(std::memory_order_relaxed) & bit) != 0;
}

// Pinned for white-box tests (test/crash.test.ts) and docs/DESIGN.md.
static_assert(sizeof(EndpointSlot) == 896, "endpoint slot size (layout 7)");
static_assert(offsetof(EndpointSlot, inbox_tail) == 256, "inbox tail offset (layout 7)");

static_assert(std::atomic<uint64_t>::is_always_lock_free, "lock-free 64-bit atomics required");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "lock-free 32-bit atomics required");

}  // namespace dvs
