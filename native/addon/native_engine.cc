// native_engine.cc — see native_engine.h.
#include "native_engine.h"

#include <arpa/inet.h>

#include <cmath>

#include "../core/layout.h"
#include "addon.h"

namespace dvs_addon {
namespace {

uint32_t u32_of(Napi::Object o, const char *k, uint32_t dflt) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : dflt;
}

double num_of(Napi::Object o, const char *k, double dflt) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
}

bool parse_addr(const std::string &host, uint32_t port, sockaddr_in *out) {
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons(uint16_t(port));
  return port <= 65535 && inet_pton(AF_INET, host.c_str(), &out->sin_addr) == 1;
}

dvs::net::FaultConfig fault_of(Napi::Object o) {
  dvs::net::FaultConfig f;
  f.loss = num_of(o, "loss", 0);
  f.dup = num_of(o, "dup", 0);
  f.reorder = num_of(o, "reorder", 0);
  f.delay_us = u32_of(o, "delayUs", 0);
  f.jitter_us = u32_of(o, "jitterUs", 0);
  f.seed = uint64_t(num_of(o, "seed", 0));
  return f;
}

}  // namespace

Napi::Function NativeEngine::Init(Napi::Env env) {
  return DefineClass(env, "NativeEngine",
                     {InstanceMethod<&NativeEngine::Port>("port"),
                      InstanceMethod<&NativeEngine::AddPeer>("addPeer"),
                      InstanceMethod<&NativeEngine::RemovePeer>("removePeer"),
                      InstanceMethod<&NativeEngine::SetRemote>("setRemote"),
                      InstanceMethod<&NativeEngine::SendControl>("sendControl"),
                      InstanceMethod<&NativeEngine::SetFault>("setFault"),
                      InstanceMethod<&NativeEngine::SetPartition>("setPartition"),
                      InstanceMethod<&NativeEngine::SetDcs>("setDcs"),
                      InstanceMethod<&NativeEngine::SetMigrating>("setMigrating"),
                      InstanceMethod<&NativeEngine::Fence>("fence"),
                      InstanceMethod<&NativeEngine::ToProxy>("toProxy"),
                      InstanceMethod<&NativeEngine::Adopt>("adopt"),
                      InstanceMethod<&NativeEngine::ExpectReplies>("expectReplies"),
                      InstanceMethod<&NativeEngine::ForgetReplies>("forgetReplies"),
                      InstanceMethod<&NativeEngine::Repoint>("repoint"),
                      InstanceMethod<&NativeEngine::Stats>("stats"),
                      InstanceMethod<&NativeEngine::Endpoints>("endpoints"),
                      InstanceMethod<&NativeEngine::Reap>("reap"),
                      InstanceMethod<&NativeEngine::Close>("close")});
}

// new NativeEngine(config, onEvent(type, peer, incarnation, data?))
NativeEngine::NativeEngine(const Napi::CallbackInfo &info) : Napi::ObjectWrap<NativeEngine>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
    throw_inval(env, "NativeEngine(config, onEvent)");
    return;
  }
  Napi::Object c = info[0].As<Napi::Object>();
  dvs::engine::EngineConfig cfg;
  cfg.node_id = u32_of(c, "node", 0);
  if (c.Get("ns").IsString()) cfg.ns = c.Get("ns").As<Napi::String>().Utf8Value();
  cfg.max_procs = u32_of(c, "maxProcs", 0);
  cfg.max_endpoints = u32_of(c, "maxEndpoints", 0);
  cfg.inbox_cells = u32_of(c, "inboxCells", 0);
  cfg.reply_cells = u32_of(c, "replyCells", 0);
  cfg.pool_mib = u32_of(c, "poolMib", 0);
  cfg.spin_us = u32_of(c, "spinUs", 0);
  cfg.invoker = c.Get("invoker").IsBoolean() && c.Get("invoker").As<Napi::Boolean>().Value();
  std::string host = c.Get("host").IsString() ? c.Get("host").As<Napi::String>().Utf8Value() : "127.0.0.1";
  if (!parse_addr(host, u32_of(c, "port", 0), &cfg.net.bind)) {
    throw_inval(env, "listen address must be an IPv4 address and a port");
    return;
  }
  cfg.net.incarnation = uint64_t(num_of(c, "incarnation", 0));
  cfg.net.mtu = u32_of(c, "mtu", cfg.net.mtu);
  cfg.net.window_bytes = u32_of(c, "windowBytes", cfg.net.window_bytes);
  cfg.net.heartbeat_ms = u32_of(c, "heartbeatMs", cfg.net.heartbeat_ms);
  cfg.net.dead_after_ms = u32_of(c, "deadAfterMs", cfg.net.dead_after_ms);
  if (c.Get("fault").IsObject()) cfg.net.fault = fault_of(c.Get("fault").As<Napi::Object>());
  std::string err;
  int code = 0;
  engine_ = dvs::engine::Engine::start(cfg, &err, &code);
  if (!engine_) {
    throw_dvs(env, code ? code : EDVSINVAL, err);
    return;
  }
  on_event_ = Napi::Persistent(info[1].As<Napi::Function>());
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  async_ = new uv_async_t;
  uv_async_init(loop, async_, OnAsync);
  async_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t *>(async_));
  engine_->set_event_callback(Wake, async_);
  uv_async_send(async_);  // events queued before the callback was set
  if (engine_->invoker()) {
    poll_ = new uv_poll_t;
    uv_poll_init(loop, poll_, engine_->poll_fd());
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, OnPoll);
    uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
    drive();
  }
}

