// recv_channel.cc — reorder buffer, delivery, reassembly, SACK.
#include "recv_channel.h"

#include <algorithm>
#include <cstring>

namespace dvs::net {

using namespace wire;

void RecvChannel::init(uint32_t window_bytes) {
  window_ = window_bytes;
  slots_.assign(kSeqWindow, Slot{});
}

void RecvChannel::reset() {
  for (uint64_t s = deliver_; s < max_seen_; s++)
    if (slot(s).buf >= 0) release(s);
  next_ = deliver_ = max_seen_ = 0;
  deliver_off_ = 0;
  stored_ = above_ = 0;
  blocked_ = false;
  echo_ = kNoEcho;
  reasm_active_ = reasm_ready_ = false;
  reasm_len_ = reasm_have_ = 0;
}

void RecvChannel::store(uint64_t seq, const uint8_t *p, uint32_t len) {
  int32_t b;
  if (!free_bufs_.empty()) {
    b = free_bufs_.back();
    free_bufs_.pop_back();
  } else {
    b = static_cast<int32_t>(bufs_.size());
    bufs_.emplace_back();
  }
  bufs_[b].assign(p, p + len);
  slot(seq) = Slot{b, len};
  stored_ += len;
  if (seq >= next_) above_ += len;
  max_seen_ = std::max(max_seen_, seq + 1);
}

void RecvChannel::release(uint64_t seq) {
  Slot &s = slot(seq);
  free_bufs_.push_back(s.buf);
  stored_ -= s.len;
  s = Slot{};
}

bool RecvChannel::consume(const uint8_t *body, uint32_t n, uint32_t *off, MessageSink &sink) {
  while (*off < n) {
    const uint8_t *c = body + *off;
    uint32_t msg_len = ld32(c), frag = ld32(c + 4);
    uint32_t clen = std::min(msg_len - frag, n - *off - kChunkHeader);
    const uint8_t *data = c + kChunkHeader;
    if (frag == 0 && clen == msg_len && !reasm_active_) {
      if (!sink.message(data, msg_len)) return false;
      *off += kChunkHeader + clen;
      continue;
    }
    *off += kChunkHeader + clen;
    if (frag == 0) {
      if (reasm_active_) sink.inconsistent();
      reasm_active_ = true;
      reasm_len_ = msg_len;
      reasm_have_ = 0;
      if (reasm_.size() < msg_len) reasm_.resize(msg_len);
    } else if (!reasm_active_ || frag != reasm_have_ || msg_len != reasm_len_) {
      sink.inconsistent();
      reasm_active_ = false;
      continue;
    }
    memcpy(reasm_.data() + reasm_have_, data, clen);
    reasm_have_ += clen;
    if (reasm_have_ == reasm_len_) {
      reasm_active_ = false;
      if (!sink.message(reasm_.data(), reasm_len_)) {
        reasm_ready_ = true;
        return false;
      }
    }
  }
  return true;
}

bool RecvChannel::deliver(MessageSink &sink) {
  uint64_t start = deliver_;
  uint32_t start_off = deliver_off_;
  bool was_ready = reasm_ready_;
  blocked_ = false;
  if (reasm_ready_) {
    if (!sink.message(reasm_.data(), reasm_len_)) {
      blocked_ = true;
      return false;
    }
    reasm_ready_ = false;
  }
  while (deliver_ < next_) {
    Slot &s = slot(deliver_);
    const uint8_t *p = bufs_[s.buf].data();
    if (!consume(p + kHeaderSize, s.len - kHeaderSize, &deliver_off_, sink)) {
      blocked_ = true;
      break;
    }
    release(deliver_);
    deliver_++;
    deliver_off_ = 0;
  }
  return was_ready || deliver_ != start || deliver_off_ != start_off;
}

RecvChannel::Result RecvChannel::on_data(uint64_t seq, const uint8_t *p, uint32_t len, uint64_t now_ns,
                                         MessageSink &sink) {
  if (seq < next_ || (seq < max_seen_ && slot(seq).buf >= 0)) return Result::kDup;
  if (seq >= next_ + kSeqWindow) return Result::kOutOfWindow;
  if (seq == next_ && deliver_ == next_ && !blocked_ && !reasm_ready_) {
    // In order with nothing pending: deliver straight from the receive buffer.
    uint32_t off = 0;
    next_++;
    if (consume(p + kHeaderSize, len - kHeaderSize, &off, sink)) {
      deliver_ = next_;
    } else {
      store(seq, p, len);  // refused part way: keep the rest (beyond the window if need be)
      deliver_off_ = off;
      blocked_ = true;
    }
  } else {
    // Slots are indexed from deliver_, so a held-up delivery also bounds the sequence range.
    // (A sender that obeys the advertised window never fills it; a stale
    // window may, and then the datagram is dropped unacknowledged and resent.)
    if (stored_ + len > window_ || seq >= deliver_ + kSeqWindow) {
      return Result::kNoRoom;
    }
    store(seq, p, len);
  }
  while (next_ < max_seen_ && slot(next_).buf >= 0) above_ -= slot(next_++).len;
  if (!blocked_ && deliver_ < next_) deliver(sink);
  echo_ = seq;
  echo_ns_ = now_ns;
  return Result::kNew;
}

uint32_t RecvChannel::sack(SackRange *out, uint32_t max) const {
  uint32_t n = 0;
  uint64_t s = next_ + 1;
  while (s < max_seen_ && n < max) {
    if (slot(s).buf < 0) {
      s++;
      continue;
    }
    uint64_t start = s;
    while (s < max_seen_ && slot(s).buf >= 0) s++;
    out[n++] = SackRange{static_cast<uint32_t>(start - next_), static_cast<uint32_t>(s - next_)};
  }
  return n;
}

}  // namespace dvs::net
