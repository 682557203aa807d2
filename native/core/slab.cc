#include "slab.h"

namespace dvs {

uint32_t slab_alloc(Arena &a, uint32_t len, uint64_t owner, uint32_t *cursors) {
  ArenaHeader *h = a.hdr();
  for (uint32_t c = 0; c < h->cfg.class_count; c++) {
    ClassState &cs = h->classes[c];
    if (cs.size < len) continue;
    uint32_t n = cs.count;
    // Round-robin from this process's cursor: with FIFO traffic the next
    // block is the one freed longest ago, so the first probe almost always
    // succeeds. Processes start at different places (their slot) so that
    // they rarely race for the same block.
    uint32_t i = cursors[c] % n;
    uint8_t *pool = a.base() + cs.pool_off;
    for (uint32_t k = 0; k < n; k++) {
      BlockMeta *b = reinterpret_cast<BlockMeta *>(pool + uint64_t(i) * cs.stride);
      if (b->owner.load(std::memory_order_relaxed) == 0) {
        uint64_t z = 0;
        if (b->owner.compare_exchange_strong(z, owner, std::memory_order_acquire, std::memory_order_relaxed)) {
          cursors[c] = i + 1;
          return cs.first_block + i;
        }
      }
      if (++i == n) i = 0;
    }
  }
  return kNone;
}

bool slab_free_if(Arena &a, uint32_t id, uint64_t expected) {
  BlockMeta *b = a.block(id);
  return b->owner.compare_exchange_strong(expected, 0, std::memory_order_release, std::memory_order_relaxed);
}

void slab_in_use(const Arena &a, uint32_t *per_class) {
  const ArenaHeader *h = a.hdr();
  for (uint32_t c = 0; c < h->cfg.class_count; c++) {
    const ClassState &cs = h->classes[c];
    uint32_t used = 0;
    const uint8_t *pool = a.base() + cs.pool_off;
    for (uint32_t i = 0; i < cs.count; i++)
      if (reinterpret_cast<const BlockMeta *>(pool + uint64_t(i) * cs.stride)->owner.load(std::memory_order_relaxed))
        used++;
    per_class[c] = used;
  }
}

}  // namespace dvs
