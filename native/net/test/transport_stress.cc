// transport_stress.cc — checks and benchmarks the reliable UDP transport with
// two transports on 127.0.0.1 (one process).
//
//   transport_stress                 every check (lossy, refuse, death, fuzz) then a short bench
//   transport_stress --lossy|--refuse|--death|--fuzz|--bench   one part
//   options: --loss P --dup P --reorder P   (faults of the lossy check; defaults 0.1 0.05 0.05)
//            --msgs N (lossy check total, default 100000)   --fuzz-n N (default 100000)
//            --mtu N --no-gso --scale X (bench message counts × X) --bench-all (mtu 1472, 8972, 65000)
// Exit status 0 only when every check passes.
#include <arpa/inet.h>
#include <poll.h>
#include <time.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "transport.h"
#include "wire.h"

using namespace dvs::net;

namespace {

int g_failures = 0;
#define CHECK(cond, ...)                                       \
  do {                                                         \
    if (!(cond)) {                                             \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                       \
      std::fprintf(stderr, "\n");                              \
      g_failures++;                                            \
    }                                                          \
  } while (0)

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
double secs(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(next() % n); }
};

// Message layout: u64 sequence, u32 length, u32 zero, then a pattern derived
// from the sequence, so the receiver can check every byte.
constexpr uint32_t kMsgHeader = 16;
uint64_t pattern_word(uint64_t seq, uint64_t k) {
  return (seq * 0x9E3779B97F4A7C15ull) ^ (k * 0xD6E8FEB86659FD93ull) ^ (k >> 3);
}
void fill(uint8_t *p, uint64_t seq, uint32_t len) {
  memcpy(p, &seq, 8);
  memcpy(p + 8, &len, 4);
  memset(p + 12, 0, 4);
  uint32_t k = 0;
  for (uint32_t at = kMsgHeader; at < len; at += 8, k++) {
    uint64_t w = pattern_word(seq, k);
    memcpy(p + at, &w, std::min<uint32_t>(8, len - at));
  }
}
bool verify(const uint8_t *p, uint32_t len, uint64_t *seq_out) {
  if (len < kMsgHeader) return false;
  uint64_t seq;
  uint32_t l, z;
  memcpy(&seq, p, 8);
  memcpy(&l, p + 8, 4);
  memcpy(&z, p + 12, 4);
  if (l != len || z != 0) return false;
  uint32_t k = 0;
  for (uint32_t at = kMsgHeader; at < len; at += 8, k++) {
    uint64_t w = pattern_word(seq, k);
    if (memcmp(p + at, &w, std::min<uint32_t>(8, len - at)) != 0) return false;
  }
  *seq_out = seq;
  return true;
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// One side: a transport, the receive-side checker and the send-side generator.
struct Agent : Handler {
  uint32_t id = 0, peer = 0;
  uint64_t incarnation = 0;
  std::unique_ptr<Transport> t;
  // receiving
  uint64_t expect = 0, received = 0, received_bytes = 0;
  bool refuse = false, gap_ok = false, check_content = true;
  uint64_t refused = 0;
  int ups = 0, downs = 0;
  uint64_t up_incarnation = 0, down_at = 0;
  // sending
  uint64_t sent = 0, send_limit = 0, backpressured = 0;
  std::function<uint32_t(uint64_t)> size_of;
  std::vector<uint8_t> buf;

  bool on_message(uint32_t from, const uint8_t *m, uint32_t len) override {
    if (refuse) {
      refused++;
      return false;
    }
    CHECK(from == peer, "message from %u", from);
    uint64_t seq = 0;
    if (check_content) {
      if (!verify(m, len, &seq)) {
        CHECK(false, "agent %u: corrupt message (len %u)", id, len);
        return true;
      }
    } else {
      memcpy(&seq, m, 8);
    }
    if (gap_ok ? seq < expect : seq != expect)
      CHECK(false, "agent %u: message %" PRIu64 " where %" PRIu64 " was due", id, seq, expect);
    gap_ok = false;
    expect = seq + 1;
    received++;
    received_bytes += len;
    return true;
  }
  void on_peer_up(uint32_t, uint64_t inc) override {
    ups++;
    up_incarnation = inc;
  }
  void on_peer_down(uint32_t) override {
    downs++;
    down_at = now_ns();
    gap_ok = true;  // the sender's undelivered messages are gone; later ones continue its numbering
  }

  bool start(uint32_t my_id, uint32_t peer_id, TransportConfig cfg, uint16_t port = 0) {
    id = my_id;
    peer = peer_id;
    cfg.node_id = id;
    cfg.bind = loopback(port);
    incarnation = cfg.incarnation;
    std::string err;
    t = Transport::create(cfg, this, &err);
    if (!t) std::fprintf(stderr, "create: %s\n", err.c_str());
    return t != nullptr;
  }
  // Submits messages until the limit or back-pressure; then flushes.
  void pump() {
    while (sent < send_limit && t->peer_up(peer)) {
      uint32_t len = size_of(sent);
      if (buf.size() < len) buf.resize(len);
      fill(buf.data(), sent, len);
      iovec v{buf.data(), len};
      if (!t->submit(peer, &v, 1)) {
        backpressured++;
        break;
      }
      sent++;
    }
    t->flush();
  }
  void step(uint64_t now) {
    t->on_readable();
    t->tick(now);
    pump();
  }
};

// Drives both agents in this thread until done() or the deadline; true if done.
bool drive(Agent &a, Agent &b, double max_s, const std::function<bool()> &done, bool drive_b = true) {
  uint64_t end = now_ns() + static_cast<uint64_t>(max_s * 1e9);
  while (!done()) {
    uint64_t now = now_ns();
    if (now > end) return false;
    a.step(now);
    if (drive_b) b.step(now);
  }
  return true;
}

TransportConfig base_config(uint64_t incarnation) {
  TransportConfig c;
  c.incarnation = incarnation;
  c.heartbeat_ms = 50;
  c.dead_after_ms = 500;
  return c;
}

void print_stats(const char *name, Agent &x) {
  TransportStats s = x.t->stats();
  std::vector<PeerStats> ps = x.t->peer_stats();
  std::printf("  %s: dgrams sent %" PRIu64 " recv %" PRIu64 ", sendmmsg %" PRIu64 " recvmmsg %" PRIu64
              ", fault drop/dup/reorder %" PRIu64 "/%" PRIu64 "/%" PRIu64 ", bad malformed %" PRIu64
              " version %" PRIu64 " oversize %" PRIu64 " checksum %" PRIu64 " stranger %" PRIu64
              " stale %" PRIu64 " seq %" PRIu64 ", send_failed %" PRIu64 "\n",
              name, s.dgrams_sent, s.dgrams_received, s.sendmmsg_calls, s.recvmmsg_calls, s.fault_dropped,
              s.fault_duplicated, s.fault_reordered, s.bad_malformed, s.bad_version, s.bad_oversize,
              s.bad_checksum, s.bad_stranger, s.bad_stale, s.bad_seq, s.send_failed);
  for (auto &p : ps)
    std::printf("    peer %u: up %d retx %" PRIu64 " dup_dropped %" PRIu64 " srtt %u us rto %u us\n", p.node,
                p.up, p.retransmits, p.dup_dropped, p.srtt_us, p.rto_us);
}

bool connect(Agent &a, Agent &b) {
  a.t->add_peer(b.id, loopback(b.t->local_port()));
  b.t->add_peer(a.id, loopback(a.t->local_port()));
  bool ok = drive(a, b, 5, [&] { return a.t->peer_up(b.id) && b.t->peer_up(a.id); });
  CHECK(ok, "handshake did not complete");
  if (!ok) {
    print_stats("a", a);
    print_stats("b", b);
  }
  return ok;
}

struct Options {
  double loss = 0.1, dup = 0.05, reorder = 0.05;
  uint64_t msgs = 100000, fuzz_n = 100000;
  uint32_t mtu = 1472;
  bool gso = true, bench_all = false;
  double scale = 1;
};

// Sizes: mostly small, some medium, 0.5% large (16 KiB .. 1 MiB, uniform;
// most of the bytes), every 1000th exactly 1 MiB (+ the engine header's 256).
uint32_t mixed_size(uint64_t seq, uint64_t salt) {
  Rng r{(seq + 1) * 0x9E3779B97F4A7C15ull ^ salt};
  r.next();
  if (seq % 1000 == 999) return kMaxMessage;
  uint32_t c = r.below(1000);
  if (c < 900) return kMsgHeader + r.below(1024);
  if (c < 995) return 1025 + r.below(16384);
  return 16385 + r.below((1u << 20) - 16384);
}

// (a) exactly-once in-order byte-exact delivery both ways under faults.
void test_lossy(const Options &o) {
  std::printf("[lossy] %" PRIu64 " messages, loss %.2f dup %.2f reorder %.2f\n", o.msgs, o.loss, o.dup, o.reorder);
  Agent a, b;
  TransportConfig ca = base_config(11), cb = base_config(22);
  ca.fault = cb.fault = FaultConfig{o.loss, o.dup, o.reorder, 0, 0, 0};
  ca.fault.seed = 1;
  cb.fault.seed = 2;
  ca.dead_after_ms = cb.dead_after_ms = 3000;  // loss must not look like death here
  if (!a.start(1, 2, ca) || !b.start(2, 1, cb)) return void(g_failures++);
  if (!connect(a, b)) return;
  a.size_of = [](uint64_t s) { return mixed_size(s, 1); };
  b.size_of = [](uint64_t s) { return mixed_size(s, 2); };
  a.send_limit = o.msgs / 2;
  b.send_limit = o.msgs - o.msgs / 2;
  uint64_t t0 = now_ns();
  bool ok = drive(a, b, 45, [&] { return a.received == b.send_limit && b.received == a.send_limit; });
  double el = secs(now_ns() - t0);
  CHECK(ok, "lossy: delivered %" PRIu64 "/%" PRIu64 " and %" PRIu64 "/%" PRIu64, b.received, a.send_limit,
        a.received, b.send_limit);
  CHECK(a.downs == 0 && b.downs == 0, "lossy: link went down");
  std::printf("  delivered %" PRIu64 " + %" PRIu64 " messages (%.1f MB) in %.2f s\n", b.received, a.received,
              (a.received_bytes + b.received_bytes) / 1e6, el);
  print_stats("a", a);
  print_stats("b", b);
}

// (b) a receiver that refuses: the sender is back-pressured, nothing is lost, it resumes.
void test_refuse() {
  std::printf("[refuse]\n");
  Agent a, b;
  if (!a.start(1, 2, base_config(11)) || !b.start(2, 1, base_config(22))) return void(g_failures++);
  if (!connect(a, b)) return;
  a.size_of = [](uint64_t s) { return static_cast<uint32_t>(kMsgHeader + (s % 7) * 300); };
  a.send_limit = UINT64_MAX;
  b.refuse = true;
  drive(a, b, 0.3, [] { return false; });
  uint64_t sent_at_block = a.sent;
  PeerStats ps = a.t->peer_stats()[0];
  CHECK(a.backpressured > 0, "refuse: submit never returned false");
  CHECK(b.received == 0 && b.refused > 0, "refuse: messages delivered while refusing");
  CHECK(ps.peer_window < 4096, "refuse: advertised window did not close (%u)", ps.peer_window);
  CHECK(a.t->send_space(2) < (1u << 20), "refuse: send_space still large");
  drive(a, b, 0.3, [] { return false; });  // stays blocked, link stays up (probes)
  CHECK(a.sent == sent_at_block, "refuse: sender was not held back (%" PRIu64 " -> %" PRIu64 ")", sent_at_block,
        a.sent);
  CHECK(a.t->peer_up(2) && b.t->peer_up(1), "refuse: link went down while blocked");
  std::printf("  blocked after %" PRIu64 " messages, peer window %u, %" PRIu64 " refusals\n", a.sent,
              ps.peer_window, b.refused);
  b.refuse = false;
  b.t->retry_delivery();
  a.send_limit = a.sent + 20000;
  bool ok = drive(a, b, 10, [&] { return b.received == a.send_limit; });
  CHECK(ok, "refuse: after resuming delivered %" PRIu64 " of %" PRIu64, b.received, a.send_limit);
  std::printf("  resumed: %" PRIu64 " delivered in order\n", b.received);
}

// (c) peer death, restart with a new incarnation, and a one-sided partition.
void test_death() {
  std::printf("[death]\n");
  Agent a, b;
  TransportConfig ca = base_config(11);
  if (!a.start(1, 2, ca) || !b.start(2, 1, base_config(22))) return void(g_failures++);
  if (!connect(a, b)) return;
  a.size_of = b.size_of = [](uint64_t s) { return static_cast<uint32_t>(kMsgHeader + s % 200); };
  a.send_limit = b.send_limit = 1000;
  drive(a, b, 5, [&] { return a.received == 1000 && b.received == 1000; });
  // b stops: a must notice within dead_after + a heartbeat (+ scheduling slack).
  uint64_t stop = now_ns();
  a.send_limit = 1500;  // a keeps sending into the void
  bool down = drive(a, b, 3, [&] { return a.downs == 1; }, false);
  double after_ms = (a.down_at - stop) / 1e6;
  CHECK(down, "death: no on_peer_down");
  CHECK(after_ms <= ca.dead_after_ms + ca.heartbeat_ms + 20, "death: down after %.0f ms", after_ms);
  std::printf("  down reported %.0f ms after the peer stopped (dead_after %u, heartbeat %u)\n", after_ms,
              ca.dead_after_ms, ca.heartbeat_ms);
  uint16_t port = b.t->local_port();
  b.t.reset();
  Agent b2;
  if (!b2.start(2, 1, base_config(23), port)) return void(g_failures++);
  b2.t->add_peer(1, loopback(a.t->local_port()));
  bool up = drive(a, b2, 5, [&] { return a.ups == 2 && b2.ups == 1; });
  CHECK(up && a.up_incarnation == 23, "death: restarted peer not up (ups %d, incarnation %" PRIu64 ")", a.ups,
        a.up_incarnation);
  b2.size_of = a.size_of;
  b2.expect = 1000;  // a continues its numbering; nothing from the old session may arrive
  b2.gap_ok = true;
  a.expect = 0;  // the new b numbers from 0
  a.send_limit = a.sent + 1000;
  b2.send_limit = 1000;
  bool flows = drive(a, b2, 5, [&] { return a.received == 2000 && b2.received == 1000; });
  CHECK(flows, "death: traffic after restart %" PRIu64 " %" PRIu64, a.received, b2.received);

  // One-sided partition: a hears nothing from b2 until it declares it down;
  // b2 heard a all along and must also restart the session.
  FaultConfig deaf;
  deaf.loss = 1.0;
  deaf.seed = 5;
  a.t->set_fault(deaf);  // drops a's outgoing too; switch to incoming-only below
  int a_downs = a.downs, b_downs = b2.downs;
  a.send_limit = a.sent + 500;
  b2.send_limit = b2.sent + 500;
  bool part = drive(a, b2, 3, [&] { return a.downs > a_downs; });
  CHECK(part, "partition: a did not declare b down");
  a.t->set_fault(FaultConfig{});
  bool healed = drive(a, b2, 5, [&] { return a.t->peer_up(2) && b2.t->peer_up(1) && b2.downs > b_downs; });
  CHECK(healed, "partition: session not re-established (a up %d, b up %d, b downs %d)", a.t->peer_up(2),
        b2.t->peer_up(1), b2.downs - b_downs);
  uint64_t ra = a.received, rb = b2.received;
  a.send_limit = a.sent + 1000;
  b2.send_limit = b2.sent + 1000;
  bool again = drive(a, b2, 5, [&] { return a.received >= ra + 1000 && b2.received >= rb + 1000; });
  CHECK(again, "partition: traffic after healing %" PRIu64 " %" PRIu64, a.received - ra, b2.received - rb);
  std::printf("  restart: up with incarnation %" PRIu64 "; partition: both sides restarted the session; "
              "stale dropped %" PRIu64 "\n",
              a.up_incarnation, a.t->stats().bad_stale + b2.t->stats().bad_stale);
}

// (d) random and mutated datagrams from a member address (socket) and
// injected as the real peer, while checked traffic runs.
void test_fuzz(const Options &o) {
  std::printf("[fuzz] %" PRIu64 " datagrams\n", o.fuzz_n);
  Agent a, b, c;  // c: a member whose socket sends the fuzz
  TransportConfig ca = base_config(11), cb = base_config(22);
  ca.fault = cb.fault = FaultConfig{0, 0.02, 0.02, 0, 0, 3};
  if (!a.start(1, 2, ca) || !b.start(2, 1, cb) || !c.start(3, 1, base_config(33))) return void(g_failures++);
  if (!connect(a, b)) return;
  a.t->add_peer(3, loopback(c.t->local_port()));
  a.size_of = b.size_of = [](uint64_t s) { return mixed_size(s, 7) % 40000 + kMsgHeader; };
  a.send_limit = b.send_limit = 20000;
  // Templates: valid datagrams of each kind, as b would send them to a.
  wire::Session s{2, 1, 22, 11, 1, 1};
  std::vector<std::vector<uint8_t>> tmpl;
  {
    std::vector<uint8_t> d(1472);
    uint32_t body = 0;
    for (uint32_t i = 0; i < 10; i++) {  // DATA: ten 100-byte messages, then a fragment start
      wire::st32(&d[wire::kHeaderSize + body], 100);
      wire::st32(&d[wire::kHeaderSize + body + 4], 0);
      body += wire::kChunkHeader + 100;
    }
    wire::st32(&d[wire::kHeaderSize + body], 5000);
    wire::st32(&d[wire::kHeaderSize + body + 4], 0);
    body = 1472 - wire::kHeaderSize;
    wire::write_header(d.data(), wire::kData, 0, s, 0, body, 0);
    tmpl.push_back(d);
    std::vector<uint8_t> k(wire::kHeaderSize + wire::kAckPrefix + 16);
    wire::SackRange r[2] = {{2, 5}, {7, 9}};
    uint32_t kb = wire::write_ack_body(&k[wire::kHeaderSize], 9, r, 2);
    wire::write_header(k.data(), wire::kAck, 0, s, 0, kb, 1 << 20);
    tmpl.push_back(k);
    std::vector<uint8_t> h(wire::kHeaderSize);
    wire::write_header(h.data(), wire::kHeartbeat, 0, s, 0, 0, 1 << 20);
    tmpl.push_back(h);
  }
  Rng rng{12345};
  std::vector<uint8_t> d;
  TransportStats before = a.t->stats();
  uint64_t injected = 0, via_socket = 0, next = 0;
  auto bad_total = [](const TransportStats &t) {
    return t.bad_malformed + t.bad_version + t.bad_oversize + t.bad_checksum + t.bad_stranger + t.bad_stale +
           t.bad_seq;
  };
  // One fuzz datagram: random bytes, or a template with bit flips / truncation
  // / extension (CRC left stale), or a field tweak re-sealed with a valid CRC
  // that validation must still refuse.
  auto make = [&] {
    uint32_t kind = rng.below(4);
    if (kind == 0) {
      d.resize(rng.below(2000));
      for (auto &x : d) x = static_cast<uint8_t>(rng.next());
      if (d.size() > 5 && rng.below(2)) d[4] = wire::kVersion;  // get past the version check
      return;
    }
    const auto &t = tmpl[rng.below(tmpl.size())];
    d = t;
    wire::seal(d.data(), d.size());
    if (kind == 1) {
      uint32_t flips = 1 + rng.below(8);
      for (uint32_t i = 0; i < flips; i++) d[rng.below(d.size())] ^= static_cast<uint8_t>(1u << rng.below(8));
    } else if (kind == 2) {
      if (rng.below(2))
        d.resize(rng.below(d.size()));
      else
        d.resize(d.size() + 1 + rng.below(64), static_cast<uint8_t>(rng.next()));
    } else {
      switch (rng.below(9)) {
        case 0: d[wire::kOffVersion] = static_cast<uint8_t>(2 + rng.below(250)); break;
        case 1: d[wire::kOffKind] = static_cast<uint8_t>(4 + rng.below(250)); break;
        case 2: wire::st32(&d[wire::kOffBodyLen], wire::ld32(&d[wire::kOffBodyLen]) + 1 + rng.below(100)); break;
        case 3: wire::st64(&d[wire::kOffSrcInc], 21); break;  // an older incarnation
        case 4: wire::st32(&d[wire::kOffDstEpoch], 0); break;  // data for an unknown session
        case 5: wire::st64(&d[wire::kOffSeq], 1000000 + rng.below(1u << 30)); break;  // far beyond the window
        case 6: wire::st32(&d[wire::kOffSrcNode], 9); break;
        case 7: wire::st16(&d[wire::kOffFlags], static_cast<uint16_t>(2 + rng.below(1000))); break;
        default:  // inconsistent chunk fields
          if (d[wire::kOffKind] == wire::kData)
            wire::st32(&d[wire::kHeaderSize + 4], 1 + rng.below(200));
          else
            wire::st16(&d[wire::kHeaderSize], static_cast<uint16_t>(40 + rng.below(100)));
      }
      wire::seal(d.data(), d.size());
    }
  };
  int cfd = c.t->fd();
  sockaddr_in a_addr = loopback(a.t->local_port()), b_addr = loopback(b.t->local_port());
  bool ok = drive(a, b, 45, [&] {
    for (int i = 0; i < 50 && next < o.fuzz_n; i++, next++) {
      make();
      if (next % 2 == 0) {
        sendto(cfd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr *>(&a_addr), sizeof a_addr);
        via_socket++;
      } else {
        a.t->inject_datagram(d.data(), static_cast<uint32_t>(d.size()), b_addr);
        injected++;
      }
    }
    return next == o.fuzz_n && a.received == b.send_limit && b.received == a.send_limit;
  });
  drive(a, b, 0.1, [] { return false; });
  uint64_t bad = bad_total(a.t->stats()) - bad_total(before);
  CHECK(ok, "fuzz: traffic %" PRIu64 "/%" PRIu64 " %" PRIu64 "/%" PRIu64 ", fuzz sent %" PRIu64, b.received,
        a.send_limit, a.received, b.send_limit, next);
  CHECK(a.downs == 0 && b.downs == 0, "fuzz: link went down");
  // Every injected datagram is refused synchronously; socket ones may be lost by the kernel only.
  CHECK(bad >= injected + via_socket * 95 / 100 && bad <= injected + via_socket,
        "fuzz: %" PRIu64 " refused for %" PRIu64 " sent", bad, injected + via_socket);
  std::printf("  %" PRIu64 " via socket from member 3, %" PRIu64 " injected as peer 2; %" PRIu64
              " counted bad; traffic exact (%" PRIu64 " + %" PRIu64 " messages)\n",
              via_socket, injected, bad, a.received, b.received);
  print_stats("a", a);
}

// (e) throughput: sender and receiver transports in two threads.
struct BenchResult {
  double rate, mbps;
  uint64_t dgrams, sendmmsg_calls, retx;
};
BenchResult bench_one(uint32_t size, uint64_t count, uint32_t mtu, bool gso, double loss) {
  Agent tx, rx;
  TransportConfig c1 = base_config(11), c2 = base_config(22);
  c1.mtu = c2.mtu = mtu;
  c1.gso = c2.gso = gso;
  c1.dead_after_ms = c2.dead_after_ms = 5000;
  if (loss > 0) c1.fault = c2.fault = FaultConfig{loss, 0, 0, 0, 0, 9};
  if (!tx.start(1, 2, c1) || !rx.start(2, 1, c2)) {
    g_failures++;
    return {};
  }
  if (!connect(tx, rx)) return {};
  rx.check_content = size <= 4096;  // large messages: the length is checked, the bytes in [lossy]
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> got{0};
  uint64_t t0 = now_ns();
  std::thread rthread([&] {
    pollfd p{rx.t->fd(), POLLIN, 0};
    uint64_t wait = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      poll(&p, 1, wait > 1000000 ? 1 : 0);
      rx.t->on_readable();
      wait = rx.t->tick(now_ns());
      got.store(rx.received, std::memory_order_relaxed);
    }
  });
  tx.size_of = [size](uint64_t) { return size; };
  tx.send_limit = count;
  tx.buf.resize(size);
  pollfd p{tx.t->fd(), POLLIN, 0};
  uint64_t deadline = t0 + 60000000000ull;
  while (got.load(std::memory_order_relaxed) < count && now_ns() < deadline) {
    tx.pump();
    if (tx.sent == count) poll(&p, 1, 1);
    tx.t->on_readable();
    tx.t->tick(now_ns());
  }
  uint64_t el = now_ns() - t0;
  stop = true;
  rthread.join();
  CHECK(rx.received == count, "bench: delivered %" PRIu64 " of %" PRIu64, rx.received, count);
  TransportStats s = tx.t->stats();
  BenchResult r;
  r.rate = count / secs(el);
  r.mbps = r.rate * size / 1e6;
  r.dgrams = s.dgrams_sent;
  r.sendmmsg_calls = s.sendmmsg_calls;
  r.retx = tx.t->peer_stats()[0].retransmits;
  return r;
}

