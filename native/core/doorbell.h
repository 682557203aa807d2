// doorbell.h — waking a process whose event loop sleeps in epoll (Node's
// libuv): each attached process listens on an abstract-namespace Unix datagram
// socket named after its arena and process slot; a producer that finds the
// receiver's "bell" flag set sends it an empty datagram. One syscall, works
// across processes without sharing descriptors, and the receiver's loop wakes
// directly (no helper thread).
#pragma once
#include <sys/socket.h>
#include <sys/un.h>
#include <cstdint>
#include <string>

namespace dvs {

struct BellAddr {
  sockaddr_un addr;
  socklen_t len;
};

BellAddr doorbell_addr(const std::string &arena_name, uint32_t proc, uint32_t gen);
// Returns a non-blocking bound socket, or -errno.
int doorbell_listen(const BellAddr &a);
// Returns a non-blocking unbound socket for ringing others, or -errno.
int doorbell_sender();
void doorbell_ring(int tx_fd, const BellAddr &a);
// Reads pending rings (up to 64) in one syscall; returns how many.
int doorbell_drain(int fd);

}  // namespace dvs
