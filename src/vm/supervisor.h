/* SPDX-License-Identifier: MIT */
/*
 * The per-VM supervisor of a detached VM (like conmon): it owns QEMU, serves the guest agent
 * to any number of CLI clients over <state dir>/agent.sock (frames re-numbered per client, so
 * several `agentvm exec` calls run at once), logs QMP events to events.jsonl, keeps state.json
 * true, and when QEMU exits for any reason records why and removes the sockets. The state dir
 * itself stays until `agentvm rm`, so `ls` can say what happened. A pool VM's supervisor also
 * watches its `serve` (vm_launch_opts.pool_pidfd): when serve dies before handing the VM out,
 * the supervisor stops it and removes everything, state dir included (see pool.h).
 */
#ifndef AGENTVM_SUPERVISOR_H
#define AGENTVM_SUPERVISOR_H

#include "vm/vm.h"

/*
 * Start a supervisor for a new VM and return once the guest is READY (0) or the start failed
 * (-errno, err filled, nothing left behind). The supervisor is a daemon (double fork, setsid);
 * on success *supervisor_pid is its pid.
 */
int supervisor_start(const struct vm_launch_opts *o, int boot_timeout_ms, pid_t *supervisor_pid,
		     struct avm_error *err);

#endif
