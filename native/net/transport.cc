// transport.cc — the Transport: peer table, session handshake and liveness,
// receive dispatch, ACK/heartbeat generation, fault injection hook-up.
//
// Sessions: each side keeps, per peer, its own channel epoch (bumped whenever
// it declares the peer down) and the highest (incarnation, epoch) it has seen
// from the peer. Every datagram carries both sides' (incarnation, epoch) as
// the sender knows them. A datagram from an older peer session is stale; one
// from a newer peer session resets the channel (down, then up once the
// handshake completes); a datagram is used only when it also names this
// side's current (incarnation, epoch) — otherwise it is answered with a
// heartbeat that teaches the peer the current ids. See docs/DESIGN.md.
#include <time.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "fault.h"
#include "recv_channel.h"
#include "send_channel.h"
#include "transport.h"
#include "udp_socket.h"
#include "wire.h"

namespace dvs::net {
namespace {

uint64_t clock_ns(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
uint64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }
uint64_t addr_key(const sockaddr_in &a) {
  return (static_cast<uint64_t>(a.sin_addr.s_addr) << 16) | a.sin_port;
}

class TransportImpl final : public Transport {
 public:
  TransportImpl(const TransportConfig &cfg, Handler *h) : cfg_(cfg), handler_(h) {
    if (cfg_.incarnation == 0) cfg_.incarnation = clock_ns(CLOCK_REALTIME);
    cfg_.mtu = std::clamp<uint32_t>(cfg_.mtu, wire::kMinMtu, wire::kMaxDatagram);
    cfg_.ack_every = std::max<uint32_t>(cfg_.ack_every, 1);
    ack_delay_ns_ = static_cast<uint64_t>(cfg_.ack_delay_us) * 1000;
    fault_.configure(cfg_.fault);
  }
  bool open(std::string *err) { return sock_.open(cfg_.bind, cfg_.gso, err); }

  int fd() const override { return sock_.fd(); }
  uint16_t local_port() const override { return sock_.port(); }

  void add_peer(uint32_t node, const sockaddr_in &addr) override;
  void remove_peer(uint32_t node) override;
  bool peer_up(uint32_t node) const override {
    auto it = by_node_.find(node);
    return it != by_node_.end() && it->second->up;
  }
  bool submit(uint32_t peer, const iovec *iov, int n) override;
  uint32_t send_space(uint32_t peer) const override {
    auto it = by_node_.find(peer);
    return it != by_node_.end() && it->second->up ? it->second->tx.space() : 0;
  }
  void flush() override;
  void on_readable() override;
  void retry_delivery() override;
  uint64_t tick(uint64_t now_ns) override;
  void inject_datagram(const uint8_t *p, uint32_t len, const sockaddr_in &from) override {
    now_ = mono_ns();
    on_datagram(p, len, from, false);
    finish_batch();
  }
  void set_fault(const FaultConfig &f) override { fault_.configure(f); }
  void set_partition(const std::vector<uint32_t> &nodes) override {
    partitioned_.clear();
    for (uint32_t n : nodes) partitioned_.insert(n);
  }
  TransportStats stats() const override;
  std::vector<PeerStats> peer_stats() const override;

 private:
  struct Peer;
  struct PeerOut final : Emitter {
    TransportImpl *t;
    Peer *p;
    void emit_data(uint8_t *d, uint32_t len) override { t->emit_data(*p, d, len); }
  };
  struct PeerSink final : MessageSink {
    TransportImpl *t;
    Peer *p;
    bool message(const uint8_t *m, uint32_t len) override {
      if (!t->handler_->on_message(p->node, m, len)) return false;
      p->msgs_delivered++;
      p->bytes_delivered += len;
      return true;
    }
    void inconsistent() override { t->st_.bad_malformed++; }
  };
  struct Peer {
    uint32_t node = 0;
    sockaddr_in addr{};
    bool up = false;
    uint64_t peer_inc = 0;  // highest peer session seen (kept across downs)
    uint32_t peer_epoch = 0;
    uint32_t my_epoch = 1;  // this side's session epoch with the peer
    uint64_t last_heard = 0, last_sent = 0;
    bool dirty = false, ack_due = false, hello_due = false;
    uint64_t ack_at = 0;    // a delayed acknowledgement is owed by then (0 = none owed)
    uint32_t unacked = 0;   // bytes received since the last acknowledgement
    uint32_t last_adv = 0;  // window in the last acknowledgement sent
    SendChannel tx;
    RecvChannel rx;
    PeerOut out;
    PeerSink sink;
    uint64_t msgs_delivered = 0, bytes_delivered = 0, dgrams_sent = 0, dgrams_received = 0, dup_dropped = 0;
  };
  static constexpr uint32_t kCtrlSlots = 64, kCtrlSize = 1536;
  static constexpr int kReadBatches = 4;  // recvmmsg calls per on_readable()

