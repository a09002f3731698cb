/* SPDX-License-Identifier: MIT */
/* PID 1 system setup: filesystems, standard fds, environment, signals, power-off. */
#ifndef AGENTVM_INIT_SYS_H
#define AGENTVM_INIT_SYS_H

#include "diskcfg.h"
#include "netcfg.h"

/* Default PATH of PID 1 and of every command (unless an EXEC overrides it). */
#define SYS_DEFAULT_PATH "/bin:/sbin:/usr/bin:/usr/sbin"
#define SYS_HOSTNAME "agentvm"

/*
 * Boot is split around READY: sys_setup_early() does only what finding the agent port needs
 * (/dev, /sys, fds 0-2); sys_setup_late() runs right after READY and before the first request
 * is read (/proc /dev/pts /dev/shm /tmp /run, /dev links, environment, hostname, rlimits), so
 * commands see the same system either way while READY leaves a few milliseconds earlier.
 * Failures are logged and skipped: a half-set-up guest that can still answer the host is
 * better than a kernel panic.
 */
void sys_setup_early(void);
void sys_setup_late(void);

/*
 * Block SIGCHLD and return a nonblocking CLOEXEC signalfd for it; SIGPIPE is ignored so a
 * closed pipe or port shows up as EPIPE. Returns the fd or -errno.
 */
int sys_signals(void);

/*
 * Read the kernel cmdline's agentvm.* keys (needs /proc): agentvm.debug=1 turns on log_debug(),
 * the network keys fill *net (see netcfg_parse_cmdline()), the agentvm.disk words fill *disks
 * (see diskcfg_parse_cmdline()); what either parser rejects is logged. true when the cmdline
 * has agentvm.template=1: a boot template, whose per-run words come with its clones' first
 * SYNC (AVM_TAG_BOOT_ARGS) instead. The cmdline itself is copied to raw (the shares'
 * words are used after the disks are mounted).
 */
bool sys_cmdline(struct net_cfg *net, struct disk_cfg *disks, char *raw, size_t raw_len);

/*
 * Kill everything, sync, unmount the workspace disks (see disk_unmount_all()), and reboot (a
 * triple fault that ends QEMU with -no-reboot).
 */
void sys_poweroff(void);

#endif
