// send_channel.cc — framing into the ring, windows, ACK processing, RTO.
#include "send_channel.h"

#include <algorithm>
#include <cstring>

namespace dvs::net {

using namespace wire;

namespace {
constexpr uint32_t kOverhead = kHeaderSize + kChunkHeader;  // per datagram for one chunk
constexpr uint32_t kMinTail = kChunkHeader + 16;  // a datagram with less room left is closed
constexpr uint32_t kFragStartMin = 256;  // a large message starts in the open datagram if this much fits
constexpr uint64_t kDupThresh = 3;       // a hole with this many SACKed datagrams above it is lost
constexpr uint32_t kMaxBackoff = 16;
constexpr uint32_t kRtoBurst = 64;  // datagrams resent per timeout (the oldest unSACKed ones)

// Copies len bytes from an iovec cursor.
struct IovReader {
  const iovec *iov;
  int n;
  size_t at = 0;
  void copy(uint8_t *dst, uint32_t len) {
    while (len > 0) {
      size_t avail = iov->iov_len - at;
      if (avail == 0) {
        iov++;
        n--;
        at = 0;
        continue;
      }
      size_t k = std::min<size_t>(avail, len);
      memcpy(dst, static_cast<const uint8_t *>(iov->iov_base) + at, k);
      dst += k;
      len -= static_cast<uint32_t>(k);
      at += k;
    }
  }
};
}  // namespace

uint64_t SendChannel::need_bytes(uint32_t len) const {
  // Worst case ring growth for one message: the open datagram, a wrap's
  // padding, the last datagram's reservation, and one header per fragment.
  uint32_t per = cfg_.mtu - kOverhead;
  return len + (static_cast<uint64_t>(len) / per + 3) * kOverhead + 3ull * cfg_.mtu;
}

void SendChannel::init(const SendConfig &cfg) {
  cfg_ = cfg;
  // A delayed acknowledgement must never look like a loss: keep a margin.
  cfg_.rto_min_us = std::max(cfg_.rto_min_us, cfg_.ack_delay_us + 500);
  cfg_.rto_max_us = std::max(cfg_.rto_max_us, cfg_.rto_min_us);
  cap_ = std::max<uint64_t>(2ull * cfg.window_bytes, 2 * need_bytes(kMaxMessage));
  ring_.reset(new uint8_t[cap_]);
  meta_.assign(kSeqWindow, Meta{});
  peer_window_ = cfg.window_bytes;
}

void SendChannel::reset(const Session &s) {
  session_ = s;
  head_ = tail_ = 0;
  base_ = unsent_ = next_ = 0;
  open_ = false;
  open_len_ = 0;
  inflight_ = 0;
  peer_window_ = cfg_.window_bytes;
  backoff_ = 0;
  last_probe_ns_ = 0;
  rack_stamp_ = 0;
  sacked_end_ = 0;
  unk_lo_ = unk_hi_ = 0;
  rack_deadline_ = 0;
  rto_ref_ns_ = 0;
}

uint32_t SendChannel::rto_us() const {
  uint64_t rto = srtt_us_ == 0 ? std::max<uint32_t>(cfg_.rto_min_us, cfg_.rto_max_us / 4)
                               : uint64_t{srtt_us_} + std::max<uint32_t>(100, 4 * rttvar_us_) + cfg_.ack_delay_us;
  rto = std::max<uint64_t>(rto, cfg_.rto_min_us) << backoff_;
  return static_cast<uint32_t>(std::min<uint64_t>(rto, cfg_.rto_max_us));
}

void SendChannel::rtt_sample(uint64_t sample_ns) {
  uint32_t r = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(sample_ns / 1000, 60000000)));
  if (srtt_us_ == 0) {
    srtt_us_ = r;
    rttvar_us_ = r / 2;
    return;
  }
  uint32_t diff = srtt_us_ > r ? srtt_us_ - r : r - srtt_us_;
  rttvar_us_ = (3 * rttvar_us_ + diff) / 4;
  srtt_us_ = (7 * srtt_us_ + r) / 8;
}

bool SendChannel::open_new() {
  uint64_t pos = tail_;
  uint64_t off = pos % cap_;
  if (cap_ - off < cfg_.mtu) pos += cap_ - off;  // never split a datagram across the wrap
  if (pos + cfg_.mtu - head_ > cap_ || next_ - base_ + 1 >= kSeqWindow) return false;
  tail_ = pos;
  open_ = true;
  open_len_ = kHeaderSize;
  return true;
}

