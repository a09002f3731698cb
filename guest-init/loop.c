/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "loop.h"
#include "agent.h"
#include "exec.h"
#include "port.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define NO_SIGNALFD_POLL_MS 50

static int ep = -1;

int loop_add(int fd, uint32_t events, struct watch *w)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int loop_mod(int fd, uint32_t events, struct watch *w)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void loop_del(int fd)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
}

static void drain_signalfd(int fd)
{
	struct signalfd_siginfo si[8];

	/* Several SIGCHLDs collapse into one; the wait4 loop finds every child anyway. */
	while (read(fd, si, sizeof(si)) > 0)
		;
}

static int sig_fd_global = -1;

/* Runs inside a port send that waits for the host: reap and time out, but send nothing. */
static void on_send_wait(void)
{
	if (sig_fd_global >= 0)
		drain_signalfd(sig_fd_global);
	exec_reap_quiet();
	exec_kill_expired();
}

void loop_run(int port_fd, int sig_fd)
{
	static struct watch w_port = { WATCH_PORT, NULL }, w_sig = { WATCH_SIGNAL, NULL };
	struct epoll_event evs[MAX_EVENTS];
	bool port_readable = true; /* the host may have written before we registered */

	while ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		log_msg("epoll_create1: %m");
		sleep(1);
	}
	/*
	 * The port is edge-triggered: while the host side is closed it polls as HUP forever,
	 * which level-triggered epoll would turn into a busy loop. port_readable remembers an
	 * edge until a read says EAGAIN (or host closed).
	 */
	if (loop_add(port_fd, EPOLLIN | EPOLLET, &w_port) < 0)
		log_msg("epoll port: %m");
	if (sig_fd >= 0 && loop_add(sig_fd, EPOLLIN, &w_sig) < 0)
		log_msg("epoll signalfd: %m");
	sig_fd_global = sig_fd;
	port_set_wait_hook(sig_fd, exec_next_kill_ms, on_send_wait);
	/* Children may have exited before the signalfd existed. */
	exec_reap();

	for (;;) {
		int timeout = agent_has_work(port_readable) ? 0 : exec_next_timer_ms();
		int n;

		/* Without a signalfd nothing announces exits: poll for them instead. */
		if (sig_fd < 0 && (timeout < 0 || timeout > NO_SIGNALFD_POLL_MS))
			timeout = NO_SIGNALFD_POLL_MS;
		n = epoll_wait(ep, evs, MAX_EVENTS, timeout);

		if (n < 0 && errno != EINTR) {
			log_msg("epoll_wait: %m");
			usleep(10000); /* never spin hard, never exit */
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;

			switch (w->kind) {
			case WATCH_PORT:
				port_readable = true;
				break;
			case WATCH_SIGNAL:
				drain_signalfd(sig_fd);
				exec_reap();
				break;
			default:
				exec_on_event(w, evs[i].events);
				break;
			}
		}
		if (sig_fd < 0)
			exec_reap();
		exec_run_timers();
		if (agent_has_work(port_readable))
			agent_pump(&port_readable);
		exec_gc();
	}
}
