/* SPDX-License-Identifier: MIT */
/*
 * agentvm-init: the guest's PID 1 and its agent.
 *
 * Boot order is what matters for speed: mount only what finding the agent port needs, find it,
 * say READY, finish setting up while the host prepares its first request, then serve the host
 * forever from one epoll loop. PID 1 must never exit (the kernel
 * would panic), so every failure below is logged and survived.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agent.h"
#include "disk.h"
#include "exec.h"
#include "loop.h"
#include "net.h"
#include "port.h"
#include "rootfs.h"
#include "sharecfg.h"
#include "tarcmd.h"
#include "sys.h"
#include "util.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* What the loop runs (loop.h): the agent serves the port, the command table the rest. */
static const struct loop_ops ops = {
	.has_work = agent_has_work,
	.pump = agent_pump,
	.reap = exec_reap,
	.next_timer_ms = exec_next_timer_ms,
	.run_timers = exec_run_timers,
	.end_iteration = exec_gc,
};
static int g_sig_fd = -1;

/* Runs inside a port send that waits for the host: reap and time out, but send nothing. */
static void on_send_wait(void)
{
	loop_drain_signals(g_sig_fd);
	exec_reap_quiet();
	exec_kill_expired();
}

int main(int argc, char **argv)
{
	uint64_t t0 = boottime_ns(), t1, t2, t3, t4;
	struct disk_cfg disks;
	struct net_cfg net;
	static char cmdline[4096]; /* /proc/cmdline, read once */
	int sig_fd, port_fd;

	/* A builtin of the agent (`agentvm cp`), spawned by PID 1 itself: see tarcmd.h. */
	if (getpid() != 1 && argc > 0 && tarcmd_is_builtin(argv[0]))
		return tarcmd_main(argc, argv);

	sys_setup_early();
	port_fd = port_open();
	if (sys_cmdline(&net, &disks, cmdline, sizeof(cmdline))) {
		/*
		 * A boot template (src/vm/boot_cache.c): what every run shares, then READY, at which
		 * the host saves the VM. Its cmdline has no per-run word and no disk was mounted,
		 * so nothing of one run is in the template; each clone finishes the boot from its
		 * first SYNC (sync_finish_boot()).
		 */
		t1 = boottime_ns();
		sys_setup_late();
		net_setup(&net); /* lo, eth0 up without an address */
		t2 = t3 = t4 = boottime_ns();
		sync_defer_boot();
		agent_ready();
		goto serve;
	}
	agent_ready();
	t1 = boottime_ns();
	/* Before the first request is read, so every command sees the finished system. */
	sys_setup_late();
	/* Into the root image (--image) before anything writes /etc or mounts a workspace. */
	if (disks.root[0] && rootfs_switch(disks.root) == 0 && !net.hostname[0])
		net_set_hostname(SYS_HOSTNAME, strlen(SYS_HOSTNAME));
	t2 = boottime_ns();
	/* Also before the first request: the first command must find eth0 configured, */
	net_setup(&net);
	t3 = boottime_ns();
	/* and its workspace mounted. */
	disk_mount_all(&disks);
	/* Shares last: one may sit inside a disk's directory, never the other way round. */
	share_mount_words(cmdline);
	t4 = boottime_ns();
serve:
	log_debug("init started %llu us after boot, READY after %llu us, late setup %llu us"
		  " (network %llu us, disks %llu us)",
		  (unsigned long long)t0 / 1000, (unsigned long long)(t1 - t0) / 1000,
		  (unsigned long long)(t4 - t1) / 1000, (unsigned long long)(t3 - t2) / 1000,
		  (unsigned long long)(t4 - t3) / 1000);
	port_log_stats();
	sig_fd = sys_signals();
	if (sig_fd < 0)
		log_msg("signalfd failed; children are reaped only when something else wakes us");
	g_sig_fd = sig_fd;
	port_set_wait_hook(sig_fd, exec_next_kill_ms, on_send_wait);
	loop_run(&ops, port_fd, sig_fd);
	/* not reached; if it were, PID 1 still must not return */
	for (;;)
		pause();
}
