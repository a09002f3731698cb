/* SPDX-License-Identifier: MIT */
#include "vm/console.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state/statedir.h"
#include "base/util.h"

#define CONSOLE_LOG STATEDIR_CONSOLE_LOG
#define CONSOLE_LOG_OLD "console.log.1"
/* Per pump: four reads of 64 KiB, then back to the event loop. */
#define PUMP_READS 4

static int open_log(struct console *c)
{
	int fd = openat(c->dir_fd, CONSOLE_LOG,
			O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return -errno;
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = fd;
	c->written = 0;
	return 0;
}

int console_open(struct console *c, int fd, const char *dir)
{
	const char *env = getenv("AGENTVM_CONSOLE_LOG_MAX");
	int r;

	*c = (struct console){ .fd = -1, .dir_fd = -1, .log_fd = -1, .max = CONSOLE_LOG_MAX };
	if (env && *env) {
		unsigned long long v = strtoull(env, NULL, 10);
		if (v >= 4096 && v < c->max)
			c->max = v;
	}
	c->dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c->dir_fd < 0)
		return -errno;
	if ((r = open_log(c)) < 0 || (r = fd_set_nonblock(fd, true)) < 0) {
		console_close(c);
		return r;
	}
	c->fd = fd;
	return 0;
}

static void note_error(struct console *c, int e)
{
	if (!c->write_error)
		c->write_error = e;
}

static void append(struct console *c, const char *buf, size_t n)
{
	/* Rotate at the cap: the newest output matters most, the one before it is kept once. */
	if (c->written + n > c->max) {
		if (renameat(c->dir_fd, CONSOLE_LOG, c->dir_fd, CONSOLE_LOG_OLD) < 0) {
			note_error(c, -errno);
			unlinkat(c->dir_fd, CONSOLE_LOG, 0);
		}
		int r = open_log(c);
		if (r < 0) {
			note_error(c, r);
			close(c->log_fd);
			c->log_fd = -1;
		}
	}
	if (n > c->max) {
		buf += n - c->max;
		n = (size_t)c->max;
	}
	if (c->log_fd < 0)
		return;
	int r = write_all(c->log_fd, buf, n);
	if (r < 0) {
		/* A full state dir: the log stops, the guest does not; state.json says why. */
		note_error(c, r);
		return;
	}
	c->written += n;
}

static void scan_panic(struct console *c, const char *buf, size_t n)
{
	size_t t = strlen(c->tail), keep = sizeof(c->tail) - 1;
	char win[sizeof(c->tail) + 64];

	if (c->panic_seen)
		return;
	/* The end of the previous read + the start of this one: a line split across reads. */
	size_t head = n < 64 ? n : 64;
	memcpy(win, c->tail, t);
	memcpy(win + t, buf, head);
	win[t + head] = '\0';
	if (strstr(win, CONSOLE_PANIC_TEXT) || memmem(buf, n, CONSOLE_PANIC_TEXT,
						       strlen(CONSOLE_PANIC_TEXT)))
		c->panic_seen = true;
	size_t m = n < keep ? n : keep;
	/* NULs (cat /dev/zero) end a C string early; the tail only needs printable text. */
	memcpy(c->tail, buf + n - m, m);
	c->tail[m] = '\0';
}

int console_pump(struct console *c)
{
	char buf[65536];

	if (c->fd < 0)
		return 1;
	for (int i = 0; i < PUMP_READS; i++) {
		ssize_t n = read(c->fd, buf, sizeof(buf));
		if (n == 0) {
			c->eof = true;
			return 1;
		}
		if (n < 0)
			return errno == EAGAIN ? 2 : (errno == EINTR ? 0 : 1);
		scan_panic(c, buf, (size_t)n);
		append(c, buf, (size_t)n);
	}
	return 0;
}

void console_close(struct console *c)
{
	if (c->fd >= 0) {
		/* What QEMU wrote before it went away: bounded by the socket buffer. */
		for (int i = 0; i < 64 && console_pump(c) == 0; i++)
			;
		close(c->fd);
	}
	if (c->log_fd >= 0)
		close(c->log_fd);
	if (c->dir_fd >= 0)
		close(c->dir_fd);
	c->fd = c->log_fd = c->dir_fd = -1;
}
