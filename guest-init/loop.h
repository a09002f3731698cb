/* SPDX-License-Identifier: MIT */
/* The single-threaded epoll loop of PID 1. */
#ifndef AGENTVM_INIT_LOOP_H
#define AGENTVM_INIT_LOOP_H

#include <stdint.h>

enum watch_kind {
	WATCH_PORT,
	WATCH_SIGNAL,
	WATCH_STDOUT,
	WATCH_STDERR,
	WATCH_STDIN,
};

/*
 * What an epoll event points at. Watches of commands live inside their struct exec, which is
 * only freed at the end of a loop iteration, so a stale event in the same batch stays safe.
 */
struct watch {
	enum watch_kind kind;
	struct exec *ex;
};

int loop_add(int fd, uint32_t events, struct watch *w);
int loop_mod(int fd, uint32_t events, struct watch *w);
void loop_del(int fd);

/* Runs forever. */
void loop_run(int port_fd, int sig_fd);

#endif
