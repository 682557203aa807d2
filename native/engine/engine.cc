// engine.cc — see engine.h. Everything below run() executes on the engine thread.
#include "engine.h"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "../core/endpoint_table.h"
#include "../core/futex.h"
#include "../core/mailbox.h"
#include "../core/proc_table.h"
#include "../core/slab.h"
#include "frame.h"

namespace dvs::engine {
namespace {

constexpr uint64_t kMaxSleepNs = 10000000ULL;  // re-check the endpoint table at least this often
constexpr uint64_t kStatsEveryNs = 50000000ULL;
// How long a proxy the directory removed stays while its node's link is up
// (answers may still be on the way): see Engine::retiring_.
constexpr uint64_t kRetireGraceNs = 250000000ULL;

inline uint64_t proxy_key(uint32_t dc, int32_t ep) { return uint64_t(dc) << 32 | uint32_t(ep); }

uint32_t frame_kind_of(uint32_t cell_kind) {
  switch (cell_kind) {
    case kKindCall: return kFrameCall;
    case kKindNotify: return kFrameNotify;
    case kKindFence: return kFrameFence;
    default: return kFrameSend;
  }
}

// The answer to a SEND/CALL frame: an OUTCOME for acknowledged sends, a REPLY for calls.
Frame answer_to(const Frame &f, int32_t status) {
  Frame a{};
  a.kind = f.kind == kFrameCall ? kFrameReply : kFrameOutcome;
  a.dc = f.dc;
  a.src_ep = f.dst_ep;
  a.dst_ep = f.src_ep;
  a.dst_gen = f.src_gen;
  a.call_id = f.call_id;
  a.status = status;
  return a;
}

bool wants_answer(const Frame &f) { return f.kind == kFrameCall || (f.kind == kFrameSend && (f.flags & kFrameAck)); }

}  // namespace

std::unique_ptr<Engine> Engine::start(const EngineConfig &cfg, std::string *err, int *code) {
  std::unique_ptr<Engine> g(new Engine());
  g->cfg_ = cfg;
  dvs_attach_opts o{};
  o.node_id = cfg.node_id;
  o.ns = cfg.ns.empty() ? nullptr : cfg.ns.c_str();
  o.max_procs = cfg.max_procs;
  o.max_endpoints = cfg.max_endpoints;
  o.inbox_cells = cfg.inbox_cells;
  o.reply_cells = cfg.reply_cells;
  o.pool_mib = cfg.pool_mib;
  int r = node_attach(&o, 0, &g->node_);
  if (r) {
    *code = r;
    *err = std::string("cannot attach to node ") + std::to_string(cfg.node_id) + "'s arena: " + dvs_last_error_detail();
    return nullptr;
  }
  ArenaHeader *h = g->node_->arena->hdr();
  {
    lock_arena(g->node_);
    uint32_t other = h->agent_pid.load(std::memory_order_relaxed);
    bool busy = other && uint32_t(getpid()) != other && pid_alive(pid_t(other), h->agent_start.load());
    if (!busy) {
      h->agent_pid.store(uint32_t(getpid()), std::memory_order_relaxed);
      h->agent_start.store(g->node_->start_time, std::memory_order_relaxed);
      h->agent_bell.store(g->node_->proc + 1, std::memory_order_release);
    }
    unlock_arena(g->node_);
    if (busy) {
      *code = EDVSBUSY;
      *err = "another agent (pid " + std::to_string(other) + ") serves node " + std::to_string(cfg.node_id);
      node_detach(g->node_, false);
      g->node_ = nullptr;
      return nullptr;
    }
  }
  net::TransportConfig tc = cfg.net;
  tc.node_id = cfg.node_id;
  g->net_ = net::Transport::create(tc, g.get(), err);
  if (!g->net_) {
    *code = EDVSINVAL;
    return nullptr;  // the destructor detaches
  }
  g->port_ = g->net_->local_port();
  g->epfd_ = epoll_create1(EPOLL_CLOEXEC);
  g->cmdfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (g->epfd_ < 0 || g->cmdfd_ < 0) {
    *code = EDVSNOMEM;
    *err = std::string("epoll/eventfd: ") + strerror(errno);
    return nullptr;
  }
  if (cfg.invoker && (g->timerfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0) {
    *code = EDVSNOMEM;
    *err = std::string("timerfd: ") + strerror(errno);
    return nullptr;
  }
  for (int fd : {g->net_->fd(), g->node_->bell_rx, g->cmdfd_, g->timerfd_}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(g->epfd_, EPOLL_CTL_ADD, fd, &ev);
  }
  g->bind_seq_ = h->bind_seq.load() - 1;  // report the initial table
  if (cfg.invoker) {
    Engine *e = g.get();
    e->driver_ = {[](void *x) {
                    uint64_t next;
                    return static_cast<Engine *>(x)->poll(&next);
                  },
                  [](void *x, uint64_t ns) { static_cast<Engine *>(x)->wait(ns); }, e};
    set_driver(e->node_, &e->driver_);
  } else {
    g->thread_ = std::thread([e = g.get()] { e->run(); });
  }
  return g;
}

Engine::~Engine() {
  stop();
  if (node_ && cfg_.invoker) set_driver(node_, nullptr);
  net_.reset();
  if (node_) {
    ArenaHeader *h = node_->arena->hdr();
    uint32_t me = uint32_t(getpid());
    if (h->agent_pid.compare_exchange_strong(me, 0)) h->agent_bell.store(0, std::memory_order_release);
    node_detach(node_, false);
  }
  if (epfd_ >= 0) close(epfd_);
  if (cmdfd_ >= 0) close(cmdfd_);
  if (timerfd_ >= 0) close(timerfd_);
}

void Engine::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  uint64_t one = 1;
  (void)!write(cmdfd_, &one, sizeof one);
  thread_.join();
}

// ------------------------------------------------------------ commands

#define DVS_ENGINE_CMD(...)                 \
  do {                                      \
    {                                       \
      std::lock_guard<std::mutex> g(cmd_mu_); \
      cmds_.push_back(__VA_ARGS__);         \
      has_cmds_.store(true);                \
    }                                       \
    uint64_t one = 1;                       \
    (void)!write(cmdfd_, &one, sizeof one); \
  } while (0)

void Engine::add_peer(uint32_t node, const sockaddr_in &addr) {
  Command c{};
  c.type = Command::kAddPeer;
  c.peer = node;
  c.addr = addr;
  DVS_ENGINE_CMD(std::move(c));
}

void Engine::remove_peer(uint32_t node) {
  Command c{};
  c.type = Command::kRemovePeer;
  c.peer = node;
  DVS_ENGINE_CMD(std::move(c));
}

void Engine::set_remote_endpoints(uint32_t peer, std::vector<RemoteEndpoint> eps) {
  Command c{};
  c.type = Command::kSetRemote;
  c.peer = peer;
  c.eps = std::move(eps);
  DVS_ENGINE_CMD(std::move(c));
}

void Engine::send_control(uint32_t peer, std::string bytes) {
  Command c{};
  c.type = Command::kControl;
  c.peer = peer;
  c.bytes = std::move(bytes);
  DVS_ENGINE_CMD(std::move(c));
}

void Engine::set_fault(const net::FaultConfig &f) {
  Command c{};
  c.type = Command::kFault;
  c.fault = f;
  DVS_ENGINE_CMD(std::move(c));
}

void Engine::set_partition(std::vector<uint32_t> nodes) {
  Command c{};
  c.type = Command::kPartition;
  c.nodes = std::move(nodes);
  DVS_ENGINE_CMD(std::move(c));
}

int Engine::run_on_engine(std::function<int()> f) {
  if (cfg_.invoker) {  // the caller's thread is the engine's: keep the command order, then run
    apply_commands();
    return f();
  }
  Command c{};
  c.type = Command::kCall;
  c.call = std::make_shared<std::packaged_task<int()>>(std::move(f));
  std::future<int> done = c.call->get_future();
  DVS_ENGINE_CMD(std::move(c));
  if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) return EDVSTIMEDOUT;
  return done.get();
}

