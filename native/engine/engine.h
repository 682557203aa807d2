// engine.h — the agent's data plane: one thread that joins a node's arena to
// the cluster transport. It consumes the inboxes of the node's proxy slots
// (endpoints bound on other nodes) and peer routes (replies to callers on
// other nodes), forwards them over net::Transport, and delivers what peers
// send into the local endpoints' mailboxes. JS never touches a message; the
// host (lib/agent through the addon) only steers it with commands and
// receives control-plane events.
#pragma once
#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../core/node.h"
#include "../net/transport.h"
#include "frame.h"
#include "pending_table.h"

namespace dvs::engine {

struct EngineConfig {
  std::string ns;          // arena namespace ("" = $DVS_NAMESPACE or "default")
  uint32_t node_id = 0;
  uint32_t max_procs = 0, max_endpoints = 0, inbox_cells = 0, reply_cells = 0, pool_mib = 0;  // 0 = default
  net::TransportConfig net;
  uint32_t spin_us = 0;               // busy-poll this long after activity before sleeping
  uint32_t park_bytes = 64u << 20;    // inbound messages held for full mailboxes, before back-pressuring the peer
  // Invoker mode: no engine thread; the host drives the duty cycle (poll/arm/wait)
  // on its own thread — in dvs, the event loop and the sync waits of the
  // process that embeds the agent (Aeron's "agent invoker"). No thread hand-off
  // on the data path, at the price of running the transport on the app's thread.
  bool invoker = false;
};

// One endpoint bound on another node, as the directory reports it.
struct RemoteEndpoint {
  uint32_t dc;
  int32_t ep;
  uint32_t gen;
  uint32_t pid;
};

struct EngineEvent {
  enum Type : uint32_t { kPeerUp = 1, kPeerDown = 2, kControl = 3, kBindsChanged = 4, kWarning = 5 };
  uint32_t type;
  uint32_t peer;
  uint64_t incarnation;
  std::string data;
};

struct EngineCounters {
  std::atomic<uint64_t> forwarded{0};      // messages taken from proxies/routes and handed to the transport
  std::atomic<uint64_t> delivered{0};      // messages from peers put into local mailboxes / reply rings
  std::atomic<uint64_t> parked{0};         // deliveries that had to wait for mailbox or arena space
  std::atomic<uint64_t> notconn{0};        // callers/senders answered EDVSNOTCONN (peer down)
  std::atomic<uint64_t> redirected{0};     // messages for a stale location passed on to the endpoint's node
  std::atomic<uint64_t> undeliverable{0};  // messages for endpoints not bound here (answered with an error)
  std::atomic<uint64_t> late_replies{0};   // replies/outcomes nobody waits for any more (dropped)
  std::atomic<uint64_t> bad_frames{0};     // malformed engine frames (dropped)
};

class Engine : public net::Handler {
 public:
  // Attaches to (creating if needed) the node's arena, binds the transport,
  // starts the thread. nullptr + *err (DVS code in *code) on failure.
  static std::unique_ptr<Engine> start(const EngineConfig &cfg, std::string *err, int *code);
  ~Engine() override;
  void stop();

  // Thread-safe commands, applied by the engine thread in order.
  void add_peer(uint32_t node, const sockaddr_in &addr);
  void remove_peer(uint32_t node);
  void set_remote_endpoints(uint32_t peer, std::vector<RemoteEndpoint> eps);
  void send_control(uint32_t peer, std::string bytes);
  void set_fault(const net::FaultConfig &f);
  // Simulated partition: drop every datagram to and from these peers (empty: heal).
  void set_partition(std::vector<uint32_t> nodes);
  // Reclaims what dead processes of this node held (a client's control connection closed).
  void reap();

