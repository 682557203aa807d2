// node.cc — attaching a process to its node, binding endpoints, doorbells,
// and checking on destinations.
#include "node.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "endpoint_table.h"
#include "errors.h"
#include "futex.h"
#include "mailbox.h"
#include "proc_table.h"
#include "slab.h"

namespace dvs {
namespace {

// Nodes of this process, so that a forked child can disown them.
std::mutex g_nodes_mu;
std::vector<dvs_node *> g_nodes;
// Arena name -> the driver of the invoker-mode engine this process embeds for it.
std::vector<std::pair<std::string, std::pair<dvs_driver *, dvs_node *>>> g_drivers;
pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

void after_fork_child() {
  // The child shares the parent's mappings but is not the attached process:
  // it must never consume the parent's mailboxes or hold its slots.
  for (dvs_node *n : g_nodes) n->forked = true;
}
void install_atfork() { pthread_atfork(nullptr, nullptr, after_fork_child); }

std::string segment_name(const dvs_attach_opts *o) {
  if (o->name && *o->name) return o->name;
  const char *ns = o->ns && *o->ns ? o->ns : getenv("DVS_NAMESPACE");
  if (!ns || !*ns) ns = "default";
  return std::string("dvs.") + ns + "." + std::to_string(o->node_id);
}

}  // namespace

int node_attach(const dvs_attach_opts *o, uint32_t bell_mode, dvs_node **out) {
  clear_detail();
  if (!o || !out) return fail(EDVSINVAL, "null argument");
  if (o->node_id > 1023) return fail(EDVSBADNODEID, "node id must be in [0, 1023]");
  ArenaOptions ao;
  ao.name = segment_name(o);
  ao.node_id = o->node_id;
  ao.create = !(o->flags & DVS_ATTACH_NOCREATE);
  int r = make_config(o->max_procs, o->max_endpoints, o->inbox_cells, o->reply_cells, o->pool_mib, &ao.cfg);
  if (r) return r;
  pthread_once(&g_atfork_once, install_atfork);

  for (int attempt = 0; attempt < 20; attempt++) {
    Arena *a = nullptr;
    r = Arena::open(ao, &a);
    if (r) return r;
    auto *n = new dvs_node();
    n->arena = a;
    n->node_id = o->node_id;
    n->pid = getpid();
    n->start_time = proc_start_time(n->pid);
    n->bell_mode = bell_mode;
    lock_arena(n);
    if (!a->name_is_current()) {  // its last user removed it while we opened it
      unlock_arena(n);
      delete a;
      delete n;
      continue;
    }
    reap_dead_locked(n);  // recovers a segment left behind by crashed processes
    ArenaHeader *h = a->hdr();
    uint32_t p = kNone;
    for (uint32_t i = 0; i < h->cfg.max_procs; i++)
      if (a->proc(i)->state.load(std::memory_order_relaxed) == kProcFree) {
        p = i;
        break;
      }
    if (p == kNone) {
      unlock_arena(n);
      delete a;
      delete n;
      return fail(EDVSNOSPC, "the process table of node " + std::to_string(o->node_id) + " is full (" +
                                 std::to_string(h->cfg.max_procs) + " processes)");
    }
    ProcSlot *ps = a->proc(p);
    ps->pid = uint32_t(n->pid);
    ps->start_time = n->start_time;
    ps->gen++;
    ps->bell_mode = bell_mode;
    ps->bell.store(0, std::memory_order_relaxed);
    ps->msgs_sent.store(0, std::memory_order_relaxed);
    ps->msgs_received.store(0, std::memory_order_relaxed);
    ps->state.store(kProcLive, std::memory_order_release);
    n->proc = p;
    n->proc_gen = ps->gen;
    for (uint32_t c = 0; c < h->cfg.class_count; c++) n->alloc_cursor[c] = p * (h->classes[c].count / 16 + 1);
    unlock_arena(n);

    n->bell_tx = doorbell_sender();
    if (bell_mode == 0) n->bell_rx = doorbell_listen(doorbell_addr(a->name(), p, n->proc_gen));
    if (n->bell_tx < 0 || (bell_mode == 0 && n->bell_rx < 0)) {
      int e = n->bell_tx < 0 ? -n->bell_tx : -n->bell_rx;
      node_detach(n, false);
      return fail(EDVSNOMEM, std::string("cannot create the doorbell socket: ") + strerror(e));
    }
    {
      std::lock_guard<std::mutex> g(g_nodes_mu);
      g_nodes.push_back(n);
      for (auto &[name, d] : g_drivers)
        if (name == a->name()) n->driver = d.first;
    }
    *out = n;
    return 0;
  }
  return fail(EDVSBUSY, "could not attach: the segment kept being removed");
}

void set_driver(dvs_node *engine_node, dvs_driver *d) {
  std::lock_guard<std::mutex> g(g_nodes_mu);
  const std::string &name = engine_node->arena->name();
  g_drivers.erase(std::remove_if(g_drivers.begin(), g_drivers.end(), [&](auto &x) { return x.second.second == engine_node; }),
                  g_drivers.end());
  if (d) g_drivers.push_back({name, {d, engine_node}});
  for (dvs_node *n : g_nodes)
    if (n != engine_node && n->arena && n->arena->name() == name) n->driver = d;
}

int node_detach(dvs_node *n, bool keep_mapping) {
  if (!n) return EDVSINVAL;
  {
    std::lock_guard<std::mutex> g(g_nodes_mu);
    g_nodes.erase(std::remove(g_nodes.begin(), g_nodes.end(), n), g_nodes.end());
  }
  if (!n->forked) {
    while (!n->eps.empty()) {
      dvs_endpoint *e = n->eps.back();
      ep_close(e);  // removes itself from n->eps
      delete e;
    }
    Arena &a = *n->arena;
    lock_arena(n);
    // Blocks this process still holds (allocated or received) go back.
    for (uint32_t id = 0; id < a.hdr()->total_blocks; id++) {
      uint64_t w = a.block(id)->owner.load(std::memory_order_relaxed);
      if ((own_kind(w) == kOwnAlloc || own_kind(w) == kOwnRecv) && own_index(w) == n->proc) slab_free_if(a, id, w);
    }
    a.proc(n->proc)->state.store(kProcFree, std::memory_order_release);
    reap_dead_locked(n);
    bool last = true;
    for (uint32_t i = 0; i < a.hdr()->cfg.max_procs; i++)
      if (a.proc(i)->state.load(std::memory_order_relaxed) == kProcLive) last = false;
    if (last) a.unlink_name();
    arena_space_freed(n);
    unlock_arena(n);
  } else {
    for (dvs_endpoint *e : n->eps) delete e;
    n->eps.clear();
  }
  if (n->bell_rx >= 0) close(n->bell_rx);
  if (n->bell_tx >= 0) close(n->bell_tx);
  if (!keep_mapping) delete n->arena;
  delete n;
  return 0;
}

int node_reap_dead(dvs_node *n) {
  lock_arena(n);
  int r = reap_dead_locked(n);
  unlock_arena(n);
  return r;
}

namespace {
// A process-side handle on slot `s` (incarnation `gen`), registered with the attachment.
dvs_endpoint *open_handle(dvs_node *n, uint32_t s, uint32_t gen, uint32_t dc, int32_t ep) {
  auto *me = new dvs_endpoint();
  me->node = n;
  me->slot = s;
  me->gen = gen;
  me->dc = dc;
  me->ep = ep;
  me->open = true;
  n->eps.push_back(me);
  return me;
}

// Whether another bound local endpoint of DC `dc` carries `name` (under the arena lock).
bool name_taken_locked(Arena &a, uint32_t dc, const char *name, int32_t *holder) {
  for (uint32_t i = 0; i < a.hdr()->cfg.max_endpoints; i++) {
    EndpointSlot *e = a.endpoint(i);
    if (e->state.load(std::memory_order_relaxed) == kEpBound && e->kind == kEpLocal && e->dc == dc &&
        strncmp(e->name, name, kNameBytes) == 0) {
      *holder = e->ep;
      return true;
    }
  }
  return false;
}
}  // namespace

int ep_bind(dvs_node *n, uint32_t dc, int32_t ep, dvs_endpoint **out, const char *name) {
  if (name && *name) {
    size_t len = strnlen(name, kNameBytes);
    if (len >= kNameBytes) return fail(EDVSINVAL, "an endpoint name has at most " + std::to_string(kNameBytes - 1) + " bytes");
  }
  return ep_bind_as(n, dc, ep, kEpLocal, 0, 0, out, name);
}

int ep_bind_as(dvs_node *n, uint32_t dc, int32_t ep, uint32_t kind, uint32_t remote_node, uint32_t remote_gen,
               dvs_endpoint **out, const char *name) {
  if (n->forked) return EDVSDVSINIT;
  if (kind != kEpPeer && dc > DVS_MAX_DC)
    return fail(EDVSBADDCID, "dc must be in [0, " + std::to_string(DVS_MAX_DC) + "]");
  if (ep < 0 || ep > DVS_MAX_EP) return fail(EDVSENDPOINT, "endpoint must be in [0, " + std::to_string(DVS_MAX_EP) + "]");
  Arena &a = *n->arena;
  if (kind == kEpLocal && !dc_usable(a.hdr(), dc))
    return fail(EDVSNODCNODE, "node " + std::to_string(a.hdr()->node_id) + " is not in DC " + std::to_string(dc));
  lock_arena(n);
  int32_t holder = 0;
  if (name && *name && name_taken_locked(a, dc, name, &holder)) {
    unlock_arena(n);
    return fail(EDVSSLOTUSED, "name '" + std::string(name) + "' is already bound in DC " + std::to_string(dc) +
                                  " (endpoint " + std::to_string(holder) + ")");
  }
  uint32_t s = ep_lookup_locked(a, dc, ep);
  if (s != kNone) {
    EndpointSlot *e = a.endpoint(s);
    if (e->state.load(std::memory_order_relaxed) == kEpBound) {
      ProcSlot *owner = a.proc(e->owner_proc);
      bool alive = owner->state.load(std::memory_order_relaxed) == kProcLive && owner->gen == e->owner_gen &&
                   pid_alive(pid_t(owner->pid), owner->start_time);
      if (alive) {
        unlock_arena(n);
        return fail(EDVSSLOTUSED, "endpoint " + std::to_string(ep) + " of DC " + std::to_string(dc) +
                                      " is already bound (pid " + std::to_string(owner->pid) + ")");
      }
      if (owner->state.load(std::memory_order_relaxed) == kProcLive && owner->gen == e->owner_gen)
        reap_proc_locked(n, e->owner_proc);
      else
        unbind_locked(n, s);
    }
  } else {
    s = ep_slot_for_locked(a, dc, ep);
    if (s == kNone) {
      unlock_arena(n);
      return fail(EDVSNOSPC, "the endpoint table is full (" + std::to_string(a.hdr()->cfg.max_endpoints) + ")");
    }
  }
  EndpointSlot *e = a.endpoint(s);
  purge_locked(n, s);  // leftovers sent to a previous incarnation
  e->owner_proc = n->proc;
  e->owner_pid = uint32_t(n->pid);
  e->owner_gen = n->proc_gen;
  e->msgs_in.store(0, std::memory_order_relaxed);
  e->msgs_out.store(0, std::memory_order_relaxed);
  e->wake.fetch_and(~3u, std::memory_order_relaxed);
  e->notify_pending.store(0, std::memory_order_relaxed);
  e->kind = kind;
  e->remote_node.store(remote_node, std::memory_order_relaxed);
  e->remote_gen.store(remote_gen, std::memory_order_relaxed);
  e->migrating.store(0, std::memory_order_relaxed);
  memset(e->name, 0, kNameBytes);
  if (name) memcpy(e->name, name, strnlen(name, kNameBytes - 1));
  uint32_t gen = e->gen.fetch_add(1, std::memory_order_acq_rel) + 1;
  e->state.store(kEpBound, std::memory_order_release);
  a.hdr()->bind_seq.fetch_add(1, std::memory_order_acq_rel);
  ring_agent(n);
  unlock_arena(n);

  *out = open_handle(n, s, gen, dc, ep);
  return 0;
}

int ep_close(dvs_endpoint *me) {
  if (!me->open) return EDVSNOTBIND;
  dvs_node *n = me->node;
  me->open = false;
  n->eps.erase(std::remove(n->eps.begin(), n->eps.end(), me), n->eps.end());
  if (n->forked) return 0;
  Arena &a = *n->arena;
  for (const dvs_msg &m : me->deferred)
    if (m.block_ != kNone) slab_free_if(a, m.block_, own_proc(kOwnRecv, n->proc, n->proc_gen));
  me->deferred.clear();
  lock_arena(n);
  EndpointSlot *e = a.endpoint(me->slot);
  // Not ours any more (migrated away in place: the slot now belongs to the agent's engine): leave it.
  if (e->gen.load(std::memory_order_relaxed) == me->gen && owns(n, e)) unbind_locked(n, me->slot);
  unlock_arena(n);
  arena_space_freed(n);
  return 0;
}

void ring_proc(dvs_node *n, uint32_t p) {
  Arena &a = *n->arena;
  if (p >= a.hdr()->cfg.max_procs) return;
  ProcSlot *ps = a.proc(p);
  if (ps->state.load(std::memory_order_acquire) != kProcLive) return;
  if (ps->bell_mode == 1) {
    ps->bell.fetch_add(1, std::memory_order_acq_rel);
    futex_wake(&ps->bell, 1);
    return;
  }
  uint32_t g = ps->gen;
  if (p < 256) {
    if (n->bell_cache_gen[p] != g + 1) {
      n->bell_cache[p] = doorbell_addr(a.name(), p, g);
      n->bell_cache_gen[p] = g + 1;
    }
    doorbell_ring(n->bell_tx, n->bell_cache[p]);
  } else {
    doorbell_ring(n->bell_tx, doorbell_addr(a.name(), p, g));
  }
}

void ring_agent(dvs_node *n) {
  uint32_t b = n->arena->hdr()->agent_bell.load(std::memory_order_acquire);
  if (b && b - 1 != n->proc) ring_proc(n, b - 1);
}

void wake_consumer(dvs_node *n, EndpointSlot *e) {
  // Called right after ring_publish, whose seq_cst exchange orders the publish
  // before this load (the consumer sets its bit with a seq_cst RMW, then re-checks).
  uint32_t w = e->wake.load(std::memory_order_seq_cst);
  if (!(w & 3)) return;
  while (!e->wake.compare_exchange_weak(w, (w & ~3u) + kWakeStep, std::memory_order_acq_rel,
                                        std::memory_order_relaxed))
    if (!(w & 3)) return;
  if (w & kWakeFutex) futex_wake(&e->wake, INT_MAX);
  if (w & kWakeBell) ring_proc(n, e->owner_proc);
}

namespace {
// One wait point for space (an endpoint's inbox, or the arena's blocks):
// threads sleep on `seq` (counted in `sleepers`), event loops set their bit
// in `bells`. Cheap when nobody waits: a fence and five loads.
void wake_space(dvs_node *n, std::atomic<uint32_t> *seq, std::atomic<uint32_t> *sleepers,
                std::atomic<uint64_t> *bells) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool any = sleepers->load(std::memory_order_relaxed) != 0;
  for (uint32_t i = 0; i < 4; i++) any = any || bells[i].load(std::memory_order_relaxed) != 0;
  if (!any) return;
  seq->fetch_add(1, std::memory_order_acq_rel);
  if (sleepers->load(std::memory_order_relaxed)) futex_wake(seq, INT_MAX);
  for (uint32_t i = 0; i < 4; i++) {
    uint64_t bits = bells[i].exchange(0, std::memory_order_acq_rel);
    while (bits) {
      uint32_t b = uint32_t(__builtin_ctzll(bits));
      bits &= bits - 1;
      ring_proc(n, i * 64 + b);
    }
  }
}
}  // namespace

