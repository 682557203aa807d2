// fault.h — deterministic fault injection (loss, duplication, reordering,
// delay/jitter) applied to outgoing datagrams, and loss to incoming ones.
// Seeded xorshift generator: the same seed and traffic give the same faults.
#pragma once
#include <netinet/in.h>

#include <cstdint>
#include <vector>

#include "transport.h"

namespace dvs::net {

class FaultInjector {
 public:
  void configure(const FaultConfig &f);
  bool active() const { return active_; }
  // Incoming: true when this datagram is to be dropped.
  bool lose_incoming();
  // Outgoing: returns how many copies to send now (0, 1 or 2); delayed or
  // held-back copies are kept and come out of release().
  uint32_t route(const uint8_t *p, uint32_t len, const sockaddr_in &to, uint64_t now_ns);
  // Hands each held datagram whose time has come to send(p, len, to); returns
  // the ns until the next one is due (UINT64_MAX when none is held).
  template <class Send>
  uint64_t release(uint64_t now_ns, Send &&send);

  uint64_t dropped = 0, duplicated = 0, reordered = 0;

 private:
  struct Held {
    uint64_t due;
    sockaddr_in to;
    std::vector<uint8_t> bytes;
  };
  uint64_t next();
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  void hold(const uint8_t *p, uint32_t len, const sockaddr_in &to, uint64_t due);

  FaultConfig cfg_;
  bool active_ = false;
  uint64_t state_ = 1;
  std::vector<Held> held_;                // in no particular order; few at a time
  std::vector<std::vector<uint8_t>> spare_;  // reused byte buffers
};

template <class Send>
uint64_t FaultInjector::release(uint64_t now_ns, Send &&send) {
  uint64_t next_due = UINT64_MAX;
  for (size_t i = 0; i < held_.size();) {
    if (held_[i].due <= now_ns) {
      send(held_[i].bytes.data(), static_cast<uint32_t>(held_[i].bytes.size()), held_[i].to);
      spare_.push_back(std::move(held_[i].bytes));
      held_[i] = std::move(held_.back());
      held_.pop_back();
    } else {
      if (held_[i].due - now_ns < next_due) next_due = held_[i].due - now_ns;
      i++;
    }
  }
  return next_due;
}

}  // namespace dvs::net
