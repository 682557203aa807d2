#include "native_node.h"

#include <climits>
#include <cstring>

#include "../core/futex.h"
#include "../core/slab.h"
#include "addon.h"

using dvs::kNone;

namespace dvs_addon {
namespace {

// Hot methods are installed on each instance as plain N-API functions whose
// callback data is the NativeNode: this skips ObjectWrap's per-call unwrap
// and dispatch (measured: 102 ns per call through ObjectWrap, 34 ns plain).
template <Napi::Value (NativeNode::*M)(const Napi::CallbackInfo &)>
napi_value fast_trampoline(napi_env env, napi_callback_info cbi) {
  Napi::CallbackInfo info(env, cbi);
  auto *self = static_cast<NativeNode *>(info.Data());
  return (self->*M)(info);
}

// Argument helpers: lib/ validates first, so these only guard the boundary.
bool int_arg(const Napi::CallbackInfo &info, int i, int64_t *out) {
  if (int(info.Length()) <= i) return false;
  double d;
  if (napi_get_value_double(info.Env(), info[size_t(i)], &d) != napi_ok) return false;
  if (!(d >= -9.2e18 && d <= 9.2e18) || d != double(int64_t(d))) return false;
  *out = int64_t(d);
  return true;
}

// Hot-path integer argument: one N-API call. Non-numbers fail; lib/ has
// already validated types and ranges, the core re-checks ranges.
inline bool i32_arg(const Napi::CallbackInfo &info, size_t i, int32_t *out) {
  return i < info.Length() && napi_get_value_int32(info.Env(), info[i], out) == napi_ok;
}

#define ARG_I32(var, i)                                                      \
  int32_t var;                                                               \
  if (!i32_arg(info, i, &var)) {                                             \
    throw_inval(info.Env(), "argument " #var " must be a number");           \
    return info.Env().Undefined();                                           \
  }

#define ARG_INT(var, i, lo, hi)                                               \
  int64_t var;                                                                \
  if (!int_arg(info, i, &var) || var < int64_t(lo) || var > int64_t(hi)) {    \
    throw_inval(info.Env(), "argument " #var " must be an integer in range"); \
    return info.Env().Undefined();                                            \
  }

void cleanup_hook(void *arg);

void release_mapping(Mapping *m) {
  if (m->refs.fetch_sub(1) == 1) {
    delete m->arena;
    delete m;
  }
}

std::string str_opt(Napi::Object o, const char *k) {
  Napi::Value v = o.Get(k);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

uint32_t u32_opt(Napi::Object o, const char *k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) return 0;
  double d = v.As<Napi::Number>().DoubleValue();
  return d >= 0 && d <= 4294967295.0 ? uint32_t(d) : 0;
}

}  // namespace

Napi::Function NativeNode::Init(Napi::Env env) {
  return DefineClass(env, "NativeNode",
                     {
                         InstanceMethod<&NativeNode::Arena>("arena"),
                         InstanceMethod<&NativeNode::Scratch>("scratch"),
                         InstanceMethod<&NativeNode::Bind>("bind"),
                         InstanceMethod<&NativeNode::Adopt>("adopt"),
                         InstanceMethod<&NativeNode::Close>("close"),
                         InstanceMethod<&NativeNode::Send>("send"),
                         InstanceMethod<&NativeNode::Call>("call"),
                         InstanceMethod<&NativeNode::CallEnd>("callEnd"),
                         InstanceMethod<&NativeNode::Receive>("receive"),
                         InstanceMethod<&NativeNode::Replies>("replies"),
                         InstanceMethod<&NativeNode::Release>("release"),
                         InstanceMethod<&NativeNode::FlushReleases>("flushReleases"),
                         InstanceMethod<&NativeNode::Reply>("reply"),
                         InstanceMethod<&NativeNode::Notify>("notify"),
                         InstanceMethod<&NativeNode::Alloc>("alloc"),
                         InstanceMethod<&NativeNode::FreeAlloc>("freeAlloc"),
                         InstanceMethod<&NativeNode::Arm>("arm"),
                         InstanceMethod<&NativeNode::ArmSpace>("armSpace"),
                         InstanceMethod<&NativeNode::Verify>("verify"),
                         InstanceMethod<&NativeNode::ReceiveSync>("receiveSync"),
                         InstanceMethod<&NativeNode::CallSync>("callSync"),
                         InstanceMethod<&NativeNode::SendSync>("sendSync"),
                         InstanceMethod<&NativeNode::Reap>("reap"),
                         InstanceMethod<&NativeNode::Stats>("stats"),
                         InstanceMethod<&NativeNode::Ref>("ref"),
                         InstanceMethod<&NativeNode::Unref>("unref"),
                         InstanceMethod<&NativeNode::Detach>("detach"),
                         InstanceMethod<&NativeNode::Info>("info"),
                         InstanceMethod<&NativeNode::Fast>("fast"),
                     });
}

NativeNode::NativeNode(const Napi::CallbackInfo &info) : Napi::ObjectWrap<NativeNode>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
    throw_inval(env, "NativeNode(options, onWake)");
    return;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  std::string name = str_opt(o, "name"), ns = str_opt(o, "ns"), wake = str_opt(o, "wake");
  dvs_attach_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.node_id = u32_opt(o, "node");
  opts.name = name.empty() ? nullptr : name.c_str();
  opts.ns = ns.empty() ? nullptr : ns.c_str();
  opts.max_procs = u32_opt(o, "maxProcs");
  opts.max_endpoints = u32_opt(o, "maxEndpoints");
  opts.inbox_cells = u32_opt(o, "inboxCells");
  opts.reply_cells = u32_opt(o, "replyCells");
  opts.pool_mib = u32_opt(o, "poolMib");
  if (o.Get("create").IsBoolean() && !o.Get("create").As<Napi::Boolean>().Value()) opts.flags |= DVS_ATTACH_NOCREATE;
  mode_ = wake == "thread" ? 1 : 0;
  {
    Napi::Value v = o.Get("asyncSpinUs");
    if (v.IsNumber()) {
      double us = v.As<Napi::Number>().DoubleValue();
      aspin_max_ns_ = us > 0 ? uint64_t(us < 1e6 ? us * 1000 : 1e9) : 0;
      aspin_ns_ = aspin_max_ns_;
    }
  }
  int r = dvs::node_attach(&opts, mode_, &node_);
  if (r) {
    throw_dvs(env, r, dvs_last_error_detail());
    return;
  }
  mapping_ = new Mapping{node_->arena, {2}};  // one ref for us, one for the ArrayBuffer
  Mapping *m = mapping_;
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, node_->arena->base(), node_->arena->size(), [](Napi::Env, void *, Mapping *mm) { release_mapping(mm); }, m);
  arena_ab_ = Napi::Persistent(ab);
  Napi::ArrayBuffer sab = Napi::ArrayBuffer::New(env, kScratchInts * sizeof(int32_t));
  scratch_ = static_cast<int32_t *>(sab.Data());
  scratch_ab_ = Napi::Persistent(sab);
  on_wake_ = Napi::Persistent(info[1].As<Napi::Function>());

