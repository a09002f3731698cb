/* SPDX-License-Identifier: MIT */
/*
 * The /metrics endpoint (`agentvm serve --metrics-listen`, `agentvm metrics --listen`) on
 * libmicrohttpd, driven from the caller's own event loop (MHD's epoll fd; no thread). Read-only:
 * GET /metrics answers the exposition text, another path 404, another method 405. Bounded: at
 * most METRICS_HTTP_MAX_CONNS connections (METRICS_HTTP_MAX_PER_IP from one address), each
 * closed after METRICS_HTTP_TIMEOUT_S without progress, with a small per-connection memory
 * limit (a request cannot grow headers without bound).
 */
#ifndef AGENTVM_METRICS_HTTP_H
#define AGENTVM_METRICS_HTTP_H

#include <stdio.h>

#include "base/error.h"

#define METRICS_HTTP_MAX_CONNS 64
#define METRICS_HTTP_MAX_PER_IP 16
#define METRICS_HTTP_TIMEOUT_S 10

struct metrics_http;
/* Writes the exposition text into f; 0 or -errno. */
typedef int (*metrics_http_render_fn)(FILE *f, void *ctx);

/*
 * Listen on "ADDR:PORT" (IPv4, or [IPv6]:PORT; PORT 0 picks a free one). -EINVAL for a bad
 * address, -EADDRINUSE etc. with err naming the address. *out: metrics_http_free().
 */
int metrics_http_start(const char *listen, metrics_http_render_fn render, void *ctx,
		       struct metrics_http **out, struct avm_error *err);
/* Whether addr is a valid "ADDR:PORT" for metrics_http_start: 0 or -EINVAL with err filled. */
int metrics_http_check(const char *addr, struct avm_error *err);
/* An fd for the caller's epoll set (readable: call metrics_http_run). */
int metrics_http_fd(const struct metrics_http *h);
/* The address actually bound, "ADDR:PORT". */
const char *metrics_http_address(const struct metrics_http *h);
/* Do whatever is ready, and close timed-out connections (call at least once a second). */
void metrics_http_run(struct metrics_http *h);
void metrics_http_free(struct metrics_http *h);

#endif
