/* SPDX-License-Identifier: MIT */
/*
 * The single-threaded epoll loop of PID 1. It knows no request and no command: the agent and
 * the command table register what they do (struct loop_ops), and every fd they watch carries
 * its own handler (struct watch), so the loop calls nobody by name.
 */
#ifndef AGENTVM_INIT_LOOP_H
#define AGENTVM_INIT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

/*
 * What an epoll event points at: embed it and recover the container in ready(). Watches of
 * commands live inside their struct exec, which is only freed at the end of a loop iteration
 * (loop_ops.end_iteration), so a stale event in the same batch stays safe.
 */
struct watch {
	void (*ready)(struct watch *w, uint32_t events);
};

int loop_add(int fd, uint32_t events, struct watch *w);
int loop_mod(int fd, uint32_t events, struct watch *w);
void loop_del(int fd);

struct loop_ops {
	/* The host port: whether there is work now (port readable, or replies queued); do it. */
	bool (*has_work)(bool port_readable);
	void (*pump)(bool *port_readable);
	/* Children exited: SIGCHLD, or every iteration when there is no signalfd. */
	void (*reap)(void);
	/* ms to the next timer (-1: none), and run those that are due. */
	int (*next_timer_ms)(void);
	void (*run_timers)(void);
	/* After each iteration's events, timers and port work: free what finished. */
	void (*end_iteration)(void);
};

/* Read every pending signal off the signalfd (SIGCHLDs collapse; reap finds every child). */
void loop_drain_signals(int sig_fd);

/* Runs forever. sig_fd: the SIGCHLD signalfd, -1 when there is none (then it polls). */
void loop_run(const struct loop_ops *ops, int port_fd, int sig_fd);

#endif
