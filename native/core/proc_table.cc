#include "proc_table.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace dvs {

uint64_t proc_start_time(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  // Fields after the command name, which is in parentheses and may contain spaces.
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return 0;
  p += 2;  // now at field 3 (state)
  if (*p == 'Z' || *p == 'X' || *p == 'x') return 0;
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p) return 0;
    p++;
  }
  uint64_t t = strtoull(p, nullptr, 10);
  return t ? t : 1;
}

bool pid_alive(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  uint64_t t = proc_start_time(pid);
  if (t == 0) return false;
  return start_time == 0 || t == start_time;
}

}  // namespace dvs
