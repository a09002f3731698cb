/* SPDX-License-Identifier: MIT */
/*
 * One cgroup (v2) per EXEC, so that a timeout, a SIGNAL and a vanished client reach every process
 * the command started, setsid'd ones included (cgroup.kill), and so that an OOM kill can be told
 * from other kills (memory.events). Without cgroup2 every call is a no-op and the process group
 * is all there is.
 */
#ifndef AGENTVM_GUEST_CGROUP_H
#define AGENTVM_GUEST_CGROUP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Mount cgroup2 at /sys/fs/cgroup and hand the memory, pids and cpu controllers to the exec
 * cgroups. Call once the final root is in place (after a switch into a root image: the mount
 * must be made in that root); from sys_setup_late. 0 or -errno (then no per-exec cgroups).
 */
int cgroup_setup(void);

/*
 * A cgroup for an exec: a directory fd (CLOEXEC) for spawn, or -1 without cgroups; *n names it
 * for cgroup_exec_release. Takes the spare when there is one.
 */
int cgroup_exec_create(uint32_t *n);
/* Make the spare cgroup the next cgroup_exec_create takes, if there is none (call when idle). */
void cgroup_make_spare(void);
/* In the child between clone and exec: move itself into the cgroup (before dropping root). */
int cgroup_exec_join(int dir_fd);
/* Signal every process in the cgroup (SIGKILL: cgroup.kill, atomic against forks). */
void cgroup_exec_signal(int dir_fd, int sig);
/* Whether the kernel's OOM killer ended a process of the cgroup (memory.events oom_kill). */
bool cgroup_exec_oom(int dir_fd);
/* Close the fd and remove cgroup n once it is empty (retried later while it is not). */
void cgroup_exec_release(uint32_t n, int dir_fd);
/* Retry the removal of cgroups that still had processes. */
void cgroup_gc(void);

#endif
