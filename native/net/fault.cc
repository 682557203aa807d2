// fault.cc — the fault injector's decisions and its queue of held datagrams.
#include "fault.h"

#include <time.h>

namespace dvs::net {

void FaultInjector::configure(const FaultConfig &f) {
  cfg_ = f;
  active_ = f.enabled();
  uint64_t seed = f.seed;
  if (seed == 0) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = static_cast<uint64_t>(ts.tv_nsec) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(ts.tv_sec);
  }
  state_ = seed | 1;
}

uint64_t FaultInjector::next() {  // xorshift64*
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return state_ * 0x2545F4914F6CDD1Dull;
}

bool FaultInjector::lose_incoming() {
  if (cfg_.loss <= 0 || uniform() >= cfg_.loss) return false;
  dropped++;
  return true;
}

void FaultInjector::hold(const uint8_t *p, uint32_t len, const sockaddr_in &to, uint64_t due) {
  std::vector<uint8_t> bytes;
  if (!spare_.empty()) {
    bytes = std::move(spare_.back());
    spare_.pop_back();
  }
  bytes.assign(p, p + len);
  held_.push_back(Held{due, to, std::move(bytes)});
}

uint32_t FaultInjector::route(const uint8_t *p, uint32_t len, const sockaddr_in &to, uint64_t now_ns) {
  if (cfg_.loss > 0 && uniform() < cfg_.loss) {
    dropped++;
    return 0;
  }
  uint32_t copies = 1;
  if (cfg_.dup > 0 && uniform() < cfg_.dup) {
    duplicated++;
    copies = 2;
  }
  uint64_t delay = static_cast<uint64_t>(cfg_.delay_us) * 1000;
  if (cfg_.jitter_us > 0) delay += next() % (static_cast<uint64_t>(cfg_.jitter_us) * 1000);
  bool held_back = cfg_.reorder > 0 && uniform() < cfg_.reorder;
  if (held_back) {
    reordered++;
    delay += 50000 + next() % 450000;  // 50–500 µs: later datagrams overtake it
  }
  if (delay == 0) return copies;
  for (uint32_t i = 0; i < copies; i++) hold(p, len, to, now_ns + delay);
  return 0;
}

}  // namespace dvs::net
