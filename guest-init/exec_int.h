/* SPDX-License-Identifier: MIT */
/* Internals shared by exec.c (lifecycle) and stdio.c (the command's stdin/stdout/stderr). */
#ifndef AGENTVM_INIT_EXEC_INT_H
#define AGENTVM_INIT_EXEC_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "exec.h"
#include "loop.h"
#include "util.h"

/* At most this many commands at once: each costs PID 1 up to three fds. */
#define MAX_EXECS 256
/*
 * After the main process was reaped, output pipes still open belong to a background process
 * that inherited them; give it this long to finish, then kill the group and close the pipes.
 */
#define PIPE_GRACE_NS (250 * NSEC_PER_MSEC)
/*
 * Stdin flow control: beyond STDIN_HIGH queued bytes for one command, PID 1 stops reading the
 * port (backpressure to the host, nothing lost). If that command then neither reads stdin nor
 * writes output for STDIN_STALL_NS, its queue is dropped with an ERROR (ENOBUFS) and further
 * stdin data for it is discarded until its EOF, so one command that never reads cannot wedge
 * the channel for more than a few seconds.
 */
#define STDIN_HIGH (1024u * 1024u)
/* Output pipes are enlarged so a busy writer wakes PID 1 less often under TCG. */
#define OUTPUT_PIPE_SIZE (256 * 1024)
#define OUTPUT_CHUNKS_PER_EVENT 8
#define STDIN_STALL_NS (5 * NSEC_PER_SEC)

struct inq {
	uint8_t *buf;
	size_t head, len, cap;
};

/* One command, from its EXEC to its EXIT. Owned by exec.c's table. */
struct exec {
	struct exec *next;
	uint32_t id;
	pid_t pid; /* also the process group id */
	int fd_out, fd_err, fd_in; /* our ends; -1 once closed */
	struct watch w_out, w_err, w_in;
	bool in_pipe;	  /* the command's stdin is a pipe fed by STDIN frames */
	bool in_watched;  /* fd_in is in the epoll set (queue not empty) */
	bool in_eof;	  /* the host sent EOF: close once the queue is written */
	bool in_dropping; /* stalled: stdin data is discarded */
	bool reaped, timed_out, dead;
	int start_err; /* errno when it never ran */
	int cg_fd;     /* its cgroup (cgroup.h), or -1 */
	uint32_t cg_n; /* the cgroup's number (cgroup_exec_release) */
	int status;
	struct rusage ru;
	uint64_t start_ns, end_ns, deadline_ns, grace_ns, in_progress_ns;
	struct inq q;
};

/* The live exec with this id, or NULL. */
struct exec *exec_find(uint32_t id);
/* Send EXIT and retire ex once it is reaped and both outputs reached EOF; else nothing. */
void exec_maybe_finish(struct exec *ex);

/* stdio.c */
/* Forward a few chunks of output from *fd; at EOF close it and maybe finish. */
void exec_forward_output(struct exec *ex, int *fd, uint16_t type);
/* Forward what is left (bounded), then close *fd and send its EOF frame. */
void exec_drain_output(struct exec *ex, int *fd, uint16_t type);
/* Close *fd (if open) and send its EOF frame. */
void exec_close_output(struct exec *ex, int *fd, uint16_t type);
/* Write queued stdin; returns false once the pipe is closed. */
bool exec_flush_stdin(struct exec *ex);
/* Close the stdin pipe and free its queue. */
void exec_close_stdin(struct exec *ex);
/* The command stalled with a full queue: drop the queue, discard later stdin data. */
void exec_drop_stdin(struct exec *ex);

#endif