  napi_get_uv_event_loop(env, &loop_);
  if (mode_ == 0) {
    poll_ = new uv_poll_t;
    uv_poll_init(loop_, poll_, node_->bell_rx);
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, OnPoll);
    uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
  } else {
    async_ = new uv_async_t;
    uv_async_init(loop_, async_, OnAsync);
    async_->data = this;
    uv_unref(reinterpret_cast<uv_handle_t *>(async_));
    std::atomic<uint32_t> *bell = &node_->arena->proc(node_->proc)->bell;
    waiter_ = std::thread([this, bell] {
      uint32_t seen = bell->load(std::memory_order_acquire);
      while (!stopping_.load(std::memory_order_acquire)) {
        dvs::futex_wait(bell, seen, 100000000ULL);
        uint32_t now = bell->load(std::memory_order_acquire);
        if (now != seen) {
          seen = now;
          uv_async_send(async_);
        }
      }
    });
  }
  prepare_ = new uv_prepare_t;
  uv_prepare_init(loop_, prepare_);
  prepare_->data = this;
  uv_prepare_start(prepare_, OnPrepare);
  uv_unref(reinterpret_cast<uv_handle_t *>(prepare_));
  napi_add_env_cleanup_hook(env, cleanup_hook, this);
}

// Runs just before the event loop would block in epoll. When JS waits on dvs
// (and nothing else is due), poll the waited-on endpoints for a bounded,
// adaptive time first: a reply or request that arrives within microseconds is
// then served without the sleep/wake round trip through the kernel (~15 µs per
// side on this class of VM). The budget doubles when polling pays off and
// halves when it does not, so an idle process polls only briefly each time it
// goes idle and then sleeps at no CPU cost. Producers are told not to ring
// while we poll (bell bits cleared) and the bells are re-armed before sleeping.
void NativeNode::OnPrepare(uv_prepare_t *h) {
  auto *self = static_cast<NativeNode *>(h->data);
  if (!self || !self->node_ || !self->refed_ || self->aspin_max_ns_ == 0) return;
  if (uv_backend_timeout(self->loop_) == 0) return;
  dvs::Arena &a = *self->node_->arena;
  dvs_endpoint *armed[64];
  int n = 0;
  for (dvs_endpoint *e : self->eps_) {
    if (!e || !e->open || n == 64) continue;
    std::atomic<uint32_t> &w = a.endpoint(e->slot)->wake;
    if (w.load(std::memory_order_relaxed) & dvs::kWakeBell) {
      w.fetch_and(~dvs::kWakeBell, std::memory_order_seq_cst);
      armed[n++] = e;
    }
  }
  if (!n) return;
  self->polls_++;
  uint64_t start = dvs::now_ns(), budget = self->aspin_ns_;
  bool found = false;
  dvs_driver *drv = self->node_->driver;  // an embedded invoker-mode agent: poll it too
  for (uint32_t i = 1; !found; i++) {
    for (int k = 0; k < n && !found; k++) found = dvs::has_work(armed[k], dvs::kWorkAll);
    if (found) break;
    if (drv) drv->poll(drv->arg);
    else dvs::cpu_relax();
    if ((drv || (i & 31) == 0) && dvs::now_ns() - start >= budget) break;
  }
  if (found) {
    self->poll_hits_++;
  } else {
    // Sleep. How long the sleep lasts decides the next budget (see learn_wait).
    self->slept_at_ = start;
    for (int k = 0; k < n; k++) found |= dvs::arm_bell(armed[k]) == 1;
    if (found) self->slept_at_ = 0;
  }
  if (found) self->fire_wake();
}

