/*
 * c_pingpong.c — round-trip latency of dvs calls between two C processes.
 *
 *   c_pingpong server <node> <dc> <ep>
 *   c_pingpong client <node> <dc> <ep> <server-ep> [iterations] [size]
 *
 * The client prints p50/p99 round-trip times in microseconds; the server
 * exits when the client sends an empty one-way message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dvs.h"

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what, int r) {
  fprintf(stderr, "%s: %s (%s)\n", what, dvs_errname(r), dvs_last_error_detail());
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s server|client <node> <dc> <ep> [server-ep iterations size]\n", argv[0]);
    return 2;
  }
  int server = strcmp(argv[1], "server") == 0;
  dvs_attach_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.node_id = (uint32_t)atoi(argv[2]);
  dvs_node *node;
  dvs_endpoint *ep;
  int r = dvs_attach(&opts, &node);
  if (r < 0) die("attach", r);
  if ((r = dvs_bind(node, (uint32_t)atoi(argv[3]), atoi(argv[4]), &ep)) < 0) die("bind", r);
  if (server) {
    printf("ready\n");
    fflush(stdout);
    for (;;) {
      dvs_msg m;
      if ((r = dvs_receive(ep, DVS_ANY, &m, DVS_FOREVER)) < 0) die("receive", r);
      if (m.kind != DVS_MSG_CALL) {
        dvs_release(ep, &m);
        break;
      }
      dvs_reply(ep, &m, m.data, m.len);
      dvs_release(ep, &m);
    }
  } else {
    int dst = atoi(argv[5]);
    int iters = argc > 6 ? atoi(argv[6]) : 100000;
    uint32_t size = argc > 7 ? (uint32_t)atoi(argv[7]) : 64;
    char *buf = calloc(1, size ? size : 1);
    double *rtt = malloc(sizeof(double) * (size_t)iters);
    for (int i = -1000; i < iters; i++) {
      dvs_msg m;
      double t0 = now_us();
      if ((r = dvs_call(ep, dst, buf, size, &m, 5000)) < 0) die("call", r);
      double t1 = now_us();
      dvs_release(ep, &m);
      if (i >= 0) rtt[i] = t1 - t0;
    }
    qsort(rtt, (size_t)iters, sizeof(double), cmp);
    printf("rtt_p50_us=%.2f rtt_p99_us=%.2f iterations=%d size=%u\n", rtt[iters / 2], rtt[iters * 99 / 100], iters,
           size);
    dvs_send(ep, dst, NULL, 0, 1000);
    free(buf);
    free(rtt);
  }
  dvs_close(ep);
  dvs_detach(node);
  return 0;
}