void SendChannel::close_open() {
  if (!open_) return;
  open_ = false;
  if (open_len_ == kHeaderSize) return;
  uint8_t *d = at(tail_);
  write_header(d, kData, 0, session_, next_, open_len_ - kHeaderSize, 0);  // sealed by emit_data()
  meta(next_) = Meta{tail_, 0, 0, open_len_, 0, 0};
  next_++;
  tail_ += open_len_;
}

bool SendChannel::submit(const iovec *iov, int n, uint32_t len) {
  uint32_t per = cfg_.mtu - kOverhead;
  if (len > kMaxMessage || next_ - base_ + len / per + 3 >= kSeqWindow ||
      tail_ - head_ + need_bytes(len) > cap_)
    return false;
  IovReader r{iov, n};
  uint32_t off = 0;
  do {
    if (open_) {
      uint32_t room = cfg_.mtu - open_len_;
      bool start_here = len <= per ? room >= kChunkHeader + len
                                   : off > 0 || room >= kChunkHeader + kFragStartMin;
      if (!start_here) close_open();
    }
    if (!open_) open_new();  // cannot fail: need_bytes() was checked above
    uint8_t *d = at(tail_) + open_len_;
    uint32_t chunk = std::min(len - off, cfg_.mtu - open_len_ - kChunkHeader);
    st32(d, len);
    st32(d + 4, off);
    r.copy(d + kChunkHeader, chunk);
    open_len_ += kChunkHeader + chunk;
    off += chunk;
    if (cfg_.mtu - open_len_ < kMinTail) close_open();
  } while (off < len);
  msgs++;
  bytes += len;
  return true;
}

uint32_t SendChannel::space() const {
  uint32_t per = cfg_.mtu - kOverhead;
  uint64_t used_seqs = next_ - base_ + 4;
  if (used_seqs >= kSeqWindow) return 0;
  uint64_t free = cap_ - (tail_ - head_);
  uint64_t fixed = 3ull * cfg_.mtu + 3ull * kOverhead;
  if (free <= fixed) return 0;
  uint64_t by_bytes = (free - fixed) * per / cfg_.mtu;
  uint64_t by_seqs = (kSeqWindow - used_seqs) * per;
  return static_cast<uint32_t>(std::min<uint64_t>({by_bytes, by_seqs, uint64_t{kMaxMessage}}));
}

void SendChannel::send_new(uint64_t now, Emitter &out) {
  uint32_t limit = std::min(cfg_.window_bytes, peer_window_);
  while (unsent_ < next_) {
    Meta &m = meta(unsent_);
    // One datagram may exceed a (non-zero) window smaller than itself when nothing is in flight.
    if (inflight_ + m.len > limit && (inflight_ > 0 || limit == 0)) break;
    if (base_ == unsent_) rto_ref_ns_ = now;  // the timer starts with the flight
    out.emit_data(at(m.pos), m.len);
    m.sent_ns = now;
    m.stamp = ++stamp_;
    inflight_ += m.len;
    unsent_++;
  }
}

void SendChannel::retransmit(uint64_t seq, uint64_t now, Emitter &out) {
  Meta &m = meta(seq);
  out.emit_data(at(m.pos), m.len);
  m.sent_ns = now;
  m.stamp = ++stamp_;
  m.retx++;
  retransmits++;
}

void SendChannel::delivered(Meta &m) {
  rack_stamp_ = std::max(rack_stamp_, m.stamp);
}

// The reordering allowance: a datagram is lost when one sent after it has
// arrived and this long has passed since it was sent (RACK, RFC 8985, with the
// expected RTT folded in).
uint64_t SendChannel::reo_ns() const {
  uint64_t srtt = srtt_us_ ? srtt_us_ : 1000;
  return (srtt + std::max<uint64_t>(srtt / 4, 100)) * 1000;
}

// Scans the unacknowledged datagrams for losses. A datagram is lost when a
// datagram transmitted after it (stamp order) has arrived and either it is a
// first transmission with kDupThresh datagrams SACKed above it (fast
// retransmit) or reo_ns() has passed since it was sent (this also finds lost
// retransmissions, once per round trip). First transmissions are stamped in
// sequence order, so the scan stops at the first one sent after everything
// known to have arrived.
void SendChannel::detect_losses(uint64_t now, Emitter &out) {
  rack_deadline_ = 0;
  if (rack_stamp_ == 0) return;
  uint64_t reo = reo_ns();
  uint64_t end = std::min(sacked_end_, unsent_);  // above the highest SACK: the RTO's business
  for (uint64_t s = base_; s < end; s++) {
    if (s >= unk_lo_ && s < unk_hi_) {  // not reported: unknown
      s = unk_hi_ - 1;
      continue;
    }
    Meta &m = meta(s);
    if (m.sacked) continue;
    if (m.stamp > rack_stamp_) {
      if (m.retx == 0) break;
      continue;
    }
    if ((m.retx == 0 && s + kDupThresh < sacked_end_) || now >= m.sent_ns + reo) {
      retransmit(s, now, out);
    } else if (rack_deadline_ == 0 || m.sent_ns + reo < rack_deadline_) {
      rack_deadline_ = m.sent_ns + reo;
    }
  }
}

