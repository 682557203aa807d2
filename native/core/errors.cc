#include "errors.h"
#include "../include/dvs.h"

namespace dvs {
namespace {
thread_local std::string g_detail;
}
int fail(int code, const std::string &detail) {
  g_detail = detail;
  return code;
}
const std::string &last_detail() { return g_detail; }
void clear_detail() { g_detail.clear(); }
}  // namespace dvs

struct ErrInfo {
  int code;
  const char *name;
  const char *text;
};

static const ErrInfo kErrors[] = {
    {EDVSINTR, "EDVSINTR", "interrupted"},
    {EDVS2BIG, "EDVS2BIG", "payload larger than 1 MiB"},
    {EDVSAGAIN, "EDVSAGAIN", "resource temporarily unavailable (would wait)"},
    {EDVSNOMEM, "EDVSNOMEM", "not enough shared memory"},
    {EDVSBUSY, "EDVSBUSY", "resource busy"},
    {EDVSNOSYS, "EDVSNOSYS", "not available (yet)"},
    {EDVSINVAL, "EDVSINVAL", "invalid argument"},
    {EDVSNOSPC, "EDVSNOSPC", "no free slot in the endpoint or process table"},
    {EDVSTIMEDOUT, "EDVSTIMEDOUT", "timed out"},
    {EDVSNOTCONN, "EDVSNOTCONN", "link to the node is down"},
    {EDVSSRCDIED, "EDVSSRCDIED", "source died"},
    {EDVSDSTDIED, "EDVSDSTDIED", "destination died"},
    {EDVSBADNODEID, "EDVSBADNODEID", "bad node id"},
    {EDVSBADDCID, "EDVSBADDCID", "bad DC id, or a DC other than the endpoint's"},
    {EDVSENDPOINT, "EDVSENDPOINT", "endpoint number out of range"},
    {EDVSNOTBIND, "EDVSNOTBIND", "endpoint not bound"},
    {EDVSNONODE, "EDVSNONODE", "node does not hold the endpoint (stale location)"},
    {EDVSDVSINIT, "EDVSDVSINIT", "not attached to a node"},
    {EDVSNODCNODE, "EDVSNODCNODE", "node is not in the DC"},
    {EDVSPROCSTS, "EDVSPROCSTS", "wrong process state"},
    {EDVSMIGRATE, "EDVSMIGRATE", "endpoint is migrating"},
    {EDVSSLOTUSED, "EDVSSLOTUSED", "endpoint already bound"},
    {EDVSBADRANGE, "EDVSBADRANGE", "value out of range"},
    {EDVSARENA, "EDVSARENA", "shared-memory arena incompatible or corrupt"},
};

extern "C" const char *dvs_errname(int code) {
  for (const auto &e : kErrors)
    if (e.code == code) return e.name;
  return "EDVSUNKNOWN";
}

extern "C" const char *dvs_strerror(int code) {
  for (const auto &e : kErrors)
    if (e.code == code) return e.text;
  return "unknown dvs error";
}

extern "C" const char *dvs_last_error_detail(void) { return dvs::last_detail().c_str(); }