namespace {
// Environment teardown (process exit, worker termination) detaches cleanly.
void cleanup_hook(void *arg) { static_cast<NativeNode *>(arg)->DetachForCleanup(); }
}  // namespace

void NativeNode::DetachForCleanup() { do_detach(Napi::Env(nullptr)); }

NativeNode::~NativeNode() {
  if (node_) {
    napi_remove_env_cleanup_hook(Env(), cleanup_hook, this);
    do_detach(Env());
  }
}

void NativeNode::do_detach(Napi::Env) {
  if (!node_) return;
  if (prepare_) {
    uv_prepare_stop(prepare_);
    prepare_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(prepare_), [](uv_handle_t *h) { delete reinterpret_cast<uv_prepare_t *>(h); });
    prepare_ = nullptr;
  }
  if (poll_) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
    poll_ = nullptr;
  }
  if (async_) {
    stopping_.store(true, std::memory_order_release);
    std::atomic<uint32_t> *bell = &node_->arena->proc(node_->proc)->bell;
    bell->fetch_add(1);
    dvs::futex_wake(bell, 1);
    if (waiter_.joinable()) waiter_.join();
    async_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(async_), [](uv_handle_t *h) { delete reinterpret_cast<uv_async_t *>(h); });
    async_ = nullptr;
  }
  eps_.clear();  // the endpoints are closed and freed by node_detach
  dvs::node_detach(node_, true);
  node_ = nullptr;
  release_mapping(mapping_);
  mapping_ = nullptr;
}

// Adapts the polling budget to how long the loop actually waited: a wait that
// polling for a little longer would have covered raises the budget to 1.5x
// that wait (up to the maximum); a longer one (an idle period) halves it.
void NativeNode::learn_wait() {
  if (!slept_at_) return;
  uint64_t waited = dvs::now_ns() - slept_at_;
  slept_at_ = 0;
  if (waited <= aspin_max_ns_) {
    uint64_t want = waited + waited / 2;
    aspin_ns_ = want > aspin_max_ns_ ? aspin_max_ns_ : (want > aspin_ns_ ? want : aspin_ns_);
  } else {
    aspin_ns_ = aspin_ns_ / 2 < 2000 ? 2000 : aspin_ns_ / 2;
  }
}

void NativeNode::OnPoll(uv_poll_t *h, int status, int) {
  auto *self = static_cast<NativeNode *>(h->data);
  if (!self || !self->node_) return;
  self->learn_wait();
  dvs::doorbell_drain(self->node_->bell_rx);
  if (status == 0) self->fire_wake();
}

void NativeNode::OnAsync(uv_async_t *h) {
  auto *self = static_cast<NativeNode *>(h->data);
  if (!self || !self->node_) return;
  self->learn_wait();
  self->fire_wake();
}

void NativeNode::fire_wake() {
  Napi::Env env = on_wake_.Env();
  Napi::HandleScope scope(env);
  on_wake_.MakeCallback(env.Global(), {});
}

