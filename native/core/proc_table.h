// proc_table.h — process identity and liveness: a process is alive while its
// pid exists, is not a zombie, and still has the start time recorded at attach
// (so a recycled pid is not mistaken for the original process).
#pragma once
#include <sys/types.h>
#include <cstdint>

namespace dvs {
// Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat);
// 0 if the process does not exist or is a zombie.
uint64_t proc_start_time(pid_t pid);
// start_time 0 = only check existence.
bool pid_alive(pid_t pid, uint64_t start_time);
}  // namespace dvs
