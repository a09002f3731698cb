/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the host side: cleanup attributes (systemd style), time, fd I/O. */
#ifndef AGENTVM_UTIL_H
#define AGENTVM_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static inline void freep(void *p)
{
	free(*(void **)p);
}
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}
static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
static inline void json_putp(struct json_object **o)
{
	json_object_put(*o); /* NULL is fine */
}
/* An fd pair (pipe, socketpair): both ends that are still >= 0. */
static inline void close_pairp(int (*fds)[2])
{
	closep(&(*fds)[0]);
	closep(&(*fds)[1]);
}
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)
#define _cleanup_json_ _cleanup_(json_putp)

/* Member k of object o (NULL o is fine) when it is a string / a non-negative integer: else
   NULL / 0. For reading files whose every field is optional. */
const char *json_get_str(struct json_object *o, const char *k);
uint64_t json_get_u64(struct json_object *o, const char *k);
#define _cleanup_close_pair_ _cleanup_(close_pairp)

/* Ownership transfer out of a _cleanup_ variable. */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _p = (p);                                                            \
		(p) = NULL;                                                                        \
		_p;                                                                                \
	})
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _fd = (fd);                                                                    \
		(fd) = -1;                                                                         \
		_fd;                                                                               \
	})

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* CLOCK_MONOTONIC in milliseconds / microseconds / nanoseconds. */
uint64_t now_ms(void);
/* Sleep ms milliseconds (a signal may cut it short). */
void util_sleep_ms(long ms);
uint64_t now_us(void);
uint64_t now_ns(void);
/* CLOCK_REALTIME in milliseconds since the epoch (timestamps in state files and logs). */
int64_t realtime_ms(void);
/* Open a pidfd for pid (CLOEXEC). -errno on failure. */
int pidfd_open_cloexec(pid_t pid);

/* Write all of buf to a (possibly non-blocking) fd, waiting with poll on EAGAIN. 0 or -errno. */
int write_all(int fd, const void *buf, size_t len);
/* Read a whole small file into a NUL-terminated string (caller frees). -errno on failure. */
int read_file(const char *path, char **out, size_t max);
/* read_file() of an open fd (read from its offset; the caller closes it). */
int read_fd(int fd, char **out, size_t max);
/*
 * Open rel beneath dirfd without following any symlink and without leaving dirfd (no "..",
 * no absolute path): openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or where the kernel
 * has no openat2 (before 5.6) a walk of O_NOFOLLOW openat calls. A symlink anywhere on the way
 * is -ELOOP; flags get O_CLOEXEC. fd or -errno.
 */
int open_beneath(int dirfd, const char *rel, int flags, mode_t mode);
/* open_beneath()'s fallback for kernels without openat2 (called directly by its unit test). */
int open_beneath_walk(int dirfd, const char *rel, int flags, mode_t mode);
/* Write a file atomically (tmp + rename) with mode 0644. */
int write_file_atomic(const char *path, const char *data, size_t len);
/* rm -rf of a directory that holds only regular files, sockets and links (a VM state dir). */
int remove_flat_dir(const char *path);
/* mkdir -p with mode 0700 for every component it creates. */
int mkdir_p(const char *path, mode_t mode);

/*
 * Close fds whose last close is slow (a tap's unregister, an nftables socket right after a
 * commit: an RCU grace period each, 15-20 ms measured) in a short-lived process, the way
 * systemd's asynchronous_close() does; the caller's copies are closed before it returns. At
 * most 8 fds; the closer (a process sharing our memory, see util.c) holds nothing else. For
 * processes about to end: each call keeps 64 KiB of address space.
 */
void close_async(const int *fds, size_t n);

/*
 * A daemon's stop signals (the supervisor, the pool): block SIGTERM, SIGINT and SIGHUP, ignore
 * SIGPIPE, and return a signalfd for the three (SFD_CLOEXEC | sfd_flags), or -1 with errno.
 */
int daemon_signalfd(int sfd_flags);

/*
 * Close every fd from 3 up except the n in keep (a daemon's start: nothing the caller passed
 * down may stay open, or a `$(agentvm start)` would wait for the VM to end). 0 or -errno.
 */
int close_fds_except(const int *keep, size_t n);

int fd_set_nonblock(int fd, bool on);
int fd_set_cloexec(int fd, bool on);

/* VM and snapshot names: 1..max chars of [a-zA-Z0-9_.-], starting with a letter or digit. */
bool name_is_valid(const char *name, size_t max);

/* Parse a decimal integer in [min, max]; 0 or -EINVAL / -ERANGE. */
int parse_long(const char *s, long min, long max, long *out);

#endif