int Engine::fence(uint32_t dc, int32_t ep, uint32_t token) {
  return run_on_engine([=] { return mig_fence(dc, ep, token); });
}

int Engine::to_proxy(uint32_t dc, int32_t ep, uint32_t node, uint32_t gen) {
  return run_on_engine([=] { return mig_to_proxy(dc, ep, node, gen); });
}

int Engine::adopt(uint32_t dc, int32_t ep, uint32_t pid, std::string name) {
  return run_on_engine([=] { return mig_adopt(dc, ep, pid, name); });
}

int Engine::repoint(uint32_t dc, int32_t ep, uint32_t node, uint32_t gen) {
  return run_on_engine([=] {
    auto it = proxies_.find(proxy_key(dc, ep));
    if (it == proxies_.end()) return EDVSNOTBIND;
    if (node == node_->node_id || !peers_.count(node)) return EDVSBADNODEID;
    point_proxy(it->second, node, gen, it->second.pid);
    rebuild_owned();
    return 0;
  });
}

int Engine::expect_replies(uint32_t from, std::vector<Pending> calls) {
  return run_on_engine([this, from, calls = std::move(calls)] {
    for (Pending p : calls) {
      p.peer = from;
      p.used = 1;
      pending_.put(p);
    }
    return 0;
  });
}

int Engine::forget_replies(uint32_t from, std::vector<Pending> calls) {
  return run_on_engine([this, from, calls = std::move(calls)] {
    for (const Pending &c : calls) {
      const Pending *p = pending_.find_entry(c.dc, c.caller, c.call_id);
      if (!p || p->peer != from || p->caller_gen != c.caller_gen || p->origin != kNoOrigin) continue;
      Pending gone;
      pending_.take(c.dc, c.caller, c.call_id, &gone);
    }
    return 0;
  });
}

int Engine::mig_fence(uint32_t dc, int32_t ep, uint32_t token) {
  auto it = proxies_.find(proxy_key(dc, ep));
  if (it == proxies_.end()) return EDVSNOTBIND;
  dvs_endpoint *e = it->second.e;
  // Behind everything already in the proxy: the engine drains it in order.
  Outgoing m{kKindFence, kNone, 0, 0, dc, 0, node_->node_id, 0, 0, e->gen, token, 0};
  return post_cell(node_, e->slot, kInbox, m) ? 0 : EDVSAGAIN;
}

int Engine::mig_to_proxy(uint32_t dc, int32_t ep, uint32_t node, uint32_t gen) {
  if (node == node_->node_id || !peers_.count(node)) return EDVSBADNODEID;
  if (proxies_.count(proxy_key(dc, ep))) return EDVSPROCSTS;
  dvs_endpoint *e = nullptr;
  int r = ep_take_over(node_, dc, ep, kEpRemote, node, gen, kNone, &e);
  if (r) return r;
  proxies_[proxy_key(dc, ep)] = {e, node, 0};
  rebuild_owned();
  return 0;
}

