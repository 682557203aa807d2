// recv_channel.h — the receiving half of one peer channel: duplicate
// suppression, the reorder buffer, in-order delivery (straight from the
// receive buffer when nothing is pending), reassembly of fragmented
// messages, the advertised window, and the SACK ranges for ACKs.
//
// A message the Handler refuses stays (with everything after it) until
// deliver() is called again; datagrams arriving meanwhile are stored and
// shrink the advertised window.
#pragma once
#include <cstdint>
#include <vector>

#include "wire.h"

namespace dvs::net {

// Where complete messages go (the transport's Handler, with counters).
class MessageSink {
 public:
  virtual bool message(const uint8_t *p, uint32_t len) = 0;
  // A fragment that does not continue the message being reassembled (only a
  // faulty sender can produce one; the partial message is dropped).
  virtual void inconsistent() = 0;

 protected:
  ~MessageSink() = default;
};

class RecvChannel {
 public:
  enum class Result { kNew, kDup, kOutOfWindow, kNoRoom };

  void init(uint32_t window_bytes);
  void reset();  // a new session: everything stored is dropped; sequence restarts at 0
  // A validated DATA datagram (header + body) that arrived at now_ns.
  Result on_data(uint64_t seq, const uint8_t *p, uint32_t len, uint64_t now_ns, MessageSink &sink);
  // Offers held messages again. Returns true when delivery made progress.
  bool deliver(MessageSink &sink);

  uint64_t cum() const { return next_; }
  // The newest DATA sequence received since the last call (wire::kNoEcho if
  // none) and how long ago (µs before now_ns) it arrived.
  uint64_t take_echo(uint64_t now_ns, uint32_t *delay_us) {
    uint64_t e = echo_;
    echo_ = wire::kNoEcho;
    uint64_t d = e == wire::kNoEcho || now_ns < echo_ns_ ? 0 : (now_ns - echo_ns_) / 1000;
    *delay_us = static_cast<uint32_t>(d > 0xffffffffu ? 0xffffffffu : d);
    return e;
  }
  // The advertised window: bytes the sender may have in flight beyond the
  // cumulative ACK. Out-of-order datagrams are part of the sender's flight, so
  // only the bytes stored below cum() (received in order, not yet delivered)
  // shrink it; stored_ never exceeds window_ when the sender obeys it.
  uint32_t window() const {
    uint32_t below = stored_ - above_;
    return below >= window_ ? 0 : window_ - below;
  }
  bool held() const { return blocked_; }
  // Datagrams above a missing one are stored (SACK ranges exist).
  bool has_gap() const { return max_seen_ > next_; }
  // SACK ranges above cum(), at most max.
  uint32_t sack(wire::SackRange *out, uint32_t max) const;
  // One past the highest sequence received, as an offset from cum() (0 = none above).
  uint32_t high() const { return static_cast<uint32_t>(max_seen_ > next_ ? max_seen_ - next_ : 0); }

 private:
  struct Slot {
    int32_t buf = -1;  // index into bufs_, -1 = empty
    uint32_t len = 0;
  };
  Slot &slot(uint64_t seq) { return slots_[seq & (wire::kSeqWindow - 1)]; }
  const Slot &slot(uint64_t seq) const { return slots_[seq & (wire::kSeqWindow - 1)]; }
  void store(uint64_t seq, const uint8_t *p, uint32_t len);
  void release(uint64_t seq);
  // Delivers the chunks of one datagram body from *off; false when refused
  // (*off then names the refused chunk, or is past it when the refused
  // message is the reassembled one).
  bool consume(const uint8_t *body, uint32_t n, uint32_t *off, MessageSink &sink);

  uint32_t window_ = 0;
  std::vector<Slot> slots_;
  std::vector<std::vector<uint8_t>> bufs_;  // stored datagrams' bytes, reused
  std::vector<int32_t> free_bufs_;          // LIFO: the warmest buffer first
  uint64_t next_ = 0;     // every seq below is received (the cumulative ACK)
  uint64_t deliver_ = 0;  // next datagram to deliver (<= next_)
  uint32_t deliver_off_ = 0;
  uint64_t max_seen_ = 0;  // one past the highest stored seq
  uint32_t stored_ = 0;    // bytes held in slots
  uint32_t above_ = 0;     // of which at sequences >= next_ (out of order)
  bool blocked_ = false;   // the Handler refused; wait for deliver()
  uint64_t echo_ = wire::kNoEcho, echo_ns_ = 0;
  std::vector<uint8_t> reasm_;
  uint32_t reasm_len_ = 0, reasm_have_ = 0;
  bool reasm_active_ = false, reasm_ready_ = false;
};

}  // namespace dvs::net