dvs_endpoint *NativeNode::handle(const Napi::CallbackInfo &info, int idx) {
  int32_t h;
  if (!node_) {
    throw_dvs(info.Env(), EDVSDVSINIT, "this node is detached");
    return nullptr;
  }
  if (!i32_arg(info, size_t(idx), &h) || h < 0 || size_t(h) >= eps_.size() || !eps_[size_t(h)]) {
    throw_dvs(info.Env(), EDVSNOTBIND, "endpoint handle is not bound");
    return nullptr;
  }
  return eps_[size_t(h)];
}

void NativeNode::write_msg(int slot, const dvs_msg &m) {
  int32_t *d = scratch_ + kMsgBase + slot * kMsgInts;
  uint64_t off = m.block_ != kNone ? node_->arena->block_offset(m.block_) : 0;
  d[dKind] = int32_t(m.kind);
  d[dSrcDc] = int32_t(m.src_dc);
  d[dSrcEp] = m.src_ep;
  d[dSrcNode] = int32_t(m.src_node);
  d[dOffLo] = int32_t(uint32_t(off));
  d[dOffHi] = int32_t(uint32_t(off >> 32));
  d[dLen] = int32_t(m.len);
  d[dBits] = int32_t(m.bits);
  d[dStatus] = m.status;
  d[dBlock] = int32_t(m.block_);
  d[dCallId] = int32_t(m.call_id_);
  d[dSrcGen] = int32_t(m.src_gen_);
}

// Payload: a Uint8Array to copy from, or (null, arena offset of an allocated block, length).
bool NativeNode::payload_arg(const Napi::CallbackInfo &info, int idx, const void **data, uint32_t *len,
                             uint32_t *block) {
  *block = kNone;
  *data = nullptr;
  napi_env env = info.Env();
  if (size_t(idx) < info.Length()) {
    napi_typedarray_type type;
    size_t n;
    void *p;
    if (napi_get_typedarray_info(env, info[size_t(idx)], &type, &n, &p, nullptr, nullptr) == napi_ok) {
      if (type != napi_uint8_array) {
        throw_inval(info.Env(), "payload must be a Uint8Array");
        return false;
      }
      *data = p;
      *len = n > DVS_MAX_PAYLOAD ? DVS_MAX_PAYLOAD + 1 : uint32_t(n);
      return true;
    }
  }
  int64_t off, n;
  if (!int_arg(info, idx + 1, &off) || !int_arg(info, idx + 2, &n) || n < 0) {
    throw_inval(info.Env(), "payload must be a Uint8Array or an allocated block");
    return false;
  }
  if (n > int64_t(DVS_MAX_PAYLOAD)) {
    *len = DVS_MAX_PAYLOAD + 1;
    return true;
  }
  *len = uint32_t(n);
  if (off < 0) return true;  // empty payload
  *block = uint64_t(off) < node_->arena->size() ? node_->arena->block_at(uint64_t(off)) : kNone;
  if (*block == kNone) {
    throw_inval(info.Env(), "offset is not an allocated block");
    return false;
  }
  return true;
}

Napi::Value NativeNode::Arena(const Napi::CallbackInfo &info) {
  if (arena_ab_.IsEmpty()) return info.Env().Null();
  return arena_ab_.Value();
}

Napi::Value NativeNode::Scratch(const Napi::CallbackInfo &info) { return scratch_ab_.Value(); }

// Returns { send, call, ... } as plain functions bound to this node (see
// fast_trampoline); lib/ calls them instead of the ObjectWrap methods.
Napi::Value NativeNode::Fast(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object self = Napi::Object::New(env);
  auto put = [&](const char *name, napi_callback cb) {
    napi_value f;
    napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, this, &f);
    self.Set(name, Napi::Value(env, f));
  };
  put("send", fast_trampoline<&NativeNode::Send>);
  put("call", fast_trampoline<&NativeNode::Call>);
  put("receive", fast_trampoline<&NativeNode::Receive>);
  put("replies", fast_trampoline<&NativeNode::Replies>);
  put("reply", fast_trampoline<&NativeNode::Reply>);
  put("arm", fast_trampoline<&NativeNode::Arm>);
  put("callEnd", fast_trampoline<&NativeNode::CallEnd>);
  put("flushReleases", fast_trampoline<&NativeNode::FlushReleases>);
  put("receiveSync", fast_trampoline<&NativeNode::ReceiveSync>);
  put("callSync", fast_trampoline<&NativeNode::CallSync>);
  put("sendSync", fast_trampoline<&NativeNode::SendSync>);
  put("alloc", fast_trampoline<&NativeNode::Alloc>);
  return self;
}

