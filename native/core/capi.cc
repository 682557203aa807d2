// capi.cc — the C API (include/dvs.h): blocking calls built on the core's
// non-blocking primitives and its wait functions.
#include "../include/dvs.h"

#include "errors.h"
#include "futex.h"
#include "node.h"

using namespace dvs;

namespace {

// Waits after an EDVSAGAIN: for space, or (out of reply credits, which only
// many abandoned calls in flight cause) for replies, dropping the late ones.
int wait_retry(dvs_endpoint *ep, int32_t dst, int why, uint64_t deadline) {
  if (why != kWaitCredits) return wait_space(ep, dst, why, deadline);
  int r = wait_work(ep, kWorkReplies, deadline, -1, -1, 0);
  if (r) return r;
  dvs_msg stale;
  while (try_take_replies(ep, &stale, 1) == 1) dvs_release(ep, &stale);
  return 0;
}

// A send to a remote endpoint returns the id of its pending outcome: it
// completes when the destination's node has accepted it into the mailbox.
int send_blocking(dvs_endpoint *ep, int32_t dst, const void *data, uint32_t len, uint32_t block, int timeout_ms) {
  uint64_t deadline = deadline_after(timeout_ms);
  for (;;) {
    int why;
    uint32_t gen = 0;
    int r = try_send(ep, dst, data, len, block, &why, &gen);
    if (r > 0) return wait_reply(ep, uint32_t(r), dst, gen, deadline, -1, nullptr);
    if (r != EDVSAGAIN) return r;
    if (timeout_ms == 0) return EDVSAGAIN;
    if ((r = wait_retry(ep, dst, why, deadline))) return r;
  }
}

bool valid_ep(const dvs_endpoint *ep) { return ep && ep->node; }

}  // namespace

extern "C" {

int dvs_attach(const dvs_attach_opts *opts, dvs_node **out) { return node_attach(opts, 0, out); }

int dvs_detach(dvs_node *node) { return node ? node_detach(node, false) : EDVSINVAL; }

uint32_t dvs_node_id(const dvs_node *node) { return node ? node->node_id : 0; }

int dvs_bind(dvs_node *node, uint32_t dc, int32_t ep, dvs_endpoint **out) {
  if (!node || !out) return EDVSINVAL;
  return ep_bind(node, dc, ep, out);
}

int dvs_bind_named(dvs_node *node, uint32_t dc, int32_t ep, const char *name, dvs_endpoint **out) {
  if (!node || !out) return EDVSINVAL;
  return ep_bind(node, dc, ep, out, name);
}

int dvs_close(dvs_endpoint *ep) {
  if (!valid_ep(ep)) return EDVSINVAL;
  int r = ep_close(ep);
  delete ep;
  return r;
}

uint32_t dvs_ep_dc(const dvs_endpoint *ep) { return ep ? ep->dc : 0; }
int32_t dvs_ep_number(const dvs_endpoint *ep) { return ep ? ep->ep : -1; }

int dvs_send(dvs_endpoint *ep, int32_t dst, const void *data, uint32_t len, int timeout_ms) {
  if (!valid_ep(ep) || (len && !data)) return EDVSINVAL;
  return send_blocking(ep, dst, data, len, kNone, timeout_ms);
}

void *dvs_alloc(dvs_endpoint *ep, uint32_t len, int timeout_ms, int *err) {
  int e = 0;
  void *p = nullptr;
  if (!valid_ep(ep)) {
    e = EDVSINVAL;
  } else if (len > DVS_MAX_PAYLOAD) {
    e = EDVS2BIG;
  } else {
    uint64_t deadline = deadline_after(timeout_ms);
    for (;;) {
      uint32_t b = ep_alloc(ep, len);
      if (b != kNone) {
        p = ep->node->arena->base() + ep->node->arena->block_offset(b);
        break;
      }
      if (!ep->open) {
        e = EDVSNOTBIND;
        break;
      }
      if (timeout_ms == 0) {
        e = EDVSAGAIN;
        break;
      }
      if ((e = wait_space(ep, 0, kWaitArena, deadline))) break;
    }
  }
  if (err) *err = e;
  return p;
}

static uint32_t block_of(dvs_endpoint *ep, const void *buf) {
  Arena &a = *ep->node->arena;
  const uint8_t *p = static_cast<const uint8_t *>(buf);
  if (p < a.base() || p >= a.base() + a.size()) return kNone;
  return a.block_at(uint64_t(p - a.base()));
}

int dvs_send_alloc(dvs_endpoint *ep, int32_t dst, void *buf, uint32_t len, int timeout_ms) {
  if (!valid_ep(ep)) return EDVSINVAL;
  uint32_t b = block_of(ep, buf);
  if (b == kNone) return EDVSINVAL;
  return send_blocking(ep, dst, nullptr, len, b, timeout_ms);
}

void dvs_free_alloc(dvs_endpoint *ep, void *buf) {
  if (!valid_ep(ep)) return;
  uint32_t b = block_of(ep, buf);
  if (b != kNone) ep_free_alloc(ep, b);
}

int dvs_receive(dvs_endpoint *ep, int32_t src, dvs_msg *out, int timeout_ms) {
  if (!valid_ep(ep) || !out) return EDVSINVAL;
  if (src != DVS_ANY && (src < 0 || src > DVS_MAX_EP)) return EDVSENDPOINT;
  uint64_t deadline = deadline_after(timeout_ms);
  for (;;) {
    int n = try_receive(ep, src, out, 1);
    if (n < 0) return n;
    if (n == 1) return 0;
    if (timeout_ms == 0) return EDVSAGAIN;
    int r = wait_work(ep, kWorkInbox, deadline, -1, -1, 0);
    if (r) return r;
  }
}

void dvs_release(dvs_endpoint *ep, dvs_msg *msg) {
  if (!valid_ep(ep) || !msg || msg->block_ == kNone) return;
  release_block(ep, msg->block_);
  msg->block_ = kNone;
  msg->data = nullptr;
}

int dvs_call(dvs_endpoint *ep, int32_t dst, const void *req, uint32_t len, dvs_msg *reply, int timeout_ms) {
  if (!valid_ep(ep) || !reply || (len && !req)) return EDVSINVAL;
  uint64_t deadline = deadline_after(timeout_ms);
  uint32_t id = 0, dst_gen = 0;
  int r;
  for (;;) {
    int why;
    r = try_call(ep, dst, req, len, kNone, &id, &dst_gen, &why);
    if (r == 0 || r == EDVSDSTDIED) break;
    if (r != EDVSAGAIN) return r;
    if (timeout_ms == 0) return EDVSAGAIN;
    if ((r = wait_retry(ep, dst, why, deadline))) return r;
  }
  return wait_reply(ep, id, dst, dst_gen, deadline, -1, reply);
}

int dvs_reply(dvs_endpoint *ep, const dvs_msg *call, const void *data, uint32_t len) {
  if (!valid_ep(ep) || !call || (len && !data)) return EDVSINVAL;
  if (call->kind != DVS_MSG_CALL) return EDVSPROCSTS;
  return reply_to(ep, {call->src_dc, call->src_ep, call->src_gen_, call->src_node, call->call_id_}, data, len, kNone);
}

int dvs_notify(dvs_endpoint *ep, int32_t dst, uint32_t bits) {
  if (!valid_ep(ep)) return EDVSINVAL;
  return notify(ep, dst, bits);
}

}  // extern "C"