  wire::Session session(const Peer &p) const {
    return wire::Session{cfg_.node_id, p.node, cfg_.incarnation, p.peer_inc, p.my_epoch, p.peer_epoch};
  }
  void on_datagram(const uint8_t *d, uint32_t len, const sockaddr_in &from, bool truncated);
  bool accept_session(Peer &p, const wire::Header &h);
  void reset_channels(Peer &p);
  void go_down(Peer &p);
  void mark(Peer &p) {
    if (!p.dirty) {
      p.dirty = true;
      dirty_.push_back(&p);
    }
  }
  void finish_batch();
  void emit(Peer &p, const uint8_t *d, uint32_t len);
  void emit_data(Peer &p, uint8_t *d, uint32_t len);
  void ack_fields(Peer &p, uint8_t *d);
  uint8_t *ctrl_buffer();
  void send_ack(Peer &p);
  void send_heartbeat(Peer &p, bool probe);
  void deliver_held(Peer &p);
  // Sends the queued datagrams; only then may acknowledged ring bytes be reused.
  void flush_socket() {
    sock_.flush();
    ctrl_used_ = 0;
    for (auto &p : peers_) p->tx.reclaim();
  }

  TransportConfig cfg_;
  Handler *handler_;
  UdpSocket sock_;
  FaultInjector fault_;
  std::unordered_set<uint32_t> partitioned_;  // simulated partition: nodes cut off both ways
  TransportStats st_;
  uint64_t now_ = 0;
  uint64_t ack_delay_ns_ = 0;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::unordered_map<uint32_t, Peer *> by_node_;
  std::unordered_map<uint64_t, Peer *> by_addr_;
  std::vector<Peer *> dirty_;  // peers owing an ACK or heartbeat after this batch
  alignas(64) uint8_t ctrl_[kCtrlSlots][kCtrlSize];  // ACK/heartbeat datagrams awaiting the socket flush
  uint32_t ctrl_used_ = 0;
};

void TransportImpl::add_peer(uint32_t node, const sockaddr_in &addr) {
  auto it = by_node_.find(node);
  if (it != by_node_.end()) {  // a new address for a known member
    by_addr_.erase(addr_key(it->second->addr));
    it->second->addr = addr;
    by_addr_[addr_key(addr)] = it->second;
    return;
  }
  auto p = std::make_unique<Peer>();
  p->node = node;
  p->addr = addr;
  p->out.t = p->sink.t = this;
  p->out.p = p->sink.p = p.get();
  p->tx.init(SendConfig{cfg_.mtu, cfg_.window_bytes, cfg_.rto_min_us, cfg_.rto_max_us, cfg_.ack_delay_us});
  p->rx.init(cfg_.window_bytes);
  p->tx.reset(session(*p));
  p->last_adv = cfg_.window_bytes;
  by_node_[node] = p.get();
  by_addr_[addr_key(addr)] = p.get();
  peers_.push_back(std::move(p));
}

void TransportImpl::remove_peer(uint32_t node) {
  auto it = by_node_.find(node);
  if (it == by_node_.end()) return;
  Peer *p = it->second;
  flush_socket();  // queued datagrams may point into its ring
  by_node_.erase(it);
  by_addr_.erase(addr_key(p->addr));
  dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), p), dirty_.end());
  bool was_up = p->up;
  peers_.erase(std::find_if(peers_.begin(), peers_.end(), [p](auto &q) { return q.get() == p; }));
  if (was_up) handler_->on_peer_down(node);
}

bool TransportImpl::submit(uint32_t peer, const iovec *iov, int n) {
  auto it = by_node_.find(peer);
  if (it == by_node_.end() || !it->second->up) return false;
  uint64_t len = 0;
  for (int i = 0; i < n; i++) len += iov[i].iov_len;
  return len <= kMaxMessage && it->second->tx.submit(iov, n, static_cast<uint32_t>(len));
}

