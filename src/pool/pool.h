/* SPDX-License-Identifier: MIT */
/*
 * The warm pool: `agentvm serve --pool SNAP` keeps min..max VMs restored from a snapshot and
 * hands them out over a Unix socket (<state root>/.pool.sock, one line per request and reply):
 *   ACQUIRE <timeout_ms>  ->  OK <name> | ERR <message>   (ERR TIMEOUT ... when none came free)
 *   RELEASE <name>        ->  OK | ERR <message>
 *   STATUS                ->  one line of JSON
 * An acquired VM belongs to the caller until RELEASE (it still counts towards max).
 */
#ifndef AGENTVM_POOL_H
#define AGENTVM_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "obs/metrics.h"
#include "state/statedir.h"
#include "spec/spec.h"

#define POOL_SOCK ".pool.sock" /* in the state root */
#define POOL_MAX_VMS 256

/*
 * Markers in a pool VM's state dir. POOL_VM_FILE: its supervisor writes it at launch; the VM
 * was started for a pool and the supervisor watches that `serve` (vm_launch_opts.pool_pidfd).
 * POOL_ACQUIRED_FILE: serve writes it (atomically) before it answers the ACQUIRE that hands the
 * VM out. When serve dies, however (kill -9 too), the supervisor of a VM without the second
 * stops it and removes it, network and state dir included: nobody could acquire it any more.
 * An acquired VM runs on; the next serve of the same snapshot counts it as acquired again.
 */
#define POOL_VM_FILE STATEDIR_POOL_VM
#define POOL_ACQUIRED_FILE STATEDIR_POOL_ACQUIRED

struct pool_opts {
	const char *snap; /* the snapshot to restore from */
	long min, max;    /* 0 <= min <= max, 1 <= max <= POOL_MAX_VMS */
	long ttl_s;       /* ready VMs older than this are replaced; 0 = never */
	long boot_timeout_s;
	/* Network flags replacing the snapshot's for every pool VM (borrowed; NULL = none). */
	const struct vm_spec *net_override;
	bool net_mode_given, policy_given;
	const char *metrics_listen; /* "ADDR:PORT" to serve /metrics on, or NULL */
};

/*
 * Serve the pool until SIGTERM, SIGINT or SIGHUP, logging to stderr; blocks those signals and
 * ignores SIGPIPE. Returns 0 after a clean stop (ready VMs removed, acquired ones left to their
 * callers), or -errno with err filled when it cannot start (a bad snapshot, a pool already
 * serving, -ENOMEM when out of memory): kind AVM_ERR_STATE but for -ENOMEM and interrupts.
 */
int pool_serve(const struct pool_opts *o, struct avm_error *err);

/*
 * Remove <state root>/.pool.sock when nothing listens on it (a serve killed with -9 could not).
 * 1 when removed, 0 when absent or live, -errno.
 */
int pool_sock_remove_stale(void);

/*
 * One request line (with its '\n') to the pool serving in the state root; the reply line,
 * without its '\n', into out (len bytes). 0, or -errno with err filled (-ECONNREFUSED: no pool).
 */
int pool_request(const char *req, char *out, size_t len, struct avm_error *err);
/* The serving pool's gauges from its STATUS line, for metrics (present false: none serves). */
void pool_metrics_query(struct metrics_pool *p);
/*
 * The requests: acquire a ready VM (waiting up to timeout_s) into name; release (remove) an
 * acquired one; the status JSON into out. A refusal from the pool ("ERR ...") is kind STATE,
 * -ETIMEDOUT when acquire timed out.
 */
int pool_acquire(long timeout_s, char *name, size_t len, struct avm_error *err);
int pool_release(const char *name, struct avm_error *err);
int pool_status(char *out, size_t len, struct avm_error *err);

#endif