Napi::Value NativeNode::Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!node_) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("node", node_->node_id);
  o.Set("name", node_->arena->name());
  o.Set("proc", node_->proc);
  o.Set("pid", int(node_->pid));
  o.Set("size", double(node_->arena->size()));
  o.Set("created", node_->arena->created());
  o.Set("wake", mode_ == 1 ? "thread" : "doorbell");
  o.Set("asyncSpinUs", double(aspin_max_ns_) / 1000);
  o.Set("agentPid", node_->arena->hdr()->agent_pid.load());
  o.Set("polls", double(polls_));
  o.Set("pollHits", double(poll_hits_));
  return o;
}

Napi::Value NativeNode::Bind(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!node_) return Napi::Number::New(env, EDVSDVSINIT);
  ARG_INT(dc, 0, INT32_MIN, INT32_MAX);
  ARG_INT(ep, 1, INT32_MIN, INT32_MAX);
  if (dc < 0 || dc > DVS_MAX_DC) return Napi::Number::New(env, EDVSBADDCID);
  // Optional name (JS checked it: a string of at most 31 UTF-8 bytes without NUL).
  std::string name;
  if (info.Length() > 2 && info[2].IsString()) {
    name = info[2].As<Napi::String>().Utf8Value();
    if (name.size() >= dvs::kNameBytes || name.find('\0') != std::string::npos) return Napi::Number::New(env, EDVSINVAL);
  }
  dvs_endpoint *e;
  int r = dvs::ep_bind(node_, uint32_t(dc), int32_t(ep), &e, name.empty() ? nullptr : name.c_str());
  if (r) return Napi::Number::New(env, r);
  return Napi::Number::New(env, double(store_handle(e)));
}

size_t NativeNode::store_handle(dvs_endpoint *e) {
  for (size_t i = 0; i < eps_.size(); i++)
    if (!eps_[i]) {
      eps_[i] = e;
      return i;
    }
  eps_.push_back(e);
  return eps_.size() - 1;
}

// adopt(dc, ep): a handle on an endpoint the agent handed to this process (migration COMMIT).
Napi::Value NativeNode::Adopt(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!node_) return Napi::Number::New(env, EDVSDVSINIT);
  ARG_INT(dc, 0, INT32_MIN, INT32_MAX);
  ARG_INT(ep, 1, INT32_MIN, INT32_MAX);
  if (dc < 0 || dc > DVS_MAX_DC) return Napi::Number::New(env, EDVSBADDCID);
  if (ep < 0 || ep > DVS_MAX_EP) return Napi::Number::New(env, EDVSENDPOINT);
  dvs_endpoint *e;
  int r = dvs::ep_open_owned(node_, uint32_t(dc), int32_t(ep), &e);
  if (r) return Napi::Number::New(env, r);
  return Napi::Number::New(env, double(store_handle(e)));
}

Napi::Value NativeNode::Close(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  int64_t h;
  int_arg(info, 0, &h);
  int r = dvs::ep_close(e);
  delete e;
  eps_[size_t(h)] = nullptr;
  return Napi::Number::New(info.Env(), r);
}

// The common prologue of send/call and their sync variants: (handle, dst, payload...).
bool NativeNode::op_args(const Napi::CallbackInfo &info, Op *op) {
  if (!(op->e = handle(info, 0))) return false;
  if (!i32_arg(info, 1, &op->dst)) {
    throw_inval(info.Env(), "destination must be a number");
    return false;
  }
  return payload_arg(info, 2, &op->data, &op->len, &op->block);
}

// Reports the outcome of an op on the scratch area and returns its code.
Napi::Value NativeNode::op_done(const Napi::CallbackInfo &info, const Op &op, int r) {
  if (op.block != kNone) note_taken(op.block);
  return Napi::Number::New(info.Env(), r);
}

Napi::Value NativeNode::Send(const Napi::CallbackInfo &info) {
  Op op;
  if (!op_args(info, &op)) return info.Env().Undefined();
  int why = 0;
  uint32_t gen = 0;
  int r = dvs::try_send(op.e, op.dst, op.data, op.len, op.block, &why, &gen);
  scratch_[kOutWhy] = why;
  if (r > 0) scratch_[kOutDstGen] = int32_t(gen);
  return op_done(info, op, r);
}

Napi::Value NativeNode::Call(const Napi::CallbackInfo &info) {
  Op op;
  if (!op_args(info, &op)) return info.Env().Undefined();
  int why = 0;
  uint32_t id = 0, gen = 0;
  int r = dvs::try_call(op.e, op.dst, op.data, op.len, op.block, &id, &gen, &why);
  scratch_[kOutWhy] = why;
  scratch_[kOutDstGen] = int32_t(gen);
  scratch_[kOutCallId] = int32_t(id);
  return op_done(info, op, r);
}

