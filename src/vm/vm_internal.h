/* SPDX-License-Identifier: MIT */
/* The inside of struct vm, shared by vm.c (lifecycle) and vm_exec.c (running commands) only. */
#ifndef AGENTVM_VM_INTERNAL_H
#define AGENTVM_VM_INTERNAL_H

#include "vm/agent_conn.h"
#include "vm/console.h"
#include "jail/jail.h"
#include "net/net.h"
#include "qmp/qmp.h"
#include "vm/vm.h"
#include "state/vmstate.h"

/* Grace after the guest-side timeout before the host gives up on the guest. */
#define HOST_TIMEOUT_GRACE_MS 3000
/* Stop reading the user's stdin while this much is queued for the guest. */
#define STDIN_HIGH_WATER (1u << 20)

enum ev_tag { EV_QMP = 1, EV_AGENT, EV_PIDFD, EV_SIG, EV_STDIN, EV_TIMER, EV_CONSOLE };

struct vm {
	char *name;
	char *dir;
	bool keep_state;
	pid_t pid;
	int pidfd;
	bool exited; /* QEMU reaped */
	int wstatus;
	struct qmp_client *qmp;
	int agent_fd;
	struct agent_conn agent;
	int epfd;
	uint32_t agent_events; /* what the agent fd is registered for */
	bool agent_in_paused;  /* not reading the guest: a client is behind (supervisor.c) */
	bool ready;
	bool restored;       /* started from a snapshot: ready means SYNC_DONE, not READY */
	bool guest_shutdown; /* QMP SHUTDOWN seen */
	bool guest_reset;    /* ... with reason guest-reset or guest-panic: the guest kernel
				panicked (panic=-1 reboots, -no-reboot ends QEMU) or rebooted */
	struct console con;  /* the guest console, copied into console.log (owners only) */
	struct jail jail;    /* QEMU's jail (its cgroups are removed once QEMU is gone) */
	uint32_t next_id;
	uint64_t t_launch_us, t_ready_us;
	/* AGENTVM_TRACE's steps (vm_trace()): QEMU spawned, its QMP greeting, snapshot loaded */
	uint64_t t_spawn_us, t_qmp_us, t_loaded_us;
	bool attached;       /* a client of a detached VM's supervisor, not QEMU's parent */
	struct vm_state st;  /* mirrored to state.json by its owner */
	struct vm_net net;   /* torn down once QEMU is gone (owners only) */
	char *boot_words;    /* a boot template's clone: its per-run words, sent with SYNC */
	struct monitor *mon; /* run: connections and anomalies (vm_monitor_start) */
	/* Replies to QMP commands sent ahead unanswered (vm_restore.c): here, not on a stack,
	   as a failed wait leaves their callbacks to qmp_client_free(). */
	struct vm_qmp_ahead {
		int r;
		struct qmp_error qe;
	} ahead[2];
};
#define EV_MONITOR0 200 /* + 0..MONITOR_FDS-1: the monitor's fds in epfd (monitor.h) */

int vm__ep_add(int epfd, int fd, uint32_t events, enum ev_tag tag);
/* Register the agent fd for EPOLLOUT exactly while output is queued. */
void vm__agent_want_out(struct vm *vm);
/* Reap QEMU and describe its death in err (with the last line of qemu.log). Returns -ECHILD. */
int vm__qemu_died(struct vm *vm, const char *when, struct avm_error *err);
/*
 * QEMU's side of the epoll set, the same in every loop on it: EV_QMP (events and replies; at
 * its EOF the socket leaves the set and the pidfd tells why) and EV_CONSOLE (into console.log;
 * at its EOF the socket leaves the set). Another tag does nothing. 0, or -errno in err.
 */
int vm__pump_qemu(struct vm *vm, uint32_t tag, struct avm_error *err);
/* Read agent bytes into the decoder; an EOF becomes a QEMU-died or channel-closed error. */
int vm__read_agent(struct vm *vm, const char *when, struct avm_error *err);

/*
 * How to wait for a guest to become ready (vm.c: READY after a boot; vm_restore.c: SYNC_DONE
 * after a restore). on_frame sees every complete agent frame with the current result r and
 * returns the new one; it sets vm->ready when the awaited frame came.
 */
struct vm_wait {
	const char *when;         /* "before the guest was ready": in QEMU-died messages */
	const char *interrupted;  /* the message when sig_fd fires */
	const char *timeout_msg;  /* "<timeout_msg> within N s; see DIR/console.log<timeout_hint>" */
	const char *timeout_hint;
	int (*on_frame)(struct vm *vm, const struct avm_frame_hdr *h, const uint8_t *p, void *ctx,
			int r, struct avm_error *err);
	void *ctx;
};
/*
 * Pump QEMU, QMP and the agent until vm->ready, a failure, sig_fd (already on the epoll set;
 * taken off it here) or the deadline (CLOCK_MONOTONIC ms; timeout_ms is for the message). r:
 * the result so far (a failure skips the wait). Ready: the VM is "running".
 */
int vm__wait_guest(struct vm *vm, const struct vm_wait *w, uint64_t deadline, int timeout_ms,
		   int sig_fd, int r, struct avm_error *err);

/* "guest-panic" (a reset with the kernel's panic line on the console), "guest-reset", or NULL. */
const char *vm__exit_reason(const struct vm *vm);

/* A write in the state dir failed (a full file system): say so in state.json, once. */
void vm__note_write_error(struct vm *vm, const char *file, int r);

/* Set the state, mirror it to state.json (owners only). */
void vm__set_state(struct vm *vm, enum vm_run_state state);

/* vm_restore.c: load a snapshot into the just-started QEMU (-incoming defer), then cont. */
int vm__incoming(struct vm *vm, const struct vm_incoming *in, struct avm_error *err);
/* vm_restore.c: tell a restored guest its new identity (SYNC) and wait for SYNC_DONE. */
int vm__wait_synced(struct vm *vm, int timeout_ms, int sig_fd, struct avm_error *err);

#endif
