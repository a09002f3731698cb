/* SPDX-License-Identifier: MIT */
/*
 * qmp_internal.h - hooks into the QMP client for unit tests and the fuzzer. Not part of the
 * public API: the rest of agentvm includes qmp.h only.
 */
#ifndef AGENTVM_QMP_INTERNAL_H
#define AGENTVM_QMP_INTERNAL_H

#include "qmp.h"

/*
 * A client with no fd: output is discarded as if written at once (so replies to it match),
 * input comes only from qmp_client_feed(). Blocking helpers return -ENOTCONN on it.
 * Returns NULL with errno = ENOMEM on failure.
 */
struct qmp_client *qmp_client_new_detached(void);

/*
 * Hand bytes to the parser exactly as qmp_client_process() does after a read (data borrowed):
 * dispatches greeting, replies and events. Does not expire timeouts (tests stay deterministic).
 * Works on any client. Returns like qmp_client_process().
 */
int qmp_client_feed(struct qmp_client *c, const void *data, size_t len, struct qmp_error *err);

/* Behave as if QEMU closed the connection: pending commands get -EPIPE. Returns -EPIPE. */
int qmp_client_feed_eof(struct qmp_client *c, struct qmp_error *err);

/* Lower the per-message cap (0 or > QMP_MAX_MESSAGE: back to QMP_MAX_MESSAGE), so the fuzzer
 * reaches the oversize path with small inputs. */
void qmp_client_set_max_message(struct qmp_client *c, size_t max);

/* Bytes queued for writing but not yet written (held commands included). */
size_t qmp_client_pending_output(const struct qmp_client *c);

/* Commands waiting for a reply (held ones included). */
size_t qmp_client_pending_commands(const struct qmp_client *c);

#endif /* AGENTVM_QMP_INTERNAL_H */