// callEnd(h, calls = 1, acks = 0): calls and remote-send acknowledgements settled.
Napi::Value NativeNode::CallEnd(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  int32_t calls = 1, acks = 0;
  if (info.Length() > 1 && !i32_arg(info, 1, &calls)) calls = 1;
  if (info.Length() > 2 && !i32_arg(info, 2, &acks)) acks = 0;
  for (int32_t i = 0; i < calls; i++) dvs::call_end(e);
  if (acks > 0) dvs::ack_end(e, uint32_t(acks));
  return info.Env().Undefined();
}

Napi::Value NativeNode::Receive(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_I32(src, 1);
  ARG_I32(max, 2);
  ARG_I32(nrel, 3);
  if (src < -1 || src > DVS_MAX_EP || max < 0 || max > kMaxBatch || nrel < 0 || nrel > kMaxBatch) {
    throw_inval(info.Env(), "receive arguments out of range");
    return info.Env().Undefined();
  }
  release_batch(nrel);
  dvs_msg msgs[kMaxBatch];
  int n = dvs::try_receive(e, src, msgs, max);
  for (int i = 0; i < n; i++) write_msg(i, msgs[i]);
  return Napi::Number::New(info.Env(), n);
}

Napi::Value NativeNode::Replies(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_I32(max, 1);
  if (max < 0 || max > kMaxBatch) max = kMaxBatch;
  dvs_msg msgs[kMaxBatch];
  int n = dvs::try_take_replies(e, msgs, max);
  for (int i = 0; i < n; i++) write_msg(i, msgs[i]);
  return Napi::Number::New(info.Env(), n);
}

Napi::Value NativeNode::Release(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_I32(block, 1);
  return Napi::Number::New(info.Env(), dvs::release_block(e, uint32_t(block)));
}

// Tells JS whether a block it handed in was taken (queued, delivered, or
// freed by the core): then it must forget it; otherwise it is still its own.
void NativeNode::note_taken(uint32_t block) {
  scratch_[kOutTaken] =
      block != kNone && node_->arena->block(block)->owner.load(std::memory_order_relaxed) !=
                            dvs::own_proc(dvs::kOwnAlloc, node_->proc, node_->proc_gen);
}

// Frees the blocks JS released since the last batch (scratch[kReleaseBase..]).
void NativeNode::release_batch(int n) {
  dvs::Arena &a = *node_->arena;
  uint64_t mine = dvs::own_proc(dvs::kOwnRecv, node_->proc, node_->proc_gen);
  bool any = false;
  for (int i = 0; i < n; i++) {
    uint32_t b = uint32_t(scratch_[kReleaseBase + i]);
    if (b < a.hdr()->total_blocks) any |= dvs::slab_free_if(a, b, mine);
  }
  if (any) dvs::arena_space_freed(node_);
}

Napi::Value NativeNode::FlushReleases(const Napi::CallbackInfo &info) {
  if (!node_) return info.Env().Undefined();
  ARG_INT(n, 0, 0, kMaxBatch);
  release_batch(int(n));
  return info.Env().Undefined();
}

Napi::Value NativeNode::Reply(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_I32(dc, 1);
  ARG_I32(caller, 2);
  ARG_I32(gen, 3);      // u32 values arrive as their low 32 bits
  ARG_I32(call_id, 4);
  const void *data;
  uint32_t len, block;
  if (!payload_arg(info, 5, &data, &len, &block)) return info.Env().Undefined();
  ARG_I32(caller_node, 8);
  int r = dvs::reply_to(e, {uint32_t(dc), caller, uint32_t(gen), uint32_t(caller_node), uint32_t(call_id)}, data, len,
                        block);
  if (block != kNone) note_taken(block);
  return Napi::Number::New(info.Env(), r);
}

Napi::Value NativeNode::Notify(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_I32(dst, 1);
  ARG_I32(bits, 2);
  return Napi::Number::New(info.Env(), dvs::notify(e, dst, uint32_t(bits)));
}

Napi::Value NativeNode::Alloc(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_INT(len, 1, 0, INT32_MAX);
  if (len > int64_t(DVS_MAX_PAYLOAD)) return Napi::Number::New(info.Env(), EDVS2BIG);
  if (!e->open) return Napi::Number::New(info.Env(), EDVSNOTBIND);
  uint32_t b = dvs::ep_alloc(e, uint32_t(len));
  if (b == kNone) {
    scratch_[kOutWhy] = dvs::kWaitArena;
    return Napi::Number::New(info.Env(), EDVSAGAIN);
  }
  uint64_t off = node_->arena->block_offset(b);
  scratch_[kOutOffLo] = int32_t(uint32_t(off));
  scratch_[kOutOffHi] = int32_t(uint32_t(off >> 32));
  return Napi::Number::New(info.Env(), 0);
}

