/* SPDX-License-Identifier: MIT */
#include "jail/launcher.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jail/jail.h"
#include "base/util.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Runs in the child between fork and exec: only async-signal-safe calls. */
static void child_setup(const struct launch_opts *o, pid_t parent, int errpipe, int gofd)
{
	sigset_t none;
	int fd, e;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	/* In a new pid namespace the parent is outside it: getppid() says 0. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 ||
	    (getppid() != parent && !(jail_clone_flags(o->jail) && getppid() == 0)))
		goto fail;
	if (setsid() < 0)
		goto fail;

	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || dup2(fd, 0) < 0)
		goto fail;
	if (o->log_path)
		fd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	else
		fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		goto fail;

	if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		/* Older kernels: mark by hand up to the fd limit. */
		long max = sysconf(_SC_OPEN_MAX);
		for (long i = 3; i < max; i++)
			fcntl((int)i, F_SETFD, FD_CLOEXEC);
	}
	for (size_t i = 0; i < o->n_keep; i++)
		if (fcntl(o->keep_fds[i], F_SETFD, 0) < 0)
			goto fail;
	if (o->jail && (e = jail_enter(o->jail)) < 0) {
		errno = -e;
		goto fail;
	}
	/* The parent puts us in our cgroups meanwhile (jail_attach): exec once it has. */
	if (gofd >= 0) {
		char c;
		ssize_t n;
		while ((n = read(gofd, &c, 1)) < 0 && errno == EINTR)
			;
		if (n != 1) {
			errno = ECHILD; /* the parent is gone */
			goto fail;
		}
	}
	execv(o->argv[0], o->argv);
fail:
	e = errno;
	(void)!write(errpipe, &e, sizeof(e));
	_exit(127);
}

/* ASan cannot follow a child that runs on a stack of our choosing (false reports): fork there. */
#ifdef __SANITIZE_ADDRESS__
#define VFORK_OK false
#else
#define VFORK_OK true
#endif

struct vfork_arg {
	const struct launch_opts *o;
	pid_t parent;
	int pfd[2];
};

/* The CLONE_VM|CLONE_VFORK child: its own fd table and signal handlers, our memory. */
static int vfork_child(void *p)
{
	struct vfork_arg *a = p;

	close(a->pfd[0]);
	child_setup(a->o, a->parent, a->pfd[1], -1); /* no jail: nothing to wait for */
	return 127;
}

int launch_spawn(const struct launch_opts *o, pid_t *pid_out, int *pidfd_out,
		 struct avm_error *err)
{
	int pfd[2], go[2] = { -1, -1 }, child_errno = 0, r;
	pid_t parent = getpid(), pid;
	ssize_t n;
	/* The vfork child's stack: ours is suspended until it has exec'd. */
	static char vfork_stack[64 * 1024] __attribute__((aligned(16)));

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return avm_error_setx(err, -errno, "pipe");
	if (jail_wants_attach(o->jail) && pipe2(go, O_CLOEXEC) < 0) {
		r = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return avm_error_setx(err, r, "pipe");
	}
	if (o->vfork && !o->jail && VFORK_OK) {
		struct vfork_arg a = { .o = o, .parent = parent, .pfd = { pfd[0], pfd[1] } };
		pid = clone(vfork_child, vfork_stack + sizeof(vfork_stack),
			    CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
	} else if (jail_clone_flags(o->jail)) {
		/* fork() into new namespaces: QEMU is the first process of its pid namespace. */
		struct clone_args ca = { .flags = jail_clone_flags(o->jail),
					 .exit_signal = SIGCHLD };
		pid = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
	} else {
		pid = fork();
	}
	if (pid < 0) {
		r = -errno;
		close(pfd[0]);
		close(pfd[1]);
		if (go[0] >= 0) {
			close(go[0]);
			close(go[1]);
		}
		return avm_error_setx(err, r, "fork");
	}
	if (pid == 0) {
		close(pfd[0]);
		if (go[1] >= 0)
			close(go[1]); /* so that the parent's death reads as EOF */
		child_setup(o, parent, pfd[1], go[0]);
	}
	close(pfd[1]);
	if (go[0] >= 0) {
		close(go[0]);
		jail_attach(o->jail, pid);
		(void)!write(go[1], "g", 1);
		close(go[1]);
	}
	do
		n = read(pfd[0], &child_errno, sizeof(child_errno));
	while (n < 0 && errno == EINTR);
	close(pfd[0]);
	if (n == sizeof(child_errno)) {
		waitpid(pid, NULL, 0);
		return avm_error_setx(err, -child_errno, "cannot start %s", o->argv[0]);
	}
	r = pidfd_open_cloexec(pid);
	if (r < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return avm_error_setx(err, r, "pidfd_open");
	}
	*pid_out = pid;
	*pidfd_out = r;
	return 0;
}