void TransportImpl::flush() {
  now_ = mono_ns();
  for (auto &p : peers_) {
    if (!p->up || !p->tx.has_unsent()) continue;
    p->tx.close_open();
    p->tx.send_new(now_, p->out);
  }
  flush_socket();
}

void TransportImpl::emit(Peer &p, const uint8_t *d, uint32_t len) {
  p.last_sent = now_;
  p.dgrams_sent++;
  if (!partitioned_.empty() && partitioned_.count(p.node)) {
    st_.partition_dropped++;
    return;
  }
  uint32_t copies = fault_.active() ? fault_.route(d, len, p.addr, now_) : 1;
  for (uint32_t i = 0; i < copies; i++) sock_.queue(&p.addr, d, len);
}

uint8_t *TransportImpl::ctrl_buffer() {
  if (ctrl_used_ == kCtrlSlots) flush_socket();
  return ctrl_[ctrl_used_++];
}

// The acknowledgement of the peer's DATA, as every DATA and ACK to it carries
// it; settles the owed (delayed) acknowledgement. An immediate one owed for a
// hole stays owed: only a pure ACK carries the SACK ranges.
void TransportImpl::ack_fields(Peer &p, uint8_t *d) {
  uint32_t delay = 0;
  uint64_t echo = p.rx.take_echo(now_, &delay);
  p.last_adv = p.rx.window();
  wire::set_ack(d, p.rx.cum(), p.last_adv, echo, delay);
  p.ack_at = 0;
  p.unacked = 0;
  if (!p.rx.has_gap()) p.ack_due = false;
}

void TransportImpl::emit_data(Peer &p, uint8_t *d, uint32_t len) {
  ack_fields(p, d);
  wire::seal(d, len);
  emit(p, d, len);
}

void TransportImpl::send_ack(Peer &p) {
  static_assert(wire::kHeaderSize + wire::kAckPrefix + 8 * wire::kMaxSackRanges <= kCtrlSize,
                "an ACK fits a control slot");
  uint8_t *d = ctrl_buffer();
  wire::SackRange r[wire::kMaxSackRanges];
  uint32_t n = p.rx.sack(r, wire::max_sack_ranges(cfg_.mtu));
  uint32_t body = wire::write_ack_body(d + wire::kHeaderSize, n ? p.rx.high() : 0, r, n);
  wire::write_header(d, wire::kAck, 0, session(p), 0, body, 0);
  ack_fields(p, d);
  p.ack_due = false;
  wire::seal(d, wire::kHeaderSize + body);
  emit(p, d, wire::kHeaderSize + body);
}

void TransportImpl::send_heartbeat(Peer &p, bool probe) {
  uint8_t *d = ctrl_buffer();
  wire::write_header(d, wire::kHeartbeat, probe ? wire::kProbe : 0, session(p), 0, 0, p.rx.window());
  wire::seal(d, wire::kHeaderSize);
  emit(p, d, wire::kHeaderSize);
}

void TransportImpl::reset_channels(Peer &p) {
  flush_socket();  // queued datagrams may point into the ring being discarded
  p.tx.reset(session(p));
  p.rx.reset();
  p.last_adv = cfg_.window_bytes;
  p.ack_at = 0;
  p.unacked = 0;
  p.ack_due = false;
}

void TransportImpl::go_down(Peer &p) {
  p.up = false;
  reset_channels(p);
  handler_->on_peer_down(p.node);
}

// The session rules (see the file comment). Returns true when the datagram
// belongs to the current session of both sides and may be used.
bool TransportImpl::accept_session(Peer &p, const wire::Header &h) {
  const wire::Session &s = h.s;
  if (s.src_inc < p.peer_inc || (s.src_inc == p.peer_inc && s.src_epoch < p.peer_epoch)) {
    st_.bad_stale++;
    return false;
  }
  if (s.src_inc != p.peer_inc || s.src_epoch != p.peer_epoch) {  // the peer restarted or reset
    p.peer_inc = s.src_inc;
    p.peer_epoch = s.src_epoch;
    if (p.up)
      go_down(p);
    else
      reset_channels(p);
  }
  if (s.dst_inc != cfg_.incarnation || s.dst_epoch != p.my_epoch) {
    // The peer does not know this side's current session yet: teach it.
    if (s.dst_inc != 0 || h.kind != wire::kHeartbeat) st_.bad_stale++;
    p.hello_due = true;
    mark(p);
    return false;
  }
  p.last_heard = now_;
  if (!p.up) {
    p.up = true;
    p.tx.reset(session(p));  // the peer's ids are final now
    p.hello_due = true;      // so that the peer completes its side at once
    mark(p);
    handler_->on_peer_up(p.node, p.peer_inc);
  }
  return true;
}

