/* SPDX-License-Identifier: MIT */
#include "jail/jail_seccomp.h"

#include <errno.h>
#include <linux/sched.h>
#include <stddef.h>
#include <sys/prctl.h>

#include "base/util.h"

/*
 * The allowlist, measured: `strace -f` of QEMU 7.2 (microvm, TCG) through every path agentvm
 * drives (boot, exec, cp, 9p shares rw and ro, a tap, a --disk with its qcow2 overlay, pause and
 * resume, snapshot save, restore of copy-on-write clones, reset, stop, kill); see
 * bench/RESULTS.md "seccomp allowlist". ioctl, prctl and clone are filtered by argument below.
 */
static const int allow_measured[] = {
	SCMP_SYS(accept4), SCMP_SYS(access), SCMP_SYS(arch_prctl), SCMP_SYS(brk),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(close), SCMP_SYS(eventfd2), SCMP_SYS(exit),
	SCMP_SYS(exit_group), SCMP_SYS(fadvise64), SCMP_SYS(fcntl), SCMP_SYS(fdatasync),
	SCMP_SYS(fstatfs), SCMP_SYS(futex), SCMP_SYS(get_mempolicy), SCMP_SYS(getdents64),
	SCMP_SYS(getpeername), SCMP_SYS(getrandom), SCMP_SYS(getsockname), SCMP_SYS(getsockopt),
	SCMP_SYS(gettid), SCMP_SYS(lgetxattr), SCMP_SYS(listen), SCMP_SYS(lseek),
	SCMP_SYS(lsetxattr), SCMP_SYS(madvise), SCMP_SYS(memfd_create), SCMP_SYS(mmap),
	SCMP_SYS(mprotect), SCMP_SYS(mremap), SCMP_SYS(munmap), SCMP_SYS(newfstatat),
	SCMP_SYS(openat), SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(pread64), SCMP_SYS(preadv),
	SCMP_SYS(prlimit64), SCMP_SYS(pwrite64), SCMP_SYS(pwritev), SCMP_SYS(read),
	SCMP_SYS(readlink), SCMP_SYS(readv), SCMP_SYS(recvmsg), SCMP_SYS(rseq),
	SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(sched_getaffinity),
	SCMP_SYS(seccomp), /* QEMU's -sandbox adds its own filter: it can only narrow ours */
	SCMP_SYS(sendmsg), SCMP_SYS(set_mempolicy), SCMP_SYS(set_robust_list),
	SCMP_SYS(set_tid_address), SCMP_SYS(setsockopt), SCMP_SYS(signalfd4), SCMP_SYS(statfs),
	SCMP_SYS(sysinfo), SCMP_SYS(unlink), SCMP_SYS(write), SCMP_SYS(writev),
	SCMP_SYS(execve), /* the exec of QEMU itself; its -sandbox spawn=deny refuses any later */
};

/*
 * Not seen in that run but on paths QEMU takes elsewhere: signal delivery and KVM's vCPU kicks
 * (rt_sigreturn, tgkill, sigtimedwait), fdmon-epoll with many fds, the block layer's discard,
 * write-zeroes, flush and resize, the 9p server's other operations (mkdir, rename, link, chmod,
 * chown, utimes, xattr lists and removal), and plain libc calls (fstat, dup, pipe, time).
 */
static const int allow_unmeasured[] = {
	SCMP_SYS(rt_sigreturn), SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall),
	SCMP_SYS(rt_sigtimedwait), SCMP_SYS(rt_sigpending), SCMP_SYS(rt_sigsuspend),
	SCMP_SYS(tgkill), SCMP_SYS(tkill), SCMP_SYS(getpid), SCMP_SYS(getppid), SCMP_SYS(getuid),
	SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid), SCMP_SYS(uname),
	SCMP_SYS(getcwd), SCMP_SYS(getrusage), SCMP_SYS(sched_yield), SCMP_SYS(nanosleep),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(gettimeofday),
	SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl), SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait),
	SCMP_SYS(pselect6), SCMP_SYS(select), SCMP_SYS(pipe2), SCMP_SYS(dup), SCMP_SYS(dup2),
	SCMP_SYS(dup3), SCMP_SYS(fstat), SCMP_SYS(stat), SCMP_SYS(lstat), SCMP_SYS(statx),
	SCMP_SYS(fsync), SCMP_SYS(fallocate), SCMP_SYS(ftruncate), SCMP_SYS(preadv2),
	SCMP_SYS(pwritev2), SCMP_SYS(mbind), SCMP_SYS(membarrier), SCMP_SYS(mincore),
	SCMP_SYS(msync), SCMP_SYS(shutdown), SCMP_SYS(recvfrom), SCMP_SYS(sendto),
	SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime),
	/* 9p (hw/9pfs/9p-local.c, 9p-util.c) */
	SCMP_SYS(mkdirat), SCMP_SYS(mknodat), SCMP_SYS(unlinkat), SCMP_SYS(renameat),
	SCMP_SYS(renameat2), SCMP_SYS(linkat), SCMP_SYS(symlinkat), SCMP_SYS(readlinkat),
	SCMP_SYS(fchmodat), SCMP_SYS(fchmod), SCMP_SYS(chmod), SCMP_SYS(fchownat),
	SCMP_SYS(fchown), SCMP_SYS(utimensat), SCMP_SYS(faccessat), SCMP_SYS(faccessat2),
	SCMP_SYS(fgetxattr), SCMP_SYS(fsetxattr), SCMP_SYS(flistxattr), SCMP_SYS(llistxattr),
	SCMP_SYS(lremovexattr), SCMP_SYS(fremovexattr), SCMP_SYS(getxattr), SCMP_SYS(listxattr),
};

