// reaper.cc — crash safety: reclaiming everything a dead process held.
// Runs under the arena lock, in whichever live process notices the death
// (at attach, when a wait on the dead process times a slice out, at bind).
#include <climits>
#include <vector>

#include "endpoint_table.h"
#include "futex.h"
#include "mailbox.h"
#include "node.h"
#include "proc_table.h"
#include "slab.h"

namespace dvs {

void lock_arena(dvs_node *n) {
  if (n->arena->lock()) {
    // The previous holder died inside a critical section: the index may be
    // half-written (its seqlock odd) and its process must be reaped.
    index_rebuild_locked(*n->arena);
    reap_dead_locked(n);
  }
}

void unlock_arena(dvs_node *n) { n->arena->unlock(); }

void purge_locked(dvs_node *n, uint32_t slot, int32_t err) {
  Arena &a = *n->arena;
  EndpointSlot *e = a.endpoint(slot);
  for (uint32_t which = 0; which < 2; which++) {
    RingRef r = ring_ref(a, slot, which);
    uint32_t head = r.head->load(std::memory_order_relaxed);
    while (Cell *c = ring_peek(r, head)) {
      if (c->block != kNone && c->block < a.hdr()->total_blocks) slab_free_if(a, c->block, own_queued(which, slot, head));
      if (which == kInbox && wants_reply(*c)) post_reply(n, reply_target(*c), e->ep, nullptr, 0, kNone, err);
      ring_pop(r, c, head);
      head++;
    }
  }
  inbox_space_freed(n, e);
  arena_space_freed(n);
}

void unbind_locked(dvs_node *n, uint32_t slot, int32_t err) {
  EndpointSlot *e = n->arena->endpoint(slot);
  if (e->state.load(std::memory_order_relaxed) != kEpBound) return;
  e->state.store(kEpFree, std::memory_order_release);
  n->arena->hdr()->bind_seq.fetch_add(1, std::memory_order_acq_rel);
  ring_agent(n);  // the agent re-reads the table (directory) now, not at its next timer
  e->closed_head = e->inbox_head.load(std::memory_order_relaxed);
  e->closed_gen = e->gen.fetch_add(1, std::memory_order_acq_rel);
  purge_locked(n, slot, err);
  for (auto &ns : e->notify) {
    ns.bits.store(0, std::memory_order_relaxed);
    ns.src.store(0, std::memory_order_relaxed);
  }
  e->notify_pending.store(0, std::memory_order_relaxed);
  // Wake anyone sleeping on this endpoint so that they notice.
  e->wake.fetch_add(kWakeStep, std::memory_order_acq_rel);
  futex_wake(&e->wake, INT_MAX);
}

namespace {
struct Claim {
  uint32_t slot, which, pos;
};
}  // namespace

void reap_proc_locked(dvs_node *n, uint32_t p) {
  Arena &a = *n->arena;
  ArenaHeader *h = a.hdr();
  ProcSlot *ps = a.proc(p);
  if (ps->state.load(std::memory_order_relaxed) != kProcLive) return;
  const uint32_t claimer = p + 1;

  // 1. Cells the dead process claimed but never published.
  std::vector<Claim> claims;
  for (uint32_t s = 0; s < h->cfg.max_endpoints; s++) {
    if (!a.endpoint(s)->keyed) continue;
    for (uint32_t which = 0; which < 2; which++) {
      RingRef r = ring_ref(a, s, which);
      uint32_t head = r.head->load(std::memory_order_relaxed);
      uint32_t tail = r.tail->load(std::memory_order_relaxed);
      uint32_t span = tail - head + 1;
      if (span > r.mask + 1) span = r.mask + 1;
      for (uint32_t k = 0; k < span; k++) {
        uint32_t pos = head + k, idx = pos & r.mask;
        uint64_t w = r.cells[idx].word.load(std::memory_order_acquire);
        if (cell_claimer(w) == claimer && cell_seq(w, idx) == pos) claims.push_back({s, which, pos});
      }
    }
  }

  // 2. Blocks: held by the dead process, or bound for one of its unpublished cells.
  for (uint32_t id = 0; id < h->total_blocks; id++) {
    BlockMeta *b = a.block(id);
    uint64_t w = b->owner.load(std::memory_order_acquire);
    if (!w) continue;
    uint64_t kind = own_kind(w);
    if ((kind == kOwnAlloc || kind == kOwnRecv) && own_index(w) == p) {
      slab_free_if(a, id, w);
    } else if (kind == kOwnQueued) {
      for (const Claim &c : claims)
        if (own_index(w) == c.slot && own_ring(w) == c.which && own_low(w) == c.pos) slab_free_if(a, id, w);
    }
  }

  // 3. Turn its claims into skip records so consumers never stall behind them.
  for (const Claim &c : claims) {
    RingRef r = ring_ref(a, c.slot, c.which);
    Cell *cell = &r.cells[c.pos & r.mask];
    cell->kind = kKindSkip;
    cell->block = kNone;
    cell->len = 0;
    ring_publish(r, cell, c.pos);
    wake_consumer(n, a.endpoint(c.slot));
  }

  // 4. Its endpoints: unbound, queued messages freed, waiting callers told.
  for (uint32_t s = 0; s < h->cfg.max_endpoints; s++) {
    EndpointSlot *e = a.endpoint(s);
    // A dead agent's proxies: what waited in them never left this node (EDVSNOTCONN).
    if (e->state.load(std::memory_order_relaxed) == kEpBound && e->owner_proc == p)
      unbind_locked(n, s, e->kind == kEpLocal ? EDVSDSTDIED : EDVSNOTCONN);
  }

  ps->state.store(kProcFree, std::memory_order_release);
  h->reaped_procs.fetch_add(1, std::memory_order_relaxed);
  arena_space_freed(n);
}

int reap_dead_locked(dvs_node *n) {
  Arena &a = *n->arena;
  int count = 0;
  for (uint32_t p = 0; p < a.hdr()->cfg.max_procs; p++) {
    if (p == n->proc) continue;
    ProcSlot *ps = a.proc(p);
    if (ps->state.load(std::memory_order_acquire) != kProcLive) continue;
    if (pid_alive(pid_t(ps->pid), ps->start_time)) continue;
    reap_proc_locked(n, p);
    count++;
  }
  return count;
}

bool handle_stranded(dvs_node *n, uint32_t slot, uint32_t dst_gen, uint32_t pos) {
  lock_arena(n);
  EndpointSlot *e = n->arena->endpoint(slot);
  // Delivered if the incarnation we sent to had consumed our position before it went away.
  bool delivered = e->closed_gen == dst_gen && int32_t(pos - e->closed_head) < 0;
  if (e->state.load(std::memory_order_relaxed) == kEpFree) purge_locked(n, slot);
  unlock_arena(n);
  return delivered;
}

}  // namespace dvs
