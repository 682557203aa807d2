// node.h — a process's attachment to its node (dvs_node) and its bound
// endpoints (dvs_endpoint), and the core operations on them. Non-blocking
// primitives (try_*) return EDVSAGAIN when they would wait; the blocking C API
// (capi.cc) and the Node addon build their waiting on top of them.
#pragma once
#include <sys/types.h>

#include <deque>
#include <mutex>
#include <vector>

#include "../include/dvs.h"
#include "arena.h"
#include "doorbell.h"
#include "endpoint_table.h"

struct dvs_endpoint;

// Set when this process embeds its node's agent in invoker mode: blocking
// waits drive the agent's engine (transport and proxies) instead of sleeping
// on a futex that only the (absent) engine thread would have woken them from.
struct dvs_driver {
  bool (*poll)(void *arg);                   // one duty cycle; true when it moved messages
  void (*wait)(void *arg, uint64_t max_ns);  // sleep until the engine has something to do
  void *arg;
};

struct dvs_node {
  dvs::Arena *arena = nullptr;
  uint32_t node_id = 0;
  uint32_t proc = dvs::kNone;
  uint32_t proc_gen = 0;
  pid_t pid = 0;
  uint64_t start_time = 0;
  uint32_t bell_mode = 0;
  int bell_rx = -1;  // our doorbell (bell_mode 0)
  int bell_tx = -1;  // for ringing others
  bool forked = false;
  dvs_driver *driver = nullptr;
  std::vector<dvs_endpoint *> eps;
  uint32_t alloc_cursor[dvs::kMaxClasses] = {};  // where this process looks for free blocks next
  dvs::BellAddr bell_cache[256];
  uint32_t bell_cache_gen[256] = {};
};

struct dvs_endpoint {
  dvs_node *node = nullptr;
  uint32_t slot = 0;
  uint32_t gen = 0;
  uint32_t dc = 0;
  int32_t ep = 0;
  bool open = false;
  uint32_t next_call = 1;
  uint32_t outstanding = 0;    // calls awaiting a reply (reply-ring credits)
  uint32_t acks_out = 0;       // sends to remote endpoints awaiting their acknowledgement
  uint32_t spin_ns = 20000;    // adaptive spin budget before sleeping
  std::deque<dvs_msg> deferred;  // received but skipped by a filtered receive
  dvs::SlotRef cache[64];      // destinations recently resolved
};

