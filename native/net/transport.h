// transport.h — the reliable UDP transport between node agents (no N-API, no
// arena knowledge: it moves opaque messages of up to kMaxMessage bytes between
// peers, exactly once and in order per peer, over one UDP socket).
//
// Threading: a Transport is driven by ONE thread (the agent engine's loop),
// which calls submit()/flush()/on_readable()/tick() and receives the Handler
// callbacks synchronously from inside those calls. Nothing here blocks; the
// caller waits with epoll on fd() plus its own descriptors, for at most the
// time tick() returns.
//
// Guarantees per (this node -> peer) channel, across loss, duplication,
// reordering and delay of datagrams: every message accepted by submit() is
// delivered to the peer's Handler::on_message exactly once and in submit
// order, unless the peer is declared down first (then the Handler hears
// on_peer_down and the channel's undelivered messages are discarded; the
// engine fails its own records for that peer). Nothing is dropped for lack of
// buffer space: submit() refuses (returns false) instead, and the receiver
// advertises a window so that a receiver that does not consume (on_message
// returns false) stops the sender.
#pragma once
#include <netinet/in.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dvs::net {

constexpr uint32_t kMaxMessage = (1u << 20) + 256;  // 1 MiB payload + engine header

struct FaultConfig {
  double loss = 0;        // probability a datagram is dropped (outgoing and incoming each)
  double dup = 0;         // probability an outgoing datagram is sent twice
  double reorder = 0;     // probability an outgoing datagram is held back and sent after later ones
  uint32_t delay_us = 0;  // extra delay added to every outgoing datagram
  uint32_t jitter_us = 0; // + uniform random [0, jitter_us)
  uint64_t seed = 0;      // 0 = random
  bool enabled() const { return loss > 0 || dup > 0 || reorder > 0 || delay_us > 0 || jitter_us > 0; }
};

struct TransportConfig {
  uint32_t node_id = 0;
  uint64_t incarnation = 0;        // this agent's life (e.g. start time in ns); peers reset channels when it changes
  sockaddr_in bind{};              // local address (port 0 = ephemeral)
  uint32_t mtu = 1472;             // max UDP payload per datagram
  uint32_t window_bytes = 4 << 20; // max unacknowledged bytes in flight per peer (also the receive buffer)
  uint32_t heartbeat_ms = 100;     // idle keepalive / probe period
  uint32_t dead_after_ms = 1500;   // no datagram from a peer for this long -> on_peer_down
  uint32_t rto_min_us = 1000, rto_max_us = 200000;  // rto_min_us is raised to at least ack_delay_us + 500
  // Acknowledgements ride on DATA going back; a pure ACK leaves only when no
  // DATA went back within ack_delay_us of the first unacknowledged arrival,
  // after ack_every full-size datagrams, or at once for out-of-order /
  // duplicate arrivals, holes, probes and window updates.
  uint32_t ack_delay_us = 300;
  uint32_t ack_every = 4;
  FaultConfig fault;
  bool gso = true;                 // UDP GSO/GRO when the kernel has them (false: plain datagrams)
};

struct PeerStats {
  uint32_t node = 0;
  bool up = false;
  uint64_t peer_incarnation = 0;
  uint64_t msgs_sent = 0, msgs_delivered = 0, bytes_sent = 0, bytes_delivered = 0;
  uint64_t dgrams_sent = 0, dgrams_received = 0, retransmits = 0, dup_dropped = 0;
  uint32_t srtt_us = 0, rto_us = 0;
  uint32_t inflight_bytes = 0, peer_window = 0;
  uint64_t last_heard_ns = 0;
};