  // Migration primitives (docs/DESIGN.md "Migration"). Each runs on the
  // engine's thread (or directly in invoker mode) and returns its result: 0 or
  // a DVS error code.
  // A FENCE marker behind everything in this node's proxy for (dc, ep) (EDVSAGAIN: proxy inbox full, retry).
  int fence(uint32_t dc, int32_t ep, uint32_t token);
  // Source, COMMIT: the local endpoint becomes a proxy to `node` (remote incarnation `gen`) in place.
  int to_proxy(uint32_t dc, int32_t ep, uint32_t node, uint32_t gen);
  // Destination, COMMIT: this node's proxy becomes a local endpoint owned by process `pid`, in place.
  int adopt(uint32_t dc, int32_t ep, uint32_t pid, std::string name = {});
  // Client node, COMMIT: this node's proxy for (dc, ep) now points at `node` (remote incarnation `gen`);
  // what waits on the old node waits on the new one.
  int repoint(uint32_t dc, int32_t ep, uint32_t node, uint32_t gen);
  // Source: replies from `from` to these local callers are expected (calls handed over in an image).
  int expect_replies(uint32_t from, std::vector<Pending> calls);
  // Source, ROLLBACK: those expectations are withdrawn (the source's service answers the calls itself).
  int forget_replies(uint32_t from, std::vector<Pending> calls);

  // Events for the host. `cb` runs on the engine thread when events are queued;
  // the host then drains them with next_event() on its own thread.
  void set_event_callback(void (*cb)(void *), void *arg);
  bool next_event(EngineEvent *out);

  // Invoker mode (the host's thread drives; never call from two threads):
  // one duty cycle, true when it moved messages; *next_ns: when to call again at the latest.
  bool poll(uint64_t *next_ns);
  // Arms the wake-ups (proxy/route doorbells, space); true if work is already there.
  bool arm();
  // Before the host sleeps on poll_fd(): clears its wake-ups and makes it readable in next_ns.
  void set_timer(uint64_t next_ns);
  // arm() and, if idle, sleep until a datagram, a doorbell, a command, or timeout_ns.
  void wait(uint64_t timeout_ns);
  // Readable when poll() has something to do (an epoll fd over the socket, doorbell, commands).
  int poll_fd() const { return epfd_; }
  bool invoker() const { return cfg_.invoker; }

  uint16_t port() const { return port_; }
  dvs_node *node() const { return node_; }
  const EngineCounters &counters() const { return counters_; }
  // A JSON snapshot: transport and per-peer stats, proxies, counters (refreshed by the thread every ~50 ms).
  std::string stats_json();

  // net::Handler (engine thread)
  bool on_message(uint32_t peer, const uint8_t *msg, uint32_t len) override;
  void on_peer_up(uint32_t peer, uint64_t incarnation) override;
  void on_peer_down(uint32_t peer) override;

 private:
  struct Proxy {
    dvs_endpoint *e;
    uint32_t peer;
    uint32_t pid;
    uint64_t retire_at = 0;  // 0 = live; else removed at this time (see retiring_)
  };
  struct Parked {  // an inbound message waiting for space in a local mailbox
    uint32_t peer;
    std::vector<uint8_t> bytes;
  };
  struct Command {
    enum Type { kAddPeer, kRemovePeer, kSetRemote, kControl, kFault, kPartition, kReap, kCall } type;
    uint32_t peer;
    sockaddr_in addr;
    std::vector<RemoteEndpoint> eps;
    std::string bytes;
    net::FaultConfig fault;
    std::vector<uint32_t> nodes;
    std::shared_ptr<std::packaged_task<int()>> call;  // kCall: run on the engine thread
  };
  // Runs f on the engine thread (after the commands queued before it) and returns its result.
  int run_on_engine(std::function<int()> f);
  int mig_fence(uint32_t dc, int32_t ep, uint32_t token);
  int mig_to_proxy(uint32_t dc, int32_t ep, uint32_t node, uint32_t gen);
  int mig_adopt(uint32_t dc, int32_t ep, uint32_t pid, const std::string &name);
  void point_proxy(Proxy &px, uint32_t node, uint32_t gen, uint32_t pid);

