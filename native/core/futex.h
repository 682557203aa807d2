// futex.h — cross-process futex wait/wake on words in shared memory, a CPU
// pause for spin loops and a monotonic clock.
#pragma once
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstdint>

namespace dvs {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

inline uint64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

// Deadline helpers: timeout_ms < 0 = forever (deadline 0 means "none").
inline uint64_t deadline_after(int timeout_ms) {
  return timeout_ms < 0 ? 0 : now_ns() + uint64_t(timeout_ms) * 1000000ULL;
}

// Waits while *word == expected, at most `max_ns` (0 = no limit).
// Shared (not FUTEX_PRIVATE) because the word lives in a shared mapping.
inline int futex_wait(std::atomic<uint32_t> *word, uint32_t expected, uint64_t max_ns) {
  struct timespec ts, *tsp = nullptr;
  if (max_ns) {
    ts.tv_sec = time_t(max_ns / 1000000000ULL);
    ts.tv_nsec = long(max_ns % 1000000000ULL);
    tsp = &ts;
  }
  long r = syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAIT, expected, tsp, nullptr, 0);
  return r == 0 ? 0 : errno;
}

inline void futex_wake(std::atomic<uint32_t> *word, int count) {
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

}  // namespace dvs
