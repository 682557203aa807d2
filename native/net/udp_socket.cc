// udp_socket.cc — socket setup, sendmmsg with GSO runs, recvmmsg with GRO.
#include "udp_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/udp.h>
#include <string.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace dvs::net {

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) close(fd_);
}

namespace {
void raise_buffer(int fd, int force_opt, int opt) {
  int want = 8 << 20;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &want, sizeof want) == 0) return;
  setsockopt(fd, SOL_SOCKET, opt, &want, sizeof want);  // capped by net.core.*mem_max; fine
}
}  // namespace

bool UdpSocket::open(const sockaddr_in &bind_addr, bool try_gso, std::string *err) {
  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    *err = std::string("socket: ") + strerror(errno);
    return false;
  }
  raise_buffer(fd_, SO_RCVBUFFORCE, SO_RCVBUF);
  raise_buffer(fd_, SO_SNDBUFFORCE, SO_SNDBUF);
  sockaddr_in a = bind_addr;
  a.sin_family = AF_INET;
  if (::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    *err = std::string("bind ") + ip + ":" + std::to_string(ntohs(a.sin_port)) + ": " + strerror(errno);
    return false;
  }
  socklen_t alen = sizeof a;
  getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &alen);
  port_ = ntohs(a.sin_port);
  if (try_gso) {
    int zero = 0, one = 1;
    // UDP_SEGMENT as a socket option with 0 is accepted exactly when the kernel knows GSO.
    gso_ = setsockopt(fd_, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
    gro_ = setsockopt(fd_, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  rbuf_.reset(new uint8_t[static_cast<size_t>(kBatch) * kRecvBuf]);
  for (int i = 0; i < kBatch; i++) {
    riov_[i] = iovec{rbuf_.get() + static_cast<size_t>(i) * kRecvBuf, kRecvBuf};
  }
  return true;
}

void UdpSocket::queue(const sockaddr_in *to, const uint8_t *p, uint32_t len) {
  if (gso_ && n_ > 0) {
    Out &o = out_[n_ - 1];
    // Extend a run: same peer, every segment so far full (seg bytes), contiguous.
    if (o.to == to && len <= o.seg && o.total == o.seg * o.count && o.base + o.total == p &&
        o.count < kMaxGsoSegs && o.total + len <= kMaxGsoBytes) {
      o.total += len;
      o.count++;
      return;
    }
  }
  if (n_ == kBatch) flush();
  out_[n_++] = Out{to, p, len, len, 1};
}

void UdpSocket::flush() {
  if (n_ == 0) return;
  for (int i = 0; i < n_; i++) {
    const Out &o = out_[i];
    siov_[i] = iovec{const_cast<uint8_t *>(o.base), o.total};
    msghdr &h = smsg_[i].msg_hdr;
    h = msghdr{};
    h.msg_name = const_cast<sockaddr_in *>(o.to);
    h.msg_namelen = sizeof(sockaddr_in);
    h.msg_iov = &siov_[i];
    h.msg_iovlen = 1;
    if (o.count > 1) {
      h.msg_control = scmsg_[i];
      h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      cmsghdr *c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = static_cast<uint16_t>(o.seg);
      memcpy(CMSG_DATA(c), &seg, sizeof seg);
    }
  }
  int done = 0;
  while (done < n_) {
    int r = sendmmsg(fd_, smsg_ + done, n_ - done, 0);
    sendmmsg_calls++;
    if (r > 0) {
      for (int i = done; i < done + r; i++) dgrams_sent += out_[i].count;
      done += r;
      continue;
    }
    if (errno == EINTR) continue;
    // Buffer full or a refused message: these datagrams are lost to the
    // network as far as the protocol is concerned; retransmission repairs it.
    // A GSO send the kernel rejects turns GSO off for good.
    if (errno != EAGAIN && errno != ENOBUFS && out_[done].count > 1) gso_ = false;
    send_failed += out_[done].count;
    done++;
  }
  n_ = 0;
}

int UdpSocket::recv_raw() {
  for (int i = 0; i < kBatch; i++) {
    msghdr &h = rmsg_[i].msg_hdr;
    h.msg_name = &rfrom_[i];
    h.msg_namelen = sizeof(sockaddr_in);
    h.msg_iov = &riov_[i];
    h.msg_iovlen = 1;
    h.msg_control = gro_ ? rcmsg_[i] : nullptr;
    h.msg_controllen = gro_ ? sizeof rcmsg_[i] : 0;
    h.msg_flags = 0;
  }
  int n = recvmmsg(fd_, rmsg_, kBatch, MSG_DONTWAIT, nullptr);
  recvmmsg_calls++;
  if (n <= 0) return 0;
  for (int i = 0; i < n; i++) {
    rseg_[i] = 0;
    if (!gro_) continue;
    msghdr &h = rmsg_[i].msg_hdr;
    for (cmsghdr *c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int seg = 0;
        memcpy(&seg, CMSG_DATA(c), sizeof seg);
        rseg_[i] = static_cast<uint32_t>(seg);
      }
    }
  }
  return n;
}

}  // namespace dvs::net
