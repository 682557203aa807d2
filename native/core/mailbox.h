// mailbox.h — the per-endpoint rings: bounded, lock-free, multi-producer
// single-consumer queues of message descriptors (Cells).
//
// Each cell's 64-bit word holds a sequence number (low 32 bits) and the
// claiming process (high 32 bits, slot + 1). The sequence is stored relative
// to the cell's index (stored = seq - index) so that an all-zero ring is a
// valid empty ring. For a ring of n cells and position pos (index = pos % n):
//   seq == pos, claimer 0      free for the producer of position pos
//   seq == pos, claimer p+1    claimed by process p, being written
//   seq == pos + 1             published, ready for the consumer
//   seq == pos + n             consumed, free for position pos + n
// A producer claims by CAS on the cell word itself (so the claim records who
// holds the cell, atomically), then advances the tail (other producers help).
// A producer that dies holding a claim leaves a cell the reaper can identify
// and turn into a skip record, so the consumer never stalls behind it.
#pragma once
#include "arena.h"

namespace dvs {

struct RingRef {
  Cell *cells;
  uint32_t mask;
  std::atomic<uint32_t> *tail;
  std::atomic<uint32_t> *head;
};

inline RingRef ring_ref(const Arena &a, uint32_t slot, uint32_t which) {
  EndpointSlot *e = a.endpoint(slot);
  RingRef r;
  r.cells = a.ring(slot, which);
  r.mask = a.ring_cells(which) - 1;
  r.tail = which == kInbox ? &e->inbox_tail : &e->reply_tail;
  r.head = which == kInbox ? &e->inbox_head : &e->reply_head;
  return r;
}

inline uint32_t cell_seq(uint64_t word, uint32_t idx) { return uint32_t(word) + idx; }
inline uint32_t cell_claimer(uint64_t word) { return uint32_t(word >> 32); }
inline uint64_t cell_word(uint32_t seq, uint32_t idx, uint32_t claimer) {
  return (uint64_t(claimer) << 32) | uint32_t(seq - idx);
}

// True when the next position is certainly taken (ring full right now).
inline bool ring_full(const RingRef &r) {
  uint32_t pos = r.tail->load(std::memory_order_relaxed);
  uint32_t idx = pos & r.mask;
  uint64_t w = r.cells[idx].word.load(std::memory_order_acquire);
  return int32_t(cell_seq(w, idx) - pos) < 0;
}

// Claims the next cell for `claimer` (process slot + 1). Returns false when full.
inline bool ring_claim(const RingRef &r, uint32_t claimer, uint32_t *pos_out, Cell **cell_out) {
  uint32_t pos = r.tail->load(std::memory_order_relaxed);
  for (;;) {
    uint32_t idx = pos & r.mask;
    Cell *c = &r.cells[idx];
    uint64_t w = c->word.load(std::memory_order_acquire);
    int32_t diff = int32_t(cell_seq(w, idx) - pos);
    if (diff == 0) {
      if (cell_claimer(w) == 0) {
        if (c->word.compare_exchange_weak(w, cell_word(pos, idx, claimer), std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
          uint32_t expect = pos;
          r.tail->compare_exchange_strong(expect, pos + 1, std::memory_order_release, std::memory_order_relaxed);
          *pos_out = pos;
          *cell_out = c;
          return true;
        }
      } else {  // claimed, tail not yet advanced: help
        uint32_t expect = pos;
        r.tail->compare_exchange_strong(expect, pos + 1, std::memory_order_release, std::memory_order_relaxed);
      }
      pos = r.tail->load(std::memory_order_relaxed);
    } else if (diff < 0) {
      return false;
    } else {
      // The cell at `pos` is already published: either our tail read is stale,
      // or its claimer died before advancing the tail and the reaper published
      // a skip record in its place. Help the tail past it either way.
      uint32_t expect = pos;
      r.tail->compare_exchange_strong(expect, pos + 1, std::memory_order_release, std::memory_order_relaxed);
      pos = r.tail->load(std::memory_order_relaxed);
    }
  }
}

// Makes a claimed cell visible to the consumer. The exchange is a full
// barrier (one locked instruction on x86), which the producer needs anyway
// before it reads the consumer's wake word (see wake_consumer_after_publish).
inline void ring_publish(const RingRef &r, Cell *c, uint32_t pos) {
  c->word.exchange(cell_word(pos + 1, pos & r.mask, 0), std::memory_order_seq_cst);
}

// Consumer: the published cell at `head`, or null.
inline Cell *ring_peek(const RingRef &r, uint32_t head) {
  uint32_t idx = head & r.mask;
  Cell *c = &r.cells[idx];
  uint64_t w = c->word.load(std::memory_order_acquire);
  return (cell_seq(w, idx) == head + 1 && cell_claimer(w) == 0) ? c : nullptr;
}

// Consumer: frees the cell at `head` for the next round and advances head.
inline void ring_pop(const RingRef &r, Cell *c, uint32_t head) {
  c->word.store(cell_word(head + r.mask + 1, head & r.mask, 0), std::memory_order_release);
  r.head->store(head + 1, std::memory_order_relaxed);
}

}  // namespace dvs
