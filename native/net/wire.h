// wire.h — the UDP datagram format (documented in docs/DESIGN.md, "Wire format
// (UDP)") and the validation every received datagram passes before use.
//
// All integers are little-endian. Every datagram starts with the 56-byte
// Header; the body depends on the kind:
//   DATA       chunks: {u32 msg_len, u32 frag_off} + min(msg_len - frag_off, rest) bytes
//   ACK        u16 n, u16 0, u32 0, u64 echo seq, then n × SackRange
//   HEARTBEAT  empty (flag kProbe asks for an immediate ACK)
#pragma once
#include <cstdint>
#include <cstring>

#include "transport.h"

namespace dvs::net::wire {

constexpr uint8_t kVersion = 1;
constexpr uint32_t kHeaderSize = 56;
constexpr uint32_t kChunkHeader = 8;
constexpr uint32_t kMaxDatagram = 65507;  // largest UDP/IPv4 payload
constexpr uint32_t kMinMtu = 256;
// The sender never has more than this many datagrams past the cumulative ACK;
// the receiver rejects sequence numbers at or beyond ack + kSeqWindow.
constexpr uint64_t kSeqWindow = 16384;
constexpr uint32_t kMaxSackRanges = 32;

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
  kOffSeq = 40,       // u64 DATA: datagram sequence; ACK: cumulative (next expected)
  kOffBodyLen = 48,   // u32 length - kHeaderSize
  kOffWindow = 52,    // u32 ACK/HEARTBEAT: receive window in bytes; DATA: 0
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
  uint32_t body_len = 0;
  uint32_t window = 0;
};

struct SackRange {  // [start, end) as offsets from the cumulative ACK; 0 < start < end
  uint32_t start, end;
};

// Writes a header (CRC left zero; seal() fills it once the body is in place).
void write_header(uint8_t *p, uint8_t kind, uint16_t flags, const Session &s, uint64_t seq,
                  uint32_t body_len, uint32_t window);
// Computes and stores the CRC of a complete datagram.
void seal(uint8_t *p, uint32_t len);

enum class Verdict { kOk, kMalformed, kVersion, kOversize, kChecksum };

// Checks length, version, checksum, kind, body length and the body's structure
// (DATA chunks within bounds and consistent; ACK ranges ordered and in the
// sequence window). Only a kOk datagram may be used.
Verdict parse(const uint8_t *p, uint32_t len, Header *h);

// ACK body: u16 range count, u16 0, u32 0, u64 echo (the newest DATA sequence
// that arrived since the previous ACK, for the sender's RTT sample; kNoEcho =
// none), then count × {u32 start, u32 end}.
constexpr uint32_t kAckPrefix = 16;
constexpr uint64_t kNoEcho = ~0ull;
uint32_t write_ack_body(uint8_t *p, uint64_t echo, const SackRange *r, uint32_t n);
// Reads a validated ACK body.
inline SackRange ack_range(const uint8_t *body, uint32_t i) {
  return SackRange{ld32(body + kAckPrefix + 8 * i), ld32(body + kAckPrefix + 4 + 8 * i)};
}
inline uint32_t ack_range_count(const uint8_t *body) { return ld16(body); }
inline uint64_t ack_echo(const uint8_t *body) { return ld64(body + 8); }

}  // namespace dvs::net::wire
