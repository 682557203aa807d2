#include "doorbell.h"

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace dvs {

BellAddr doorbell_addr(const std::string &arena_name, uint32_t proc, uint32_t gen) {
  BellAddr b;
  memset(&b.addr, 0, sizeof b.addr);
  b.addr.sun_family = AF_UNIX;
  // Abstract namespace: sun_path[0] == 0, not a file, vanishes with the socket.
  int n = snprintf(b.addr.sun_path + 1, sizeof b.addr.sun_path - 1, "dvs/%s/%u/%u", arena_name.c_str(), proc, gen);
  if (n < 0) n = 0;
  if (size_t(n) > sizeof b.addr.sun_path - 2) n = int(sizeof b.addr.sun_path - 2);
  b.len = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + size_t(n));
  return b;
}

int doorbell_listen(const BellAddr &a) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (bind(fd, reinterpret_cast<const sockaddr *>(&a.addr), a.len) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

int doorbell_sender() {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

void doorbell_ring(int tx_fd, const BellAddr &a) {
  // EAGAIN (its queue is full) means it has bells pending already: fine.
  // ECONNREFUSED means the listener is gone: the reaper deals with it.
  (void)sendto(tx_fd, "", 0, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr *>(&a.addr), a.len);
}

int doorbell_drain(int fd) {
  // Up to 64 rings in one syscall; anything left keeps the fd readable and
  // is drained on the next loop turn.
  mmsghdr msgs[64];
  memset(msgs, 0, sizeof msgs);
  int n = recvmmsg(fd, msgs, 64, MSG_DONTWAIT, nullptr);
  return n < 0 ? 0 : n;
}

}  // namespace dvs