// Invoker mode: the engine's epoll fd (socket, doorbell, commands, transport
// deadline timer) became readable — run duty cycles until idle.
void NativeEngine::OnPoll(uv_poll_t *h, int, int) {
  auto *self = static_cast<NativeEngine *>(h->data);
  if (self) self->drive();
}

void NativeEngine::drive() {
  if (!engine_) return;
  uint64_t next = 0;
  for (int round = 0; round < 16; round++) {
    int i = 0;
    while (i < 64 && engine_->poll(&next)) i++;
    if (!engine_->arm()) break;  // armed: producers ring the doorbell, which wakes poll_fd
  }
  engine_->set_timer(next);
}

NativeEngine::~NativeEngine() { shutdown(); }

void NativeEngine::Wake(void *a) { uv_async_send(static_cast<uv_async_t *>(a)); }

void NativeEngine::OnAsync(uv_async_t *h) {
  auto *self = static_cast<NativeEngine *>(h->data);
  if (!self || !self->engine_) return;
  Napi::Env env = self->env_;
  Napi::HandleScope scope(env);
  dvs::engine::EngineEvent ev;
  while (self->engine_ && self->engine_->next_event(&ev)) {
    Napi::Value data = env.Undefined();
    if (ev.type == dvs::engine::EngineEvent::kControl)
      data = Napi::Buffer<char>::Copy(env, ev.data.data(), ev.data.size());
    else if (!ev.data.empty())
      data = Napi::String::New(env, ev.data);
    self->on_event_.MakeCallback(self->Value(),
                                 {Napi::Number::New(env, ev.type), Napi::Number::New(env, ev.peer),
                                  Napi::Number::New(env, double(ev.incarnation)), data});
  }
}

void NativeEngine::shutdown() {
  if (poll_) {
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
    poll_ = nullptr;
  }
  if (engine_) {
    engine_->set_event_callback(nullptr, nullptr);
    engine_.reset();  // stops the thread, detaches from the arena
  }
  if (async_) {
    async_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(async_), [](uv_handle_t *h) { delete reinterpret_cast<uv_async_t *>(h); });
    async_ = nullptr;
  }
}

bool NativeEngine::check_open(Napi::Env env) {
  if (engine_) return true;
  throw_dvs(env, EDVSDVSINIT, "the engine is closed");
  return false;
}

Napi::Value NativeEngine::Port(const Napi::CallbackInfo &info) {
  if (!check_open(info.Env())) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), engine_->port());
}

Napi::Value NativeEngine::AddPeer(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  sockaddr_in a;
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber() ||
      !parse_addr(info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::Number>().Uint32Value(), &a)) {
    throw_inval(env, "addPeer(node, ipv4, port)");
    return env.Undefined();
  }
  engine_->add_peer(info[0].As<Napi::Number>().Uint32Value(), a);
  return env.Undefined();
}

Napi::Value NativeEngine::RemovePeer(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw_inval(env, "removePeer(node)");
    return env.Undefined();
  }
  engine_->remove_peer(info[0].As<Napi::Number>().Uint32Value());
  return env.Undefined();
}

