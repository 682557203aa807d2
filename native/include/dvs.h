/*
 * dvs.h — the C API of the dvs core (no Node.js needed).
 *
 * A process attaches to its node's shared-memory arena, binds endpoints
 * (dc, ep) and exchanges messages with other endpoints of the same DC.
 * Every function returns 0 (or a non-negative value) on success and a
 * negative DVS error code (EDVS*) on failure; dvs_errname()/dvs_strerror()
 * turn a code into text, dvs_last_error_detail() gives the detail of the
 * last failure on this thread (e.g. which field of an arena header is bad).
 *
 * Timeouts are in milliseconds: DVS_FOREVER (-1) waits without limit,
 * DVS_NOWAIT (0) never waits (EDVSAGAIN when it would have to).
 * An endpoint is used by one thread at a time.
 */
#ifndef DVS_H
#define DVS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- error codes (stable; names and numbers of the original M3-IPC) ---- */
#define EDVSINTR        (-4)    /* interrupted */
#define EDVS2BIG        (-7)    /* payload larger than DVS_MAX_PAYLOAD */
#define EDVSAGAIN       (-11)   /* would have to wait (DVS_NOWAIT) */
#define EDVSNOMEM       (-12)   /* shared memory too small / unavailable */
#define EDVSBUSY        (-16)   /* resource busy */
#define EDVSNOSYS       (-38)   /* not available (yet): e.g. a migration backend this build or host lacks */
#define EDVSINVAL       (-22)   /* invalid argument */
#define EDVSNOSPC       (-28)   /* endpoint or process table full */
#define EDVSTIMEDOUT    (-61)   /* the timeout expired */
#define EDVSNOTCONN     (-64)   /* link to the node is down */
#define EDVSSRCDIED     (-108)  /* the source died */
#define EDVSDSTDIED     (-109)  /* the destination died */
#define EDVSBADNODEID   (-301)  /* bad node id */
#define EDVSBADDCID     (-302)  /* bad DC id, or a DC other than the endpoint's */
#define EDVSENDPOINT    (-306)  /* endpoint number out of range */
#define EDVSNOTBIND     (-310)  /* endpoint not bound (or closed) */
#define EDVSNONODE      (-316)  /* stale location: node does not hold it */
#define EDVSDVSINIT     (-318)  /* not attached (or detached) */
#define EDVSNODCNODE    (-319)  /* node not in the DC */
#define EDVSPROCSTS     (-324)  /* wrong state (e.g. reply to a caller not waiting) */
#define EDVSMIGRATE     (-332)  /* endpoint is migrating (internal) */
#define EDVSSLOTUSED    (-337)  /* endpoint already bound */
#define EDVSBADRANGE    (-338)  /* value out of range */
#define EDVSARENA       (-601)  /* arena incompatible or corrupt */

/* ---- limits ---- */
#define DVS_MAX_PAYLOAD  (1u << 20)   /* 1 MiB */
#define DVS_MAX_DC       4095         /* dc in [0, DVS_MAX_DC] */
#define DVS_MAX_EP       16777215     /* ep in [0, DVS_MAX_EP] */
#define DVS_ANY          (-1)         /* receive from any source */
#define DVS_FOREVER      (-1)
#define DVS_NOWAIT       0

/* ---- message kinds ---- */
#define DVS_MSG_SEND    1
#define DVS_MSG_CALL    2
#define DVS_MSG_REPLY   3
#define DVS_MSG_NOTIFY  4
#define DVS_MSG_FENCE   6   /* migration marker (src_node = the fencing node, bits = token); only an endpoint being migrated sees one */

typedef struct dvs_node dvs_node;
typedef struct dvs_endpoint dvs_endpoint;

typedef struct dvs_attach_opts {
  uint32_t node_id;         /* node number, 0..1023 */
  const char *name;         /* shm segment name; NULL -> "dvs.<ns>.<node_id>" */
  const char *ns;           /* namespace; NULL -> $DVS_NAMESPACE or "default" */
  /* used only by the process that creates the arena (0 = default) */
  uint32_t max_procs;       /* default 256 */
  uint32_t max_endpoints;   /* default 1024 */
  uint32_t inbox_cells;     /* per endpoint, power of two, default 1024 */
  uint32_t reply_cells;     /* per endpoint, power of two, default 256 */
  uint32_t pool_mib;        /* payload pool size in MiB (scales block counts), default 92 */
  uint32_t flags;           /* DVS_ATTACH_* */
} dvs_attach_opts;

#define DVS_ATTACH_NOCREATE 1u  /* fail with EDVSDVSINIT if the node's arena does not exist */

typedef struct dvs_msg {
  uint32_t kind;            /* DVS_MSG_* */
  uint32_t src_dc;
  int32_t src_ep;
  uint32_t src_node;
  const void *data;         /* in shared memory; valid until dvs_release() */
  uint32_t len;
  uint32_t bits;            /* DVS_MSG_NOTIFY: the coalesced bits */
  int32_t status;           /* DVS_MSG_REPLY: 0, or an error (e.g. EDVSDSTDIED) */
  /* private to the library */
  uint32_t block_;
  uint32_t call_id_;
  uint32_t src_gen_;
  uint32_t reserved_;
} dvs_msg;

int dvs_attach(const dvs_attach_opts *opts, dvs_node **out);
int dvs_detach(dvs_node *node);
uint32_t dvs_node_id(const dvs_node *node);

int dvs_bind(dvs_node *node, uint32_t dc, int32_t ep, dvs_endpoint **out);
/* Binds with a name (up to 31 bytes, unique among the node's endpoints of the DC)
 * that the cluster directory publishes for lookup. */
int dvs_bind_named(dvs_node *node, uint32_t dc, int32_t ep, const char *name, dvs_endpoint **out);
int dvs_close(dvs_endpoint *ep);
uint32_t dvs_ep_dc(const dvs_endpoint *ep);
int32_t dvs_ep_number(const dvs_endpoint *ep);

/* Copying send: the payload is written once into shared memory. */
int dvs_send(dvs_endpoint *ep, int32_t dst, const void *data, uint32_t len, int timeout_ms);
/* Zero-copy send: fill a buffer from dvs_alloc() and publish it. */
void *dvs_alloc(dvs_endpoint *ep, uint32_t len, int timeout_ms, int *err);
int dvs_send_alloc(dvs_endpoint *ep, int32_t dst, void *buf, uint32_t len, int timeout_ms);
void dvs_free_alloc(dvs_endpoint *ep, void *buf);

/* Receive a message (src = DVS_ANY or an endpoint). Notifications first. */
int dvs_receive(dvs_endpoint *ep, int32_t src, dvs_msg *out, int timeout_ms);
void dvs_release(dvs_endpoint *ep, dvs_msg *msg);

/* sendrec: send a request and wait for its reply (release the reply). */
int dvs_call(dvs_endpoint *ep, int32_t dst, const void *req, uint32_t len,
             dvs_msg *reply, int timeout_ms);
/* Reply to a received DVS_MSG_CALL; never blocks. */
int dvs_reply(dvs_endpoint *ep, const dvs_msg *call, const void *data, uint32_t len);
/* OR bits into dst's pending notification word for this source. */
int dvs_notify(dvs_endpoint *ep, int32_t dst, uint32_t bits);

const char *dvs_errname(int code);
const char *dvs_strerror(int code);
const char *dvs_last_error_detail(void);

#ifdef __cplusplus
}
#endif
#endif /* DVS_H */