namespace dvs {

// Why a try_* call returned EDVSAGAIN.
enum WaitReason : int { kWaitNone = 0, kWaitInbox = 1, kWaitArena = 2, kWaitCredits = 3 };

int node_attach(const dvs_attach_opts *opts, uint32_t bell_mode, dvs_node **out);
// keep_mapping: leave the arena mapped (the addon unmaps it when its last view is collected).
int node_detach(dvs_node *n, bool keep_mapping);
int node_reap_dead(dvs_node *n);
// Installs (or, d = nullptr, removes) the driver of an invoker-mode engine
// attached as engine_node: every other attachment of this process to the same
// arena, now and later, drives it while it waits.
void set_driver(dvs_node *engine_node, dvs_driver *d);

// `name` (nullptr or "" = none): up to 31 bytes, no NUL; unique among this
// node's local endpoints of the DC (else EDVSSLOTUSED). The directory carries it.
int ep_bind(dvs_node *n, uint32_t dc, int32_t ep, dvs_endpoint **out, const char *name = nullptr);
int ep_close(dvs_endpoint *me);
// Binds a slot of another kind (EpKind): the agent's proxies and peer routes.
int ep_bind_as(dvs_node *n, uint32_t dc, int32_t ep, uint32_t kind, uint32_t remote_node, uint32_t remote_gen,
               dvs_endpoint **out, const char *name = nullptr);

// Checks a block handed in by the caller (zero-copy send/reply).
int check_alloc_block(dvs_endpoint *me, uint32_t block, uint32_t len);
uint32_t ep_alloc(dvs_endpoint *me, uint32_t len);
int ep_free_alloc(dvs_endpoint *me, uint32_t block);

// block = kNone: copy `data`; else send the caller's allocated block.
// Returns 0, an error, or (remote destination) the id of the pending acknowledgement;
// *dst_gen (optional) receives the destination slot's incarnation.
int try_send(dvs_endpoint *me, int32_t dst, const void *data, uint32_t len, uint32_t block, int *why,
             uint32_t *dst_gen = nullptr);
// Starts a call: takes a reply credit and sends a CALL; *call_id receives its
// id and *dst_gen the destination's incarnation (for liveness checks).
int try_call(dvs_endpoint *me, int32_t dst, const void *data, uint32_t len, uint32_t block, uint32_t *call_id,
             uint32_t *dst_gen, int *why);
void call_end(dvs_endpoint *me);
// A remote send's acknowledgement (or error) arrived, or its waiter gave up.
void ack_end(dvs_endpoint *me, uint32_t n);
// Acknowledgements arrive as REPLY cells with dvs_msg::reserved_ = 1 covering the
// call ids [call_id_, call_id_ + bits) (bits >= 1): many sends, one cell.
inline bool reply_covers(const dvs_msg &m, uint32_t id) {
  return m.reserved_ == 1 ? id - m.call_id_ < (m.bits ? m.bits : 1) : m.call_id_ == id;
}
// In-flight remote sends per endpoint: success acknowledgements are ranges
// (one reply cell for many), so this may exceed the reply ring.
constexpr uint32_t kAckCreditsPerReplyCell = 4;
// Fills up to `max` messages (notifications first, then the inbox in order).
int try_receive(dvs_endpoint *me, int32_t src, dvs_msg *out, int max);
// Fills up to `max` replies (any call id).
int try_take_replies(dvs_endpoint *me, dvs_msg *out, int max);
int release_block(dvs_endpoint *me, uint32_t block);
// Waits for the reply to call `id` (or the outcome of a remote send, reply =
// nullptr) and ends the call: 0 with *reply filled, or the error status.
int wait_reply(dvs_endpoint *me, uint32_t id, int32_t dst, uint32_t dst_gen, uint64_t deadline, int64_t spin_ns,
               dvs_msg *reply);
// Where a reply goes: the caller (dc, ep, incarnation) on its node, and the call's id.
struct ReplyTarget {
  uint32_t dc;
  int32_t caller;
  uint32_t caller_gen;
  uint32_t node;
  uint32_t call_id;
};
int reply_to(dvs_endpoint *me, const ReplyTarget &t, const void *data, uint32_t len, uint32_t block);
int notify(dvs_endpoint *me, int32_t dst, uint32_t bits);

// What a waiter waits for.
enum WorkMask : uint32_t { kWorkInbox = 1, kWorkReplies = 2, kWorkAll = 3 };
bool has_work(dvs_endpoint *me, uint32_t mask);
// Arms the doorbell for this endpoint; returns 1 if work is already there.
int arm_bell(dvs_endpoint *me);
// Registers for a doorbell when space frees up for a send that got EDVSAGAIN.
int arm_space(dvs_endpoint *me, int32_t dst, int why);
// Spin (adaptively, or for spin_ns if given) then sleep until work, the
// deadline (0 = none), or a dead destination (check_dst >= 0).
int wait_work(dvs_endpoint *me, uint32_t mask, uint64_t deadline, int64_t spin_ns, int32_t check_dst,
              uint32_t dst_gen);
int wait_space(dvs_endpoint *me, int32_t dst, int why, uint64_t deadline);
// 0 if dst is bound (and `gen` matches when non-zero) with a live owner;
// else EDVSDSTDIED/EDVSNOTBIND, reaping a dead owner on the way.
int verify_dst(dvs_endpoint *me, int32_t dst, uint32_t gen, uint32_t *gen_out);

// Rings the doorbell of process slot p.
void ring_proc(dvs_node *n, uint32_t p);

}  // namespace dvs