/*
 * Calls QEMU never makes and an attacker in it would want (namespaces and mounts, modules and
 * kexec, ptrace and other processes' memory, bpf, perf, keyrings): the process dies at once
 * (SIGSYS) instead of getting EPERM, so an exploit cannot probe.
 */
static const int kill_list[] = {
	SCMP_SYS(mount), SCMP_SYS(umount2), SCMP_SYS(pivot_root), SCMP_SYS(chroot),
	SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev),
	SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(init_module),
	SCMP_SYS(finit_module), SCMP_SYS(delete_module), SCMP_SYS(bpf), SCMP_SYS(perf_event_open),
	SCMP_SYS(keyctl), SCMP_SYS(add_key), SCMP_SYS(request_key), SCMP_SYS(setns),
	SCMP_SYS(unshare), SCMP_SYS(open_by_handle_at), SCMP_SYS(swapon), SCMP_SYS(swapoff),
	SCMP_SYS(reboot), SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(mount_setattr),
	SCMP_SYS(fsopen), SCMP_SYS(fsmount), SCMP_SYS(fsconfig), SCMP_SYS(move_mount),
	SCMP_SYS(open_tree), SCMP_SYS(fspick), SCMP_SYS(pidfd_getfd),
};

static int add_all(scmp_filter_ctx ctx, uint32_t action, const int *nr, size_t n)
{
	int r = 0;

	for (size_t i = 0; i < n && r == 0; i++)
		r = seccomp_rule_add(ctx, action, nr[i], 0);
	return r;
}

int jail_seccomp_ctx(scmp_filter_ctx *out)
{
	/*
	 * ioctl by the request's type byte: KVM (0xAE), 'T' (the tap's TUN* and FIONBIO/FIONREAD),
	 * 'v' (FS_IOC_GETVERSION, measured: 9p), 'f' (FS_IOC_FIEMAP/GETFLAGS), 0x12 (BLK* on a
	 * block-device disk).
	 */
	static const unsigned long ioctl_types[] = { 0xAE, 'T', 'v', 'f', 0x12 };
	/* prctl: the measured ones plus thread names and the seccomp query/set of -sandbox. */
	static const unsigned long prctls[] = { PR_MCE_KILL, PR_SET_NO_NEW_PRIVS, PR_SET_TIMERSLACK,
						PR_GET_TIMERSLACK, PR_SET_NAME, PR_GET_NAME,
						PR_GET_SECCOMP, PR_SET_SECCOMP };
	const unsigned long ns = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
				 CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWUSER;
	/* Anything else: EPERM (a path not measured here fails like a missing feature, the VM
	 * lives on), which also answers io_uring_setup: QEMU falls back to ppoll, and io_uring's
	 * own operations would pass by seccomp. */
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	int r;

	if (!ctx)
		return -ENOMEM;
	r = add_all(ctx, SCMP_ACT_ALLOW, allow_measured, ARRAY_SIZE(allow_measured));
	if (r == 0)
		r = add_all(ctx, SCMP_ACT_ALLOW, allow_unmeasured, ARRAY_SIZE(allow_unmeasured));
	if (r == 0)
		r = add_all(ctx, SCMP_ACT_KILL_PROCESS, kill_list, ARRAY_SIZE(kill_list));
	for (size_t i = 0; i < ARRAY_SIZE(ioctl_types) && r == 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, ioctl_types[i] << 8));
	for (size_t i = 0; i < ARRAY_SIZE(prctls) && r == 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				     SCMP_A0(SCMP_CMP_EQ, prctls[i]));
	/* Threads only (QEMU's -sandbox spawn=deny says the same), never a new namespace.
	 * clone3's flags are behind a pointer: ENOSYS makes glibc fall back to clone. */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | ns, CLONE_THREAD));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* no_new_privs is set by jail_enter itself, before the uid changes. */
	if (r == 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (r < 0) {
		seccomp_release(ctx);
		return r;
	}
	*out = ctx;
	return 0;
}
