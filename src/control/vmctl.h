/* SPDX-License-Identifier: MIT */
/*
 * Verbs on existing VMs, by name: pause, resume, stop, kill, rm and gc. Each finds the VM's
 * state dir and takes its lock (released on return), so two callers never act on one VM at
 * once; errors carry a kind (error.h) beside the errno. Used by the CLI, the pool, restore and
 * reset, and the public library.
 */
#ifndef AGENTVM_VMCTL_H
#define AGENTVM_VMCTL_H

#include <stdbool.h>

#include "base/error.h"

struct qmp_client;

/* Connect to a VM's qmp.sock (in its state dir) and negotiate capabilities. */
int vm_qmp_open(const char *dir, struct qmp_client **out, struct avm_error *err);
/* Find VM `name` and take its lock into *lock_fd (NULL: no lock). -errno, kind USAGE. */
int vm_open(const char *name, char **dir, int *lock_fd, struct avm_error *err);
/* Wait until the VM's recorded state leaves the live set (or its owner vanished). */
bool vm_wait_not_live(const char *dir, long ms);
/*
 * Pause (QMP stop) or resume (cont) a running or paused VM, then wait briefly for the
 * supervisor to record the new state. Kinds: USAGE (no such VM), STATE, VM_LOST.
 */
int vm_pause(const char *name, bool pause, struct avm_error *err);
/*
 * Stop: ask the guest agent to power off (grace_ms / 2), then the ACPI button (grace_ms / 2),
 * then SIGKILL. A VM that is not live is already stopped: 0. Blocks up to grace_ms + 5 s.
 */
int vm_stop(const char *name, long grace_ms, struct avm_error *err);
/* SIGKILL the VM's QEMU and wait (up to 5 s) for the end to be recorded. */
int vm_kill(const char *name, struct avm_error *err);
/*
 * Remove the VM: its processes (only with force when it is live: else STATE), its network,
 * cgroups and state dir.
 */
int vm_remove(const char *name, bool force, struct avm_error *err);
struct vm;
struct vm_exec_result;
/*
 * Attach to detached VM `name` to run commands in it (vm_attach, vm.h). Kinds: USAGE (no such
 * VM), VM_LOST (paused, stopped, or its supervisor does not answer).
 */
int vm_connect(const char *name, struct vm **out, struct avm_error *err);
/*
 * vm_exec() failed with r: give err its kind (INTERRUPTED, OUTPUT when the command's output
 * could not be written, else VM_LOST) and return r.
 */
int vm_exec_failed(int r, const struct vm_exec_result *res, struct avm_error *err);

/* Remove every VM whose processes are gone; *removed counts them. */
int vm_gc(unsigned *removed, struct avm_error *err);

/*
 * What `agentvm inspect` and `ls --json` show of the VM name (state dir dir): its state,
 * pids, uptime, files, spec and network, from the state dir. A new object (json_object_put).
 */
struct json_object;
struct json_object *vm_inspect_json(const char *name, const char *dir);

#endif
