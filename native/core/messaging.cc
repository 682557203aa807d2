// messaging.cc — send, receive, call/reply, notify, and waiting for them.
#include <unistd.h>

#include <climits>
#include <cstring>

#include "endpoint_table.h"
#include "futex.h"
#include "mailbox.h"
#include "node.h"
#include "slab.h"

namespace dvs {
namespace {

constexpr uint64_t kSliceNs = 50000000ULL;  // liveness re-check period while blocked
constexpr uint32_t kSpinMin = 1000, kSpinMax = 200000;

inline uint64_t my_alloc_owner(const dvs_node *n) { return own_proc(kOwnAlloc, n->proc, n->proc_gen); }
inline uint64_t my_recv_owner(const dvs_node *n) { return own_proc(kOwnRecv, n->proc, n->proc_gen); }

// A sender into `slot` must wait: its inbox is full, or the endpoint is being
// migrated (START: held on the sender's side, never failed).
inline bool inbox_blocked(const Arena &a, uint32_t slot) {
  return a.endpoint(slot)->migrating.load(std::memory_order_acquire) || ring_full(ring_ref(a, slot, kInbox));
}

// (dc, dst) -> bound slot and its incarnation, through a per-endpoint cache.
inline int resolve(dvs_endpoint *me, int32_t dst, uint32_t *slot, uint32_t *gen) {
  return lookup_bound(*me->node->arena, me->cache[uint32_t(dst) & 63], me->dc, dst, slot, gen);
}

inline int check_common(dvs_endpoint *me) {
  if (me->node->forked) return EDVSDVSINIT;
  if (!me->open) return EDVSNOTBIND;
  return 0;
}

// Sending operations also need the endpoint's DC to be usable on this node
// (the node may have been removed from it since the bind).
inline int check_sender(dvs_endpoint *me) {
  int r = check_common(me);
  if (r == 0 && !dc_usable(me->node->arena->hdr(), me->dc)) r = EDVSNODCNODE;
  return r;
}

// Places a payload in a block: the caller's own allocated block, or a new one with a copy.
inline int stage_payload(dvs_endpoint *me, const void *data, uint32_t len, uint32_t *block, int *why) {
  if (*block != kNone || len == 0) return 0;
  Arena &a = *me->node->arena;
  uint32_t b = slab_alloc(a, len, my_alloc_owner(me->node), me->node->alloc_cursor);
  if (b == kNone) {
    *why = kWaitArena;
    return EDVSAGAIN;
  }
  memcpy(a.base() + a.block_offset(b), data, len);
  *block = b;
  return 0;
}

// Fills a claimed cell, hands its block to the ring, publishes, wakes the consumer.
void publish(dvs_node *n, const RingRef &r, uint32_t slot, uint32_t which, Cell *c, uint32_t pos, const Outgoing &m) {
  Arena &a = *n->arena;
  c->block = m.block;
  c->len = m.block == kNone ? 0 : m.len;
  c->kind = m.kind;
  c->src_ep = m.src_ep;
  c->src_dc = m.src_dc;
  c->src_gen = m.src_gen;
  c->src_node = m.src_node;
  c->call_id = m.call_id;
  c->status = m.status;
  c->dst_gen = m.dst_gen;
  c->bits = m.bits;
  c->flags = m.flags;
  if (m.block != kNone) a.block(m.block)->owner.store(own_queued(which, slot, pos), std::memory_order_relaxed);
  ring_publish(r, c, pos);
  wake_consumer(n, a.endpoint(slot));
}

// Puts a message from `me` into the inbox of `slot` (incarnation dst_gen).
int enqueue(dvs_endpoint *me, uint32_t slot, uint32_t dst_gen, uint32_t kind, uint32_t block, uint32_t len,
            uint32_t call_id, uint32_t bits, uint32_t flags, bool staged_here, int *why) {
  dvs_node *n = me->node;
  Arena &a = *n->arena;
  RingRef r = ring_ref(a, slot, kInbox);
  uint32_t pos;
  Cell *c;
  if (!ring_claim(r, n->proc + 1, &pos, &c)) {
    if (staged_here && block != kNone) slab_free_if(a, block, my_alloc_owner(n));
    *why = kWaitInbox;
    return EDVSAGAIN;
  }
  publish(n, r, slot, kInbox, c, pos,
          {kind, block, len, me->ep, me->dc, me->gen, n->node_id, call_id, 0, dst_gen, bits, flags});
  if (a.endpoint(slot)->gen.load(std::memory_order_acquire) != dst_gen)
    return handle_stranded(n, slot, dst_gen, pos) ? 0 : EDVSDSTDIED;
  return 0;
}

inline uint32_t next_call_id(dvs_endpoint *me) {
  uint32_t id = me->next_call++;
  if (me->next_call > 0x7fffffff) me->next_call = 1;
  return id;
}

// Returns 0, a negative error, or (a SEND to a remote endpoint) the positive id
// under which its outcome will arrive as a reply; such a send holds a reply
// credit like a call.
int send_kind(dvs_endpoint *me, int32_t dst, uint32_t kind, const void *data, uint32_t len, uint32_t block,
              uint32_t call_id, uint32_t bits, int *why, uint32_t *dst_gen = nullptr) {
  *why = kWaitNone;
  int r = check_sender(me);
  if (r) return r;
  if (len > DVS_MAX_PAYLOAD) return EDVS2BIG;
  if (dst < 0 || dst > DVS_MAX_EP) return EDVSENDPOINT;
  if (block != kNone && (r = check_alloc_block(me, block, len))) return r;
  uint32_t slot, gen;
  if ((r = resolve(me, dst, &slot, &gen))) return r;
  if (dst_gen) *dst_gen = gen;
  Arena &a = *me->node->arena;
  uint32_t flags = 0;
  if (kind == kKindSend && a.endpoint(slot)->kind == kEpRemote) {
    if (me->acks_out >= a.hdr()->cfg.reply_cells * kAckCreditsPerReplyCell) {
      *why = kWaitCredits;
      return EDVSAGAIN;
    }
    flags = kCellAck;
  }
  // Notifications are not held by a migration (they coalesce, carry no order,
  // and notify() never blocks): only a full ring stops them.
  if (kind == kKindNotify ? ring_full(ring_ref(a, slot, kInbox)) : inbox_blocked(a, slot)) {
    *why = kWaitInbox;
    return EDVSAGAIN;
  }
  bool staged_here = block == kNone;
  if ((r = stage_payload(me, data, len, &block, why))) return r;
  if (flags) call_id = next_call_id(me);
  r = enqueue(me, slot, gen, kind, block, len, call_id, bits, flags, staged_here, why);
  if (r == 0) {
    EndpointSlot *mine = a.endpoint(me->slot);
    mine->msgs_out.store(mine->msgs_out.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  if (flags && (r == 0 || r == EDVSDSTDIED)) {  // a stranded one still gets its (error) outcome from the purge
    me->acks_out++;
    return int(call_id);
  }
  return r;
}

void discard_stale(dvs_endpoint *me, Cell *c, uint32_t which, uint32_t head) {
  Arena &a = *me->node->arena;
  if (c->block != kNone && c->block < a.hdr()->total_blocks)
    slab_free_if(a, c->block, own_queued(which, me->slot, head));
  if (which == kInbox && wants_reply(*c)) post_reply(me->node, reply_target(*c), me->ep, nullptr, 0, kNone, EDVSDSTDIED);
}

// Takes the published cell at head into a message (block now held by us).
void take_cell(dvs_endpoint *me, Cell *c, dvs_msg *m) {
  Arena &a = *me->node->arena;
  uint32_t block = c->block;
  m->kind = c->kind == kKindCall ? DVS_MSG_CALL
            : c->kind == kKindReply ? DVS_MSG_REPLY
            : c->kind == kKindNotify ? DVS_MSG_NOTIFY
            : c->kind == kKindFence  ? DVS_MSG_FENCE
                                      : DVS_MSG_SEND;
  m->src_dc = c->src_dc;
  m->src_ep = c->src_ep;
  m->src_node = c->src_node;
  m->len = c->len;
  m->bits = c->bits;
  m->status = c->status;
  m->call_id_ = c->call_id;
  m->src_gen_ = c->src_gen;
  m->reserved_ = (c->kind == kKindReply && (c->flags & kCellAck)) ? 1 : 0;
  if (block != kNone && block < a.hdr()->total_blocks) {
    a.block(block)->owner.store(my_recv_owner(me->node), std::memory_order_relaxed);
    m->block_ = block;
    m->data = a.base() + a.block_offset(block);
  } else {
    m->block_ = kNone;
    m->data = nullptr;
    m->len = 0;
  }
}

}  // namespace

int check_alloc_block(dvs_endpoint *me, uint32_t block, uint32_t len) {
  Arena &a = *me->node->arena;
  if (block >= a.hdr()->total_blocks) return EDVSINVAL;
  if (a.block(block)->owner.load(std::memory_order_relaxed) != my_alloc_owner(me->node)) return EDVSINVAL;
  if (len > a.block_capacity(block)) return EDVS2BIG;
  return 0;
}

uint32_t ep_alloc(dvs_endpoint *me, uint32_t len) {
  if (check_common(me) || len > DVS_MAX_PAYLOAD) return kNone;
  return slab_alloc(*me->node->arena, len ? len : 1, my_alloc_owner(me->node), me->node->alloc_cursor);
}

int ep_free_alloc(dvs_endpoint *me, uint32_t block) {
  Arena &a = *me->node->arena;
  if (block >= a.hdr()->total_blocks || !slab_free_if(a, block, my_alloc_owner(me->node))) return EDVSINVAL;
  arena_space_freed(me->node);
  return 0;
}

int try_send(dvs_endpoint *me, int32_t dst, const void *data, uint32_t len, uint32_t block, int *why,
             uint32_t *dst_gen) {
  return send_kind(me, dst, kKindSend, data, len, block, 0, 0, why, dst_gen);
}

int try_call(dvs_endpoint *me, int32_t dst, const void *data, uint32_t len, uint32_t block, uint32_t *call_id,
             uint32_t *dst_gen, int *why) {
  *why = kWaitNone;
  if (me->outstanding >= me->node->arena->hdr()->cfg.reply_cells) {
    *why = kWaitCredits;
    return EDVSAGAIN;
  }
  uint32_t id = next_call_id(me);
  int r = send_kind(me, dst, kKindCall, data, len, block, id, 0, why, dst_gen);
  if (r == 0 || r == EDVSDSTDIED) {
    me->outstanding++;  // a DSTDIED call still gets its (error) reply from the purge
    *call_id = id;
  }
  return r;
}

void call_end(dvs_endpoint *me) {
  if (me->outstanding) me->outstanding--;
}

void ack_end(dvs_endpoint *me, uint32_t n) { me->acks_out = me->acks_out > n ? me->acks_out - n : 0; }

int try_receive(dvs_endpoint *me, int32_t src, dvs_msg *out, int max) {
  int r = check_common(me);
  if (r) return r;
  if (max <= 0) return 0;
  int got = 0;
  // Messages skipped earlier by a filtered receive come first, in order.
  for (auto it = me->deferred.begin(); it != me->deferred.end() && got < max;) {
    if (src == DVS_ANY || it->src_ep == src) {
      out[got++] = *it;
      it = me->deferred.erase(it);
    } else {
      ++it;
    }
  }
  if (got == max) return got;
  Arena &a = *me->node->arena;
  EndpointSlot *e = a.endpoint(me->slot);
  if (e->gen.load(std::memory_order_acquire) != me->gen) return got ? got : EDVSNOTBIND;
  if (e->kind != kEpLocal || !owns(me->node, e)) return got ? got : EDVSNOTBIND;  // migrated away in place
  // Pending notifications are delivered before queued messages.
  if (got == 0 && e->notify_pending.load(std::memory_order_acquire) && e->notify_pending.exchange(0)) {
    bool more = false;
    for (auto &ns : e->notify) {
      uint32_t s = ns.src.load(std::memory_order_acquire);
      if (!s || !ns.bits.load(std::memory_order_relaxed)) continue;
      if (got < max && (src == DVS_ANY || int32_t(s - 1) == src)) {
        uint32_t bits = ns.bits.exchange(0, std::memory_order_acq_rel);
        if (!bits) continue;
        dvs_msg &m = out[got++];
        memset(&m, 0, sizeof m);
        m.kind = DVS_MSG_NOTIFY;
        m.src_dc = me->dc;
        m.src_ep = int32_t(s - 1);
        m.src_node = me->node->node_id;
        m.bits = bits;
        m.block_ = kNone;
      } else {
        more = true;
      }
    }
    if (more) e->notify_pending.store(1, std::memory_order_release);
    if (got == max) return got;
  }
  RingRef ring = ring_ref(a, me->slot, kInbox);
  uint32_t head = ring.head->load(std::memory_order_relaxed);
  uint32_t taken = 0;
  while (got < max) {
    Cell *c = ring_peek(ring, head);
    if (!c) break;
    if (c->kind == kKindSkip) {
      ring_pop(ring, c, head++);
      continue;
    }
    if (c->dst_gen != me->gen) {
      discard_stale(me, c, kInbox, head);
      ring_pop(ring, c, head++);
      continue;
    }
    dvs_msg m;
    take_cell(me, c, &m);
    ring_pop(ring, c, head++);
    taken++;
    if (src == DVS_ANY || m.src_ep == src)
      out[got++] = m;
    else
      me->deferred.push_back(m);
  }
  if (taken) {
    e->msgs_in.store(e->msgs_in.load(std::memory_order_relaxed) + taken, std::memory_order_relaxed);
    inbox_space_freed(me->node, e);
  }
  return got;
}

int try_take_replies(dvs_endpoint *me, dvs_msg *out, int max) {
  int r = check_common(me);
  if (r) return r;
  Arena &a = *me->node->arena;
  RingRef ring = ring_ref(a, me->slot, kReplies);
  uint32_t head = ring.head->load(std::memory_order_relaxed);
  int got = 0;
  while (got < max) {
    Cell *c = ring_peek(ring, head);
    if (!c) break;
    if (c->kind != kKindReply || c->dst_gen != me->gen) {
      discard_stale(me, c, kReplies, head);
      ring_pop(ring, c, head++);
      continue;
    }
    take_cell(me, c, &out[got++]);
    ring_pop(ring, c, head++);
  }
  return got;
}

int wait_reply(dvs_endpoint *me, uint32_t id, int32_t dst, uint32_t dst_gen, uint64_t deadline, int64_t spin_ns,
               dvs_msg *reply) {
  for (;;) {
    dvs_msg m;
    while (try_take_replies(me, &m, 1) == 1) {
      if (reply_covers(m, id)) {
        if (reply) call_end(me);
        else ack_end(me, 1);
        if (m.status || !reply) {
          if (m.block_ != kNone) release_block(me, m.block_);
          return m.status;
        }
        *reply = m;
        return 0;
      }
      // A late reply to a call this endpoint abandoned (lib/ does not mix sync
      // and async calls on one endpoint, so it cannot belong to a pending one).
      if (m.block_ != kNone) release_block(me, m.block_);
    }
    int r = wait_work(me, kWorkReplies, deadline, spin_ns, dst, dst_gen);
    if (r) {
      if (reply) call_end(me);  // abandoned: its credit returns now
      else ack_end(me, 1);
      return r;
    }
  }
}

int release_block(dvs_endpoint *me, uint32_t block) {
  dvs_node *n = me->node;
  Arena &a = *n->arena;
  if (block >= a.hdr()->total_blocks) return EDVSINVAL;
  if (!slab_free_if(a, block, my_recv_owner(n))) return EDVSINVAL;
  arena_space_freed(n);
  return 0;
}

bool post_cell(dvs_node *n, uint32_t slot, uint32_t which, const Outgoing &m) {
  RingRef r = ring_ref(*n->arena, slot, which);
  uint32_t pos;
  Cell *c;
  if (!ring_claim(r, n->proc + 1, &pos, &c)) return false;
  publish(n, r, slot, which, c, pos, m);
  return true;
}

int post_reply(dvs_node *n, const ReplyTarget &t, int32_t from_ep, const void *data, uint32_t len, uint32_t block,
               int32_t status) {
  Arena &a = *n->arena;
  // A caller on another node is reached through the route to its node (the engine forwards).
  bool remote = t.node != n->node_id;
  uint32_t s = remote ? ep_lookup(a, kPeerDc, int32_t(t.node)) : ep_lookup(a, t.dc, t.caller);
  bool staged_here = false;  // a block we allocate here is ours to free on failure; the caller's stays the caller's
  auto drop = [&](int code) {
    if (staged_here) slab_free_if(a, block, my_alloc_owner(n));
    return code;
  };
  if (s == kNone) return drop(remote ? EDVSNOTCONN : EDVSPROCSTS);
  EndpointSlot *e = a.endpoint(s);
  uint32_t slot_gen = e->gen.load(std::memory_order_acquire);
  if (e->state.load(std::memory_order_acquire) != kEpBound || (!remote && slot_gen != t.caller_gen))
    return drop(remote ? EDVSNOTCONN : EDVSPROCSTS);
  if (block == kNone && len) {
    // Replies never wait: a caller holds a reply credit for each call, so a
    // block shortage here is transient; try briefly, then report it.
    for (int i = 0; i < 1000 && block == kNone; i++) {
      block = slab_alloc(a, len, my_alloc_owner(n), n->alloc_cursor);
      if (block == kNone) usleep(10);
    }
    if (block == kNone) return EDVSAGAIN;
    staged_here = true;
    memcpy(a.base() + a.block_offset(block), data, len);
  }
  // Local: into the caller's reply ring. Remote: into the route's inbox, with
  // the caller in `bits` and its incarnation in `src_gen`.
  Outgoing m = remote ? Outgoing{kKindReply, block, len, from_ep, t.dc, t.caller_gen, n->node_id, t.call_id, status,
                                 slot_gen, uint32_t(t.caller), 0}
                      : Outgoing{kKindReply, block, len, from_ep, t.dc, 0, n->node_id, t.call_id, status, t.caller_gen,
                                 0, 0};
  uint32_t which = remote ? kInbox : kReplies;
  bool posted = false;
  for (int i = 0; i < 1000 && !(posted = post_cell(n, s, which, m)); i++) usleep(10);
  if (!posted) {
    a.hdr()->dropped_replies.fetch_add(1, std::memory_order_relaxed);
    return drop(EDVSAGAIN);
  }
  return 0;
}

int reply_to(dvs_endpoint *me, const ReplyTarget &t, const void *data, uint32_t len, uint32_t block) {
  int r = check_sender(me);
  if (r) return r;
  if (len > DVS_MAX_PAYLOAD) return EDVS2BIG;
  if (t.dc != me->dc) return EDVSBADDCID;
  if (block != kNone && (r = check_alloc_block(me, block, len))) return r;
  r = post_reply(me->node, t, me->ep, data, len, block, 0);
  if (r == 0) {
    EndpointSlot *mine = me->node->arena->endpoint(me->slot);
    mine->msgs_out.store(mine->msgs_out.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  return r;
}

bool notify_slot(dvs_node *n, uint32_t slot, int32_t src_ep, uint32_t bits) {
  EndpointSlot *e = n->arena->endpoint(slot);
  uint32_t key = uint32_t(src_ep) + 1;
  NotifySlot *ns = nullptr;
  for (auto &cand : e->notify) {
    uint32_t s = cand.src.load(std::memory_order_acquire);
    if (s == key) {
      ns = &cand;
      break;
    }
    if (s == 0) {
      uint32_t z = 0;
      if (cand.src.compare_exchange_strong(z, key, std::memory_order_acq_rel) || z == key) {
        ns = &cand;
        break;
      }
    }
  }
  if (!ns) return false;
  ns->bits.fetch_or(bits, std::memory_order_acq_rel);
  e->notify_pending.store(1, std::memory_order_release);
  wake_consumer(n, e);
  return true;
}

int notify(dvs_endpoint *me, int32_t dst, uint32_t bits) {
  int r = check_sender(me);
  if (r) return r;
  if (dst < 0 || dst > DVS_MAX_EP) return EDVSENDPOINT;
  uint32_t slot, gen;
  if ((r = resolve(me, dst, &slot, &gen))) return r;
  if (!bits) return 0;
  // A remote endpoint's proxy forwards notifications as messages (the engine
  // turns them back into notification bits on the destination's node).
  if (me->node->arena->endpoint(slot)->kind == kEpLocal && notify_slot(me->node, slot, me->ep, bits)) return 0;
  // More distinct notifiers than slots: queue it as a message instead.
  int why;
  return send_kind(me, dst, kKindNotify, nullptr, 0, kNone, 0, bits, &why);
}

bool has_work(dvs_endpoint *me, uint32_t mask) {
  Arena &a = *me->node->arena;
  if ((mask & kWorkInbox)) {
    if (!me->deferred.empty()) return true;
    EndpointSlot *e = a.endpoint(me->slot);
    if (e->notify_pending.load(std::memory_order_acquire)) return true;
    RingRef r = ring_ref(a, me->slot, kInbox);
    if (ring_peek(r, r.head->load(std::memory_order_relaxed))) return true;
  }
  if (mask & kWorkReplies) {
    RingRef r = ring_ref(a, me->slot, kReplies);
    if (ring_peek(r, r.head->load(std::memory_order_relaxed))) return true;
  }
  return false;
}

int arm_bell(dvs_endpoint *me) {
  if (check_common(me)) return 1;
  EndpointSlot *e = me->node->arena->endpoint(me->slot);
  e->wake.fetch_or(kWakeBell, std::memory_order_seq_cst);
  return has_work(me, kWorkAll) ? 1 : 0;
}

int arm_space(dvs_endpoint *me, int32_t dst, int why) {
  dvs_node *n = me->node;
  Arena &a = *n->arena;
  std::atomic<uint64_t> *bells;
  if (why == kWaitArena) {
    bells = a.hdr()->space_bells;
  } else if (why == kWaitInbox) {
    uint32_t slot, gen;
    int r = resolve(me, dst, &slot, &gen);
    if (r) return r;
    bells = a.endpoint(slot)->space_bells;
    bells[n->proc / 64].fetch_or(1ULL << (n->proc % 64), std::memory_order_seq_cst);
    return inbox_blocked(a, slot) ? 0 : 1;
  } else {
    return 1;
  }
  bells[n->proc / 64].fetch_or(1ULL << (n->proc % 64), std::memory_order_seq_cst);
  return 0;  // a free races us at worst by one bell; the caller also retries on a timer
}

namespace {
constexpr uint64_t kDriveSliceNs = 1000000ULL;  // a local producer's wake-up reaches a driving waiter within this

// The sleeping phase of a wait in a process that drives its agent's engine:
// the engine sleeps on its socket and doorbell, and the waiter re-checks.
int drive_until(dvs_endpoint *me, dvs_driver *drv, uint32_t mask, uint64_t deadline, int32_t check_dst,
                uint32_t dst_gen) {
  EndpointSlot *e = me->node->arena->endpoint(me->slot);
  uint64_t checked = now_ns();
  for (;;) {
    if (!me->open || e->gen.load(std::memory_order_acquire) != me->gen) return EDVSNOTBIND;
    drv->poll(drv->arg);
    if (has_work(me, mask)) return 0;
    uint64_t now = now_ns();
    if (deadline && now >= deadline) return EDVSTIMEDOUT;
    if (check_dst >= 0 && now - checked >= kSliceNs) {
      checked = now;
      int r = verify_dst(me, check_dst, dst_gen, nullptr);
      if (r) return has_work(me, mask) ? 0 : r;
    }
    uint64_t slice = kDriveSliceNs;
    if (deadline && deadline - now < slice) slice = deadline - now;
    drv->wait(drv->arg, slice);
  }
}
}  // namespace

int wait_work(dvs_endpoint *me, uint32_t mask, uint64_t deadline, int64_t spin_ns, int32_t check_dst,
              uint32_t dst_gen) {
  if (has_work(me, mask)) return 0;
  EndpointSlot *e = me->node->arena->endpoint(me->slot);
  bool adaptive = spin_ns < 0;
  uint64_t budget = adaptive ? me->spin_ns : uint64_t(spin_ns);
  uint64_t start = now_ns();
  if (budget) {
    uint64_t t = start, checked = start;
    dvs_driver *drv = me->node->driver;
    for (uint32_t i = 1;; i++) {
      if (has_work(me, mask)) {
        if (adaptive) me->spin_ns = uint32_t(me->spin_ns * 2 > kSpinMax ? kSpinMax : me->spin_ns * 2);
        return 0;
      }
      if (drv) drv->poll(drv->arg);
      else cpu_relax();
      if ((i & 63) == 0) {
        t = now_ns();
        if (t - start >= budget) break;
        if (deadline && t >= deadline) return EDVSTIMEDOUT;
        if (t - checked >= kSliceNs) {  // a long spin still notices a dead peer or a closed endpoint
          checked = t;
          if (!me->open || e->gen.load(std::memory_order_acquire) != me->gen) return EDVSNOTBIND;
          if (check_dst >= 0) {
            int r = verify_dst(me, check_dst, dst_gen, nullptr);
            if (r) return has_work(me, mask) ? 0 : r;
          }
        }
      }
    }
    if (adaptive) me->spin_ns = me->spin_ns / 2 < kSpinMin ? kSpinMin : me->spin_ns / 2;
  }
  if (dvs_driver *drv = me->node->driver) return drive_until(me, drv, mask, deadline, check_dst, dst_gen);
  for (;;) {
    if (!me->open || e->gen.load(std::memory_order_acquire) != me->gen) return EDVSNOTBIND;
    uint32_t w = e->wake.fetch_or(kWakeFutex, std::memory_order_seq_cst) | kWakeFutex;
    if (has_work(me, mask)) return 0;
    uint64_t now = now_ns();
    if (deadline && now >= deadline) return EDVSTIMEDOUT;
    uint64_t slice = kSliceNs;
    if (deadline && deadline - now < slice) slice = deadline - now;
    futex_wait(&e->wake, w, slice);
    if (has_work(me, mask)) return 0;
    if (check_dst >= 0) {
      int r = verify_dst(me, check_dst, dst_gen, nullptr);
      if (r) return has_work(me, mask) ? 0 : r;
    }
  }
}

int wait_space(dvs_endpoint *me, int32_t dst, int why, uint64_t deadline) {
  dvs_node *n = me->node;
  Arena &a = *n->arena;
  std::atomic<uint32_t> *seq, *sleepers;
  uint32_t slot = 0, gen = 0;
  if (why == kWaitArena) {
    seq = &a.hdr()->space_seq;
    sleepers = &a.hdr()->space_sleepers;
  } else {
    int r = resolve(me, dst, &slot, &gen);
    if (r) return r;
    seq = &a.endpoint(slot)->space_seq;
    sleepers = &a.endpoint(slot)->space_sleepers;
  }
  if (dvs_driver *drv = n->driver) {  // the engine frees proxy space and blocks: drive it
    drv->poll(drv->arg);
    if (why == kWaitInbox ? inbox_blocked(a, slot) : true) drv->wait(drv->arg, kDriveSliceNs);
    drv->poll(drv->arg);
    return deadline && now_ns() >= deadline ? EDVSTIMEDOUT : 0;
  }
  // Short spin first: a busy consumer frees space within microseconds.
  uint64_t until = now_ns() + 20000;
  while (now_ns() < until) {
    if (why == kWaitInbox ? !inbox_blocked(a, slot) : false) return 0;
    for (int i = 0; i < 64; i++) cpu_relax();
  }
  uint32_t v = seq->load(std::memory_order_acquire);
  sleepers->fetch_add(1, std::memory_order_seq_cst);
  bool ready = why == kWaitInbox && !inbox_blocked(a, slot);
  int r = 0;
  if (!ready) {
    uint64_t now = now_ns();
    if (deadline && now >= deadline) {
      r = EDVSTIMEDOUT;
    } else {
      uint64_t slice = kSliceNs;
      if (deadline && deadline - now < slice) slice = deadline - now;
      futex_wait(seq, v, why == kWaitArena ? (slice < 5000000 ? slice : 5000000) : slice);
    }
  }
  sleepers->fetch_sub(1, std::memory_order_relaxed);
  if (!r && why == kWaitInbox) r = verify_dst(me, dst, gen, nullptr);
  return r;
}

}  // namespace dvs
