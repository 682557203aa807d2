// endpoint_table.h — the node's endpoint table: (dc, ep) -> slot through an
// open-addressing hash index read lock-free under a seqlock (writers hold the
// arena lock), plus binding and unbinding of slots.
#pragma once
#include "../include/dvs.h"
#include "arena.h"

namespace dvs {

uint32_t ep_lookup(const Arena &a, uint32_t dc, int32_t ep);
// Under the arena lock:
uint32_t ep_lookup_locked(const Arena &a, uint32_t dc, int32_t ep);
// A slot keyed (dc, ep) for a new binding (reusing the key's old slot, else a
// never-used slot, else a free slot re-keyed). kNone if the table is full.
uint32_t ep_slot_for_locked(Arena &a, uint32_t dc, int32_t ep);
void index_rebuild_locked(Arena &a);

// A remembered answer of ep_lookup for (dc, ep).
struct SlotRef {
  uint32_t dc = kNone;
  int32_t ep = -1;
  uint32_t slot = 0, gen = 0;
};

// (dc, ep) -> its bound slot and incarnation through the cache entry `c`,
// re-validated against the slot on every use (still bound with the same
// incarnation means still keyed (dc, ep): a key only changes after an unbind).
// EDVSNOTBIND when (dc, ep) is not bound.
inline int lookup_bound(const Arena &a, SlotRef &c, uint32_t dc, int32_t ep, uint32_t *slot, uint32_t *gen) {
  if (c.dc == dc && c.ep == ep) {
    EndpointSlot *e = a.endpoint(c.slot);
    if (e->state.load(std::memory_order_acquire) == kEpBound && e->gen.load(std::memory_order_acquire) == c.gen) {
      *slot = c.slot;
      *gen = c.gen;
      return 0;
    }
  }
  uint32_t s = ep_lookup(a, dc, ep);
  if (s == kNone) return EDVSNOTBIND;
  EndpointSlot *e = a.endpoint(s);
  uint32_t g = e->gen.load(std::memory_order_acquire);
  if (e->state.load(std::memory_order_acquire) != kEpBound) return EDVSNOTBIND;
  c = {dc, ep, s, g};
  *slot = s;
  *gen = g;
  return 0;
}

}  // namespace dvs
