/* SPDX-License-Identifier: MIT */
#include "base/util.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_us(void)
{
	return now_ns() / 1000;
}

void util_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

uint64_t now_ms(void)
{
	return now_ns() / 1000000;
}

int64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pidfd_open_cloexec(pid_t pid)
{
	/* pidfds are always CLOEXEC. */
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd < 0 ? -errno : fd;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
					return -errno;
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int read_file(const char *path, char **out, size_t max)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	return read_fd(fd, out, max);
}

/* The O_NOFOLLOW walk open_beneath falls back to: every component a real directory or file. */
int open_beneath_walk(int dirfd, const char *rel, int flags, mode_t mode)
{
	char buf[PATH_MAX], *save = NULL, *next;
	int cur = dirfd, fd;

	if (snprintf(buf, sizeof(buf), "%s", rel) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *c = strtok_r(buf, "/", &save); c; c = next) {
		next = strtok_r(NULL, "/", &save);
		if (!strcmp(c, "..")) {
			fd = -EXDEV;
		} else if (next) {
			fd = openat(cur, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			/* A symlink opened with O_NOFOLLOW|O_PATH is no directory. */
			fd = fd < 0 ? (errno == ENOTDIR ? -ELOOP : -errno) : fd;
		} else {
			fd = openat(cur, c, flags | O_NOFOLLOW | O_CLOEXEC, mode);
			fd = fd < 0 ? -errno : fd;
		}
		if (cur != dirfd)
			close(cur);
		if (fd < 0 || !next)
			return fd;
		cur = fd;
	}
	return -EINVAL; /* an empty path */
}

int open_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
				.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS };
	int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));

	if (fd >= 0)
		return fd;
	if (errno != ENOSYS)
		return -errno;
	if (rel[0] == '/')
		return -EXDEV;
	return open_beneath_walk(dirfd, rel, flags, mode);
}

int read_fd(int fd, char **out, size_t max)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;

	buf = malloc(max + 1);
	if (!buf)
		return -ENOMEM;
	while (len < max) {
		ssize_t n = read(fd, buf + len, max - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == max)
		return -EFBIG;
	buf[len] = '\0';
	*out = TAKE_PTR(buf);
	return (int)len;
}

int write_file_atomic(const char *path, const char *data, size_t len)
{
	char tmp[PATH_MAX];
	int fd, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	r = write_all(fd, data, len);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

int remove_flat_dir(const char *path)
{
	/* O_NOFOLLOW: a symlink planted in place of a state dir must not lead the removal into
	 * another directory (unlinkat() below never follows links either). */
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	int r = 0;

	if (!d) {
		r = errno == ENOENT ? 0 : -errno;
		if (fd >= 0)
			close(fd);
		if (r == -ELOOP || r == -ENOTDIR)
			return -ENOTDIR;
		return r;
	}
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		/* An empty directory (a jail's root mount point) goes too; nothing deeper. */
		if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno != ENOENT &&
		    (errno != EISDIR || unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) < 0))
			r = -errno;
	}
	closedir(d);
	if (rmdir(path) < 0 && errno != ENOENT)
		r = -errno;
	return r;
}

int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int fd_set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int fd_set_cloexec(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0)
		return -errno;
	fl = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
	return fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0;
}

int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end != '\0' || end == s)
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/* What the closer of close_async() needs, in memory of its own (the caller's stack moves on). */
struct closer {
	int gate;   /* read end: EOF once the caller has closed its copies */
	size_t n;   /* fds[0..n-1], then the gate: sorted ascending in keep[] */
	int fds[8];
	int keep[9];
};

#define CLOSER_STACK (64 * 1024)

/*
 * A system call that never touches errno: the closer shares our memory and, without its own
 * TLS, glibc's syscall() would store a failure's errno into the caller's thread (a data race).
 */
static inline long raw_syscall3(long nr, long a, long b, long c)
{
#if defined(__x86_64__)
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
#else
	return syscall(nr, a, b, c); /* other architectures: errno may be written */
#endif
}

/*
 * The closer shares the caller's memory (CLONE_VM): raw syscalls on its own stack only, no
 * libc state. It holds a copy of every fd the caller had; it drops all but its own at once.
 */