void bench(const Options &o, uint32_t mtu) {
  std::printf("[bench] mtu %u, gso %s\n", mtu, o.gso ? "on" : "off");
  auto n = [&](double x) { return static_cast<uint64_t>(x * o.scale); };
  auto line = [](const char *what, const BenchResult &r) {
    std::printf("  %-22s %10.0f msgs/s %9.1f MB/s   %.1f dgrams/sendmmsg, %" PRIu64 " retransmits\n", what, r.rate,
                r.mbps, r.sendmmsg_calls ? double(r.dgrams) / r.sendmmsg_calls : 0.0, r.retx);
  };
  BenchResult small = bench_one(64, n(3000000), mtu, o.gso, 0);
  line("64 B", small);
  line("1400 B", bench_one(1400, n(1000000), mtu, o.gso, 0));
  line("1 MiB", bench_one(1u << 20, n(1500), mtu, o.gso, 0));
  BenchResult lossy = bench_one(64, n(1000000), mtu, o.gso, 0.05);
  line("64 B, 5% loss", lossy);
  std::printf("  5%% loss keeps %.0f%% of lossless 64 B throughput\n", 100 * lossy.rate / small.rate);
  BenchResult big_lossy = bench_one(1u << 20, n(300), mtu, o.gso, 0.05);
  line("1 MiB, 5% loss", big_lossy);
}

}  // namespace

