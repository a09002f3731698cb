/* SPDX-License-Identifier: MIT */
/*
 * jail.c's seccomp allowlist, in forked children that load it as QEMU does (no_new_privs, then
 * the filter): what QEMU uses passes, what it does not is refused (EPERM), the calls an exploit
 * wants kill the process, and threads still start while a fork or a namespace cannot.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "jail/jail.h"
#include "spec/spec.h"

/* Run fn in a child under the filter; its wait status. fn returns the child's exit code. */
static int under_filter(int (*fn)(void))
{
	pid_t pid = fork();
	int st = 0;

	assert_true(pid >= 0);
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || jail_seccomp_load() < 0)
			_exit(100);
		_exit(fn());
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void *thread_fn(void *arg)
{
	return arg;
}

/* What QEMU does (measured): read/write, a thread, the tap/KVM ioctl families. */
static int allowed_calls(void)
{
	pthread_t t;
	void *ret = NULL;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC), n = 0;

	if (fd < 0 || write(fd, "x", 1) != 1)
		return 1;
	if (pthread_create(&t, NULL, thread_fn, &n) != 0 || pthread_join(t, &ret) != 0 || ret != &n)
		return 2;
	/* FIONREAD ('T') on /dev/null: the kernel answers (ENOTTY or 0), not the filter. */
	if (ioctl(fd, FIONREAD, &n) < 0 && errno == EPERM)
		return 3;
	close(fd);
	return 0;
}

/* Not on the list: each fails with EPERM (ENOSYS for clone3, so glibc falls back to clone). */
static int refused_calls(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (socket(AF_INET, SOCK_STREAM, 0) >= 0 || errno != EPERM)
		return 1;
	if (syscall(SYS_io_uring_setup, 8, NULL) >= 0 || errno != EPERM)
		return 2;
	/* A process, not a thread. */
	if (syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) >= 0 || errno != EPERM)
		return 3;
	if (syscall(SYS_clone3, NULL, 0) >= 0 || errno != ENOSYS)
		return 4;
	/* An ioctl family QEMU never uses ('X': FIFREEZE). */
	if (ioctl(fd, FIFREEZE, 0) >= 0 || errno != EPERM)
		return 5;
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) >= 0 || errno != EPERM)
		return 6;
	if (syscall(SYS_execveat, fd, "", NULL, NULL, 0) >= 0 || errno != EPERM)
		return 7;
	return 0;
}

static int call_unshare(void)
{
	syscall(SYS_unshare, 0);
	return 0; /* not reached: SIGSYS */
}

static int call_ptrace(void)
{
	syscall(SYS_ptrace, 0, 0, 0, 0);
	return 0;
}

static void test_allowed(void **state)
{
	int st = under_filter(allowed_calls);

	(void)state;
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_refused_with_eperm(void **state)
{
	int st = under_filter(refused_calls);

	(void)state;
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_exploit_calls_kill(void **state)
{
	int st = under_filter(call_unshare);

	(void)state;
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	st = under_filter(call_ptrace);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
}

/* The profile's weight on each file's scale: v2 io.weight as is, BFQ clamped, CFQ x5. */
static void test_io_weight(void **state)
{
	(void)state;
	assert_int_equal(vm_profile_io_weight("light"), 100);
	assert_int_equal(vm_profile_io_weight("standard"), 200);
	assert_int_equal(vm_profile_io_weight("intensive"), 400);
	assert_int_equal(vm_profile_io_weight("custom"), VM_IO_WEIGHT_DEFAULT);
	assert_int_equal(vm_profile_io_weight(NULL), VM_IO_WEIGHT_DEFAULT);
	assert_int_equal(jail_io_weight_for("io.weight", 400), 400);
	assert_int_equal(jail_io_weight_for("io.weight", 20000), 10000);
	assert_int_equal(jail_io_weight_for("io.bfq.weight", 400), 400);
	assert_int_equal(jail_io_weight_for("blkio.bfq.weight", 5000), 1000);
	assert_int_equal(jail_io_weight_for("blkio.weight", 100), 500);
	assert_int_equal(jail_io_weight_for("blkio.weight", 400), 1000);
	assert_int_equal(jail_io_weight_for("blkio.weight", 1), 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed),
		cmocka_unit_test(test_refused_with_eperm),
		cmocka_unit_test(test_exploit_calls_kill),
		cmocka_unit_test(test_io_weight),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
