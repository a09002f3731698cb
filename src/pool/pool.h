/* SPDX-License-Identifier: MIT */
/*
 * The warm pool: `agentvm serve --pool SNAP` keeps min..max VMs restored from a snapshot and
 * hands them out over a Unix socket (<state root>/.pool.sock, one line per request and reply):
 *   ACQUIRE <timeout_ms>  ->  OK <name> | ERR <message>   (ERR TIMEOUT ... when none came free)
 *   ACQUIRE <timeout_ms> <key>  (a run pool's lease, pool_run_acquire()): OK <name> only when
 *                         key is the pool's own (ERR MISMATCH ... else), and the connection
 *                         stays open: the VM is the caller's until it closes it, then removed
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

/*
 * A pod pool (`serve --pool-pod`, for the containerd shim): its VMs are started like `agentvm
 * start` (through the boot cache: a refill is a boot template's restore) with one share each,
 * the empty directory <state root>/POOL_POD_DIR_PREFIX<vm> (mode 0555, made and removed with
 * the VM by the pool) exported as a container root share (agentvm_spec_add_root_share) at
 * POOL_POD_GUEST_DIR: exactly a shim pod VM, whose containers' roots the shim mounts beneath it.
 */
#define POOL_POD_DIR_PREFIX ".pod-"
#define POOL_POD_GUEST_DIR "/mnt/rootfs"

/*
 * A run pool (`serve --pool-run`): its VMs are started like `agentvm start` with the pool's
 * flags (no share, the network nat-filtered unless the flags say otherwise), then run `true`
 * once, so that TCG has translated the guest's command path before a caller's command comes.
 * `agentvm run` takes one when the pool's VMs are exactly what the run would boot
 * (pool_run_key) and one is ready at once, runs its command in it and gives it back by
 * closing the lease's connection (the pool removes the VM and starts a fresh one). A run that
 * dies, even by kill -9, gives it back the same way.
 */
struct pool_opts {
	const char *snap; /* the snapshot to restore from; NULL for a pod or run pool */
	bool pod;         /* a pod pool: the VMs' shape below, net_override their network */
	bool run;         /* a run pool: likewise */
	const char *profile, *cpus, *memory; /* NULL: agentvm start's defaults */
	long min, max;    /* 0 <= min <= max, 1 <= max <= POOL_MAX_VMS */
	long ttl_s;       /* ready VMs older than this are replaced; 0 = never */
	long boot_timeout_s;
	/* Network flags replacing the snapshot's for every pool VM (borrowed; NULL = none). A pod
	   pool's VMs have these (isolated unless net_mode_given); the pool may change the spec. */
	struct vm_spec *net_override;
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

/* VM `name`'s pod directory (POOL_POD_DIR_PREFIX) into buf; -ENAMETOOLONG. */
int pool_pod_dir(const char *name, char *buf, size_t len);

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

/*
 * What a run pool's VMs and a run must agree on: the hex SHA-256 (65 bytes with its NUL) of
 * the spec without its per-command parts (name, command, env, workdir, timeout), with the
 * accelerator and the guest kernel and initramfs resolved. 0 or -errno.
 */
int pool_run_key(const struct vm_spec *spec, char key[65], struct avm_error *err);
/*
 * A VM for `agentvm run` from the run pool serving in the state root: one that is ready now
 * and was started from a spec with spec's key; its name into name and the lease's connection
 * into *lease_fd (closing it gives the VM back: the pool removes it). 1 when leased, 0 when
 * not (no pool serves, another kind of pool or spec, none ready: boot as usual), -errno.
 */
int pool_run_acquire(const struct vm_spec *spec, char *name, size_t len, int *lease_fd,
		     struct avm_error *err);

struct vm;
/*
 * The VM for one run: a warm VM of the run pool, connected, when use_pool and the pool serves
 * this spec with one ready (*lease_fd >= 0 then: vm_destroy() it and close the lease once the
 * command is over, and the pool removes the VM); else a boot of its own (vm_boot(), with the
 * other arguments; *lease_fd -1). The caller says use_pool only when nothing of the run needs
 * a VM of its own (its name, kept state, copies, --cold, another network namespace).
 */
int pool_run_vm(struct vm_spec *spec, bool use_pool, long boot_timeout_s, bool cold,
		bool keep_state, int sig_fd, struct vm **vm, int *lease_fd, struct avm_error *err);
int pool_release(const char *name, struct avm_error *err);
int pool_status(char *out, size_t len, struct avm_error *err);

#endif
