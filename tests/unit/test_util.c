/* SPDX-License-Identifier: MIT */
/* util.c: close_async hands the last close to another process, and holds nothing else. */
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

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
		cmocka_unit_test(test_open_beneath),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
