#include "endpoint_table.h"

#include "futex.h"

namespace dvs {
namespace {

uint32_t hash_key(uint32_t dc, int32_t ep) {
  uint64_t x = (uint64_t(dc) << 32) | uint32_t(ep);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return uint32_t(x);
}

template <typename T>
T load_relaxed(const T *p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

uint32_t probe(const Arena &a, uint32_t dc, int32_t ep) {
  const ArenaHeader *h = a.hdr();
  uint32_t mask = h->cfg.index_size - 1;
  std::atomic<uint32_t> *idx = a.index();
  uint32_t i = hash_key(dc, ep) & mask;
  for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    uint32_t e = idx[i].load(std::memory_order_relaxed);
    if (e == 0) return kNone;
    if (e - 1 >= h->cfg.max_endpoints) continue;
    const EndpointSlot *s = a.endpoint(e - 1);
    if (load_relaxed(&s->dc) == dc && load_relaxed(&s->ep) == ep && load_relaxed(&s->keyed)) return e - 1;
  }
  return kNone;
}

void index_insert(Arena &a, uint32_t slot, uint32_t dc, int32_t ep) {
  const ArenaHeader *h = a.hdr();
  uint32_t mask = h->cfg.index_size - 1;
  std::atomic<uint32_t> *idx = a.index();
  uint32_t i = hash_key(dc, ep) & mask;
  for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    uint32_t e = idx[i].load(std::memory_order_relaxed);
    if (e == 0) {
      idx[i].store(slot + 1, std::memory_order_relaxed);
      return;
    }
  }
}

// Rebuilding (instead of leaving tombstones) keeps probe chains short; the
// table is small and this only runs when a slot changes its key.
void rebuild_entries(Arena &a) {
  const ArenaHeader *h = a.hdr();
  std::atomic<uint32_t> *idx = a.index();
  for (uint32_t i = 0; i < h->cfg.index_size; i++) idx[i].store(0, std::memory_order_relaxed);
  for (uint32_t i = 0; i < h->cfg.max_endpoints; i++) {
    EndpointSlot *e = a.endpoint(i);
    if (e->keyed) index_insert(a, i, e->dc, e->ep);
  }
}

void write_begin(Arena &a) {
  a.hdr()->index_version.fetch_add(1, std::memory_order_acq_rel);
  std::atomic_thread_fence(std::memory_order_release);
}
void write_end(Arena &a) { a.hdr()->index_version.fetch_add(1, std::memory_order_release); }

}  // namespace

uint32_t ep_lookup(const Arena &a, uint32_t dc, int32_t ep) {
  std::atomic<uint32_t> &ver = a.hdr()->index_version;
  for (uint32_t tries = 0;; tries++) {
    uint32_t v1 = ver.load(std::memory_order_acquire);
    if (v1 & 1) {
      // A writer is inside; if it died there, taking the lock repairs the index.
      if (tries > 100000) {
        Arena &m = const_cast<Arena &>(a);
        if (m.lock()) index_rebuild_locked(m);
        m.unlock();
        tries = 0;
      }
      cpu_relax();
      continue;
    }
    uint32_t r = probe(a, dc, ep);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (ver.load(std::memory_order_relaxed) == v1) return r;
  }
}

uint32_t ep_lookup_locked(const Arena &a, uint32_t dc, int32_t ep) { return probe(a, dc, ep); }

uint32_t ep_slot_for_locked(Arena &a, uint32_t dc, int32_t ep) {
  uint32_t s = probe(a, dc, ep);
  if (s != kNone) return s;
  const ArenaHeader *h = a.hdr();
  uint32_t victim = kNone;
  for (uint32_t i = 0; i < h->cfg.max_endpoints; i++) {
    EndpointSlot *e = a.endpoint(i);
    if (!e->keyed) {
      victim = i;
      break;
    }
    if (victim == kNone && e->state.load(std::memory_order_relaxed) == kEpFree) victim = i;
  }
  if (victim == kNone) return kNone;
  EndpointSlot *e = a.endpoint(victim);
  bool rekey = e->keyed;
  write_begin(a);
  __atomic_store_n(&e->keyed, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&e->dc, dc, __ATOMIC_RELAXED);
  __atomic_store_n(&e->ep, ep, __ATOMIC_RELAXED);
  __atomic_store_n(&e->keyed, 1u, __ATOMIC_RELAXED);
  if (rekey)
    rebuild_entries(a);
  else
    index_insert(a, victim, dc, ep);
  write_end(a);
  return victim;
}

void index_rebuild_locked(Arena &a) {
  const ArenaHeader *h = a.hdr();
  uint32_t v = h->index_version.load(std::memory_order_relaxed);
  if (!(v & 1)) write_begin(a);
  rebuild_entries(a);
  write_end(a);
}

}  // namespace dvs
