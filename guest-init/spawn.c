/* SPDX-License-Identifier: MIT */
/*
 * Starting a command: clone(CLONE_VM | CLONE_VFORK) like posix_spawn, because copying PID 1's
 * page tables for every command is measurable under TCG, and because the child can hand its
 * errno back through shared memory: the parent resumes only once the child has exec'd (success)
 * or exited (failure, errno already stored). That replaces the usual CLOEXEC error pipe.
 * clone3(CLONE_INTO_CGROUP) makes the child in its exec's cgroup: no migration through
 * cgroup.procs afterwards, a kernel path that under TCG is translated afresh for the first
 * command of every restored VM (~700 translation blocks, bench/warm_tbs.sh).
 *
 * The child runs on its own stack in PID 1's memory, so it only makes raw system calls and
 * touches nothing but its spawn_ctx and its own stack: no malloc, no stdio, no glibc setxid
 * machinery (setuid & co are issued with syscall()).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cgroup.h"
#include "exec.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_STACK_SIZE (128 * 1024)

struct spawn_ctx {
	const struct exec_req *req;
	int fds[3];
	int cg_fd; /* the exec's cgroup, or -1 */
	bool in_cg; /* born in it (CLONE_INTO_CGROUP): nothing to join */
	int err; /* set by the child before it gives up */
};

/* Only used while the parent is suspended by CLONE_VFORK, so one stack serves every spawn. */
static char child_stack[CHILD_STACK_SIZE] __attribute__((aligned(64)));

/* execvp's search, but over the command's PATH; leaves errno set when nothing ran. */
static void exec_search(char **argv, char **envp, const char *path)
{
	const char *file = argv[0], *p = path, *end;
	size_t flen = strlen(file), dlen;
	char buf[PATH_MAX];
	bool eacces = false;

	if (strchr(file, '/')) {
		execve(file, argv, envp);
		if (errno == ENOEXEC) {
			/* A script without #!: run it with sh, as execvp and shells do. */
			argv[-1] = "/bin/sh";
			execve("/bin/sh", argv - 1, envp);
		}
		return;
	}
	for (;; p = end + 1) {
		end = strchrnul(p, ':');
		dlen = (size_t)(end - p);
		if (dlen == 0) { /* an empty PATH element means the current directory */
			p = ".";
			dlen = 1;
		}
		if (dlen + 1 + flen + 1 <= sizeof(buf)) {
			memcpy(buf, p, dlen);
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, file, flen + 1);
			execve(buf, argv, envp);
			switch (errno) {
			case EACCES:
				eacces = true;
				break;
			case ENOENT:
			case ENOTDIR:
			case ESTALE:
			case ENODEV:
			case ETIMEDOUT:
			case ELOOP:
			case ENAMETOOLONG:
				break;
			case ENOEXEC:
				argv[-1] = "/bin/sh";
				argv[0] = buf;
				execve("/bin/sh", argv - 1, envp);
				return;
			default:
				return; /* found but unrunnable (ETXTBSY, ENOMEM, ...): report that */
			}
		}
		if (*end == '\0')
			break;
	}
	errno = eacces ? EACCES : ENOENT;
}

/*
 * A container root (AVM_TAG_ROOT) gets the guest's /proc, /dev and /sys bound on the mount points
 * it has (the shim makes them), once: a mount point still on the root's own device has none yet.
 * Programs expect them (/dev/null, /proc/self); the VM, not the chroot, is the sandbox.
 */
static void bind_container_fs(const char *root)
{
	static const char *const dirs[] = { "/proc", "/dev", "/sys" };
	char path[PATH_MAX];
	struct stat r, d;

	if (stat(root, &r) < 0)
		return;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (snprintf(path, sizeof(path), "%s%s", root, dirs[i]) >= (int)sizeof(path) ||
		    lstat(path, &d) < 0 || !S_ISDIR(d.st_mode) || d.st_dev != r.st_dev)
			continue;
		mount(dirs[i], path, NULL, MS_BIND | MS_REC, NULL);
	}
}