// Allocated blocks belong to the process, not to an endpoint: freeing one
// works whatever became of the endpoint that allocated it.
Napi::Value NativeNode::FreeAlloc(const Napi::CallbackInfo &info) {
  if (!node_) return Napi::Number::New(info.Env(), EDVSDVSINIT);
  ARG_INT(off, 0, 0, INT64_MAX);
  dvs::Arena &a = *node_->arena;
  uint32_t b = uint64_t(off) < a.size() ? a.block_at(uint64_t(off)) : kNone;
  if (b == kNone || !dvs::slab_free_if(a, b, dvs::own_proc(dvs::kOwnAlloc, node_->proc, node_->proc_gen)))
    return Napi::Number::New(info.Env(), EDVSINVAL);
  dvs::arena_space_freed(node_);
  return Napi::Number::New(info.Env(), 0);
}

Napi::Value NativeNode::Arm(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), dvs::arm_bell(e));
}

Napi::Value NativeNode::ArmSpace(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_INT(dst, 1, INT32_MIN, INT32_MAX);
  ARG_INT(why, 2, 0, 3);
  return Napi::Number::New(info.Env(), dvs::arm_space(e, int32_t(dst), int(why)));
}

Napi::Value NativeNode::Verify(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_INT(dst, 1, INT32_MIN, INT32_MAX);
  ARG_INT(gen, 2, 0, UINT32_MAX);
  return Napi::Number::New(info.Env(), dvs::verify_dst(e, int32_t(dst), uint32_t(gen), nullptr));
}

Napi::Value NativeNode::ReceiveSync(const Napi::CallbackInfo &info) {
  dvs_endpoint *e = handle(info, 0);
  if (!e) return info.Env().Undefined();
  ARG_I32(src, 1);
  ARG_I32(timeout, 2);
  ARG_INT(spin, 3, -1, INT64_MAX);
  if (src < -1 || src > DVS_MAX_EP || timeout < -1) {
    throw_inval(info.Env(), "receiveSync arguments out of range");
    return info.Env().Undefined();
  }
  uint64_t deadline = dvs::deadline_after(int(timeout));
  for (;;) {
    dvs_msg m;
    int n = dvs::try_receive(e, int32_t(src), &m, 1);
    if (n == 1) {
      write_msg(0, m);
      return Napi::Number::New(info.Env(), 1);
    }
    if (n < 0) return Napi::Number::New(info.Env(), n);
    if (timeout == 0) return Napi::Number::New(info.Env(), EDVSAGAIN);
    int r = dvs::wait_work(e, dvs::kWorkInbox, deadline, spin, -1, 0);
    if (r) return Napi::Number::New(info.Env(), r);
  }
}

Napi::Value NativeNode::SendSync(const Napi::CallbackInfo &info) {
  Op op;
  if (!op_args(info, &op)) return info.Env().Undefined();
  ARG_I32(timeout, 5);
  uint64_t deadline = dvs::deadline_after(timeout);
  for (;;) {
    int why = 0;
    uint32_t gen = 0;
    int r = dvs::try_send(op.e, op.dst, op.data, op.len, op.block, &why, &gen);
    if (r > 0) {  // remote: completes with the destination node's acknowledgement
      if (op.block != kNone) note_taken(op.block);
      return Napi::Number::New(info.Env(), dvs::wait_reply(op.e, uint32_t(r), op.dst, gen, deadline, -1, nullptr));
    }
    if (r != EDVSAGAIN || timeout == 0) return op_done(info, op, r);
    if (why == dvs::kWaitCredits) return op_done(info, op, EDVSBUSY);
    if ((r = dvs::wait_space(op.e, op.dst, why, deadline))) return op_done(info, op, r);
  }
}

