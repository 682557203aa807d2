// endpoint_table.h — the node's endpoint table: (dc, ep) -> slot through an
// open-addressing hash index read lock-free under a seqlock (writers hold the
// arena lock), plus binding and unbinding of slots.
#pragma once
#include "arena.h"

namespace dvs {

uint32_t ep_lookup(const Arena &a, uint32_t dc, int32_t ep);
// Under the arena lock:
uint32_t ep_lookup_locked(const Arena &a, uint32_t dc, int32_t ep);
// A slot keyed (dc, ep) for a new binding (reusing the key's old slot, else a
// never-used slot, else a free slot re-keyed). kNone if the table is full.
uint32_t ep_slot_for_locked(Arena &a, uint32_t dc, int32_t ep);
void index_rebuild_locked(Arena &a);

}  // namespace dvs