// setRemote(peer, Uint32Array [dc, ep, gen, pid] * n)
Napi::Value NativeEngine::SetRemote(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw_inval(env, "setRemote(peer, Uint32Array)");
    return env.Undefined();
  }
  Napi::Uint32Array a = info[1].As<Napi::Uint32Array>();
  if (a.ElementLength() % 4) {
    throw_inval(env, "setRemote: 4 numbers per endpoint");
    return env.Undefined();
  }
  std::vector<dvs::engine::RemoteEndpoint> eps;
  for (size_t i = 0; i + 3 < a.ElementLength(); i += 4) {
    if (a[i] > DVS_MAX_DC || a[i + 1] > DVS_MAX_EP) {
      throw_inval(env, "setRemote: dc or endpoint out of range");
      return env.Undefined();
    }
    eps.push_back({a[i], int32_t(a[i + 1]), a[i + 2], a[i + 3]});
  }
  engine_->set_remote_endpoints(info[0].As<Napi::Number>().Uint32Value(), std::move(eps));
  return env.Undefined();
}

Napi::Value NativeEngine::SendControl(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsTypedArray()) {
    throw_inval(env, "sendControl(peer, bytes)");
    return env.Undefined();
  }
  Napi::Uint8Array b = info[1].As<Napi::Uint8Array>();
  if (b.ByteLength() > DVS_MAX_PAYLOAD) {
    throw_dvs(env, EDVS2BIG, "control message larger than 1 MiB");
    return env.Undefined();
  }
  engine_->send_control(info[0].As<Napi::Number>().Uint32Value(),
                        std::string(reinterpret_cast<const char *>(b.Data()), b.ByteLength()));
  return env.Undefined();
}

Napi::Value NativeEngine::SetFault(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  if (info.Length() < 1 || !info[0].IsObject()) {
    throw_inval(env, "setFault({ loss, dup, reorder, delayUs, jitterUs, seed })");
    return env.Undefined();
  }
  engine_->set_fault(fault_of(info[0].As<Napi::Object>()));
  return env.Undefined();
}

// setPartition(Uint32Array nodes): drop all datagrams to and from them (empty: heal).
Napi::Value NativeEngine::SetPartition(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw_inval(env, "setPartition(Uint32Array nodes)");
    return env.Undefined();
  }
  Napi::Uint32Array a = info[0].As<Napi::Uint32Array>();
  std::vector<uint32_t> nodes(a.Data(), a.Data() + a.ElementLength());
  engine_->set_partition(std::move(nodes));
  return env.Undefined();
}

// setDcs(Uint32Array defined, Uint32Array member): the cluster's DCs and those this
// node belongs to; written into the arena header, read by every bind and send.
Napi::Value NativeEngine::SetDcs(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  auto u32 = [&](size_t i) {
    return info.Length() > i && info[i].IsTypedArray() &&
           info[i].As<Napi::TypedArray>().TypedArrayType() == napi_uint32_array;
  };
  if (!u32(0) || !u32(1)) {
    throw_inval(env, "setDcs(Uint32Array defined, Uint32Array member)");
    return env.Undefined();
  }
  uint64_t defined[dvs::kDcWords] = {}, member[dvs::kDcWords] = {};
  for (int k = 0; k < 2; k++) {
    Napi::Uint32Array a = info[k].As<Napi::Uint32Array>();
    for (size_t i = 0; i < a.ElementLength(); i++) {
      uint32_t dc = a[i];
      if (dc > DVS_MAX_DC) {
        throw_dvs(env, EDVSBADDCID, "setDcs: dc out of range");
        return env.Undefined();
      }
      (k ? member : defined)[dc >> 6] |= 1ULL << (dc & 63);
    }
  }
  dvs::ArenaHeader *h = engine_->node()->arena->hdr();
  // Membership first when adding, definition first when removing: never a
  // moment where a DC this node stays in looks forbidden.
  for (uint32_t w = 0; w < dvs::kDcWords; w++) {
    h->dc_member[w].fetch_or(member[w], std::memory_order_release);
    h->dc_defined[w].store(defined[w], std::memory_order_release);
    h->dc_member[w].store(member[w], std::memory_order_release);
  }
  return env.Undefined();
}