void inbox_space_freed(dvs_node *n, EndpointSlot *e) {
  wake_space(n, &e->space_seq, &e->space_sleepers, e->space_bells);
}

int ep_take_over(dvs_node *n, uint32_t dc, int32_t ep, uint32_t kind, uint32_t remote_node, uint32_t remote_gen,
                 uint32_t owner_proc, dvs_endpoint **out, const char *name) {
  if (name && strnlen(name, kNameBytes) >= kNameBytes) return EDVSINVAL;
  if (n->forked) return EDVSDVSINIT;
  if (dc > DVS_MAX_DC || ep < 0 || ep > DVS_MAX_EP) return EDVSINVAL;
  if (kind != kEpLocal && kind != kEpRemote) return EDVSINVAL;
  Arena &a = *n->arena;
  if (owner_proc != kNone && owner_proc >= a.hdr()->cfg.max_procs) return EDVSINVAL;
  lock_arena(n);
  uint32_t s = ep_lookup_locked(a, dc, ep);
  EndpointSlot *e = s == kNone ? nullptr : a.endpoint(s);
  int r = 0;
  if (!e || e->state.load(std::memory_order_relaxed) != kEpBound) {
    r = EDVSNOTBIND;
  } else if (e->kind == kind || e->kind == kEpPeer) {
    r = EDVSPROCSTS;  // a local endpoint becomes a proxy, a proxy a local endpoint: nothing else
  } else {
    uint32_t proc = owner_proc == kNone ? n->proc : owner_proc;
    ProcSlot *p = a.proc(proc);
    if (p->state.load(std::memory_order_relaxed) != kProcLive) {
      r = EDVSSRCDIED;
    } else {
      e->owner_proc = proc;
      e->owner_pid = p->pid;
      e->owner_gen = p->gen;
      e->kind = kind;
      e->remote_node.store(kind == kEpRemote ? remote_node : 0, std::memory_order_relaxed);
      e->remote_gen.store(kind == kEpRemote ? remote_gen : 0, std::memory_order_relaxed);
      memset(e->name, 0, kNameBytes);
      if (kind == kEpLocal && name) memcpy(e->name, name, strnlen(name, kNameBytes - 1));
      a.hdr()->bind_seq.fetch_add(1, std::memory_order_acq_rel);
      ring_agent(n);
    }
  }
  unlock_arena(n);
  if (r || !out) return r;
  *out = open_handle(n, s, e->gen.load(std::memory_order_acquire), dc, ep);
  return 0;
}

