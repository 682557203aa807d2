// pending_table.h — the calls (and acknowledged sends) this node forwarded to
// other nodes and still waits an answer for: (dc, caller, call id) -> the
// caller's incarnation and the peer. An open-addressing table with linear
// probing and backward-shift deletion: no allocation per entry, only when it
// grows (doubling). Used by the engine thread only.
#pragma once
#include <cstdint>
#include <vector>

namespace dvs::engine {

struct Pending {
  uint32_t dc;
  int32_t caller;
  uint32_t call_id;
  uint32_t caller_gen;
  uint32_t peer;
  int32_t dst;  // the remote endpoint it went to
  uint32_t used;
  // A message forwarded on behalf of another node (stale location): its
  // answer goes back to `origin` as a frame of kind `answer`; kNoOrigin = a
  // caller on this node.
  uint32_t origin = 0xffffffffu;
  uint32_t answer = 0;
};
constexpr uint32_t kNoOrigin = 0xffffffffu;

class PendingTable {
 public:
  explicit PendingTable(uint32_t capacity = 4096) : slots_(capacity) {}

  void put(const Pending &p) {
    if ((count_ + 1) * 4 > slots_.size() * 3) grow();
    uint32_t i = find(p.dc, p.caller, p.call_id);
    if (!slots_[i].used) count_++;
    slots_[i] = p;
    slots_[i].used = 1;
  }

  // Removes and returns the entry; false when there is none.
  bool take(uint32_t dc, int32_t caller, uint32_t call_id, Pending *out) {
    uint32_t i = find(dc, caller, call_id);
    if (!slots_[i].used) return false;
    *out = slots_[i];
    erase_at(i);
    return true;
  }

  // The entry, or nullptr (valid until the next put/take).
  const Pending *find_entry(uint32_t dc, int32_t caller, uint32_t call_id) const {
    uint32_t i = find(dc, caller, call_id);
    return slots_[i].used ? &slots_[i] : nullptr;
  }

  // Calls f(entry&) on every entry; f may change its non-key fields (peer, dst, origin, answer).
  template <class F>
  void update(F f) {
    for (Pending &s : slots_)
      if (s.used) f(s);
  }

  // Removes every entry matching pred, calling f(entry) for each.
  template <class P, class F>
  void take_if(P pred, F f) {
    for (uint32_t i = 0; i < slots_.size();) {
      if (slots_[i].used && pred(slots_[i])) {
        Pending p = slots_[i];
        erase_at(i);  // shifts a later entry into i: look at i again
        f(p);
      } else {
        i++;
      }
    }
  }

  uint32_t size() const { return count_; }

 private:
  static uint32_t hash(uint32_t dc, int32_t caller, uint32_t call_id) {
    uint64_t k = (uint64_t(uint32_t(caller)) << 32 | call_id) ^ (uint64_t(dc) * 0x9e3779b97f4a7c15ULL);
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return uint32_t(k);
  }
  uint32_t find(uint32_t dc, int32_t caller, uint32_t call_id) const {
    uint32_t mask = uint32_t(slots_.size() - 1);
    for (uint32_t i = hash(dc, caller, call_id) & mask;; i = (i + 1) & mask) {
      const Pending &s = slots_[i];
      if (!s.used || (s.dc == dc && s.caller == caller && s.call_id == call_id)) return i;
    }
  }
  void erase_at(uint32_t i) {
    uint32_t mask = uint32_t(slots_.size() - 1);
    slots_[i].used = 0;
    count_--;
    for (uint32_t j = (i + 1) & mask; slots_[j].used; j = (j + 1) & mask) {
      uint32_t home = hash(slots_[j].dc, slots_[j].caller, slots_[j].call_id) & mask;
      // Move j back into the hole i when its home position is not in (i, j].
      if (((j - home) & mask) >= ((j - i) & mask)) {
        slots_[i] = slots_[j];
        slots_[j].used = 0;
        i = j;
      }
    }
  }
  void grow() {
    std::vector<Pending> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, Pending{});
    count_ = 0;
    for (const Pending &p : old)
      if (p.used) put(p);
  }
  std::vector<Pending> slots_;
  uint32_t count_ = 0;
};

}  // namespace dvs::engine
