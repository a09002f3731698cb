/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the guest init: clocks, logging to the console, fd flags. */
#ifndef AGENTVM_INIT_UTIL_H
#define AGENTVM_INIT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NSEC_PER_MSEC 1000000ull
#define NSEC_PER_SEC 1000000000ull

#ifndef AGENTVM_INIT_VERSION
#define AGENTVM_INIT_VERSION "0.1.0"
#endif

/* CLOCK_MONOTONIC / CLOCK_BOOTTIME in nanoseconds. */
uint64_t mono_ns(void);
uint64_t boottime_ns(void);

/* Milliseconds from now until deadline_ns, rounded up, clamped to [0, INT_MAX]. */
int ms_until(uint64_t deadline_ns, uint64_t now_ns);

/*
 * One line to /dev/console, prefixed with "agentvm-init: ". Never blocks for
 * long and never fails loudly: the console is for humans debugging a boot, not for the host.
 * log_debug() prints only when the kernel cmdline has agentvm.debug=1.
 */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern bool log_debug_enabled;

int fd_set_nonblock(int fd);

/* true when s[0..len) holds no NUL byte. */
bool mem_nul_free(const void *s, size_t len);

/* One write of s into dir/file (a sysfs or cgroupfs knob; dir may be AT_FDCWD): 0 or -errno. */
int write_at_file(int dir, const char *file, const char *s);

#endif