bool SendChannel::on_ack(uint64_t cum, uint32_t window, uint64_t echo, uint32_t echo_delay_us, const uint8_t *sack,
                         uint64_t now, Emitter &out) {
  if (cum > unsent_) return false;
  if (cum < base_) return true;  // an older acknowledgement overtaken by a newer one
  if (echo >= base_ && echo < unsent_ && meta(echo).retx == 0) {  // Karn
    // The receiver held the acknowledgement echo_delay_us: not part of the path's RTT.
    uint64_t raw = now - std::min(now, meta(echo).sent_ns), held = uint64_t{echo_delay_us} * 1000;
    rtt_sample(raw > held ? raw - held : raw);
  }
  bool progress = false;
  if (cum > base_) {
    for (uint64_t s = base_; s < cum; s++) {
      Meta &m = meta(s);
      inflight_ -= m.len;
      if (!m.sacked) delivered(m);
    }
    base_ = cum;
    progress = true;
  }
  if (window > peer_window_ && base_ == unsent_) backoff_ = 0;  // a reopened window ends probe backoff
  peer_window_ = window;
  sacked_end_ = std::max(sacked_end_, base_);
  uint32_t n = sack ? ack_range_count(sack) : 0;
  for (uint32_t i = 0; i < n; i++) {
    SackRange r = ack_range(sack, i);
    uint64_t lo = cum + r.start, hi = std::min<uint64_t>(cum + r.end, unsent_);
    for (uint64_t s = lo; s < hi; s++) {
      Meta &m = meta(s);
      if (m.sacked) continue;
      m.sacked = 1;
      delivered(m);
      progress = true;
    }
    if (hi > lo) sacked_end_ = std::max(sacked_end_, hi);
  }
  if (sack) {
    unk_lo_ = n ? cum + ack_range(sack, n - 1).end : cum;
    unk_hi_ = std::max(unk_lo_, cum + ack_high(sack));
  }
  if (progress) {
    backoff_ = 0;
    rto_ref_ns_ = now;
  }
  // Only a pure ACK reports the receiver's whole state (the SACK ranges): the
  // acknowledgement on DATA runs ahead of it and would make datagrams that
  // did arrive look lost. The receiver sends a pure ACK whenever it has a hole.
  if (sack && base_ < unsent_) detect_losses(now, out);
  if (base_ == unsent_) rack_deadline_ = 0;
  send_new(now, out);
  return true;
}

uint64_t SendChannel::on_timer(uint64_t now, Emitter &out, bool *probe) {
  *probe = false;
  uint64_t wait = UINT64_MAX;
  if (rack_deadline_ != 0 && now >= rack_deadline_) detect_losses(now, out);
  if (rack_deadline_ != 0) wait = rack_deadline_ - now;
  uint64_t rto_ns = static_cast<uint64_t>(rto_us()) * 1000;
  if (base_ < unsent_) {
    // Nothing acknowledged for an RTO: resend the oldest unSACKed datagrams
    // not sent within the RTO (the ACKs of what arrives then drive the rest
    // through detect_losses). Backoff grows only while no ACK makes progress.
    if (now >= rto_ref_ns_ + rto_ns) {
      uint32_t budget = kRtoBurst;
      for (uint64_t s = base_; s < unsent_ && budget > 0; s++) {
        Meta &m = meta(s);
        if (!m.sacked && now >= m.sent_ns + rto_ns) {
          retransmit(s, now, out);
          budget--;
        }
      }
      if (backoff_ < kMaxBackoff) backoff_++;
      rto_ref_ns_ = now;
      rto_ns = static_cast<uint64_t>(rto_us()) * 1000;
    }
    return std::min(wait, rto_ref_ns_ + rto_ns - now);
  }
  if (unsent_ < next_) {  // data waits for the peer's window: probe it
    if (now >= last_probe_ns_ + rto_ns) {
      *probe = true;
      last_probe_ns_ = now;
      if (backoff_ < kMaxBackoff) backoff_++;
      rto_ns = static_cast<uint64_t>(rto_us()) * 1000;
    }
    return std::min(wait, last_probe_ns_ + rto_ns - now);
  }
  return wait;
}

}  // namespace dvs::net