int Engine::mig_adopt(uint32_t dc, int32_t ep, uint32_t pid, const std::string &name) {
  auto it = proxies_.find(proxy_key(dc, ep));
  if (it == proxies_.end()) return EDVSNOTBIND;
  Arena &a = *node_->arena;
  uint32_t proc = kNone;
  for (uint32_t i = 0; i < a.hdr()->cfg.max_procs && proc == kNone; i++) {
    ProcSlot *p = a.proc(i);
    if (i != node_->proc && p->state.load(std::memory_order_acquire) == kProcLive && p->pid == pid) proc = i;  // (not the engine's own attachment)
  }
  if (proc == kNone) return EDVSSRCDIED;  // that process is not attached to this node
  int r = ep_take_over(node_, dc, ep, kEpLocal, 0, 0, proc, nullptr, name.empty() ? nullptr : name.c_str());
  if (r) return r;
  // The slot is the new owner's now: drop the engine's handle without unbinding.
  dvs_endpoint *e = it->second.e;
  if (it->second.retire_at) retiring_--;
  proxies_.erase(it);
  ep_forget(e);
  delete e;
  rebuild_owned();
  // Calls this node's callers had sent to the old location are the new local
  // server's now (it answers them from the image): nobody waits for the old node.
  pending_.take_if([&](const Pending &p) { return p.dc == dc && p.dst == ep && p.origin == kNoOrigin; },
                   [](const Pending &) {});
  return 0;
}

void Engine::reap() {
  Command c{};
  c.type = Command::kReap;
  DVS_ENGINE_CMD(std::move(c));
}

#undef DVS_ENGINE_CMD

void Engine::set_event_callback(void (*cb)(void *), void *arg) {
  std::lock_guard<std::mutex> g(ev_mu_);
  ev_cb_ = cb;
  ev_arg_ = arg;
}