__attribute__((no_sanitize("address", "undefined"))) static int closer_main(void *arg)
{
	struct closer *c = arg;
	unsigned next = 0;
	char b;

	/* Hold nothing else: a pipe reader must not wait for our copy of its write end. */
	for (size_t i = 0; i <= c->n; i++) {
		if ((unsigned)c->keep[i] > next)
			raw_syscall3(SYS_close_range, next, (unsigned)c->keep[i] - 1, 0);
		next = (unsigned)c->keep[i] + 1;
	}
	raw_syscall3(SYS_close_range, next, ~0U, 0);
	/* Wait until the caller has dropped its copies: ours must be the last ones. */
	for (int i = 0; i < 100 && raw_syscall3(SYS_read, c->gate, (long)&b, 1) < 0; i++)
		;
	for (size_t i = 0; i < c->n; i++)
		raw_syscall3(SYS_close, c->fds[i], 0, 0);
	return 0;
}

/*
 * The closer is a process that shares our memory (like a thread, but outliving us): creating
 * it copies the fd table and no page tables, ~0.1 ms, where a double fork() cost 6-15 ms on a
 * loaded host (page tables copied, then copy-on-write faults in the caller). Its exit signal is
 * 0: it never disturbs the caller's SIGCHLD or waitpid(-1); the caller's exit hands it to init.
 * Its stack (64 KiB of address space, a page or two touched) is not given back: callers are
 * processes about to end (supervisor, run, rm).
 */
void close_async(const int *fds, size_t n)
{
	int gate[2];
	struct closer *c;
	char *mem;

	if (n == 0)
		return;
	if (n > ARRAY_SIZE(c->fds) || pipe2(gate, O_CLOEXEC) < 0)
		goto sync;
	mem = mmap(NULL, CLOSER_STACK, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (mem == MAP_FAILED) {
		close(gate[0]);
		close(gate[1]);
		goto sync;
	}
	c = (struct closer *)mem;
	c->gate = gate[0];
	c->n = n;
	for (size_t i = 0; i < n; i++)
		c->fds[i] = c->keep[i] = fds[i];
	c->keep[n] = gate[0];
	for (size_t i = 1; i <= n; i++) /* insertion sort: a handful of fds */
		for (size_t k = i; k > 0 && c->keep[k - 1] > c->keep[k]; k--) {
			int t = c->keep[k];
			c->keep[k] = c->keep[k - 1];
			c->keep[k - 1] = t;
		}
	if (clone(closer_main, mem + CLOSER_STACK, CLONE_VM, c) < 0) {
		munmap(mem, CLOSER_STACK);
		close(gate[0]);
		close(gate[1]);
		goto sync;
	}
	close(gate[0]);
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	close(gate[1]); /* now the closer closes the last copies */
	return;
sync:
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

int daemon_signalfd(int sfd_flags)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_CLOEXEC | sfd_flags);
}

bool name_is_valid(const char *name, size_t max)
{
	size_t n = strlen(name);

	if (n == 0 || n > max || !isalnum((unsigned char)name[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
			return false;
	return true;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

int close_fds_except(const int *keep, size_t n)
{
	int k[16];
	unsigned int from = 3;

	if (n > ARRAY_SIZE(k))
		return -E2BIG;
	if (n)
		memcpy(k, keep, n * sizeof(k[0]));
	qsort(k, n, sizeof(k[0]), cmp_int);
	for (size_t i = 0; i < n; i++) {
		if (k[i] < (int)from)
			continue;
		if ((unsigned int)k[i] > from && syscall(SYS_close_range, from, k[i] - 1, 0) < 0)
			return -errno;
		from = (unsigned int)k[i] + 1;
	}
	if (syscall(SYS_close_range, from, ~0U, 0) < 0)
		return -errno;
	return 0;
}

const char *json_get_str(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

uint64_t json_get_u64(struct json_object *o, const char *k)
{
	struct json_object *v;
	int64_t n;

	if (!o || !json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_int))
		return 0;
	n = json_object_get_int64(v);
	return n > 0 ? (uint64_t)n : 0;
}