void TransportImpl::on_datagram(const uint8_t *d, uint32_t len, const sockaddr_in &from, bool truncated) {
  st_.dgrams_received++;
  if (fault_.active() && fault_.lose_incoming()) return;
  auto it = by_addr_.find(addr_key(from));
  if (it == by_addr_.end()) {
    st_.bad_stranger++;
    return;
  }
  Peer &p = *it->second;
  if (!partitioned_.empty() && partitioned_.count(p.node)) {
    st_.partition_dropped++;
    return;
  }
  if (truncated) {
    st_.bad_oversize++;
    return;
  }
  wire::Header h;
  switch (wire::parse(d, len, &h)) {
    case wire::Verdict::kOk: break;
    case wire::Verdict::kMalformed: st_.bad_malformed++; return;
    case wire::Verdict::kVersion: st_.bad_version++; return;
    case wire::Verdict::kOversize: st_.bad_oversize++; return;
    case wire::Verdict::kChecksum: st_.bad_checksum++; return;
  }
  if (h.s.src_node != p.node || h.s.dst_node != cfg_.node_id) {
    st_.bad_stranger++;
    return;
  }
  if (!accept_session(p, h)) return;
  p.dgrams_received++;
  const uint8_t *body = d + wire::kHeaderSize;
  switch (h.kind) {
    case wire::kData: {
      if (!p.tx.ack_valid(h.ack)) {
        st_.bad_seq++;
        return;
      }
      uint64_t cum0 = p.rx.cum();
      switch (p.rx.on_data(h.seq, d, len, now_, p.sink)) {
        case RecvChannel::Result::kNew:
          // In order with nothing missing: the acknowledgement may wait for
          // DATA going back (or ack_delay_us, or ack_every full datagrams).
          // Out of order, or a hole filled: acknowledge at once (SACK).
          if (h.seq != cum0 || p.rx.cum() != cum0 + 1 || p.rx.has_gap()) {
            p.ack_due = true;
          } else {
            p.unacked += len;
            if (p.unacked >= cfg_.ack_every * cfg_.mtu) p.ack_due = true;
            else if (p.ack_at == 0) p.ack_at = now_ + ack_delay_ns_;
          }
          break;
        case RecvChannel::Result::kDup: p.dup_dropped++; p.ack_due = true; break;
        case RecvChannel::Result::kOutOfWindow: st_.bad_seq++; break;
        case RecvChannel::Result::kNoRoom: p.ack_due = true; break;
      }
      if (p.ack_due) mark(p);
      // The acknowledgement it carries for this side's DATA (the Handler may
      // have reset the channel meanwhile: then it names the old session's
      // sequences and is skipped).
      if (p.up && p.tx.ack_valid(h.ack) && !p.tx.on_ack(h.ack, h.window, h.echo, h.echo_delay_us, nullptr, now_, p.out))
        st_.bad_seq++;
      break;
    }
    case wire::kAck:
      if (!p.tx.on_ack(h.ack, h.window, h.echo, h.echo_delay_us, body, now_, p.out)) st_.bad_seq++;
      break;
    case wire::kHeartbeat:
      if (h.flags & wire::kProbe) {
        p.ack_due = true;
        mark(p);
      }
      break;
  }
}

void TransportImpl::finish_batch() {
  for (Peer *p : dirty_) {
    if (p->ack_due && p->up) send_ack(*p);
    if (p->hello_due) send_heartbeat(*p, false);
    p->dirty = p->ack_due = p->hello_due = false;
  }
  dirty_.clear();
  flush_socket();
}

void TransportImpl::on_readable() {
  now_ = mono_ns();
  for (int i = 0; i < kReadBatches; i++) {
    int n = sock_.receive([this](const uint8_t *d, uint32_t len, const sockaddr_in &from, bool trunc) {
      on_datagram(d, len, from, trunc);
    });
    finish_batch();
    if (n < UdpSocket::kBatch) break;
  }
}

