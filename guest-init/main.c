/* SPDX-License-Identifier: MIT */
/*
 * agentvm-init: the guest's PID 1 and its agent.
 *
 * Boot order is what matters for speed: mount what commands need, find the agent port, say
 * READY, then serve the host forever from one epoll loop. PID 1 must never exit (the kernel
 * would panic), so every failure below is logged and survived.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agent.h"
#include "loop.h"
#include "port.h"
#include "sys.h"
#include "util.h"

#include <unistd.h>

int main(void)
{
	int sig_fd, port_fd;

	sys_setup();
	sys_cmdline();
	log_debug("setup done at %llu us since boot", (unsigned long long)boottime_ns() / 1000);
	sig_fd = sys_signals();
	if (sig_fd < 0)
		log_msg("signalfd failed; children are reaped only when the port wakes us");
	port_fd = port_open();
	agent_ready();
	loop_run(port_fd, sig_fd);
	/* not reached; if it were, PID 1 still must not return */
	for (;;)
		pause();
}
