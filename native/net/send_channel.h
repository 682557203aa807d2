// send_channel.h — the sending half of one peer channel: messages are framed
// into datagrams as they are submitted (small ones coalesced, large ones
// fragmented) in a byte ring that holds every datagram until it is
// cumulatively acknowledged; sequence numbers, flow control (own window and
// the peer's advertised window), selective retransmission from SACK holes,
// and the retransmission timeout from measured RTT (Jacobson/Karels, Karn's
// rule, exponential backoff).
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "wire.h"

namespace dvs::net {

// Where a channel's datagrams go (the transport: fault injection, socket batch).
class Emitter {
 public:
  // A DATA datagram in the ring, header written but not sealed: the transport
  // fills in the acknowledgement of the reverse direction, seals and queues it.
  virtual void emit_data(uint8_t *p, uint32_t len) = 0;

 protected:
  ~Emitter() = default;
};

struct SendConfig {
  uint32_t mtu = 1472, window_bytes = 4 << 20, rto_min_us = 1000, rto_max_us = 200000;
  uint32_t ack_delay_us = 300;  // the peer may hold an acknowledgement this long (added to the RTO)
};

class SendChannel {
 public:
  void init(const SendConfig &cfg);
  // A new session: drops every queued and unacknowledged datagram; sequence
  // numbers restart at 0 and new datagrams carry `s`. RTT estimates are kept.
  void reset(const wire::Session &s);

  // Frames one message (the concatenation of iov[0..n)); false, changing
  // nothing, when the ring cannot take it whole.
  bool submit(const iovec *iov, int n, uint32_t len);
  uint32_t space() const;
  // Finishes the partly filled datagram so that send_new() may send it.
  void close_open();
  // Sends the closed, unsent datagrams the windows allow.
  void send_new(uint64_t now, Emitter &out);
  // False when `cum` acknowledges datagrams never sent (the datagram carrying
  // it is refused).
  bool ack_valid(uint64_t cum) const { return cum <= unsent_; }
  // An acknowledgement (a pure ACK, or the one every DATA carries): cum = next
  // expected sequence, window = bytes the receiver takes beyond cum, echo /
  // echo_delay_us = the newest datagram it received and how long it held that
  // acknowledgement, sack = validated ACK body (SACK ranges) or nullptr.
  // Marks acknowledged datagrams (their ring bytes are freed by reclaim()),
  // samples RTT, retransmits lost datagrams (see detect_losses), sends what
  // the window now allows. False when it acknowledges datagrams never sent.
  bool on_ack(uint64_t cum, uint32_t window, uint64_t echo, uint32_t echo_delay_us, const uint8_t *sack,
              uint64_t now, Emitter &out);
  // Frees the ring bytes of acknowledged datagrams. Called only when no
  // queued (unflushed) send points into them any more.
  void reclaim() { head_ = base_ < next_ ? meta(base_).pos : tail_; }
  // Loss-detection and retransmission timers. Returns ns until the channel's
  // next deadline (UINT64_MAX if none). *probe is set when the peer's window
  // is closed with data waiting and a window probe is due.
  uint64_t on_timer(uint64_t now, Emitter &out, bool *probe);

  bool has_unsent() const { return unsent_ < next_ || open_; }
  uint32_t inflight_bytes() const { return inflight_; }
  uint32_t peer_window() const { return peer_window_; }
  uint32_t srtt_us() const { return srtt_us_; }
  uint32_t rto_us() const;

  uint64_t msgs = 0, bytes = 0, retransmits = 0;

 private:
  struct Meta {
    uint64_t pos;      // ring position of the datagram
    uint64_t sent_ns;  // last (re)transmission
    uint64_t stamp;    // transmission order of the last (re)transmission (stamp_ counter)
    uint32_t len;
    uint16_t retx;     // times retransmitted (Karn: no RTT sample when > 0)
    uint8_t sacked;
  };
  Meta &meta(uint64_t seq) { return meta_[seq & (wire::kSeqWindow - 1)]; }
  uint8_t *at(uint64_t pos) const { return ring_.get() + pos % cap_; }
  bool open_new();
  void retransmit(uint64_t seq, uint64_t now, Emitter &out);
  void delivered(Meta &m);  // m (not yet SACKed) is known to have arrived
  void detect_losses(uint64_t now, Emitter &out);
  uint64_t reo_ns() const;
  void rtt_sample(uint64_t sample_ns);
  uint64_t need_bytes(uint32_t len) const;

  SendConfig cfg_;
  wire::Session session_;
  std::unique_ptr<uint8_t[]> ring_;
  uint64_t cap_ = 0;
  std::vector<Meta> meta_;
  uint64_t head_ = 0, tail_ = 0;           // ring positions: oldest kept datagram, end of written bytes
  uint64_t base_ = 0, unsent_ = 0, next_ = 0;  // seq: oldest unacked, next to send, next to close
  bool open_ = false;                      // a datagram at tail_ is being filled
  uint32_t open_len_ = 0;
  uint32_t inflight_ = 0, peer_window_ = 0;
  uint32_t srtt_us_ = 0, rttvar_us_ = 0;
  uint32_t backoff_ = 0;
  uint64_t last_probe_ns_ = 0;
  uint64_t stamp_ = 0;          // transmissions so far (orders them, also within one instant)
  uint64_t rack_stamp_ = 0;     // latest transmission known to have arrived (RACK)
  uint64_t sacked_end_ = 0;     // one past the highest SACKed sequence (>= base_)
  uint64_t unk_lo_ = 0, unk_hi_ = 0;  // the latest ACK did not report these sequences (too many ranges)
  uint64_t rack_deadline_ = 0;  // re-run loss detection then (0 = none)
  uint64_t rto_ref_ns_ = 0;     // the retransmission timer runs from here (last progress or send into an empty flight)
};

}  // namespace dvs::net
