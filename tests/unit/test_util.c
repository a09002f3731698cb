/* SPDX-License-Identifier: MIT */
/* util.c: close_async hands the last close to another process, and holds nothing else. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_close_async_closes_everywhere),
		cmocka_unit_test(test_close_async_nothing),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
