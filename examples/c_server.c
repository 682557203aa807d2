/*
 * c_server.c — a dvs service written in C, with no Node.js involved.
 *
 *   c_server <node> <dc> <ep> [--ns NAME]
 *
 * Serves calls on (dc, ep): a request "upper:<text>" is answered with the
 * text upper-cased, "count" with the number of requests served so far,
 * "quit" with "bye" (then it exits); anything else is echoed back. One-way
 * messages are counted. It prints "ready" once bound so that a parent
 * process can wait for it. examples/node_client.ts talks to it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dvs.h"

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s <node> <dc> <ep> [--ns NAME]\n", argv[0]);
    return 2;
  }
  dvs_attach_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.node_id = (uint32_t)atoi(argv[1]);
  if (argc >= 6 && strcmp(argv[4], "--ns") == 0) opts.ns = argv[5];
  dvs_node *node;
  int r = dvs_attach(&opts, &node);
  if (r < 0) {
    fprintf(stderr, "attach: %s: %s\n", dvs_errname(r), dvs_last_error_detail());
    return 1;
  }
  dvs_endpoint *ep;
  r = dvs_bind(node, (uint32_t)atoi(argv[2]), atoi(argv[3]), &ep);
  if (r < 0) {
    fprintf(stderr, "bind: %s: %s\n", dvs_errname(r), dvs_last_error_detail());
    dvs_detach(node);
    return 1;
  }
  printf("ready\n");
  fflush(stdout);

  unsigned long served = 0, oneway = 0;
  char out[4096];
  for (;;) {
    dvs_msg m;
    r = dvs_receive(ep, DVS_ANY, &m, DVS_FOREVER);
    if (r < 0) {
      fprintf(stderr, "receive: %s\n", dvs_errname(r));
      break;
    }
    if (m.kind != DVS_MSG_CALL) {
      oneway++;
      dvs_release(ep, &m);
      continue;
    }
    served++;
    const char *req = (const char *)m.data;
    uint32_t n = m.len;
    int quit = 0;
    uint32_t len;
    if (n >= 6 && memcmp(req, "upper:", 6) == 0) {
      len = n - 6 < sizeof out ? n - 6 : (uint32_t)sizeof out;
      for (uint32_t i = 0; i < len; i++) out[i] = (char)toupper((unsigned char)req[6 + i]);
    } else if (n == 5 && memcmp(req, "count", 5) == 0) {
      len = (uint32_t)snprintf(out, sizeof out, "%lu/%lu", served, oneway);
    } else if (n == 4 && memcmp(req, "quit", 4) == 0) {
      len = 3;
      memcpy(out, "bye", 3);
      quit = 1;
    } else {
      len = n < sizeof out ? n : (uint32_t)sizeof out;
      memcpy(out, req, len);
    }
    r = dvs_reply(ep, &m, out, len);
    if (r < 0) fprintf(stderr, "reply: %s\n", dvs_errname(r));
    dvs_release(ep, &m);
    if (quit) break;
  }
  dvs_close(ep);
  dvs_detach(node);
  return 0;
}
