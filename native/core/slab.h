// slab.h — the payload allocator: fixed size classes of blocks in the arena.
// A block's state is its owner word (layout.h), changed with one atomic
// operation, so a process that dies at any instruction leaves every block
// attributable to exactly one owner and the reaper can reclaim it.
#pragma once
#include "arena.h"

namespace dvs {

// Allocates a block of at least `len` bytes for `owner` (an own_* word),
// scanning from the caller's per-class cursor (process-local, so allocation
// needs no shared counter). Returns the block id, or kNone when every
// fitting block is in use.
uint32_t slab_alloc(Arena &a, uint32_t len, uint64_t owner, uint32_t *cursors);
// Frees a block whose owner word equals `expected`; false if it did not.
bool slab_free_if(Arena &a, uint32_t id, uint64_t expected);
// Number of blocks in use per class (a scan; for stats and leak checks).
void slab_in_use(const Arena &a, uint32_t *per_class);

}  // namespace dvs