int ep_open_owned(dvs_node *n, uint32_t dc, int32_t ep, dvs_endpoint **out) {
  if (n->forked) return EDVSDVSINIT;
  if (dc > DVS_MAX_DC || ep < 0 || ep > DVS_MAX_EP) return EDVSINVAL;
  Arena &a = *n->arena;
  lock_arena(n);
  uint32_t s = ep_lookup_locked(a, dc, ep);
  EndpointSlot *e = s == kNone ? nullptr : a.endpoint(s);
  bool ok = e && e->state.load(std::memory_order_relaxed) == kEpBound && e->kind == kEpLocal && owns(n, e);
  for (dvs_endpoint *h : n->eps)
    if (ok && h->slot == s && h->open) ok = false;  // already open in this process
  uint32_t gen = ok ? e->gen.load(std::memory_order_relaxed) : 0;
  unlock_arena(n);
  if (!ok) return fail(EDVSNOTBIND, "endpoint " + std::to_string(ep) + " of DC " + std::to_string(dc) +
                                        " has not been handed to this process");
  *out = open_handle(n, s, gen, dc, ep);
  return 0;
}

void ep_forget(dvs_endpoint *me) {
  dvs_node *n = me->node;
  n->eps.erase(std::remove(n->eps.begin(), n->eps.end(), me), n->eps.end());
  me->open = false;
}