// ---- internal to the core (reaper.cc, messaging.cc, node.cc, the engine) ----
namespace dvs {
// What a producer writes into a claimed cell (everything but the position).
struct Outgoing {
  uint32_t kind, block, len;
  int32_t src_ep;
  uint32_t src_dc, src_gen, src_node, call_id;
  int32_t status;
  uint32_t dst_gen, bits, flags;
};
// Claims a cell of ring `which` of `slot` and publishes m into it (waking the
// consumer); false when the ring is full. The block (if any) must be owned by the caller.
bool post_cell(dvs_node *n, uint32_t slot, uint32_t which, const Outgoing &m);
// A queued CALL, or a SEND to a remote endpoint, whose sender waits for an answer.
inline bool wants_reply(const Cell &c) { return c.kind == kKindCall || (c.kind == kKindSend && (c.flags & kCellAck)); }
inline ReplyTarget reply_target(const Cell &c) { return {c.src_dc, c.src_ep, c.src_gen, c.src_node, c.call_id}; }
// ORs bits into slot's notification word for source src_ep and wakes its
// consumer; false when all its notification slots are taken by other sources.
bool notify_slot(dvs_node *n, uint32_t slot, int32_t src_ep, uint32_t bits);
// Posts a reply (or an error status) to a caller: into its reply ring, or
// through the route to its node when it is remote.
int post_reply(dvs_node *n, const ReplyTarget &t, int32_t from_ep, const void *data, uint32_t len, uint32_t block,
               int32_t status);
// Under the arena lock:
// Unbinding or purging answers queued calls and remote sends with `err`.
void unbind_locked(dvs_node *n, uint32_t slot, int32_t err = EDVSDSTDIED);
void purge_locked(dvs_node *n, uint32_t slot, int32_t err = EDVSDSTDIED);
void reap_proc_locked(dvs_node *n, uint32_t p);
int reap_dead_locked(dvs_node *n);
// After a send found its destination unbound behind its back: purges the
// dead slot and tells whether the message at inbox position `pos` had been
// taken by the incarnation `dst_gen` (delivered) before it went away.
bool handle_stranded(dvs_node *n, uint32_t slot, uint32_t dst_gen, uint32_t pos);
// Rings the node agent's engine (if any, and not us): the endpoint table changed.
void ring_agent(dvs_node *n);
// Wakes the consumer of a slot; call right after ring_publish (cheap when nobody sleeps).
void wake_consumer(dvs_node *n, EndpointSlot *e);
// Wakes producers waiting for inbox space / free blocks.
void inbox_space_freed(dvs_node *n, EndpointSlot *e);
// Marks (dc, ep)'s slot on this node as migrating (senders wait) or clears it
// (they go on). EDVSNOTBIND when nothing is bound there.
int ep_set_migrating(dvs_node *n, uint32_t dc, int32_t ep, bool on);
// Migration COMMIT: turns the bound slot of (dc, ep) into `kind` in place —
// a local endpoint into a proxy for remote_node/remote_gen (source), or a
// proxy into a local endpoint (destination) — keeping the slot and its
// incarnation, so senders' cached lookups and callers' liveness checks stay
// valid. The new owner is process slot `owner_proc` (kNone: the caller);
// `out` (may be null) gets a handle for the caller. EDVSNOTBIND if nothing is
// bound there, EDVSPROCSTS if it is not of the other kind.
// `name` (kEpLocal only; nullptr = none) is published by the directory as at bind.
int ep_take_over(dvs_node *n, uint32_t dc, int32_t ep, uint32_t kind, uint32_t remote_node, uint32_t remote_gen,
                 uint32_t owner_proc, dvs_endpoint **out, const char *name = nullptr);
// A handle on a local endpoint whose slot was handed to this process (ep_take_over by the agent).
int ep_open_owned(dvs_node *n, uint32_t dc, int32_t ep, dvs_endpoint **out);
// Drops a handle without touching its slot (it was handed to someone else); the caller deletes it.
void ep_forget(dvs_endpoint *me);
// Whether this process owns the slot (a migrated-away endpoint is no longer ours).
inline bool owns(const dvs_node *n, const dvs::EndpointSlot *e) { return e->owner_proc == n->proc && e->owner_gen == n->proc_gen; }
void arena_space_freed(dvs_node *n);
// Lock helpers that repair after a dead lock owner.
void lock_arena(dvs_node *n);
void unlock_arena(dvs_node *n);
}  // namespace dvs
