// wire.h — the UDP datagram format (documented in docs/DESIGN.md, "Wire format
// (UDP)") and the validation every received datagram passes before use.
//
// All integers are little-endian. Every datagram starts with the 80-byte
// Header; DATA and ACK headers also carry the acknowledgement (cumulative ACK,
// window, RTT echo and the echo's hold time), so DATA acknowledges the reverse
// direction and a pure ACK is only sent when no DATA goes back in time. Bodies:
//   DATA       chunks: {u32 msg_len, u32 frag_off} + min(msg_len - frag_off, rest) bytes
//   ACK        u16 n, u16 0, u32 high, then n × SackRange
//   HEARTBEAT  empty (flag kProbe asks for an immediate ACK)
#pragma once
#include <cstdint>
#include <cstring>

#include "transport.h"

namespace dvs::net::wire {

constexpr uint8_t kVersion = 2;
constexpr uint32_t kHeaderSize = 80;
constexpr uint32_t kChunkHeader = 8;
constexpr uint32_t kMaxDatagram = 65507;  // largest UDP/IPv4 payload
constexpr uint32_t kMinMtu = 256;
// The sender never has more than this many datagrams past the cumulative ACK;
// the receiver rejects sequence numbers at or beyond ack + kSeqWindow.
constexpr uint64_t kSeqWindow = 16384;
constexpr uint32_t kMaxSackRanges = 160;  // also limited by the mtu: (mtu - 88) / 8
constexpr uint64_t kNoEcho = ~0ull;

enum Kind : uint8_t { kData = 1, kAck = 2, kHeartbeat = 3 };
enum Flags : uint16_t { kProbe = 1 };

// Byte offsets of the header fields.
enum Off : uint32_t {
  kOffCrc = 0,        // u32 CRC-32C of bytes [4, len)
  kOffVersion = 4,    // u8
  kOffKind = 5,       // u8
  kOffFlags = 6,      // u16
  kOffSrcNode = 8,    // u32
  kOffDstNode = 12,   // u32
  kOffSrcInc = 16,    // u64 sender incarnation
  kOffDstInc = 24,    // u64 receiver incarnation as the sender knows it (0 = unknown)
  kOffSrcEpoch = 32,  // u32 sender's channel epoch for this receiver
  kOffDstEpoch = 36,  // u32 receiver's channel epoch as the sender knows it (0 = unknown)
  kOffSeq = 40,       // u64 DATA: datagram sequence; ACK/HEARTBEAT: 0
  kOffAck = 48,       // u64 DATA/ACK: cumulative ACK (next expected sequence); HEARTBEAT: 0
  kOffEcho = 56,      // u64 DATA/ACK: newest DATA sequence received since the previous acknowledgement (kNoEcho = none); HEARTBEAT: kNoEcho
  kOffBodyLen = 64,   // u32 length - kHeaderSize
  kOffWindow = 68,    // u32 receive window in bytes beyond the cumulative ACK
  kOffEchoDelay = 72, // u32 µs the echoed datagram waited at the receiver before this datagram left (0 without echo)
  kOffReserved = 76,  // u32 0
};

inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
inline uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
inline void st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

// The session fields every datagram of a channel carries.
struct Session {
  uint32_t src_node = 0, dst_node = 0;
  uint64_t src_inc = 0, dst_inc = 0;
  uint32_t src_epoch = 0, dst_epoch = 0;
};

// A parsed, validated header.
struct Header {
  uint8_t kind = 0;
  uint16_t flags = 0;
  Session s;
  uint64_t seq = 0;
  uint64_t ack = 0, echo = kNoEcho;
  uint32_t body_len = 0;
  uint32_t window = 0;
  uint32_t echo_delay_us = 0;
};

struct SackRange {  // [start, end) as offsets from the cumulative ACK; 0 < start < end
  uint32_t start, end;
};

// Writes a header (CRC left zero; seal() fills it once the body is in place)
// with no acknowledgement (ack 0, no echo); set_ack() fills that in.
void write_header(uint8_t *p, uint8_t kind, uint16_t flags, const Session &s, uint64_t seq,
                  uint32_t body_len, uint32_t window);
// The acknowledgement fields of a DATA or ACK header.
inline void set_ack(uint8_t *p, uint64_t ack, uint32_t window, uint64_t echo, uint32_t echo_delay_us) {
  st64(p + kOffAck, ack);
  st32(p + kOffWindow, window);
  st64(p + kOffEcho, echo);
  st32(p + kOffEchoDelay, echo == kNoEcho ? 0 : echo_delay_us);
}
// Computes and stores the CRC of a complete datagram.
void seal(uint8_t *p, uint32_t len);

enum class Verdict { kOk, kMalformed, kVersion, kOversize, kChecksum };

// Checks length, version, checksum, kind, body length and the body's structure
// (DATA chunks within bounds and consistent; ACK ranges ordered and in the
// sequence window). Only a kOk datagram may be used.
Verdict parse(const uint8_t *p, uint32_t len, Header *h);

// ACK body: u16 range count, u16 0, u32 high (one past the highest sequence
// received, as an offset from the cumulative ACK; 0 when nothing above it),
// then count × {u32 start, u32 end}. When the ranges do not all fit, high lies
// beyond the last range's end: what lies between is not reported.
constexpr uint32_t kAckPrefix = 8;
uint32_t write_ack_body(uint8_t *p, uint32_t high, const SackRange *r, uint32_t n);
inline uint32_t ack_high(const uint8_t *body) { return ld32(body + 4); }
// Most SACK ranges an ACK may carry with this mtu.
inline uint32_t max_sack_ranges(uint32_t mtu) {
  uint32_t n = (mtu - kHeaderSize - kAckPrefix) / 8;
  return n < kMaxSackRanges ? n : kMaxSackRanges;
}
// Reads a validated ACK body.
inline SackRange ack_range(const uint8_t *body, uint32_t i) {
  return SackRange{ld32(body + kAckPrefix + 8 * i), ld32(body + kAckPrefix + 4 + 8 * i)};
}
inline uint32_t ack_range_count(const uint8_t *body) { return ld16(body); }

}  // namespace dvs::net::wire
