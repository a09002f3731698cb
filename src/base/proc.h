/* SPDX-License-Identifier: MIT */
/*
 * A process by (pid, start time): what agentvm records of QEMU, supervisors and helpers, so a
 * reused pid is never taken for the process it recorded. Pure (only /proc): the containerd shim
 * compiles it too, so its saved start times compare equal with agentvm's.
 */
#ifndef AGENTVM_PROC_H
#define AGENTVM_PROC_H

#include <stdint.h>
#include <sys/types.h>

/* A process's start time in clock ticks since boot (/proc/PID/stat field 22); 0: no such pid
   or one that has ended and waits to be reaped (a zombie). */
uint64_t proc_start_time(pid_t pid);

#endif
