// frame.h — the engine's message header: what one agent tells another inside
// a transport message (net/transport.h moves the bytes, exactly once and in
// order per peer). Little-endian, fixed 40 bytes, then the payload.
#pragma once
#include <cstdint>
#include <cstring>

#include "../include/dvs.h"

namespace dvs::engine {

enum FrameKind : uint32_t {
  kFrameSend = 1,     // to (dc, dst_ep) of incarnation dst_gen; flags & kFrameAck: answer with an OUTCOME
  kFrameCall = 2,     // to (dc, dst_ep): answer with a REPLY
  kFrameReply = 3,    // to the caller (dc, dst_ep, dst_gen), for call_id; status 0 or an error; payload
  kFrameNotify = 4,   // OR `bits` into (dc, dst_ep)'s notification word for src_ep
  kFrameOutcome = 5,  // to the sender (dc, dst_ep, dst_gen) of SEND call_id: status 0 = accepted into the mailbox
  kFrameControl = 6,  // opaque bytes for the agents' control plane (directory announcements...)
  kFrameFence = 7,    // migration marker for (dc, dst_ep), in order with the data; `bits` = token
};
constexpr uint32_t kFrameAck = 1;
// Passed on by a node that had a stale location's proxy (at most one hop).
constexpr uint32_t kFrameForwarded = 2;
constexpr uint32_t kMaxAckRange = 65536;  // OUTCOME: `bits` = how many consecutive call ids it acknowledges

struct Frame {
  uint32_t kind;
  uint32_t flags;
  uint32_t dc;
  int32_t src_ep;
  uint32_t src_gen;
  int32_t dst_ep;
  uint32_t dst_gen;  // 0 = any incarnation
  uint32_t call_id;
  int32_t status;
  uint32_t bits;
};
static_assert(sizeof(Frame) == 40, "frame header is 40 bytes");

// Parses and validates a received message; false when malformed.
inline bool parse_frame(const uint8_t *msg, uint32_t len, Frame *f, const uint8_t **payload, uint32_t *plen) {
  if (len < sizeof(Frame)) return false;
  memcpy(f, msg, sizeof(Frame));
  *payload = msg + sizeof(Frame);
  *plen = len - uint32_t(sizeof(Frame));
  if (f->kind < kFrameSend || f->kind > kFrameFence) return false;
  if (f->kind == kFrameControl) return *plen <= DVS_MAX_PAYLOAD;
  if (f->dc > DVS_MAX_DC || *plen > DVS_MAX_PAYLOAD) return false;
  if (f->src_ep < 0 || f->src_ep > DVS_MAX_EP || f->dst_ep < 0 || f->dst_ep > DVS_MAX_EP) return false;
  if ((f->kind == kFrameNotify || f->kind == kFrameOutcome || f->kind == kFrameFence) && *plen) return false;
  if (f->kind == kFrameOutcome && (f->bits > kMaxAckRange || (f->status && f->bits > 1))) return false;
  return true;
}

}  // namespace dvs::engine
