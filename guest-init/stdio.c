/* SPDX-License-Identifier: MIT */
/*
 * A command's standard streams: output pipes forwarded as STDOUT/STDERR frames, and the stdin
 * pipe fed from STDIN frames through a bounded per-command queue (see STDIN_HIGH).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "exec_int.h"
#include "port.h"
#include "proto.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

void exec_close_stdin(struct exec *ex)
{
	if (ex->fd_in >= 0) {
		if (ex->in_watched)
			loop_del(ex->fd_in);
		close(ex->fd_in);
		ex->fd_in = -1;
	}
	ex->in_watched = false;
	free(ex->q.buf);
	memset(&ex->q, 0, sizeof(ex->q));
}

/* EOF of one output stream: the empty frame tells the host. */
void exec_close_output(struct exec *ex, int *fd, uint16_t type)
{
	if (*fd < 0)
		return;
	loop_del(*fd);
	close(*fd);
	*fd = -1;
	port_send(type, ex->id, NULL, 0);
}

/*
 * Forward what the pipe has, a few chunks at most: enough to empty a full pipe in one wakeup,
 * few enough that other commands and the host's requests still get their turn.
 */
void exec_forward_output(struct exec *ex, int *fd, uint16_t type)
{
	for (int i = 0; i < OUTPUT_CHUNKS_PER_EVENT && *fd >= 0; i++) {
		ssize_t n = read(*fd, port_tx_payload(), PORT_DATA_CHUNK);

		if (n > 0) {
			/* A command that produces output is alive: it is not stalling its stdin. */
			ex->in_progress_ns = mono_ns();
			port_send_tx(type, ex->id, (uint32_t)n);
			if (n < (ssize_t)PORT_DATA_CHUNK)
				return; /* pipe drained: save a read that would say EAGAIN */
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		exec_close_output(ex, fd, type);
		exec_maybe_finish(ex);
	}
}

/* Drain what is left in a pipe (bounded) before closing it by force. */
void exec_drain_output(struct exec *ex, int *fd, uint16_t type)
{
	for (int i = 0; i < 64 && *fd >= 0; i++) {
		ssize_t n = read(*fd, port_tx_payload(), PORT_DATA_CHUNK);
		if (n <= 0)
			break;
		port_send_tx(type, ex->id, (uint32_t)n);
	}
	exec_close_output(ex, fd, type);
}

static void inq_drop(struct exec *ex)
{
	free(ex->q.buf);
	memset(&ex->q, 0, sizeof(ex->q));
}

/* Write queued stdin; returns false when the pipe is gone. */
bool exec_flush_stdin(struct exec *ex)
{
	while (ex->q.len > 0) {
		ssize_t n = write(ex->fd_in, ex->q.buf + ex->q.head, ex->q.len);
		if (n > 0) {
			ex->q.head += (size_t)n;
			ex->q.len -= (size_t)n;
			ex->in_progress_ns = mono_ns();
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		/* EPIPE: the command closed its stdin (or exited). Later data is dropped. */
		exec_close_stdin(ex);
		return false;
	}
	if (ex->q.len == 0) {
		ex->q.head = 0;
		if (ex->q.cap > STDIN_HIGH) /* do not keep a burst's memory */
			inq_drop(ex);
		if (ex->in_eof) {
			exec_close_stdin(ex);
			return false;
		}
	}
	/* Watch for room only while something waits to be written. */
	if (ex->q.len > 0 && !ex->in_watched) {
		if (loop_add(ex->fd_in, EPOLLOUT, &ex->w_in) == 0)
			ex->in_watched = true;
	} else if (ex->q.len == 0 && ex->in_watched) {
		loop_del(ex->fd_in);
		ex->in_watched = false;
	}
	return true;
}

static int inq_append(struct inq *q, const uint8_t *p, size_t len)
{
	if (q->head + q->len + len > q->cap) {
		if (q->head) {
			memmove(q->buf, q->buf + q->head, q->len);
			q->head = 0;
		}
		if (q->len + len > q->cap) {
			size_t cap = q->cap ? q->cap : 64 * 1024;
			uint8_t *nb;

			while (cap < q->len + len)
				cap *= 2;
			nb = realloc(q->buf, cap);
			if (!nb)
				return -ENOMEM;
			q->buf = nb;
			q->cap = cap;
		}
	}
	memcpy(q->buf + q->head + q->len, p, len);
	q->len += len;
	return 0;
}

void exec_stdin(uint32_t id, const uint8_t *p, size_t len)
{
	struct exec *ex = exec_find(id);

	if (!ex) {
		port_send_error(id, ESRCH, "no running exec with id %u", id);
		return;
	}
	if (!ex->in_pipe) {
		if (len)
			port_send_error(id, EBADF, "exec %u was started without a stdin pipe", id);
		return;
	}
	/* Stdin already closed (EOF given, or the command stopped reading): drop quietly. */
	if (ex->fd_in < 0 || ex->in_eof)
		return;
	if (len == 0) {
		ex->in_eof = true;
		if (ex->q.len == 0)
			exec_close_stdin(ex);
		return;
	}
	if (ex->in_dropping)
		return;
	if (ex->q.len == 0)
		ex->in_progress_ns = mono_ns();
	if (inq_append(&ex->q, p, len) < 0) {
		ex->in_dropping = true;
		inq_drop(ex);
		port_send_error(id, ENOMEM, "out of memory queueing stdin; stdin data dropped");
		return;
	}
	exec_flush_stdin(ex);
}


void exec_drop_stdin(struct exec *ex)
{
	ex->in_dropping = true;
	inq_drop(ex);
	if (ex->in_watched) {
		loop_del(ex->fd_in);
		ex->in_watched = false;
	}
}