struct TransportStats {
  uint64_t dgrams_sent = 0, dgrams_received = 0, sendmmsg_calls = 0, recvmmsg_calls = 0;
  uint64_t bad_malformed = 0, bad_version = 0, bad_oversize = 0, bad_stranger = 0, bad_stale = 0;
  uint64_t fault_dropped = 0, fault_duplicated = 0, fault_reordered = 0;
  // Extensions: datagrams failing the CRC (counted apart from bad_malformed),
  // sequence/ACK numbers outside the window, datagrams the kernel refused to
  // send (socket buffer full; repaired by retransmission), whether GSO is in use.
  uint64_t bad_checksum = 0, bad_seq = 0, send_failed = 0;
  // Datagrams dropped because of a simulated partition (set_partition).
  uint64_t partition_dropped = 0;
  bool gso = false;
};

class Handler {
 public:
  virtual ~Handler() = default;
  // A complete message from `peer`, in order. Return true when consumed (the
  // bytes are only valid during the call); false when the receiver cannot take
  // it now: the transport keeps it (and everything after it from that peer)
  // and offers it again after retry_delivery() or on a later call.
  virtual bool on_message(uint32_t peer, const uint8_t *msg, uint32_t len) = 0;
  // The peer answered for the first time, or again after being down, or with a
  // new incarnation (fresh channel; any earlier incarnation's state is gone).
  virtual void on_peer_up(uint32_t peer, uint64_t incarnation) = 0;
  // The peer was silent for dead_after_ms, restarted with a new incarnation
  // (reported as down then up), or was removed. Undelivered outgoing messages
  // to it have been discarded.
  virtual void on_peer_down(uint32_t peer) = 0;
};

class Transport {
 public:
  // Binds the socket. Returns nullptr and sets *err (a message naming the
  // cause, e.g. "bind 127.0.0.1:7001: Address already in use").
  static std::unique_ptr<Transport> create(const TransportConfig &cfg, Handler *h, std::string *err);
  virtual ~Transport() = default;

  virtual int fd() const = 0;                 // the UDP socket (poll for EPOLLIN)
  virtual uint16_t local_port() const = 0;

  // Cluster members; datagrams from other addresses are counted (bad_stranger) and dropped.
  virtual void add_peer(uint32_t node, const sockaddr_in &addr) = 0;
  virtual void remove_peer(uint32_t node) = 0;
  virtual bool peer_up(uint32_t node) const = 0;

  // Queues one message (the concatenation of iov[0..n)) for `peer`. Returns
  // false without side effects when it cannot be accepted now (window or
  // buffer full, or unknown peer, or the peer is not up — wait for
  // on_peer_up): back-pressure, not an error. Copies the bytes.
  // From inside Handler callbacks only submit(), send_space(), peer_up(),
  // stats() and peer_stats() may be called.
  virtual bool submit(uint32_t peer, const iovec *iov, int n) = 0;
  // Bytes submit() would accept now for `peer` (0 when full or unknown).
  virtual uint32_t send_space(uint32_t peer) const = 0;
  // Sends what submit() queued: coalesces small messages into datagrams,
  // fragments large ones, batches with sendmmsg.
  virtual void flush() = 0;
  // Reads and processes available datagrams (recvmmsg batches, bounded work per call).
  virtual void on_readable() = 0;
  // Offers messages held back by on_message() == false again.
  virtual void retry_delivery() = 0;
  // Retransmissions, delayed acknowledgements, heartbeats, dead-peer
  // detection, delayed (fault) datagrams. now_ns is CLOCK_MONOTONIC. Returns
  // the ns until it wants to be called again (a delayed acknowledgement makes
  // that sub-millisecond: the caller's wait must honour it to the µs).
  virtual uint64_t tick(uint64_t now_ns) = 0;

  // Test entry: processes `len` bytes as if received from `from` (validation,
  // session checks, delivery, ACKs), without the socket.
  virtual void inject_datagram(const uint8_t *p, uint32_t len, const sockaddr_in &from) = 0;
  // Fault injection: every datagram to and from these nodes is dropped (a
  // simulated network partition); an empty list heals. Kept across add_peer.
  virtual void set_partition(const std::vector<uint32_t> &nodes) = 0;

  virtual void set_fault(const FaultConfig &f) = 0;
  virtual TransportStats stats() const = 0;
  virtual std::vector<PeerStats> peer_stats() const = 0;
};

}  // namespace dvs::net
