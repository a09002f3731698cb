/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bool log_debug_enabled;
static int log_fd = -1;

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

uint64_t mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

uint64_t boottime_ns(void)
{
	return clock_ns(CLOCK_BOOTTIME);
}

int ms_until(uint64_t deadline_ns, uint64_t now_ns)
{
	uint64_t ms;

	if (deadline_ns <= now_ns)
		return 0;
	ms = (deadline_ns - now_ns + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void log_va(const char *fmt, va_list ap)
{
	char line[512];
	int n, e = errno; /* so callers can log with %m and still look at errno afterwards */

	/* Microseconds since boot, like the kernel's own log, to line up with dmesg. */
	n = snprintf(line, sizeof(line), "agentvm-init: [%llu] ",
		     (unsigned long long)(boottime_ns() / 1000));
	errno = e;
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* Opened on first use: most boots log nothing, and opening hvc0 is not free. */
	if (log_fd < 0)
		log_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	/* One write per line so lines from PID 1 never interleave with each other. */
	(void)!write(log_fd >= 0 ? log_fd : STDERR_FILENO, line, (size_t)n);
	errno = e;
}

void log_msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!log_debug_enabled)
		return;
	va_start(ap, fmt);
	log_va(fmt, ap);
	va_end(ap);
}

int fd_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

bool mem_nul_free(const void *s, size_t len)
{
	return memchr(s, 0, len) == NULL;
}

int write_at_file(int dir, const char *file, const char *s)
{
	int fd = openat(dir, file, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		r = -errno;
	close(fd);
	return r;
}