int main(int argc, char **argv) {
  Options o;
  std::vector<std::string> parts;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&] { return i + 1 < argc ? argv[++i] : "0"; };
    if (a == "--loss") o.loss = atof(val());
    else if (a == "--dup") o.dup = atof(val());
    else if (a == "--reorder") o.reorder = atof(val());
    else if (a == "--msgs") o.msgs = strtoull(val(), nullptr, 10);
    else if (a == "--fuzz-n") o.fuzz_n = strtoull(val(), nullptr, 10);
    else if (a == "--mtu") o.mtu = static_cast<uint32_t>(atoi(val()));
    else if (a == "--scale") o.scale = atof(val());
    else if (a == "--no-gso") o.gso = false;
    else if (a == "--bench-all") o.bench_all = true, parts.push_back("bench");
    else if (a.rfind("--", 0) == 0 && (a == "--lossy" || a == "--refuse" || a == "--death" || a == "--fuzz" || a == "--bench"))
      parts.push_back(a.substr(2));
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  bool all = parts.empty();
  auto want = [&](const char *p) { return all || std::find(parts.begin(), parts.end(), p) != parts.end(); };
  uint64_t t0 = now_ns();
  if (want("lossy")) test_lossy(o);
  if (want("refuse")) test_refuse();
  if (want("death")) test_death();
  if (want("fuzz")) test_fuzz(o);
  if (want("bench")) {
    if (all) o.scale *= 0.3;
    if (o.bench_all)
      for (uint32_t m : {1472u, 8972u, 65000u}) bench(o, m);
    else
      bench(o, o.mtu);
  }
  std::printf("%s in %.1f s: %d failed checks\n", g_failures ? "FAILED" : "passed", secs(now_ns() - t0), g_failures);
  return g_failures ? 1 : 0;
}