bool Engine::next_event(EngineEvent *out) {
  std::lock_guard<std::mutex> g(ev_mu_);
  if (events_.empty()) return false;
  *out = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Engine::emit(EngineEvent ev) {
  void (*cb)(void *);
  void *arg;
  {
    std::lock_guard<std::mutex> g(ev_mu_);
    events_.push_back(std::move(ev));
    cb = ev_cb_;
    arg = ev_arg_;
  }
  if (cb) cb(arg);
}

void Engine::apply_commands() {
  if (!has_cmds_.load(std::memory_order_acquire)) return;  // the common case: no lock, no allocation
  std::deque<Command> cmds;
  {
    std::lock_guard<std::mutex> g(cmd_mu_);
    cmds.swap(cmds_);
    has_cmds_.store(false, std::memory_order_relaxed);
  }
  for (Command &c : cmds) {
    switch (c.type) {
      case Command::kAddPeer:
        net_->add_peer(c.peer, c.addr);
        peers_.emplace(c.peer, false);
        route_for(c.peer, true);
        break;
      case Command::kRemovePeer:
        set_remote(c.peer, {});
        net_->remove_peer(c.peer);
        if (peers_.erase(c.peer)) on_peer_down(c.peer);
        route_for(c.peer, false);
        break;
      case Command::kSetRemote:
        set_remote(c.peer, c.eps);
        break;
      case Command::kControl: {
        Frame f{};
        f.kind = kFrameControl;
        auto it = peers_.find(c.peer);
        if (it != peers_.end() && it->second)
          submit_or_backlog(c.peer, f, reinterpret_cast<const uint8_t *>(c.bytes.data()), uint32_t(c.bytes.size()));
        break;
      }
      case Command::kFault:
        net_->set_fault(c.fault);
        break;
      case Command::kPartition:
        net_->set_partition(c.nodes);
        break;
      case Command::kReap:
        node_reap_dead(node_);
        break;
      case Command::kCall:
        (*c.call)();
        break;
    }
  }
}

// ------------------------------------------------------------ directory

void Engine::route_for(uint32_t peer, bool want) {
  auto it = routes_.find(peer);
  if (want && it == routes_.end()) {
    dvs_endpoint *e = nullptr;
    int r = ep_bind_as(node_, kPeerDc, int32_t(peer), kEpPeer, peer, 0, &e);
    if (r == 0) routes_[peer] = e;
    else emit({EngineEvent::kWarning, peer, 0, std::string("cannot bind the route to node ") + std::to_string(peer)});
  } else if (!want && it != routes_.end()) {
    ep_close(it->second);
    delete it->second;
    routes_.erase(it);
  }
  rebuild_owned();
}

void Engine::set_remote(uint32_t peer, const std::vector<RemoteEndpoint> &eps) {
  Arena &a = *node_->arena;
  std::unordered_map<uint64_t, const RemoteEndpoint *> want;
  for (const RemoteEndpoint &r : eps) want[proxy_key(r.dc, r.ep)] = &r;
  auto pit = peers_.find(peer);
  bool link_up = pit != peers_.end() && pit->second;
  std::vector<uint64_t> gone;
  for (auto &[key, px] : proxies_) {
    if (px.peer != peer || want.count(key)) continue;
    if (!link_up) {
      gone.push_back(key);
    } else if (!px.retire_at) {
      px.retire_at = now_ns() + kRetireGraceNs;
      retiring_++;
    }
  }
  for (uint64_t key : gone) remove_proxy(key);
  for (auto &[key, r] : want) {
    auto it = proxies_.find(key);
    if (it != proxies_.end()) {
      point_proxy(it->second, peer, r->gen, r->pid);
      continue;
    }
    dvs_endpoint *e = nullptr;
    int rc = ep_bind_as(node_, r->dc, r->ep, kEpRemote, peer, r->gen, &e);
    if (rc) {
      emit({EngineEvent::kWarning, peer, 0,
            "endpoint " + std::to_string(r->ep) + " of DC " + std::to_string(r->dc) + " announced by node " +
                std::to_string(peer) + " is also bound here (" + dvs_errname(rc) + "); ignored"});
      continue;
    }
    a.endpoint(e->slot)->owner_pid = r->pid;  // shown by `dvs ps` (the owner for liveness stays the engine)
    proxies_[key] = {e, peer, r->pid};
  }
  rebuild_owned();
}

// The endpoint is gone from that node: what was forwarded to it and still
// waits is answered now (before the proxy goes, so a caller that notices the
// unbind finds its answer already there); queued messages get EDVSDSTDIED.
void Engine::remove_proxy(uint64_t key) {
  auto it = proxies_.find(key);
  if (it == proxies_.end()) return;
  uint32_t peer = it->second.peer;
  uint32_t dc = it->second.e->dc;
  int32_t ep = it->second.e->ep;
  if (it->second.retire_at) retiring_--;
  pending_.take_if([&](const Pending &p) { return p.peer == peer && p.dc == dc && p.dst == ep; },
                   [&](const Pending &p) { answer_pending(p, ep, EDVSDSTDIED); });
  ep_close(it->second.e);
  delete it->second.e;
  proxies_.erase(it);
}

void Engine::retire_proxies(uint64_t now, uint64_t *next_ns) {
  std::vector<uint64_t> due;
  uint64_t next = UINT64_MAX;
  for (auto &[key, px] : proxies_) {
    if (!px.retire_at) continue;
    if (px.retire_at <= now) due.push_back(key);
    else next = std::min(next, px.retire_at - now);
  }
  for (uint64_t key : due) remove_proxy(key);
  if (!due.empty()) rebuild_owned();
  if (next != UINT64_MAX) *next_ns = std::min(*next_ns, next);
}

// Same endpoint, possibly a new incarnation or a new node: the proxy stays
// bound (senders keep their cached slot) and points at the new location.
void Engine::point_proxy(Proxy &px, uint32_t node, uint32_t gen, uint32_t pid) {
  EndpointSlot *s = node_->arena->endpoint(px.e->slot);
  s->remote_gen.store(gen, std::memory_order_release);
  s->remote_node.store(node, std::memory_order_release);
  if (px.peer != node) {  // moved: what waits on it now waits on the new node
    uint32_t old = px.peer, dc = px.e->dc;
    int32_t ep = px.e->ep;
    pending_.update([&](Pending &p) {
      if (p.peer == old && p.dc == dc && p.dst == ep) p.peer = node;
    });
  }
  px.peer = node;
  px.pid = pid;
  if (px.retire_at) {  // announced again (or elsewhere): not retiring any more
    px.retire_at = 0;
    retiring_--;
  }
}

void Engine::rebuild_owned() {
  owned_.clear();
  for (auto &[peer, e] : routes_) owned_.push_back({e, peer});
  for (auto &[key, p] : proxies_) owned_.push_back({p.e, p.peer});
}

// ------------------------------------------------------------ outbound

bool Engine::submit_or_backlog(uint32_t peer, const Frame &f, const uint8_t *payload, uint32_t len) {
  auto &q = backlog_[peer];
  iovec iov[2] = {{const_cast<Frame *>(&f), sizeof f}, {const_cast<uint8_t *>(payload), len}};
  if (q.empty() && net_->submit(peer, iov, len ? 2 : 1)) return true;
  std::vector<uint8_t> bytes(sizeof f + len);
  memcpy(bytes.data(), &f, sizeof f);
  if (len) memcpy(bytes.data() + sizeof f, payload, len);
  q.push_back(std::move(bytes));
  return false;
}

bool Engine::flush_backlog(uint32_t peer) {
  auto it = backlog_.find(peer);
  if (it == backlog_.end()) return true;
  auto &q = it->second;
  while (!q.empty()) {
    iovec iov{q.front().data(), q.front().size()};
    if (!net_->submit(peer, &iov, 1)) return false;
    q.pop_front();
  }
  return true;
}

void Engine::send_outcome(uint32_t peer, const Frame &f, int32_t status) {
  flush_acks();  // answers to one sender stay in order
  auto it = peers_.find(peer);
  if (it == peers_.end() || !it->second) return;  // its waiters were failed when it went down
  Frame a = answer_to(f, status);
  submit_or_backlog(peer, a, nullptr, 0);
}

void Engine::answer_local(const ReplyTarget &t, int32_t from_ep, int32_t status) {
  post_reply(node_, t, from_ep, nullptr, 0, kNone, status);
}

void Engine::answer_pending(const Pending &p, int32_t from_ep, int32_t status) {
  if (p.origin == kNoOrigin) {
    answer_local({p.dc, p.caller, p.caller_gen, node_->node_id, p.call_id}, from_ep, status);
    return;
  }
  auto it = peers_.find(p.origin);
  if (it == peers_.end() || !it->second) return;  // the origin is down: it answered its callers itself
  Frame a{};
  a.kind = p.answer;
  a.dc = p.dc;
  a.src_ep = p.dst;
  a.dst_ep = p.caller;
  a.dst_gen = p.caller_gen;
  a.call_id = p.call_id;
  a.status = status;
  a.bits = p.answer == kFrameOutcome ? 1 : 0;
  submit_or_backlog(p.origin, a, nullptr, 0);
}

int Engine::forward(uint32_t peer, const Frame &f, EndpointSlot *e, const uint8_t *payload, uint32_t plen) {
  uint32_t to = e->remote_node.load(std::memory_order_acquire);
  int32_t err = 0;
  if ((f.flags & kFrameForwarded) || to == peer) {
    err = EDVSNONODE;  // the two directories disagree: no second hop, no ping-pong
  } else {
    auto it = peers_.find(to);
    if (it == peers_.end() || !it->second) err = EDVSNOTCONN;
  }
  if (err) {
    counters_.undeliverable.fetch_add(1, std::memory_order_relaxed);
    if (wants_answer(f)) send_outcome(peer, f, err);
    return -1;
  }
  auto bq = backlog_.find(to);
  if (bq != backlog_.end() && !bq->second.empty()) return 0;  // behind what already waits for that peer
  Frame g = f;
  g.flags |= kFrameForwarded;
  g.dst_gen = e->remote_gen.load(std::memory_order_acquire);  // the incarnation this node knows for it
  iovec iov[2] = {{&g, sizeof g}, {const_cast<uint8_t *>(payload), plen}};
  if (!net_->submit(to, iov, plen ? 2 : 1)) return 0;
  if (wants_answer(f)) {
    Pending p{f.dc, f.src_ep, f.call_id, f.src_gen, to, f.dst_ep, 1};
    p.origin = peer;
    p.answer = f.kind == kFrameCall ? kFrameReply : kFrameOutcome;
    pending_.put(p);
  }
  counters_.redirected.fetch_add(1, std::memory_order_relaxed);
  return 1;
}

bool Engine::forward_answer(uint32_t peer, const Frame &f, const uint8_t *payload, uint32_t plen, bool *handled) {
  *handled = false;
  const Pending *first = pending_.find_entry(f.dc, f.dst_ep, f.call_id);
  if (!first || first->origin == kNoOrigin || first->peer != peer) return true;
  *handled = true;
  uint32_t origin = first->origin;
  auto it = peers_.find(origin);
  uint32_t count = f.kind == kFrameOutcome && f.bits ? f.bits : 1;
  if (it != peers_.end() && it->second) {
    auto bq = backlog_.find(origin);
    if (bq != backlog_.end() && !bq->second.empty()) return false;
    iovec iov[2] = {{const_cast<Frame *>(&f), sizeof f}, {const_cast<uint8_t *>(payload), plen}};
    if (!net_->submit(origin, iov, plen ? 2 : 1)) return false;  // the transport holds it and offers it again
  }
  for (uint32_t k = 0; k < count; k++) {
    Pending p;
    pending_.take(f.dc, f.dst_ep, f.call_id + k, &p);
  }
  return true;
}

bool Engine::drain_outbound() {
  bool progress = false;
  for (auto &[e, peer] : owned_) progress = drain_slot(e, peer) || progress;
  return progress;
}

bool Engine::drain_slot(dvs_endpoint *e, uint32_t peer) {
  Arena &a = *node_->arena;
  EndpointSlot *s = a.endpoint(e->slot);
  RingRef r = ring_ref(a, e->slot, kInbox);
  uint32_t head = r.head->load(std::memory_order_relaxed);
  auto pit = peers_.find(peer);
  bool up = pit != peers_.end() && pit->second;
  if (up && !flush_backlog(peer)) return false;
  bool is_route = s->kind == kEpPeer;
  // Notification bits left in a proxy's notify slots (set while it was a local
  // endpoint that has since migrated away): passed on as NOTIFY frames.
  if (!is_route && up && s->notify_pending.load(std::memory_order_acquire) && s->notify_pending.exchange(0)) {
    for (auto &ns : s->notify) {
      uint32_t src = ns.src.load(std::memory_order_acquire);
      uint32_t bits = src ? ns.bits.exchange(0, std::memory_order_acq_rel) : 0;
      if (!bits) continue;
      Frame f{};
      f.kind = kFrameNotify;
      f.dc = e->dc;
      f.src_ep = int32_t(src - 1);
      f.dst_ep = e->ep;
      f.dst_gen = s->remote_gen.load(std::memory_order_acquire);
      f.bits = bits;
      iovec iov{&f, sizeof f};
      if (!net_->submit(peer, &iov, 1)) {
        ns.bits.fetch_or(bits, std::memory_order_acq_rel);
        s->notify_pending.store(1, std::memory_order_release);
        break;
      }
    }
  }
  uint32_t taken = 0;
  while (Cell *c = ring_peek(r, head)) {
    uint32_t block = c->block < a.hdr()->total_blocks ? c->block : kNone;
    bool skip = c->kind == kKindSkip || c->dst_gen != e->gen || (is_route && c->kind != kKindReply);
    if (!skip && !up) {
      // The link is down: callers and acknowledged senders learn it now.
      if (!is_route && wants_reply(*c)) answer_local(reply_target(*c), e->ep, EDVSNOTCONN);
      counters_.notconn.fetch_add(1, std::memory_order_relaxed);
      skip = true;
    }
    if (!skip) {
      Frame f{};
      if (is_route) {  // a reply from a server here to a caller on `peer`
        f.kind = kFrameReply;
        f.dc = c->src_dc;
        f.src_ep = c->src_ep;
        f.dst_ep = int32_t(c->bits);
        f.dst_gen = c->src_gen;
      } else {
        f.kind = frame_kind_of(c->kind);
        f.flags = (c->flags & kCellAck) ? kFrameAck : 0;
        f.dc = e->dc;
        f.src_ep = c->src_ep;
        f.src_gen = c->src_gen;
        f.dst_ep = e->ep;
        f.dst_gen = s->remote_gen.load(std::memory_order_acquire);
        f.bits = c->bits;
      }
      f.call_id = c->call_id;
      f.status = c->status;
      uint32_t len = block != kNone ? c->len : 0;
      const uint8_t *payload = block != kNone ? a.base() + a.block_offset(block) : nullptr;
      iovec iov[2] = {{&f, sizeof f}, {const_cast<uint8_t *>(payload), len}};
      if (!net_->submit(peer, iov, len ? 2 : 1)) {
        break;  // the window is full: the cell stays, the inbox fills, senders are back-pressured
      }
      if (!is_route && wants_reply(*c)) {
        Pending p{c->src_dc, c->src_ep, c->call_id, c->src_gen, peer, e->ep, 1};
        if (c->src_node != node_->node_id) {  // sent from another node (this was a local endpoint until it migrated)
          p.origin = c->src_node;
          p.answer = c->kind == kKindCall ? kFrameReply : kFrameOutcome;
        }
        pending_.put(p);
      }
      counters_.forwarded.fetch_add(1, std::memory_order_relaxed);
    } else if (c->kind != kKindSkip && c->dst_gen != e->gen && !is_route && wants_reply(*c)) {
      answer_local(reply_target(*c), e->ep, EDVSDSTDIED);  // sent to an earlier incarnation of this proxy
    }
    if (block != kNone) slab_free_if(a, block, own_queued(kInbox, e->slot, head));
    ring_pop(r, c, head++);
    taken++;
  }
  if (taken) {
    s->msgs_in.store(s->msgs_in.load(std::memory_order_relaxed) + taken, std::memory_order_relaxed);
    inbox_space_freed(node_, s);
    arena_space_freed(node_);
  }
  return taken != 0;
}

// ------------------------------------------------------------ inbound

uint32_t Engine::lookup(uint32_t dc, int32_t ep) {
  uint32_t slot, gen;
  SlotRef &c = lookup_cache_[(uint32_t(ep) * 2654435761u ^ dc) & (kLookupCache - 1)];
  if (lookup_bound(*node_->arena, c, dc, ep, &slot, &gen) == 0) return slot;
  return ep_lookup(*node_->arena, dc, ep);  // unbound: the callers tell why (free, or another kind)
}

int Engine::deliver(uint32_t peer, const Frame &f, const uint8_t *payload, uint32_t plen) {
  Arena &a = *node_->arena;
  uint32_t s = lookup(f.dc, f.dst_ep);
  EndpointSlot *e = s == kNone ? nullptr : a.endpoint(s);
  int32_t err = 0;
  uint32_t gen = 0;
  if (!dc_usable(a.hdr(), f.dc)) {
    err = EDVSNODCNODE;
  } else if (!e || e->state.load(std::memory_order_acquire) != kEpBound) {
    err = f.dst_gen ? EDVSDSTDIED : EDVSNOTBIND;
  } else if (e->kind == kEpRemote) {
    return forward(peer, f, e, payload, plen);  // not here (any more): the sender's location was stale
  } else if (e->kind != kEpLocal) {
    err = EDVSNONODE;
  } else {
    gen = e->gen.load(std::memory_order_acquire);
    if (f.dst_gen && gen != f.dst_gen) err = EDVSDSTDIED;
  }
  if (err) {
    counters_.undeliverable.fetch_add(1, std::memory_order_relaxed);
    if (wants_answer(f)) send_outcome(peer, f, err);
    return -1;
  }
  if (f.kind == kFrameNotify) {
    if (notify_slot(node_, s, f.src_ep, f.bits)) {
      counters_.delivered.fetch_add(1, std::memory_order_relaxed);
      return 1;
    }
  }
  uint32_t block = kNone;
  uint64_t mine = own_proc(kOwnAlloc, node_->proc, node_->proc_gen);
  if (plen) {
    if (ring_full(ring_ref(a, s, kInbox))) return 0;
    block = slab_alloc(a, plen, mine, alloc_cursor_);
    if (block == kNone) return 0;
    memcpy(a.base() + a.block_offset(block), payload, plen);
  }
  uint32_t kind = f.kind == kFrameCall     ? kKindCall
                  : f.kind == kFrameNotify ? kKindNotify
                  : f.kind == kFrameFence  ? kKindFence
                                           : kKindSend;
  Outgoing m{kind, block, plen, f.src_ep, f.dc, f.src_gen, peer, f.call_id, 0, gen, f.bits, 0};
  if (!post_cell(node_, s, kInbox, m)) {
    if (block != kNone) slab_free_if(a, block, mine);
    return 0;
  }
  counters_.delivered.fetch_add(1, std::memory_order_relaxed);
  if (f.kind == kFrameSend && (f.flags & kFrameAck)) acknowledge(peer, f);
  return 1;
}

void Engine::acknowledge(uint32_t peer, const Frame &f) {
  Frame &o = open_ack_.frame;
  if (open_ack_.open && open_ack_.peer == peer && o.dc == f.dc && o.dst_ep == f.src_ep && o.dst_gen == f.src_gen &&
      f.call_id == o.call_id + o.bits && o.bits < kMaxAckRange) {
    o.bits++;
    return;
  }
  flush_acks();
  open_ack_.open = true;
  open_ack_.peer = peer;
  o = answer_to(f, 0);
  o.bits = 1;
}

void Engine::flush_acks() {
  if (!open_ack_.open) return;
  open_ack_.open = false;
  auto it = peers_.find(open_ack_.peer);
  if (it != peers_.end() && it->second) submit_or_backlog(open_ack_.peer, open_ack_.frame, nullptr, 0);
}

bool Engine::on_message(uint32_t peer, const uint8_t *msg, uint32_t len) {
  Frame f;
  const uint8_t *payload;
  uint32_t plen;
  if (!parse_frame(msg, len, &f, &payload, &plen)) {
    counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  Arena &a = *node_->arena;
  switch (f.kind) {
    case kFrameControl:
      emit({EngineEvent::kControl, peer, 0, std::string(reinterpret_cast<const char *>(payload), plen)});
      return true;
    case kFrameReply:
    case kFrameOutcome: {
      bool passed = false;
      if (pending_.size() && !forward_answer(peer, f, payload, plen, &passed)) return false;
      if (passed) return true;
      // The caller must still be here and have room in its reply ring; if
      // the ring is full (rare: credits bound it) the transport holds this.
      uint32_t s = lookup(f.dc, f.dst_ep);
      if (s == kNone || a.endpoint(s)->state.load(std::memory_order_acquire) != kEpBound ||
          a.endpoint(s)->gen.load(std::memory_order_acquire) != f.dst_gen) {
        counters_.late_replies.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      if (ring_full(ring_ref(a, s, kReplies))) return false;
      uint64_t mine = own_proc(kOwnAlloc, node_->proc, node_->proc_gen);
      uint32_t block = kNone;
      if (plen) {
        block = slab_alloc(a, plen, mine, alloc_cursor_);
        if (block == kNone) return false;  // held until blocks free up
        memcpy(a.base() + a.block_offset(block), payload, plen);
      }
      // An OUTCOME acknowledges `bits` consecutive sends (one cell for all).
      uint32_t count = f.kind == kFrameOutcome && f.bits ? f.bits : 1;
      uint32_t matched = 0;
      for (uint32_t k = 0; k < count; k++) {
        Pending p;
        // Matched by (dc, caller, call id, caller incarnation), not by node: a
        // migrated server answers calls sent to its old node from its new one.
        if (pending_.take(f.dc, f.dst_ep, f.call_id + k, &p) && p.caller_gen == f.dst_gen) matched++;
      }
      uint32_t flags = f.kind == kFrameOutcome ? kCellAck : 0;
      if (matched && post_cell(node_, s, kReplies,
                               {kKindReply, block, plen, f.src_ep, f.dc, 0, peer, f.call_id, f.status, f.dst_gen,
                                f.kind == kFrameOutcome ? count : 0, flags})) {
        counters_.delivered.fetch_add(matched, std::memory_order_relaxed);
      } else {
        counters_.late_replies.fetch_add(1, std::memory_order_relaxed);
        if (block != kNone) slab_free_if(a, block, mine);
      }
      return true;
    }
    default:
      break;
  }
  // SEND / CALL / NOTIFY for a local endpoint, in order behind any parked ones for it.
  uint32_t s = lookup(f.dc, f.dst_ep);
  auto pq = s == kNone || parked_.empty() ? parked_.end() : parked_.find(s);
  if (pq == parked_.end() || pq->second.empty()) {
    int r = deliver(peer, f, payload, plen);
    if (r != 0) return true;
  }
  if (parked_bytes_ + len > cfg_.park_bytes) return false;  // the peer's window closes
  parked_[s].push_back({peer, std::vector<uint8_t>(msg, msg + len)});
  parked_bytes_ += len;
  counters_.parked.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool Engine::retry_parked() {
  bool progress = false;
  bool was_full = parked_bytes_ > 0;
  for (auto it = parked_.begin(); it != parked_.end();) {
    auto &q = it->second;
    while (!q.empty()) {
      Frame f;
      const uint8_t *payload = nullptr;
      uint32_t plen = 0;
      Parked &p = q.front();
      parse_frame(p.bytes.data(), uint32_t(p.bytes.size()), &f, &payload, &plen);  // validated on arrival
      if (deliver(p.peer, f, payload, plen) == 0) break;
      parked_bytes_ -= p.bytes.size();
      q.pop_front();
      progress = true;
    }
    it = q.empty() ? parked_.erase(it) : std::next(it);
  }
  if (progress && was_full) net_->retry_delivery();
  return progress;
}

void Engine::on_peer_up(uint32_t peer, uint64_t incarnation) {
  peers_[peer] = true;
  emit({EngineEvent::kPeerUp, peer, incarnation, {}});
}

void Engine::on_peer_down(uint32_t peer) {
  if (open_ack_.open && open_ack_.peer == peer) open_ack_.open = false;
  auto it = peers_.find(peer);
  if (it != peers_.end()) it->second = false;
  backlog_.erase(peer);
  // Everything this node forwarded to the peer and still waits for fails now.
  pending_.take_if([&](const Pending &p) { return p.peer == peer; }, [&](const Pending &p) {
    answer_pending(p, 0, EDVSNOTCONN);
    counters_.notconn.fetch_add(1, std::memory_order_relaxed);
  });
  // Messages forwarded on that node's behalf: nobody waits for their answers any more.
  pending_.take_if([&](const Pending &p) { return p.origin == peer; }, [](const Pending &) {});
  emit({EngineEvent::kPeerDown, peer, 0, {}});
}

// ------------------------------------------------------------ the loop

bool Engine::arm() {
  Arena &a = *node_->arena;
  bool work = false;
  for (auto &[e, peer] : owned_) {
    a.endpoint(e->slot)->wake.fetch_or(kWakeBell, std::memory_order_seq_cst);
    if (has_work(e, kWorkInbox)) work = true;
  }
  uint32_t p = node_->proc;
  if (!parked_.empty()) {
    a.hdr()->space_bells[p / 64].fetch_or(1ULL << (p % 64), std::memory_order_seq_cst);
    for (auto &[slot, q] : parked_) a.endpoint(slot)->space_bells[p / 64].fetch_or(1ULL << (p % 64));
    work = retry_parked() || work;
  }
  return work;
}

void Engine::drain_wake_fds() {
  doorbell_drain(node_->bell_rx);
  uint64_t v;
  (void)!read(cmdfd_, &v, sizeof v);
  if (timerfd_ >= 0) (void)!read(timerfd_, &v, sizeof v);
}

void Engine::arm_and_sleep(uint64_t timeout_ns) {
  if (arm()) return;
  epoll_event evs[4];
  // The transport's deadlines (delayed acknowledgements, loss detection) are
  // sub-millisecond: sleep to the µs (epoll_pwait2), not rounded up to a ms.
  timespec ts{time_t(timeout_ns / 1000000000ULL), long(timeout_ns % 1000000000ULL)};
  int n = epoll_pwait2(epfd_, evs, 4, &ts, nullptr);
  if (n < 0 && errno == ENOSYS) n = epoll_wait(epfd_, evs, 4, int((timeout_ns + 999999) / 1000000));
  if (n > 0) drain_wake_fds();
}

bool Engine::duty_cycle(uint64_t *next_ns) {
  ArenaHeader *h = node_->arena->hdr();
  apply_commands();
  uint64_t before = counters_.delivered.load(std::memory_order_relaxed) +
                    counters_.forwarded.load(std::memory_order_relaxed);
  if (!parked_.empty()) retry_parked();
  drain_outbound();
  net_->flush();
  net_->on_readable();
  flush_acks();
  uint64_t now = now_ns();
  *next_ns = std::min(net_->tick(now), kMaxSleepNs);
  if (retiring_) retire_proxies(now, next_ns);
  for (auto &[peer, q] : backlog_)
    if (!q.empty()) flush_backlog(peer);
  net_->flush();
  uint32_t bs = h->bind_seq.load(std::memory_order_acquire);
  if (bs != bind_seq_) {
    bind_seq_ = bs;
    emit({EngineEvent::kBindsChanged, 0, 0, {}});
  }
  if (now - stats_at_ >= kStatsEveryNs) refresh_stats();
  return counters_.delivered.load(std::memory_order_relaxed) + counters_.forwarded.load(std::memory_order_relaxed) !=
         before;
}

bool Engine::poll(uint64_t *next_ns) { return duty_cycle(next_ns); }

void Engine::set_timer(uint64_t next_ns) {
  if (timerfd_ < 0) return;
  drain_wake_fds();  // the host is about to sleep on poll_fd(): clear what woke it last time
  itimerspec t{};
  t.it_value.tv_sec = time_t(next_ns / 1000000000ULL);
  t.it_value.tv_nsec = long(next_ns % 1000000000ULL);
  if (!t.it_value.tv_sec && !t.it_value.tv_nsec) t.it_value.tv_nsec = 1;
  timerfd_settime(timerfd_, 0, &t, nullptr);
}

void Engine::wait(uint64_t timeout_ns) { arm_and_sleep(timeout_ns); }

void Engine::run() {
  uint64_t busy_until = 0;
  while (!stopping_.load(std::memory_order_relaxed)) {
    uint64_t next;
    bool progress = duty_cycle(&next);
    uint64_t now = now_ns();
    if (progress) {
      busy_until = now + uint64_t(cfg_.spin_us) * 1000;
      continue;
    }
    if (now < busy_until) {
      cpu_relax();
      continue;
    }
    arm_and_sleep(next);
  }
  refresh_stats();
}

void Engine::refresh_stats() {
  stats_at_ = now_ns();
  net::TransportStats t = net_->stats();
  std::string j = "{";
  auto num = [&](const char *k, uint64_t v, bool comma = true) {
    j += "\"";
    j += k;
    j += "\":";
    j += std::to_string(v);
    if (comma) j += ",";
  };
  num("port", port_);
  num("proxies", proxies_.size());
  num("pending", pending_.size());
  num("parkedBytes", parked_bytes_);
  num("forwarded", counters_.forwarded.load());
  num("delivered", counters_.delivered.load());
  num("parked", counters_.parked.load());
  num("notconn", counters_.notconn.load());
  num("redirected", counters_.redirected.load());
  num("undeliverable", counters_.undeliverable.load());
  num("lateReplies", counters_.late_replies.load());
  num("badFrames", counters_.bad_frames.load());
  j += "\"transport\":{";
  num("dgramsSent", t.dgrams_sent);
  num("dgramsReceived", t.dgrams_received);
  num("sendmmsgCalls", t.sendmmsg_calls);
  num("recvmmsgCalls", t.recvmmsg_calls);
  num("badMalformed", t.bad_malformed);
  num("badVersion", t.bad_version);
  num("badOversize", t.bad_oversize);
  num("badStranger", t.bad_stranger);
  num("badStale", t.bad_stale);
  num("badChecksum", t.bad_checksum);
  num("badSeq", t.bad_seq);
  num("sendFailed", t.send_failed);
  num("faultDropped", t.fault_dropped);
  num("faultDuplicated", t.fault_duplicated);
  num("faultReordered", t.fault_reordered);
  num("partitionDropped", t.partition_dropped, false);
  j += "},\"peers\":[";
  bool first = true;
  for (const net::PeerStats &p : net_->peer_stats()) {
    if (!first) j += ",";
    first = false;
    j += "{";
    num("node", p.node);
    j += std::string("\"up\":") + (p.up ? "true," : "false,");
    num("incarnation", p.peer_incarnation);
    num("msgsSent", p.msgs_sent);
    num("msgsDelivered", p.msgs_delivered);
    num("bytesSent", p.bytes_sent);
    num("bytesDelivered", p.bytes_delivered);
    num("dgramsSent", p.dgrams_sent);
    num("dgramsReceived", p.dgrams_received);
    num("retransmits", p.retransmits);
    num("dupDropped", p.dup_dropped);
    num("srttUs", p.srtt_us);
    num("rtoUs", p.rto_us);
    num("inflightBytes", p.inflight_bytes);
    num("peerWindow", p.peer_window, false);
    j += "}";
  }
  j += "]}";
  std::lock_guard<std::mutex> g(stats_mu_);
  stats_json_ = std::move(j);
}

std::string Engine::stats_json() {
  std::lock_guard<std::mutex> g(stats_mu_);
  return stats_json_;
}

}  // namespace dvs::engine