Napi::Value NativeNode::CallSync(const Napi::CallbackInfo &info) {
  Op op;
  if (!op_args(info, &op)) return info.Env().Undefined();
  ARG_I32(timeout, 5);
  ARG_INT(spin, 6, -1, INT64_MAX);
  if (timeout < -1) timeout = -1;
  dvs_endpoint *e = op.e;
  uint64_t deadline = dvs::deadline_after(timeout);
  uint32_t id = 0, gen = 0;
  int r;
  for (;;) {
    int why = 0;
    r = dvs::try_call(e, op.dst, op.data, op.len, op.block, &id, &gen, &why);
    if (r == 0 || r == EDVSDSTDIED) break;
    if (r != EDVSAGAIN || timeout == 0) return op_done(info, op, r);
    if (why == dvs::kWaitCredits) return op_done(info, op, EDVSBUSY);
    if ((r = dvs::wait_space(e, op.dst, why, deadline))) return op_done(info, op, r);
  }
  if (op.block != kNone) note_taken(op.block);
  dvs_msg m;
  r = dvs::wait_reply(e, id, op.dst, gen, deadline, spin, &m);
  if (r) return Napi::Number::New(info.Env(), r);
  write_msg(0, m);
  return Napi::Number::New(info.Env(), 1);
}

Napi::Value NativeNode::Reap(const Napi::CallbackInfo &info) {
  if (!node_) return Napi::Number::New(info.Env(), EDVSDVSINIT);
  return Napi::Number::New(info.Env(), dvs::node_reap_dead(node_));
}

Napi::Value NativeNode::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!node_) return env.Null();
  dvs::Arena &a = *node_->arena;
  dvs::ArenaHeader *h = a.hdr();
  Napi::Object o = Napi::Object::New(env);
  o.Set("node", h->node_id);
  o.Set("segment", a.name());
  o.Set("bytes", double(a.size()));
  Napi::Array procs = Napi::Array::New(env);
  for (uint32_t i = 0, k = 0; i < h->cfg.max_procs; i++) {
    dvs::ProcSlot *p = a.proc(i);
    if (p->state.load(std::memory_order_relaxed) != dvs::kProcLive) continue;
    Napi::Object po = Napi::Object::New(env);
    po.Set("slot", i);
    po.Set("pid", p->pid);
    po.Set("gen", p->gen);
    procs.Set(k++, po);
  }
  o.Set("procs", procs);
  Napi::Array eps = Napi::Array::New(env);
  for (uint32_t i = 0, k = 0; i < h->cfg.max_endpoints; i++) {
    dvs::EndpointSlot *e = a.endpoint(i);
    if (e->state.load(std::memory_order_relaxed) != dvs::kEpBound) continue;
    Napi::Object eo = Napi::Object::New(env);
    eo.Set("dc", e->dc);
    eo.Set("ep", e->ep);
    eo.Set("pid", e->owner_pid);
    eo.Set("gen", e->gen.load(std::memory_order_relaxed));
    eo.Set("msgsIn", double(e->msgs_in.load(std::memory_order_relaxed)));
    eo.Set("msgsOut", double(e->msgs_out.load(std::memory_order_relaxed)));
    eo.Set("queued", double(e->inbox_tail.load(std::memory_order_relaxed) - e->inbox_head.load(std::memory_order_relaxed)));
    eps.Set(k++, eo);
  }
  o.Set("endpoints", eps);
  uint32_t used[dvs::kMaxClasses] = {};
  dvs::slab_in_use(a, used);
  Napi::Array classes = Napi::Array::New(env);
  for (uint32_t c = 0; c < h->cfg.class_count; c++) {
    Napi::Object co = Napi::Object::New(env);
    co.Set("size", h->classes[c].size);
    co.Set("blocks", h->classes[c].count);
    co.Set("inUse", used[c]);
    classes.Set(c, co);
  }
  o.Set("classes", classes);
  o.Set("reapedProcs", double(h->reaped_procs.load()));
  o.Set("lockRecoveries", double(h->recoveries.load()));
  o.Set("droppedReplies", double(h->dropped_replies.load()));
  return o;
}

Napi::Value NativeNode::Ref(const Napi::CallbackInfo &info) {
  uv_handle_t *h = poll_ ? reinterpret_cast<uv_handle_t *>(poll_) : reinterpret_cast<uv_handle_t *>(async_);
  if (h && !refed_) uv_ref(h);
  refed_ = true;
  return info.Env().Undefined();
}

Napi::Value NativeNode::Unref(const Napi::CallbackInfo &info) {
  uv_handle_t *h = poll_ ? reinterpret_cast<uv_handle_t *>(poll_) : reinterpret_cast<uv_handle_t *>(async_);
  if (h && refed_) uv_unref(h);
  refed_ = false;
  return info.Env().Undefined();
}

Napi::Value NativeNode::Detach(const Napi::CallbackInfo &info) {
  if (node_) {
    napi_remove_env_cleanup_hook(info.Env(), cleanup_hook, this);
    do_detach(info.Env());
  }
  return info.Env().Undefined();
}

}  // namespace dvs_addon
