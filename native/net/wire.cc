// wire.cc — header encoding and the validation of received datagrams.
#include "wire.h"

#include "crc32c.h"

namespace dvs::net::wire {

void write_header(uint8_t *p, uint8_t kind, uint16_t flags, const Session &s, uint64_t seq,
                  uint32_t body_len, uint32_t window) {
  st32(p + kOffCrc, 0);
  p[kOffVersion] = kVersion;
  p[kOffKind] = kind;
  st16(p + kOffFlags, flags);
  st32(p + kOffSrcNode, s.src_node);
  st32(p + kOffDstNode, s.dst_node);
  st64(p + kOffSrcInc, s.src_inc);
  st64(p + kOffDstInc, s.dst_inc);
  st32(p + kOffSrcEpoch, s.src_epoch);
  st32(p + kOffDstEpoch, s.dst_epoch);
  st64(p + kOffSeq, seq);
  st64(p + kOffAck, 0);
  st64(p + kOffEcho, kNoEcho);
  st32(p + kOffBodyLen, body_len);
  st32(p + kOffWindow, window);
  st32(p + kOffEchoDelay, 0);
  st32(p + kOffReserved, 0);
}

void seal(uint8_t *p, uint32_t len) { st32(p + kOffCrc, crc32c(p + 4, len - 4)); }

uint32_t write_ack_body(uint8_t *p, uint32_t high, const SackRange *r, uint32_t n) {
  st16(p, static_cast<uint16_t>(n));
  st16(p + 2, 0);
  st32(p + 4, high);
  for (uint32_t i = 0; i < n; i++) {
    st32(p + kAckPrefix + 8 * i, r[i].start);
    st32(p + kAckPrefix + 4 + 8 * i, r[i].end);
  }
  return kAckPrefix + 8 * n;
}

namespace {

// DATA: chunks tile the body exactly; only the first chunk may continue a
// message (frag_off > 0) and only the last may stop before its message's end.
bool data_body_ok(const uint8_t *b, uint32_t n) {
  if (n < kChunkHeader) return false;
  uint32_t at = 0;
  while (at < n) {
    if (n - at < kChunkHeader) return false;
    uint32_t msg_len = ld32(b + at), off = ld32(b + at + 4);
    if (msg_len > kMaxMessage || off > msg_len) return false;
    if (off > 0 && at != 0) return false;
    if (off == msg_len && msg_len != 0) return false;  // a chunk carries at least one byte
    at += kChunkHeader;
    uint32_t want = msg_len - off, rest = n - at;
    if (want > rest) return rest > 0;  // a partial chunk ends the datagram
    at += want;
  }
  return true;
}

bool ack_body_ok(const uint8_t *b, uint32_t n) {
  if (n < kAckPrefix) return false;
  uint32_t count = ld16(b);
  uint32_t high = ld32(b + 4);
  if (count > kMaxSackRanges || ld16(b + 2) != 0 || n != kAckPrefix + 8 * count || high > kSeqWindow ||
      (count == 0) != (high == 0))
    return false;
  uint32_t prev_end = 0;
  for (uint32_t i = 0; i < count; i++) {
    SackRange r = ack_range(b, i);
    if (r.start <= prev_end || r.end <= r.start || r.end > kSeqWindow) return false;
    prev_end = r.end;
  }
  return high >= prev_end;
}

}  // namespace

Verdict parse(const uint8_t *p, uint32_t len, Header *h) {
  if (len > kMaxDatagram) return Verdict::kOversize;
  if (len < kHeaderSize) return Verdict::kMalformed;
  if (p[kOffVersion] != kVersion) return Verdict::kVersion;
  if (ld32(p + kOffCrc) != crc32c(p + 4, len - 4)) return Verdict::kChecksum;
  h->kind = p[kOffKind];
  h->flags = ld16(p + kOffFlags);
  h->s.src_node = ld32(p + kOffSrcNode);
  h->s.dst_node = ld32(p + kOffDstNode);
  h->s.src_inc = ld64(p + kOffSrcInc);
  h->s.dst_inc = ld64(p + kOffDstInc);
  h->s.src_epoch = ld32(p + kOffSrcEpoch);
  h->s.dst_epoch = ld32(p + kOffDstEpoch);
  h->seq = ld64(p + kOffSeq);
  h->ack = ld64(p + kOffAck);
  h->echo = ld64(p + kOffEcho);
  h->body_len = ld32(p + kOffBodyLen);
  h->window = ld32(p + kOffWindow);
  h->echo_delay_us = ld32(p + kOffEchoDelay);
  if (h->body_len != len - kHeaderSize || h->s.src_inc == 0 || h->s.src_epoch == 0 ||
      (h->flags & ~kProbe) != 0 || ld32(p + kOffReserved) != 0 ||
      (h->echo == kNoEcho && h->echo_delay_us != 0))
    return Verdict::kMalformed;
  if (h->kind != kHeartbeat && (h->flags & kProbe)) return Verdict::kMalformed;
  const uint8_t *body = p + kHeaderSize;
  switch (h->kind) {
    case kData:
      return data_body_ok(body, h->body_len) ? Verdict::kOk : Verdict::kMalformed;
    case kAck:
      return h->seq == 0 && ack_body_ok(body, h->body_len) ? Verdict::kOk : Verdict::kMalformed;
    case kHeartbeat:
      return h->body_len == 0 && h->seq == 0 && h->ack == 0 && h->echo == kNoEcho ? Verdict::kOk
                                                                                   : Verdict::kMalformed;
    default:
      return Verdict::kMalformed;
  }
}

}  // namespace dvs::net::wire
