/* SPDX-License-Identifier: MIT */
/*
 * Outgoing migration into a file: the fd goes to QEMU with getfd (SCM_RIGHTS), `migrate` writes
 * the stream, query-migrate is polled until it ends. Used by snapshot save (the full stream)
 * and by the copy-on-write template (device state only).
 */
#ifndef AGENTVM_MIGRATE_H
#define AGENTVM_MIGRATE_H

#include <stdbool.h>

#include "base/error.h"
#include "qmp/qmp.h"

struct migrate_req {
	const char *fdname;  /* the name QEMU knows the fd by */
	int timeout_ms;      /* for the whole migration */
	int poll_ms;         /* between query-migrate calls */
	int qmp_timeout_ms;  /* for each QMP command */
};

/* How a migration that did not complete ended (status and QEMU's error-desc, if it gave one). */
struct migrate_end {
	bool ended; /* set only for these two ends, never for a QMP failure */
	char status[32];
	char desc[1024];
	bool has_desc;
};

/*
 * Before a save: migration events on, x-ignore-shared off (a clone has it on from its restore;
 * a snapshot is a full stream), and no bandwidth cap (QEMU's default is 32 MiB/s; a stopped VM
 * should go at disk speed). 0 or -errno with qe filled.
 */
int migrate_set_fast(struct qmp_client *q, int timeout_ms, struct qmp_error *qe);

/*
 * Migrate the VM behind q (stopped or not) into fd. 0 when QEMU says "completed"; -EIO when
 * it says "failed" or "cancelled", and -ETIMEDOUT after timeout_ms (nothing is cancelled), both
 * with end->ended and err untouched; -EINTR when a blocked SIGINT/SIGTERM/SIGHUP is pending
 * (the migration is cancelled first); else -errno from a QMP command, with err filled.
 */
int migrate_to_fd(struct qmp_client *q, int fd, const struct migrate_req *rq,
		  struct migrate_end *end, struct avm_error *err);

#endif
