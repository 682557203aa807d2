// udp_socket.h — the non-blocking IPv4 UDP socket with batched I/O: sends are
// queued and go out with sendmmsg (kBatch per call), runs of equal-size
// datagrams that lie back to back in memory leave as one UDP GSO send
// (UDP_SEGMENT), and receives use recvmmsg with UDP_GRO, splitting coalesced
// buffers back into datagrams. GSO/GRO are detected at open and fall back to
// plain datagrams when the kernel refuses them.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

namespace dvs::net {

class UdpSocket {
 public:
  static constexpr int kBatch = 64;
  static constexpr uint32_t kRecvBuf = 65536;
  static constexpr uint32_t kMaxGsoBytes = 65000;
  static constexpr uint32_t kMaxGsoSegs = 64;

  UdpSocket() = default;
  ~UdpSocket();
  UdpSocket(const UdpSocket &) = delete;
  UdpSocket &operator=(const UdpSocket &) = delete;

  // Binds; raises SO_RCVBUF/SO_SNDBUF to 8 MiB when allowed. false + *err on failure.
  bool open(const sockaddr_in &bind, bool try_gso, std::string *err);
  int fd() const { return fd_; }
  uint16_t port() const { return port_; }
  bool gso() const { return gso_; }

  // Queues a datagram; `to` and the bytes must stay valid until flush().
  void queue(const sockaddr_in *to, const uint8_t *p, uint32_t len);
  bool pending() const { return n_ > 0; }
  void flush();

  // One recvmmsg: calls on_dgram(p, len, from, truncated) for each datagram
  // (coalesced GRO buffers split). Returns the number of buffers read (0 = none).
  template <class F>
  int receive(F &&on_dgram);

  uint64_t dgrams_sent = 0, sendmmsg_calls = 0, recvmmsg_calls = 0, dgrams_received = 0;
  uint64_t send_failed = 0;  // datagrams the kernel refused (buffer full): recovered by retransmission

 private:
  struct Out {
    const sockaddr_in *to;
    const uint8_t *base;
    uint32_t seg, total, count;  // GSO run: count segments of seg bytes (the last may be shorter)
  };
  int recv_raw();

  int fd_ = -1;
  uint16_t port_ = 0;
  bool gso_ = false, gro_ = false;
  Out out_[kBatch];
  int n_ = 0;
  mmsghdr smsg_[kBatch];
  iovec siov_[kBatch];
  alignas(8) uint8_t scmsg_[kBatch][64];
  std::unique_ptr<uint8_t[]> rbuf_;
  mmsghdr rmsg_[kBatch];
  iovec riov_[kBatch];
  sockaddr_in rfrom_[kBatch];
  alignas(8) uint8_t rcmsg_[kBatch][64];
  uint32_t rseg_[kBatch];
};

template <class F>
int UdpSocket::receive(F &&on_dgram) {
  int n = recv_raw();
  for (int i = 0; i < n; i++) {
    const uint8_t *p = rbuf_.get() + static_cast<size_t>(i) * kRecvBuf;
    uint32_t len = rmsg_[i].msg_len;
    bool trunc = (rmsg_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    uint32_t seg = rseg_[i];
    if (trunc || seg == 0 || seg >= len) {
      dgrams_received++;
      on_dgram(p, len, rfrom_[i], trunc);
      continue;
    }
    for (uint32_t at = 0; at < len; at += seg) {
      dgrams_received++;
      on_dgram(p + at, len - at < seg ? len - at : seg, rfrom_[i], false);
    }
  }
  return n;
}

}  // namespace dvs::net