void TransportImpl::deliver_held(Peer &p) {
  if (!p.up || !p.rx.held() || !p.rx.deliver(p.sink)) return;
  // Window update: tell the sender when a closed window has opened substantially.
  uint32_t w = p.rx.window();
  if (w >= p.last_adv + cfg_.window_bytes / 4 || (p.last_adv < cfg_.mtu && w >= cfg_.mtu)) send_ack(p);
}

void TransportImpl::retry_delivery() {
  now_ = mono_ns();
  for (auto &p : peers_) deliver_held(*p);
  flush_socket();
}

uint64_t TransportImpl::tick(uint64_t now_ns) {
  now_ = std::max(now_ns, now_);  // never behind the times already recorded
  uint64_t hb_ns = static_cast<uint64_t>(cfg_.heartbeat_ms) * 1000000;
  uint64_t dead_ns = static_cast<uint64_t>(cfg_.dead_after_ms) * 1000000;
  uint64_t wait = hb_ns;
  if (fault_.active()) {
    wait = std::min(wait, fault_.release(now_, [this](const uint8_t *d, uint32_t len, const sockaddr_in &to) {
      auto it = by_addr_.find(addr_key(to));
      if (it != by_addr_.end()) sock_.queue(&it->second->addr, d, len);
    }));
    flush_socket();  // before route() may reuse the released buffers
  }
  for (size_t i = 0; i < peers_.size(); i++) {
    Peer &p = *peers_[i];
    if (p.up && now_ - p.last_heard > dead_ns) {
      p.my_epoch++;  // a new session: nothing of the old one is accepted again
      go_down(p);
    }
    if (p.up) {
      bool probe = false;
      wait = std::min(wait, p.tx.on_timer(now_, p.out, &probe));
      if (probe) send_heartbeat(p, true);
      deliver_held(p);
      if (p.ack_at != 0) {
        if (now_ >= p.ack_at) send_ack(p);  // no DATA went back in time
        else wait = std::min(wait, p.ack_at - now_);
      }
      wait = std::min(wait, p.last_heard + dead_ns - now_ + 1);
    }
    if (now_ - p.last_sent >= hb_ns) send_heartbeat(p, false);
    wait = std::min(wait, p.last_sent + hb_ns - std::min(now_, p.last_sent + hb_ns));
  }
  flush_socket();
  return std::max<uint64_t>(wait, 1000);
}

TransportStats TransportImpl::stats() const {
  TransportStats s = st_;
  s.dgrams_sent = sock_.dgrams_sent;
  s.sendmmsg_calls = sock_.sendmmsg_calls;
  s.recvmmsg_calls = sock_.recvmmsg_calls;
  s.send_failed = sock_.send_failed;
  s.fault_dropped = fault_.dropped;
  s.fault_duplicated = fault_.duplicated;
  s.fault_reordered = fault_.reordered;
  s.gso = sock_.gso();
  return s;
}

std::vector<PeerStats> TransportImpl::peer_stats() const {
  std::vector<PeerStats> v;
  for (auto &p : peers_) {
    PeerStats s;
    s.node = p->node;
    s.up = p->up;
    s.peer_incarnation = p->peer_inc;
    s.msgs_sent = p->tx.msgs;
    s.bytes_sent = p->tx.bytes;
    s.msgs_delivered = p->msgs_delivered;
    s.bytes_delivered = p->bytes_delivered;
    s.dgrams_sent = p->dgrams_sent;
    s.dgrams_received = p->dgrams_received;
    s.retransmits = p->tx.retransmits;
    s.dup_dropped = p->dup_dropped;
    s.srtt_us = p->tx.srtt_us();
    s.rto_us = p->tx.rto_us();
    s.inflight_bytes = p->tx.inflight_bytes();
    s.peer_window = p->tx.peer_window();
    s.last_heard_ns = p->last_heard;
    v.push_back(s);
  }
  return v;
}

}  // namespace

std::unique_ptr<Transport> Transport::create(const TransportConfig &cfg, Handler *h, std::string *err) {
  auto t = std::make_unique<TransportImpl>(cfg, h);
  if (!t->open(err)) return nullptr;
  return t;
}

}  // namespace dvs::net