static int child_main(void *arg)
{
	struct spawn_ctx *c = arg;
	const struct exec_req *req = c->req;
	sigset_t none;

	/* Own session and process group: timeouts and SIGNAL hit everything it starts. */
	if (setsid() < 0)
		goto fail;
	/* Into its own cgroup while still root: everything it starts stays there (cgroup.h). */
	if (!c->in_cg && cgroup_exec_join(c->cg_fd) < 0)
		goto fail;
	for (int i = 0; i < 3; i++)
		if (dup2(c->fds[i], i) < 0)
			goto fail;
	/* A container's root (the shim): entered while still root, before the ids drop. */
	if (req->root)
		bind_container_fs(req->root);
	if (req->root && (chroot(req->root) < 0 || chdir("/") < 0))
		goto fail;
	if (req->set_ids) {
		/* Groups first: after setuid we could no longer drop them. */
		if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setgid, req->gid) < 0 ||
		    syscall(SYS_setuid, req->uid) < 0)
			goto fail;
	}
	/* After dropping privileges, so a directory the user may not enter fails here. */
	if (chdir(req->cwd) < 0)
		goto fail;
	/* PID 1 ignores SIGPIPE and blocks SIGCHLD; a command must start with clean signals. */
	if (signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		goto fail;
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;
	if (req->builtin) {
		/*
		 * PID 1's own binary, whatever root it switched to: /proc/self/exe reaches it even
		 * when the initramfs is no longer in the file system tree.
		 */
		execve("/proc/self/exe", req->argv, req->envp);
		goto fail;
	}
	exec_search(req->argv, req->envp, req->path);
fail:
	c->err = errno ? errno : EINVAL;
	_exit(127);
}

#if defined(__x86_64__)
/*
 * clone3 whose child starts on ca's stack, runs fn(arg) and exits; the parent gets the pid or
 * -errno. glibc has no clone3 wrapper that takes a function: the child resumes after the
 * syscall instruction with the parent's registers and a new stack pointer, so it must call fn
 * and exit within this one asm statement, never return through the parent's frames.
 */
static long clone3_run(struct clone_args *ca, int (*fn)(void *), void *arg)
{
	register long rax __asm__("rax") = SYS_clone3;
	register struct clone_args *rdi __asm__("rdi") = ca;
	register size_t rsi __asm__("rsi") = sizeof(*ca);
	register int (*r12)(void *) __asm__("r12") = fn;
	register void *r13 __asm__("r13") = arg;

	__asm__ volatile("syscall\n\t"
			 "test %%rax, %%rax\n\t"
			 "jnz 1f\n\t"
			 "xor %%ebp, %%ebp\n\t" /* the child: a fresh stack, 16-byte aligned */
			 "mov %%r13, %%rdi\n\t"
			 "call *%%r12\n\t"
			 "mov %%eax, %%edi\n\t"
			 "mov $60, %%eax\n\t" /* SYS_exit, should fn ever return */
			 "syscall\n\t"
			 "hlt\n"
			 "1:"
			 : "+r"(rax)
			 : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
			 : "rcx", "r11", "memory", "cc");
	return rax;
}
#endif

static pid_t spawn_clone(struct spawn_ctx *c)
{
#if defined(__x86_64__)
	if (c->cg_fd >= 0) {
		struct clone_args ca = { .flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP,
					 .exit_signal = SIGCHLD,
					 .stack = (uint64_t)(uintptr_t)child_stack,
					 .stack_size = sizeof(child_stack),
					 .cgroup = (uint64_t)c->cg_fd };
		long pid;

		c->in_cg = true;
		pid = clone3_run(&ca, child_main, c);
		if (pid >= 0)
			return (pid_t)pid;
		/* A kernel without clone3 or CLONE_INTO_CGROUP: the child joins by itself. */
		c->in_cg = false;
		if (pid != -ENOSYS && pid != -EINVAL && pid != -E2BIG)
			return (pid_t)pid;
	}
#endif
	pid_t pid = clone(child_main, child_stack + sizeof(child_stack),
			  CLONE_VM | CLONE_VFORK | SIGCHLD, c);
	return pid < 0 ? -errno : pid;
}

pid_t spawn_command(const struct exec_req *req, int in, int out, int err, int cg_fd)
{
	struct spawn_ctx c = { .req = req, .fds = { in, out, err }, .cg_fd = cg_fd, .err = 0 };
	pid_t pid;

	pid = spawn_clone(&c);
	if (pid < 0)
		return pid;
	/* CLONE_VFORK: the child has exec'd or exited by now. */
	if (__atomic_load_n(&c.err, __ATOMIC_SEQ_CST) != 0) {
		/* It is on its way out; reap it here so the reaper never sees a stray pid. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return -c.err;
	}
	return pid;
}