// setMigrating(dc, ep, on): senders into (dc, ep) on this node wait while on.
Napi::Value NativeEngine::SetMigrating(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBoolean()) {
    throw_inval(env, "setMigrating(dc, ep, on)");
    return env.Undefined();
  }
  double dc = info[0].As<Napi::Number>().DoubleValue(), ep = info[1].As<Napi::Number>().DoubleValue();
  if (!(dc >= 0 && dc <= DVS_MAX_DC && ep >= 0 && ep <= DVS_MAX_EP) || dc != double(int64_t(dc)) || ep != double(int64_t(ep))) {
    throw_inval(env, "setMigrating: dc or endpoint out of range");
    return env.Undefined();
  }
  int r = dvs::ep_set_migrating(engine_->node(), uint32_t(dc), int32_t(ep), info[2].As<Napi::Boolean>().Value());
  if (r) throw_dvs(env, r, "setMigrating: (dc " + std::to_string(int64_t(dc)) + ", ep " + std::to_string(int64_t(ep)) + ") is not bound on this node");
  return env.Undefined();
}

namespace {
// An integer argument in [lo, hi]; false (and an EDVSINVAL thrown) otherwise.
bool int_in(const Napi::CallbackInfo &info, size_t i, double lo, double hi, const char *what, double *out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw_inval(info.Env(), std::string(what) + " must be a number");
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= lo && v <= hi) || v != double(int64_t(v))) {
    throw_inval(info.Env(), std::string(what) + " out of range");
    return false;
  }
  *out = v;
  return true;
}

void throw_if(Napi::Env env, int r, const std::string &what) {
  if (r) throw_dvs(env, r, what + ": " + dvs_errname(r));
}
}  // namespace

// fence(dc, ep, token): a FENCE marker behind everything in this node's proxy for (dc, ep).
Napi::Value NativeEngine::Fence(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  double dc, ep, token;
  if (!check_open(env) || !int_in(info, 0, 0, DVS_MAX_DC, "dc", &dc) || !int_in(info, 1, 0, DVS_MAX_EP, "ep", &ep) ||
      !int_in(info, 2, 0, 4294967295.0, "token", &token))
    return env.Undefined();
  throw_if(env, engine_->fence(uint32_t(dc), int32_t(ep), uint32_t(token)), "fence");
  return env.Undefined();
}

// toProxy(dc, ep, node, gen): the local endpoint becomes a proxy to `node` in place (migration COMMIT at the source).
Napi::Value NativeEngine::ToProxy(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  double dc, ep, node, gen;
  if (!check_open(env) || !int_in(info, 0, 0, DVS_MAX_DC, "dc", &dc) || !int_in(info, 1, 0, DVS_MAX_EP, "ep", &ep) ||
      !int_in(info, 2, 0, 1023, "node", &node) || !int_in(info, 3, 0, 4294967295.0, "gen", &gen))
    return env.Undefined();
  throw_if(env, engine_->to_proxy(uint32_t(dc), int32_t(ep), uint32_t(node), uint32_t(gen)), "toProxy");
  return env.Undefined();
}

// adopt(dc, ep, pid, name?): this node's proxy becomes a local endpoint of process `pid` in place
// (COMMIT at the destination), carrying the endpoint's name (it had one at the source).
Napi::Value NativeEngine::Adopt(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  double dc, ep, pid;
  if (!check_open(env) || !int_in(info, 0, 0, DVS_MAX_DC, "dc", &dc) || !int_in(info, 1, 0, DVS_MAX_EP, "ep", &ep) ||
      !int_in(info, 2, 1, 4194304, "pid", &pid))
    return env.Undefined();
  std::string name;
  if (info.Length() > 3 && info[3].IsString()) {
    name = info[3].As<Napi::String>().Utf8Value();
    if (name.size() >= dvs::kNameBytes || name.find('\0') != std::string::npos) {
      throw_inval(env, "adopt: a name has at most 31 bytes and no NUL");
      return env.Undefined();
    }
  }
  throw_if(env, engine_->adopt(uint32_t(dc), int32_t(ep), uint32_t(pid), std::move(name)), "adopt");
  return env.Undefined();
}

