/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "loop.h"
#include "util.h"

#include <errno.h>
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

void loop_drain_signals(int sig_fd)
{
	struct signalfd_siginfo si[8];

	while (sig_fd >= 0 && read(sig_fd, si, sizeof(si)) > 0)
		;
}

/* The port and the signalfd: the loop's own watches. */
static bool port_readable = true; /* the host may have written before we registered */
static int signal_fd = -1;
static const struct loop_ops *hooks;

static void on_port(struct watch *w, uint32_t events)
{
	(void)w;
	(void)events;
	port_readable = true;
}

static void on_signal(struct watch *w, uint32_t events)
{
	(void)w;
	(void)events;
	loop_drain_signals(signal_fd);
	hooks->reap();
}

void loop_run(const struct loop_ops *ops, int port_fd, int sig_fd)
{
	static struct watch w_port = { on_port }, w_sig = { on_signal };
	struct epoll_event evs[MAX_EVENTS];

	hooks = ops;
	signal_fd = sig_fd;
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
	/* Children may have exited before the signalfd existed. */
	ops->reap();

	for (;;) {
		int timeout = ops->has_work(port_readable) ? 0 : ops->next_timer_ms();
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
			w->ready(w, evs[i].events);
		}
		if (sig_fd < 0)
			ops->reap();
		ops->run_timers();
		if (ops->has_work(port_readable))
			ops->pump(&port_readable);
		ops->end_iteration();
	}
}