int ep_set_migrating(dvs_node *n, uint32_t dc, int32_t ep, bool on) {
  if (dc > DVS_MAX_DC || ep < 0 || ep > DVS_MAX_EP) return EDVSINVAL;
  Arena &a = *n->arena;
  uint32_t s = ep_lookup(a, dc, ep);
  if (s == kNone) return EDVSNOTBIND;
  EndpointSlot *e = a.endpoint(s);
  if (e->state.load(std::memory_order_acquire) != kEpBound) return EDVSNOTBIND;
  e->migrating.store(on ? 1 : 0, std::memory_order_seq_cst);
  if (!on) inbox_space_freed(n, e);  // held senders go now
  return 0;
}

void arena_space_freed(dvs_node *n) {
  ArenaHeader *h = n->arena->hdr();
  wake_space(n, &h->space_seq, &h->space_sleepers, h->space_bells);
}

int verify_dst(dvs_endpoint *me, int32_t dst, uint32_t gen, uint32_t *gen_out) {
  dvs_node *n = me->node;
  Arena &a = *n->arena;
  uint32_t s = ep_lookup(a, me->dc, dst);
  if (s == kNone) return gen ? EDVSDSTDIED : EDVSNOTBIND;
  EndpointSlot *e = a.endpoint(s);
  // A proxy that went away with its agent (the agent died): the remote
  // endpoint is unreachable, not dead. One its live agent closed: it is gone.
  int gone = gen ? EDVSDSTDIED : EDVSNOTBIND;
  if (e->kind != kEpLocal) {
    ProcSlot *agent = a.proc(e->owner_proc);
    bool agent_alive = agent->state.load(std::memory_order_acquire) == kProcLive && agent->gen == e->owner_gen &&
                       pid_alive(pid_t(agent->pid), agent->start_time);
    if (!agent_alive) gone = EDVSNOTCONN;
  }
  uint32_t g = e->gen.load(std::memory_order_acquire);
  if (e->state.load(std::memory_order_acquire) != kEpBound) return gen ? gone : EDVSNOTBIND;
  if (gen && g != gen) return gone;
  ProcSlot *owner = a.proc(e->owner_proc);
  if (owner->state.load(std::memory_order_acquire) != kProcLive || !pid_alive(pid_t(owner->pid), owner->start_time)) {
    lock_arena(n);
    reap_dead_locked(n);
    unlock_arena(n);
    return gen ? gone : EDVSNOTBIND;
  }
  if (gen_out) *gen_out = g;
  return 0;
}

}  // namespace dvs
