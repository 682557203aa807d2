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
constexpr uint32_t kRtoBurst = 16;  // datagrams resent per timeout (the oldest unSACKed ones)

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
  rack_ns_ = 0;
}

uint32_t SendChannel::rto_us() const {
  uint64_t rto = srtt_us_ == 0 ? std::max<uint32_t>(cfg_.rto_min_us, cfg_.rto_max_us / 4)
                               : srtt_us_ + std::max<uint32_t>(100, 4 * rttvar_us_);
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
  if (base_ == next_) head_ = pos;  // nothing kept: the padding is free too
  open_ = true;
  open_len_ = kHeaderSize;
  return true;
}

void SendChannel::close_open() {
  if (!open_) return;
  open_ = false;
  if (open_len_ == kHeaderSize) return;
  uint8_t *d = at(tail_);
  write_header(d, kData, 0, session_, next_, open_len_ - kHeaderSize, 0);
  seal(d, open_len_);
  meta(next_) = Meta{tail_, 0, open_len_, 0, 0};
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
    out.emit(at(m.pos), m.len);
    m.sent_ns = now;
    inflight_ += m.len;
    unsent_++;
  }
}

void SendChannel::retransmit(uint64_t seq, uint64_t now, Emitter &out) {
  Meta &m = meta(seq);
  out.emit(at(m.pos), m.len);
  m.sent_ns = now;
  m.retx++;
  retransmits++;
}

bool SendChannel::on_ack(uint64_t cum, uint32_t window, const uint8_t *body, uint64_t now, Emitter &out) {
  if (cum > unsent_) return false;
  if (cum < base_) return true;  // an older ACK overtaken by a newer one
  uint64_t echo = ack_echo(body);
  if (echo < unsent_ && echo >= base_ && meta(echo).retx == 0) rtt_sample(now - meta(echo).sent_ns);  // Karn
  if (cum > base_) {
    for (uint64_t s = base_; s < cum; s++) {
      Meta &m = meta(s);
      inflight_ -= m.len;
      if (!m.sacked) rack_ns_ = std::max(rack_ns_, m.sent_ns);
    }
    base_ = cum;
    backoff_ = 0;
    head_ = base_ < next_ ? meta(base_).pos : tail_;
  }
  if (window > peer_window_ && base_ == unsent_) backoff_ = 0;  // a reopened window ends probe backoff
  peer_window_ = window;
  uint32_t n = ack_range_count(body);
  uint64_t highest = 0;
  for (uint32_t i = 0; i < n; i++) {
    SackRange r = ack_range(body, i);
    uint64_t lo = cum + r.start, hi = std::min<uint64_t>(cum + r.end, unsent_);
    for (uint64_t s = lo; s < hi; s++) {
      Meta &m = meta(s);
      if (!m.sacked) rack_ns_ = std::max(rack_ns_, m.sent_ns);
      m.sacked = 1;
    }
    if (hi > lo) highest = hi;
  }
  // Holes below SACKed data are NAKs. A hole is lost when kDupThresh later
  // datagrams arrived (first transmission), or when a datagram sent more than
  // a reordering allowance after its last transmission has arrived (RACK: this
  // also finds lost retransmissions without waiting for the timeout).
  uint64_t reo_ns = std::max<uint64_t>(srtt_us_ / 8, 100) * 1000;
  uint64_t hole = cum;
  for (uint32_t i = 0; i < n && hole < highest; i++) {
    uint64_t lo = std::min(cum + ack_range(body, i).start, highest);
    for (; hole < lo; hole++) {
      Meta &m = meta(hole);
      if (m.sacked) continue;
      if ((m.retx == 0 && hole + kDupThresh < highest) || m.sent_ns + reo_ns < rack_ns_)
        retransmit(hole, now, out);
    }
    hole = cum + ack_range(body, i).end;
  }
  send_new(now, out);
  return true;
}

uint64_t SendChannel::on_timer(uint64_t now, Emitter &out, bool *probe) {
  *probe = false;
  uint64_t rto_ns = static_cast<uint64_t>(rto_us()) * 1000;
  if (base_ < unsent_) {
    Meta &oldest = meta(base_);
    if (now >= oldest.sent_ns + rto_ns) {
      uint32_t budget = kRtoBurst;
      for (uint64_t s = base_; s < unsent_ && budget > 0; s++) {
        Meta &m = meta(s);
        if (!m.sacked && now >= m.sent_ns + rto_ns) {
          retransmit(s, now, out);
          budget--;
        }
      }
      if (backoff_ < kMaxBackoff) backoff_++;
      rto_ns = static_cast<uint64_t>(rto_us()) * 1000;
    }
    return oldest.sent_ns + rto_ns - std::min(now, oldest.sent_ns + rto_ns);
  }
  if (unsent_ < next_) {  // data waits for the peer's window: probe it
    if (now >= last_probe_ns_ + rto_ns) {
      *probe = true;
      last_probe_ns_ = now;
      if (backoff_ < kMaxBackoff) backoff_++;
      rto_ns = static_cast<uint64_t>(rto_us()) * 1000;
    }
    return last_probe_ns_ + rto_ns - now;
  }
  return UINT64_MAX;
}

}  // namespace dvs::net
