/* SPDX-License-Identifier: MIT */
/*
 * state.json: what is true of a VM now. Written atomically by whoever owns the VM (the `run`
 * process or a detached VM's supervisor), read by every other CLI call. Liveness is checked
 * against the recorded pids, so a VM whose supervisor was killed is reported as such, not as
 * "running".
 */
#ifndef AGENTVM_VMSTATE_H
#define AGENTVM_VMSTATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "base/proc.h"

/*
 * What a VM is doing. state.json spells it as vmstate_name() does (tests and scripts read those
 * words); VMS_UNKNOWN is what no state.json says (a damaged file, a word from a newer version).
 */
enum vm_run_state {
	VMS_UNKNOWN = 0,
	VMS_CREATED,
	VMS_STARTING,
	VMS_RUNNING,
	VMS_PAUSED,
	VMS_STOPPING,
	VMS_STOPPED,
	VMS_CRASHED,
};

/* "created", "starting", ..., "unknown". */
const char *vmstate_name(enum vm_run_state s);
/* The state a word names; VMS_UNKNOWN for any other text. */
enum vm_run_state vmstate_parse(const char *word);

struct vm_state {
	enum vm_run_state state;
	char accel[8];        /* kvm | tcg */
	pid_t supervisor_pid; /* 0 for `run` (the CLI itself) */
	pid_t qemu_pid;
	/* Each process's start time (/proc/PID/stat field 22): a pid alone may have been reused,
	   or planted in state.json; pid + start time names one process. */
	uint64_t supervisor_start;
	uint64_t qemu_start;
	int64_t created_ms;   /* CLOCK_REALTIME ms */
	int64_t ready_ms;     /* CLOCK_REALTIME ms at READY, 0 before */
	int64_t stopped_ms;
	char exit_reason[32]; /* poweroff, guest-shutdown, killed, crashed, supervisor-killed */
	int exit_status;      /* QEMU's wait status decoded: exit code, or 128+signal */
	char error[160];      /* the first write in the state dir that failed ("" = none): a full
				 state dir is reported here, where the reserve below still lets
				 state.json be written */
};

/*
 * Reserve the room state.json needs (a preallocated spare, swapped in by every write), so that
 * a full state dir (console output, another writer) can never leave a stale state behind: a
 * paused VM shown running, a clean stop shown crashed. Called when the state dir is created.
 */
int vmstate_reserve(const char *dir);

/* Write state.json in place of its reserved spare (see vmstate_reserve). 0 or -errno. */
int vmstate_write(const char *dir, const struct vm_state *s);
int vmstate_read(const char *dir, struct vm_state *s, struct avm_error *err);
/* True when pid is alive and is the process that started at `start` (never for start 0). */
bool proc_is(pid_t pid, uint64_t start);
/*
 * Signal exactly the process (pid, start): through a pidfd opened first and checked after, so
 * neither a reused pid nor one planted in state.json is ever signalled. 0, or -ESRCH.
 */
int proc_kill(pid_t pid, uint64_t start, int sig);
/* Wait up to ms for the process (pid, start) to end; true when it has (or never was). */
bool proc_wait_gone(pid_t pid, uint64_t start, int ms);
/*
 * The state as a user should see it: the recorded state, corrected when the processes that
 * should exist do not (a killed supervisor: "crashed", reason "supervisor-killed").
 */
void vmstate_effective(const char *dir, struct vm_state *s);
/* created, starting, running, paused or stopping: processes of the VM may still exist. */
bool vmstate_is_live(enum vm_run_state state);
/* running or paused: QEMU is up and answers QMP. */
bool vmstate_is_up(enum vm_run_state state);
/*
 * Whether the VM of state dir `dir` may still be live: its effective state is live, or it has
 * no state.json yet and the dir is young (a VM being set up right now). gc must spare both.
 */
bool vmstate_dir_may_be_live(const char *dir);

#endif
