/* SPDX-License-Identifier: MIT */
/*
 * util.c: close_async hands the last close to another process, and holds nothing else.
 * launcher.c: the vfork-style spawn (no jail) starts the program with its log, and reports a
 * failed exec as an error. open_beneath: no symlink followed, nothing outside the directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "jail/launcher.h"
#include "base/util.h"

/* Whether the read end sees EOF (every write end closed) within ms. */
static bool eof_within(int rfd, int ms)
{
	struct pollfd p = { .fd = rfd, .events = POLLIN };
	char c;

	return poll(&p, 1, ms) == 1 && read(rfd, &c, 1) == 0;
}

static void test_close_async_closes_everywhere(void **state)
{
	int a[2], b[2];

	assert_int_equal(pipe2(a, O_CLOEXEC), 0);
	assert_int_equal(pipe2(b, O_CLOEXEC), 0);
	int fds[1] = { a[1] };
	close_async(fds, 1);
	/* Our copy is closed when it returns... */
	assert_int_equal(fcntl(a[1], F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	/* ...and the grandchild's copy soon after. */
	assert_true(eof_within(a[0], 2000));
	/* The grandchild never held b's write end open: closing ours gives EOF at once. */
	close(b[1]);
	assert_true(eof_within(b[0], 0));
	close(a[0]);
	close(b[0]);
}

/* Several fds, given out of order: the closer keeps exactly those (and drops every other). */
static void test_close_async_several(void **state)
{
	int p[4][2];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pipe2(p[i], O_CLOEXEC), 0);
	int fds[3] = { p[2][1], p[0][1], p[1][1] };
	close_async(fds, 3);
	for (int i = 0; i < 3; i++)
		assert_true(eof_within(p[i][0], 2000));
	close(p[3][1]);
	assert_true(eof_within(p[3][0], 0));
	for (int i = 0; i < 4; i++)
		close(p[i][0]);
}

static void test_launch_vfork(void **state)
{
	char log[] = "/tmp/avm-test-launch.XXXXXX", buf[64] = "";
	char *argv[] = { "/bin/sh", "-c", "echo hi; exit 3", NULL };
	struct launch_opts o = { .argv = argv, .log_path = log, .vfork = true };
	struct avm_error err = { 0 };
	int fd = mkstemp(log), pidfd, status = 0;
	pid_t pid;

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(launch_spawn(&o, &pid, &pidfd, &err), 0);
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 10000), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
	close(pidfd);
	FILE *f = fopen(log, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	unlink(log);
	assert_string_equal(buf, "hi\n");
	/* A program that cannot be run is an error of the spawn, not an early exit later. */
	char *bad[] = { "/nonexistent/agentvm-test", NULL };
	o = (struct launch_opts){ .argv = bad, .vfork = true };
	assert_int_equal(launch_spawn(&o, &pid, &pidfd, &err), -ENOENT);
}

static void test_close_async_nothing(void **state)
{
	close_async(NULL, 0);
}

/* Both ways of open_beneath: a real file opens; a symlinked file or directory, "..", and an
 * absolute path are refused. */
static void check_beneath(int (*fn)(int, const char *, int, mode_t))
{
	char dir[] = "/tmp/avm-beneath.XXXXXX", path[PATH_MAX];
	int dfd, fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/file", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/sub/link", dir);
	assert_int_equal(symlink("file", path), 0);
	snprintf(path, sizeof(path), "%s/dirlink", dir);
	assert_int_equal(symlink("sub", path), 0);
	dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	fd = fn(dfd, "sub/file", O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	fd = fn(dfd, "sub/new", O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(fn(dfd, "sub/link", O_RDONLY, 0), -ELOOP);
	assert_int_equal(fn(dfd, "dirlink/file", O_RDONLY, 0), -ELOOP);
	assert_int_equal(fn(dfd, "sub/../../etc/passwd", O_RDONLY, 0), -EXDEV);
	assert_true(fn(dfd, "/etc/passwd", O_RDONLY, 0) < 0);
	close(dfd);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

static void test_open_beneath(void **state)
{
	(void)state;
	check_beneath(open_beneath);
	check_beneath(open_beneath_walk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_close_async_closes_everywhere),
		cmocka_unit_test(test_close_async_nothing),
		cmocka_unit_test(test_close_async_several),
		cmocka_unit_test(test_launch_vfork),
		cmocka_unit_test(test_open_beneath),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