  Engine() = default;
  void run();
  void apply_commands();
  bool drain_outbound();
  bool drain_slot(dvs_endpoint *e, uint32_t peer);
  bool flush_backlog(uint32_t peer);
  void answer_local(const ReplyTarget &t, int32_t from_ep, int32_t status);
  // Answers a pending entry with an error: its local caller, or the origin node of a forwarded message.
  void answer_pending(const Pending &p, int32_t from_ep, int32_t status);
  // A message for an endpoint this node only has a proxy for: 1 passed on, 0 later, -1 answered with an error.
  int forward(uint32_t peer, const Frame &f, EndpointSlot *e, const uint8_t *payload, uint32_t plen);
  // A REPLY/OUTCOME for a message forwarded on behalf of another node: passes it back (false: later).
  bool forward_answer(uint32_t peer, const Frame &f, const uint8_t *payload, uint32_t plen, bool *handled);
  void send_outcome(uint32_t peer, const Frame &f, int32_t status);
  // Success acknowledgements of consecutive sends from one sender become one OUTCOME frame.
  void acknowledge(uint32_t peer, const Frame &f);
  void flush_acks();
  bool submit_or_backlog(uint32_t peer, const Frame &f, const uint8_t *payload, uint32_t len);
  // 1 delivered, 0 no space (park), -1 answered with an error / dropped
  int deliver(uint32_t peer, const Frame &f, const uint8_t *payload, uint32_t plen);
  bool retry_parked();
  void set_remote(uint32_t peer, const std::vector<RemoteEndpoint> &eps);
  void route_for(uint32_t peer, bool want);
  void rebuild_owned();
  // (dc, ep) -> slot through a small cache validated against the slot (one hash lookup saved per message).
  uint32_t lookup(uint32_t dc, int32_t ep);
  void arm_and_sleep(uint64_t timeout_ns);
  bool duty_cycle(uint64_t *next_ns);
  void drain_wake_fds();
  void emit(EngineEvent ev);
  void refresh_stats();

  EngineConfig cfg_;
  dvs_node *node_ = nullptr;
  std::unique_ptr<net::Transport> net_;
  uint16_t port_ = 0;
  int epfd_ = -1, cmdfd_ = -1, timerfd_ = -1;  // timerfd: invoker mode only
  dvs_driver driver_{};
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  std::mutex cmd_mu_;
  std::deque<Command> cmds_;
  std::atomic<bool> has_cmds_{false};

  std::mutex ev_mu_;
  std::deque<EngineEvent> events_;
  void (*ev_cb_)(void *) = nullptr;
  void *ev_arg_ = nullptr;

  std::mutex stats_mu_;
  std::string stats_json_ = "{}";
  uint64_t stats_at_ = 0;

  // engine-thread state
  std::unordered_map<uint64_t, Proxy> proxies_;          // (dc << 32 | ep) -> proxy
  std::unordered_map<uint32_t, dvs_endpoint *> routes_;  // peer -> route slot (replies to its callers)
  std::unordered_map<uint32_t, bool> peers_;             // member -> link up
  std::vector<std::pair<dvs_endpoint *, uint32_t>> owned_;  // slots we consume, with their peer
  std::unordered_map<uint32_t, std::deque<std::vector<uint8_t>>> backlog_;  // peer -> frames submit() refused
  std::unordered_map<uint32_t, std::deque<Parked>> parked_;
  // Proxies the directory removed while the link to their node was up stay
  // bound for a grace period (Proxy::retire_at): that node may still be
  // sending answers to calls made through them (the directory does not travel
  // with the data, e.g. with etcd), and their callers keep waiting for those
  // instead of giving up with EDVSDSTDIED. New messages through a retiring
  // proxy are answered by the remote node itself (EDVSNOTBIND/EDVSDSTDIED).
  uint32_t retiring_ = 0;
  void retire_proxies(uint64_t now, uint64_t *next_ns);
  void remove_proxy(uint64_t key);                 // local slot -> waiting deliveries
  uint64_t parked_bytes_ = 0;
  PendingTable pending_;
  uint32_t bind_seq_ = 0;
  uint32_t alloc_cursor_[kMaxClasses] = {};
  EngineCounters counters_;
  static constexpr uint32_t kLookupCache = 64;
  SlotRef lookup_cache_[kLookupCache];
  struct {
    bool open = false;
    uint32_t peer = 0;
    Frame frame{};
  } open_ack_;
};

}  // namespace dvs::engine