// repoint(dc, ep, node, gen): this node's proxy for (dc, ep) points at `node` now (COMMIT on a client node).
Napi::Value NativeEngine::Repoint(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  double dc, ep, node, gen;
  if (!check_open(env) || !int_in(info, 0, 0, DVS_MAX_DC, "dc", &dc) || !int_in(info, 1, 0, DVS_MAX_EP, "ep", &ep) ||
      !int_in(info, 2, 0, 1023, "node", &node) || !int_in(info, 3, 0, 4294967295.0, "gen", &gen))
    return env.Undefined();
  throw_if(env, engine_->repoint(uint32_t(dc), int32_t(ep), uint32_t(node), uint32_t(gen)), "repoint");
  return env.Undefined();
}

// expectReplies / forgetReplies(fromNode, Uint32Array [dc, callerEp, callerGen, callId, dstEp] * n)
Napi::Value NativeEngine::ExpectReplies(const Napi::CallbackInfo &info) { return Replies(info, true); }
Napi::Value NativeEngine::ForgetReplies(const Napi::CallbackInfo &info) { return Replies(info, false); }

Napi::Value NativeEngine::Replies(const Napi::CallbackInfo &info, bool expect) {
  Napi::Env env = info.Env();
  double from;
  if (!check_open(env) || !int_in(info, 0, 0, 1023, "node", &from)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      info[1].As<Napi::Uint32Array>().ElementLength() % 5) {
    throw_inval(env, "expectReplies/forgetReplies(node, Uint32Array [dc, callerEp, callerGen, callId, dstEp] * n)");
    return env.Undefined();
  }
  Napi::Uint32Array a = info[1].As<Napi::Uint32Array>();
  std::vector<dvs::engine::Pending> calls;
  for (size_t i = 0; i + 4 < a.ElementLength(); i += 5) {
    if (a[i] > DVS_MAX_DC || a[i + 1] > DVS_MAX_EP || a[i + 4] > DVS_MAX_EP) {
      throw_inval(env, "expectReplies/forgetReplies: dc or endpoint out of range");
      return env.Undefined();
    }
    calls.push_back({a[i], int32_t(a[i + 1]), a[i + 3], a[i + 2], 0, int32_t(a[i + 4]), 1});
  }
  int r = expect ? engine_->expect_replies(uint32_t(from), std::move(calls))
                 : engine_->forget_replies(uint32_t(from), std::move(calls));
  throw_if(env, r, expect ? "expectReplies" : "forgetReplies");
  return env.Undefined();
}

Napi::Value NativeEngine::Stats(const Napi::CallbackInfo &info) {
  if (!check_open(info.Env())) return info.Env().Undefined();
  return Napi::String::New(info.Env(), engine_->stats_json());
}

// The node's endpoint table: [{ dc, ep, gen, remote, node, pid, msgsIn, name, msgsOut }]
Napi::Value NativeEngine::Endpoints(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!check_open(env)) return env.Undefined();
  dvs::Arena &a = *engine_->node()->arena;
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  for (uint32_t i = 0; i < a.hdr()->cfg.max_endpoints; i++) {
    dvs::EndpointSlot *e = a.endpoint(i);
    if (e->state.load(std::memory_order_acquire) != dvs::kEpBound || e->kind == dvs::kEpPeer) continue;
    Napi::Object o = Napi::Object::New(env);
    bool remote = e->kind == dvs::kEpRemote;
    o.Set("dc", e->dc);
    o.Set("ep", e->ep);
    o.Set("gen", remote ? e->remote_gen.load() : e->gen.load());
    o.Set("remote", remote);
    o.Set("node", remote ? e->remote_node.load() : a.hdr()->node_id);
    o.Set("pid", e->owner_pid);
    o.Set("msgsIn", double(e->msgs_in.load()));
    o.Set("name", remote ? std::string() : std::string(e->name, strnlen(e->name, dvs::kNameBytes - 1)));
    o.Set("msgsOut", double(e->msgs_out.load()));
    out.Set(k++, o);
  }
  return out;
}

Napi::Value NativeEngine::Reap(const Napi::CallbackInfo &info) {
  if (check_open(info.Env())) engine_->reap();
  return info.Env().Undefined();
}

Napi::Value NativeEngine::Close(const Napi::CallbackInfo &info) {
  shutdown();
  return info.Env().Undefined();
}

}  // namespace dvs_addon
