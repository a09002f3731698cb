/* SPDX-License-Identifier: MIT */
/*
 * Metrics: what agentvm counts where things happen, kept in files so a one-shot
 * `agentvm metrics` (no daemon) can read them. The Prometheus text rendering of it all, with
 * every VM's live numbers, is report/metrics_render.h.
 *
 * Where the numbers live (every file bounded: fixed buckets, fixed result classes):
 *   <vm state dir>/metrics.json   this VM's boot/restore/exec histograms and exec results.
 *                                 Written atomically (tmp + rename) by the VM's one owner (the
 *                                 `run` process or the VM's supervisor), read by anyone.
 *   <state root>/.metrics/gone.json  the same sums for every VM that is gone: when a state dir
 *                                 is removed its numbers are added here first, under
 *                                 <state root>/.metrics/lock (flock), so host-wide counters
 *                                 never go backwards when a VM is removed.
 *   <vm state dir>/anomalies.json {"rules": {"<rule>": <count>, ...}} written by the anomaly
 *                                 detector (audit); read here for agentvm_anomalies_total.
 * Host-wide histograms = the gone file + every live VM's file, summed under the lock (shared),
 * so a VM being retired is counted once.
 */
#ifndef AGENTVM_METRICS_H
#define AGENTVM_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "guest-init/proto.h"
#include "base/error.h"

/* Upper bounds (seconds) of the duration buckets; one more bucket counts the rest (+Inf). */
#define METRICS_NBOUNDS 15
extern const double metrics_bounds[METRICS_NBOUNDS];

struct metrics_hist {
	uint64_t count;
	double sum;                             /* seconds */
	uint64_t bucket[METRICS_NBOUNDS + 1];   /* per bucket, not cumulative; last = above all */
};

/* How an exec ended, the label values of agentvm_exec_results_total. */
enum metrics_exec_class {
	METRICS_EXEC_OK,           /* exit code 0 */
	METRICS_EXEC_NONZERO,      /* another exit code */
	METRICS_EXEC_SIGNAL,       /* killed by a signal */
	METRICS_EXEC_TIMEOUT,      /* --timeout fired */
	METRICS_EXEC_OOM,          /* the guest's OOM killer */
	METRICS_EXEC_START_FAILED, /* never ran (no such command, not executable) */
	METRICS_EXEC_ERROR,        /* no EXIT: the agent answered ERROR or the VM was lost */
	METRICS_EXEC_NCLASSES,
};
extern const char *const metrics_exec_class_names[METRICS_EXEC_NCLASSES];

struct metrics_counters {
	struct metrics_hist boot, restore, exec;
	uint64_t results[METRICS_EXEC_NCLASSES];
};

void metrics_hist_add(struct metrics_hist *h, double seconds);
void metrics_counters_sum(struct metrics_counters *into, const struct metrics_counters *c);
uint64_t metrics_exec_count(const struct metrics_counters *c);
enum metrics_exec_class metrics_exec_class_of(const struct avm_exit_info *info);

/* A missing file reads as zeros (0); a damaged one as zeros too, with -EBADMSG. */
int metrics_counters_read(const char *path, struct metrics_counters *c);
int metrics_counters_write(const char *path, const struct metrics_counters *c);

/* Recording on (the default) or off, in this process: for bench/metrics.sh's on/off ratio. */
void metrics_set_recording(bool on);

/*
 * Recording, by the VM's owner, never failing the caller (a full state dir costs a sample,
 * not a boot or an exec). us: microseconds.
 */
void metrics_record_ready(const char *vm_dir, bool restored, uint64_t us);
void metrics_record_exec(const char *vm_dir, enum metrics_exec_class cls, uint64_t us);
/* The VM's state dir is about to be removed: add its numbers to the host-wide file. */
void metrics_retire(const char *vm_dir);

/* anomalies.json: at most METRICS_MAX_RULES rules; names outside [a-z0-9_.-]{1,63} skipped. */
#define METRICS_MAX_RULES 64
struct metrics_anomaly {
	char rule[64];
	uint64_t count;
};
/* The rules in buf (len bytes); returns how many went to out (0 for a bad or empty file). */
size_t metrics_anomalies_parse(const char *buf, size_t len, struct metrics_anomaly *out,
			       size_t max);

/* The pool as `serve` sees it (present false: no pool serving). */
struct metrics_pool {
	bool present;
	long ready, starting, acquired, waiting;
	uint64_t refill_failures;
};

/*
 * Reading the files back, for the exposition (report/metrics_render.h): the shared lock on the
 * host-wide sums (an fd to close, -1 without one), the gone VMs' sums, a VM's counters and its
 * anomaly counts. A missing or damaged file reads as zeros.
 */
int metrics_lock_shared(void);
void metrics_read_gone(struct metrics_counters *c);
void metrics_read_vm(const char *vm_dir, struct metrics_counters *c);
size_t metrics_read_anomalies(const char *vm_dir, struct metrics_anomaly *out, size_t max);

#endif
