/* SPDX-License-Identifier: MIT */
/*
 * One microVM's lifecycle, owned by the calling process: launch QEMU (paused), negotiate QMP,
 * cont, wait for the agent's READY, run commands, tear down. vm_destroy() leaves nothing behind
 * on every path: the QEMU process is gone (quit, then SIGKILL) and the state dir is removed.
 */
#ifndef AGENTVM_VM_H
#define AGENTVM_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "guest-init/proto.h"
#include "base/error.h"
#include "spec/spec.h"

struct vm;

/* Start from a snapshot instead of booting (vm_restore.c). Borrowed for vm_launch(). */
struct vm_incoming {
	const char *state_path;   /* the migration stream to load */
	const char *mem_path;     /* copy-on-write clones: guest RAM file; NULL = plain stream */
	bool mem_share;           /* with mem_path: share=on (building the template) */
	bool stay_paused;         /* no cont and no SYNC (building the template) */
	const char *qemu_version; /* the snapshot's "major.minor.micro"; NULL = do not check */
	const char *disk_dir;     /* the snapshot dir: disk<N>.qcow2 there back the overlays */
};

struct vm_launch_opts {
	const struct vm_spec *spec; /* borrowed for the VM's lifetime */
	const char *kernel;         /* resolved image paths (borrowed) */
	const char *initrd;
	const char *qemu;
	enum vm_accel accel; /* resolved */
	bool keep_state;     /* keep the state dir after destroy (debugging) */
	bool detached;       /* owned by a supervisor: keep the state dir, add a QMP socket
				(qmp.sock) for other CLI calls, record the supervisor pid */
	const struct vm_incoming *incoming; /* NULL: cold boot */
	/* detached, > 0: a pidfd of the pool (`serve`) this VM is started for; see POOL_VM_FILE
	   in pool.h. The supervisor inherits it. 0: an ordinary VM (fd 0 is never a pidfd). */
	int pool_pidfd;
	/*
	 * Boot templates (boot_cache.h). template_boot: no per-run word on the guest's cmdline
	 * (agentvm.template=1); with incoming, SYNC carries them (a template's clone). template_mem
	 * (incoming NULL): a template's own cold boot, its guest RAM in this new file (share=on).
	 */
	bool template_boot;
	const char *template_mem;
};

/* Launch QEMU paused, negotiate QMP and resume. On failure nothing is left behind. */
int vm_launch(const struct vm_launch_opts *o, struct vm **out, struct avm_error *err);

/*
 * Wait until the guest agent sent READY. sig_fd (or -1) is a signalfd: a signal on it aborts
 * the wait with -EINTR. -ETIMEDOUT after timeout_ms, -ECHILD when QEMU died.
 */
int vm_wait_ready(struct vm *vm, int timeout_ms, int sig_fd, struct avm_error *err);

/*
 * For a VM without a supervisor (`run`): log its connections and judge it like a supervisor
 * does (src/vm/monitor.h), serviced while vm_exec() runs; stopped by vm_destroy().
 */
void vm_monitor_start(struct vm *vm, unsigned cpus, unsigned memory_mib);

struct vm_exec_request {
	char *const *argv;
	char *const *env; /* extra KEY=VALUE, may be NULL */
	const char *cwd;  /* may be NULL */
	unsigned timeout_s; /* 0 = none */
	int stdin_fd;       /* forwarded to the command; -1 = /dev/null in the guest */
	int stdout_fd;      /* where the command's stdout goes */
	int stderr_fd;
	int sig_fd; /* signalfd or -1: SIGINT/SIGTERM/SIGHUP are forwarded to the command;
		       a second one of them aborts with -EINTR */
	bool builtin; /* argv[0] is an agent builtin (guest-init/tarcmd.h), run as root */
	const char *root; /* chroot the command here in the guest (absolute); NULL = none */
	bool set_ids;     /* run as uid:gid instead of the image's user */
	uint32_t uid, gid;
};

struct vm_exec_result {
	struct avm_exit_info info; /* from the guest's EXIT */
	bool timed_out;            /* the timeout fired (guest- or host-side) */
	bool stdin_dropped;        /* the command left stdin unread; the guest dropped the rest */
	int output_error;          /* -errno: writing the command's stdout failed (not EPIPE:
				      /dev/full, a full disk); vm_exec then fails with it */
	uint64_t round_trip_us;    /* EXEC sent -> EXIT received */
};

/* Whether req fits one EXEC request: run checks before it boots. 0 or -E2BIG/-EMSGSIZE. */
int vm_exec_check(const struct vm_exec_request *req, struct avm_error *err);

/* Run one command to completion with its stdio forwarded. */
int vm_exec(struct vm *vm, const struct vm_exec_request *req, struct vm_exec_result *res,
	    struct avm_error *err);

/*
 * Attach to a detached VM (one with a supervisor) by name, to run commands in it through the
 * supervisor's agent socket. Fails at once, with a clear message, when the VM is paused or not
 * running. vm_destroy() on an attached VM only detaches.
 */
int vm_attach(const char *name, struct vm **out, struct avm_error *err);

/* Ask the guest to power off and wait for QEMU to exit (up to timeout_ms); then destroy. */
void vm_destroy(struct vm *vm);
/*
 * Remove a VM's state dir (its QEMU gone): its exec counters go into the host-wide sums first
 * and the removal is audited. 0 or -errno.
 */
int vm_dir_remove(const char *dir);

/* The launch's steps (its start, QEMU spawned, QMP greeting, snapshot loaded, ready) in ms
   after t0_us (now_us()), one line for AGENTVM_TRACE. */
void vm_trace(const struct vm *vm, uint64_t t0_us, char *buf, size_t len);

const char *vm_name(const struct vm *vm);
const char *vm_state_dir(const struct vm *vm);
pid_t vm_qemu_pid(const struct vm *vm);
/* Milliseconds from launch start to READY (0 before READY). */
uint64_t vm_boot_ms(const struct vm *vm);

#endif
