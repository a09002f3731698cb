/* SPDX-License-Identifier: MIT */
/* The shim's adapter to agentvm (see shim_vm.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control/vmctl.h"
#include "vm/boot_cache.h"
#include "vm/host.h"
#include "net/net.h"
#include "qmp/qmp.h"
#include "base/sha256.h"
#include "shim_vm.h"
#include "spec/spec.h"
#include "state/statedir.h"
#include "report/stats.h"
#include "vm/supervisor.h"
#include "base/util.h"
#include "vm/vm.h"
#include "state/vmstate.h"

void shim_vm_name(const char *ns, const char *id, char out[24])
{
	struct sha256 s;
	uint8_t h[32];

	sha256_init(&s);
	sha256_update(&s, ns, strlen(ns));
	sha256_update(&s, "/", 1);
	sha256_update(&s, id, strlen(id));
	sha256_final(&s, h);
	snprintf(out, 24, "ctr-%02x%02x%02x%02x%02x%02x%02x%02x", h[0], h[1], h[2], h[3], h[4],
		 h[5], h[6], h[7]);
}

int shim_vm_config_set(struct shim_vm_config *c, const char *key, const char *value,
		       struct avm_error *err)
{
	static const char *const keys[] = { "profile", "cpus", "memory", "network" };
	const char **slots[] = { &c->profile, &c->cpus, &c->memory, &c->network };

	if (strncmp(key, SHIM_ANNOTATION_PREFIX, strlen(SHIM_ANNOTATION_PREFIX)) != 0)
		return 0; /* not ours */
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!strcmp(key + strlen(SHIM_ANNOTATION_PREFIX), keys[i])) {
			*slots[i] = value;
			return 0;
		}
	}
	return avm_error_set(err, -EINVAL,
			     "unknown annotation '%s'; agentvm knows io.agentvm.profile, "
			     "io.agentvm.cpus, io.agentvm.memory and io.agentvm.network",
			     key);
}

/*
 * Into the network namespace at path (for a while: the shim is single-threaded); *back is the
 * one to return to with netns_leave(). A NULL path: nothing.
 */
static int netns_enter(const char *path, int *back)
{
	int fd, r = 0;

	*back = -1;
	if (!path)
		return 0;
	*back = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*back < 0 || fd < 0 || setns(fd, CLONE_NEWNET) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r < 0 && *back >= 0) {
		close(*back);
		*back = -1;
	}
	return r;
}

static void netns_leave(int back)
{
	if (back < 0)
		return;
	if (setns(back, CLONE_NEWNET) < 0)
		abort(); /* never go on in a pod's namespace */
	close(back);
}

/* boot_cache_start()'s way of starting the pod's detached VM: its supervisor, until READY. */
static int start_supervised(const struct vm_launch_opts *o, int timeout_ms, void *ctx,
			    struct avm_error *err)
{
	return supervisor_start(o, timeout_ms, (pid_t *)ctx, err);
}

int shim_vm_boot(const char *name, const char *pod_dir, const struct shim_vm_config *c,
		 unsigned boot_timeout_s, struct avm_error *err)
{
	_cleanup_free_ char *qemu = NULL, *kernel = NULL, *initrd = NULL;
	struct vm_spec *spec = vm_spec_new();
	char share[4096];
	int back = -1;
	bool fell_back;
	enum vm_accel accel;
	pid_t sup;
	int r;

	if (!spec)
		return avm_error_set(err, -ENOMEM, "out of memory");
	snprintf(share, sizeof(share), "%s:%s", pod_dir, SHIM_GUEST_ROOT);
	spec->name = strdup(name);
	/* No network unless asked for (see README). */
	r = spec->name ? vm_spec_set_network(spec, c->network ? c->network : "isolated", err)
		       : -ENOMEM;
	if (r == 0 && c->profile)
		r = vm_spec_set_profile(spec, c->profile, err);
	if (r == 0 && c->cpus)
		r = vm_spec_set_cpus(spec, c->cpus, err);
	if (r == 0 && c->memory)
		r = vm_spec_set_memory(spec, c->memory, err);
	for (size_t i = 0; r == 0 && i < c->n_allow; i++)
		r = vm_spec_add_allow(spec, c->allow[i], err);
	for (size_t i = 0; r == 0 && i < c->n_allow_cidr; i++)
		r = vm_spec_add_allow_cidr(spec, c->allow_cidr[i], err);
	for (size_t i = 0; r == 0 && i < c->n_allow_domain; i++)
		r = vm_spec_add_allow_domain(spec, c->allow_domain[i], err);
	if (r == 0)
		r = vm_spec_add_share(spec, share, err);
	if (r == 0)
		spec->shares[spec->n_shares - 1].container_root = true;
	if (r == 0)
		r = statedir_check_paths(name, err);
	if (r == 0)
		r = host_resolve_accel(spec->accel, &accel, &fell_back, err);
	if (r == 0)
		r = host_find_qemu(&qemu, err);
	if (r == 0)
		r = host_guest_images(NULL, NULL, &kernel, &initrd, err);
	if (r == 0 && (r = netns_enter(c->netns, &back)) < 0)
		avm_error_setx(err, r, "cannot enter the pod's network namespace %s", c->netns);
	if (r == 0) {
		/* Through the boot cache, as `agentvm start`: a pod VM restores a boot template
		 * of its shape (the pod share included; see boot_cache.h). */
		struct vm_launch_opts lo = { .spec = spec, .kernel = kernel, .initrd = initrd,
					     .qemu = qemu, .accel = accel, .detached = true };
		struct boot_cache_opts bo = { .boot_timeout_ms = (int)boot_timeout_s * 1000,
					      .sig_fd = -1 };
		r = boot_cache_start(&lo, &bo, start_supervised, &sup, err);
		netns_leave(back);
	}
	vm_spec_free(spec);
	return r;
}

static int exit_code_of(const struct vm_exec_result *res)
{
	switch (res->info.kind) {
	case AVM_EXIT_CODE:
		return res->info.code & 0xff;
	case AVM_EXIT_SIGNAL:
	case AVM_EXIT_OOM:
		return 128 + (res->info.code & 0x7f);
	case AVM_EXIT_TIMEOUT:
		return 124;
	default:
		return 127;
	}
}

/* In the helper: the stdio fds (or /dev/null) on 0-2, nothing else. */
static void helper_fds(const int fds[3])
{
	int null = open("/dev/null", O_RDWR);
	int tmp[3];

	/* Out of the way first: one of them may be 0-2 itself. */
	for (int i = 0; i < 3; i++)
		tmp[i] = fcntl(fds[i] >= 0 ? fds[i] : null, F_DUPFD, 10);
	for (int i = 0; i < 3; i++)
		dup2(tmp[i], i);
	/* Not the shim's sockets, epoll, or other processes' stdin writers (their EOF). */
	close_range(3, ~0u, 0);
}

static _Noreturn void helper_exit(const char *status_prefix, int code)
{
	char path[4200];
	int fd;

	if (status_prefix &&
	    snprintf(path, sizeof(path), "%s%d", status_prefix, (int)getpid()) <
		    (int)sizeof(path) &&
	    (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0) {
		dprintf(fd, "%d\n", code);
		close(fd);
	}
	_exit(code);
}

static _Noreturn void helper_main(const char *name, const char *root, const struct shim_proc *p,
				  bool has_stdin, int sig_fd, const char *status_path)
{
	struct avm_error err = { 0 };
	struct vm *vm = NULL;

	if (sig_fd < 0 || vm_attach(name, &vm, &err) < 0) {
		fprintf(stderr, "agentvm-shim: %s\n", sig_fd < 0 ? "signalfd failed" : err.msg);
		helper_exit(status_path, 255);
	}
	struct vm_exec_request req = {
		.argv = p->argv, .env = p->env, .cwd = p->cwd ? p->cwd : "/",
		.stdin_fd = has_stdin ? 0 : -1, .stdout_fd = 1, .stderr_fd = 2, .sig_fd = sig_fd,
		.root = root, .set_ids = true, .uid = p->uid, .gid = p->gid,
	};
	struct vm_exec_result res = { 0 };
	int r = vm_exec(vm, &req, &res, &err);
	if (r < 0)
		fprintf(stderr, "agentvm-shim: %s\n", err.msg);
	else if (res.info.kind == AVM_EXIT_START_FAILED)
		fprintf(stderr, "agentvm-shim: cannot run %s in the container: %s\n", p->argv[0],
			strerror(res.info.code));
	vm_destroy(vm); /* attached: only detaches */
	helper_exit(status_path, r < 0 ? 255 : exit_code_of(&res));
}

int shim_vm_spawn(const char *name, const char *root, const struct shim_proc *p,
		  const int fds[3], const char *status_path, pid_t *pid, struct avm_error *err)
{
	struct vm_exec_request chk = { .argv = p->argv, .env = p->env, .cwd = p->cwd };
	sigset_t set, old;
	int r;

	if ((r = vm_exec_check(&chk, err)) < 0)
		return r;
	/* Kill's signals come queued on SIGRTMIN (see vm_exec.c on_signal): blocked before the
	 * fork, so none is lost between fork and the helper's signalfd. */
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN);
	sigprocmask(SIG_BLOCK, &set, &old);
	*pid = fork();
	if (*pid < 0) {
		r = -errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		return avm_error_setx(err, r, "cannot fork a process helper");
	}
	if (*pid == 0) {
		sigset_t chld;
		sigemptyset(&chld);
		sigaddset(&chld, SIGCHLD);
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		helper_fds(fds);
		int sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
		helper_main(name, root, p, fds[0] >= 0, sig_fd, status_path);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return 0;
}

int shim_vm_signal(pid_t pid, int sig)
{
	union sigval v = { .sival_int = sig };

	return sigqueue(pid, SIGRTMIN, v) < 0 ? -errno : 0;
}

int shim_vm_pause(const char *name, bool pause, struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct qmp_error qe = { 0 };
	struct qmp_client *q;
	int r;

	if ((r = statedir_find(name, &dir, err)) < 0 || (r = vm_qmp_open(dir, &q, err)) < 0)
		return r;
	r = qmp_client_execute(q, pause ? "stop" : "cont", NULL, NULL, 0, NULL, 5000, &qe);
	qmp_client_free(q);
	if (r < 0)
		return avm_error_set(err, r, "QMP %s: %s", pause ? "stop" : "cont", qe.desc);
	return 0;
}

int shim_vm_work_path(const char *name, const char *suffix, char *buf, size_t len)
{
	return snprintf(buf, len, "%s/.pod-%s%s", statedir_root(), name, suffix) >= (int)len
		       ? -ENAMETOOLONG
		       : 0;
}

bool shim_vm_alive(const char *name)
{
	_cleanup_free_ char *dir = NULL;
	struct vm_state st;

	return statedir_find(name, &dir, NULL) == 0 && vmstate_read(dir, &st, NULL) == 0 &&
	       proc_is(st.qemu_pid, st.qemu_start);
}

uint64_t shim_vm_proc_start(pid_t pid)
{
	return proc_start_time(pid);
}

bool shim_vm_proc_is(pid_t pid, uint64_t start)
{
	return proc_is(pid, start);
}

int shim_vm_pod_dir(const char *name, char *buf, size_t len, struct avm_error *err)
{
	if (shim_vm_work_path(name, "", buf, len) < 0)
		return avm_error_set(err, -ENAMETOOLONG, "agentvm's state dir path is too long");
	/* Read-only for QEMU (root without capabilities: the mode binds it), so the guest writes
	 * only in the container roots beneath it; the shim makes their mount points. */
	if (mkdir(buf, 0555) < 0 && errno != EEXIST)
		return avm_error_setx(err, -errno, "cannot make the pod directory %s", buf);
	return 0;
}

void shim_vm_pod_dir_remove(const char *name)
{
	char dir[4096], sub[4096 + 256];
	struct dirent *e;
	DIR *d;

	if (!name[0] || shim_vm_work_path(name, "", dir, sizeof(dir)) < 0)
		return;
	/* The saved state and exit statuses nobody read (their helpers' ends were seen). */
	snprintf(sub, sizeof(sub), "%s.json", dir);
	unlink(sub);
	d = opendir(statedir_root());
	size_t dl = strlen(strrchr(dir, '/') + 1);
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, strrchr(dir, '/') + 1, dl) &&
		    !strncmp(e->d_name + dl, ".exit-", 6) &&
		    snprintf(sub, sizeof(sub), "%s/%s", statedir_root(), e->d_name) <
			    (int)sizeof(sub))
			unlink(sub);
	if (d)
		closedir(d);
	d = opendir(dir);
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' &&
		    snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) < (int)sizeof(sub))
			rmdir(sub);
	if (d)
		closedir(d);
	rmdir(dir);
}

/* QEMU's mount namespace, opened through its live pid (checked against its start time). */
static int qemu_mntns(const char *name, struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct vm_state st;
	char path[64];
	int fd, r;

	if ((r = statedir_find(name, &dir, err)) < 0 || (r = vmstate_read(dir, &st, err)) < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)st.qemu_pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || !proc_is(st.qemu_pid, st.qemu_start)) {
		r = fd < 0 ? -errno : -ESRCH;
		if (fd >= 0)
			close(fd);
		return avm_error_setx(err, r, "QEMU of VM %s is gone", name);
	}
	return fd;
}

static int openat_in_root(int root, const char *path, int flags, mode_t mode)
{
	struct open_how how = { .flags = (uint64_t)flags | O_CLOEXEC, .mode = mode,
				.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };

	return (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
}

/*
 * In a child (setns is for good): enter ns, then mount mfd on target (or on in_root resolved
 * inside the directory target, with in_root), or unmount target (mfd -1).
 */
static int in_mntns(int ns, int mfd, const char *target, const char *in_root)
{
	int ws, root, t;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (setns(ns, CLONE_NEWNS) < 0)
			_exit(errno);
		if (mfd < 0)
			_exit(umount2(target, MNT_DETACH) < 0 ? errno : 0);
		if (!in_root)
			_exit(move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0
				      ? errno
				      : 0);
		if ((root = open(target, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0 ||
		    (t = openat_in_root(root, in_root, O_PATH, 0)) < 0 ||
		    move_mount(mfd, "", t, "",
			       MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
			_exit(errno);
		_exit(0);
	}
	while (waitpid(pid, &ws, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(ws) ? -WEXITSTATUS(ws) : -EIO;
}

int shim_vm_attach_root(const char *name, const char *host_root, const char *pod_dir,
			const char *sub, struct avm_error *err)
{
	char target[4096];
	int ns, mfd, r;

	if (snprintf(target, sizeof(target), "%s/%s", pod_dir, sub) >= (int)sizeof(target))
		return avm_error_set(err, -ENAMETOOLONG, "path too long: %s/%s", pod_dir, sub);
	/* The mount point, made on the host: the pod dir is the same directory in QEMU's jail. */
	if (mkdir(target, 0755) < 0 && errno != EEXIST)
		return avm_error_setx(err, -errno, "cannot make %s", target);
	if ((ns = qemu_mntns(name, err)) < 0) {
		rmdir(target);
		return ns;
	}
	/* A detached copy of the host mount (and its submounts), movable into another namespace. */
	mfd = open_tree(AT_FDCWD, host_root, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (mfd < 0) {
		r = -errno;
		close(ns);
		rmdir(target);
		return avm_error_setx(err, r, "cannot clone the mount %s", host_root);
	}
	r = in_mntns(ns, mfd, target, NULL);
	close(mfd);
	close(ns);
	if (r < 0) {
		rmdir(target);
		return avm_error_setx(err, r, "cannot mount %s in QEMU's namespace at %s",
				      host_root, target);
	}
	return 0;
}

/*
 * dest's mount point beneath root (a directory or an empty file), parents made as needed: each
 * missing component is made by name ("." and ".." refused) in its parent, itself opened inside
 * the root, so nothing is ever made outside it.
 */
static int make_mount_point(int root, const char *dest, bool dir)
{
	char path[4096];
	size_t n = strlen(dest);
	int r = 0;

	if (n >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dest, n + 1);
	for (size_t end = 1; r == 0 && end <= n; end++) {
		if (path[end] != '/' && path[end] != '\0')
			continue;
		bool last = path[end] == '\0' || path[end + 1] == '\0';
		char save = path[end];
		path[end] = '\0';
		int fd = openat_in_root(root, path, O_PATH | (last && !dir ? 0 : O_DIRECTORY), 0);
		if (fd >= 0) {
			close(fd);
		} else if (errno != ENOENT) {
			r = -errno;
		} else {
			char *name = strrchr(path, '/');
			*name = '\0';
			const char *up = path[0] ? path : "/";
			int parent = openat_in_root(root, up, O_PATH | O_DIRECTORY, 0);
			*name++ = '/';
			if (parent < 0)
				r = -errno;
			else if (!strcmp(name, "..") || !strcmp(name, ".") || !*name)
				r = -EINVAL;
			else if (!last || dir)
				r = mkdirat(parent, name, 0755) < 0 ? -errno : 0;
			else if ((fd = openat(parent, name,
					      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
					      0644)) < 0)
				r = -errno;
			else
				close(fd);
			if (parent >= 0)
				close(parent);
		}
		path[end] = save;
		if (last)
			break;
	}
	return r;
}

int shim_vm_bind(const char *name, const char *host_root, const char *pod_dir, const char *sub,
		 const char *src, const char *dest, bool ro, struct avm_error *err)
{
	char croot[4096];
	struct stat st;
	int ns, mfd, root, r;

	if (dest[0] != '/' || stat(src, &st) < 0)
		return avm_error_set(err, dest[0] != '/' ? -EINVAL : -errno,
				     "bind mount %s -> %s: %s", src, dest,
				     dest[0] != '/' ? "relative destination" : strerror(errno));
	root = open(host_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	r = root < 0 ? -errno : make_mount_point(root, dest, S_ISDIR(st.st_mode));
	if (root >= 0)
		close(root);
	if (r < 0)
		return avm_error_setx(err, r, "cannot make the mount point %s in the container",
				      dest);
	if ((ns = qemu_mntns(name, err)) < 0)
		return ns;
	mfd = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	struct mount_attr ma = { .attr_set = MOUNT_ATTR_RDONLY };
	if (mfd < 0 || (ro && mount_setattr(mfd, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma,
					    sizeof(ma)) < 0)) {
		r = -errno;
		if (mfd >= 0)
			close(mfd);
		close(ns);
		return avm_error_setx(err, r, "cannot clone the mount %s", src);
	}
	snprintf(croot, sizeof(croot), "%s/%s", pod_dir, sub);
	r = in_mntns(ns, mfd, croot, dest);
	close(mfd);
	close(ns);
	if (r < 0)
		return avm_error_setx(err, r, "cannot bind %s at %s in the container", src, dest);
	return 0;
}

void shim_vm_detach_root(const char *name, const char *pod_dir, const char *sub)
{
	char target[4096];
	int ns = qemu_mntns(name, NULL);

	snprintf(target, sizeof(target), "%s/%s", pod_dir, sub);
	if (ns >= 0) {
		in_mntns(ns, -1, target, NULL);
		close(ns);
	}
	rmdir(target);
}

int shim_vm_usage(const char *name, const char *netns, struct shim_vm_usage *u,
		  struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct nf_nft *nft = NULL;
	struct vm_sample s;
	int back, r;

	if ((r = statedir_find(name, &dir, err)) < 0)
		return r;
	/* The VM's nft counters are in the pod's namespace (the context's socket is bound
	 * there). */
	if (netns_enter(netns, &back) == 0) {
		nf_nft_new(&nft, NULL); /* without CAP_NET_ADMIN: no network numbers */
		netns_leave(back);
	}
	r = stats_sample(name, dir, nft, true, 2000, &s);
	nf_nft_free(nft);
	if (r < 0 || !s.live)
		return avm_error_set(err, r < 0 ? r : -ESRCH, "VM %s is not running", name);
	*u = (struct shim_vm_usage){
		.cpu_ns = s.cpu_ns, .rss_bytes = s.rss_bytes, .have_guest = s.have_guest,
		.guest_total = s.guest_mem_total, .guest_available = s.guest_mem_available,
		.have_net = s.have_net,
		.rx_bytes = s.net.rx_ok_bytes, .rx_packets = s.net.rx_ok_packets,
		.rx_dropped = s.net.rx_drop_packets, .tx_bytes = s.net.tx_ok_bytes,
		.tx_packets = s.net.tx_ok_packets, .tx_dropped = s.net.tx_drop_packets,
	};
	return 0;
}

void shim_vm_remove(const char *name, const char *netns)
{
	int back = -1;
	_cleanup_free_ char *dir = NULL;
	struct vm_state st;

	if (statedir_find(name, &dir, NULL) < 0)
		return;
	if (vmstate_read(dir, &st, NULL) == 0) {
		proc_kill(st.qemu_pid, st.qemu_start, SIGKILL);
		for (int i = 0; i < 250 && proc_is(st.qemu_pid, st.qemu_start); i++)
			util_sleep_ms(20);
		/* Its supervisor notices QEMU's end and exits; give it a moment, then make sure. */
		for (int i = 0; i < 50 && proc_is(st.supervisor_pid, st.supervisor_start); i++)
			util_sleep_ms(20);
		proc_kill(st.supervisor_pid, st.supervisor_start, SIGKILL);
		for (int i = 0; i < 250 && proc_is(st.supervisor_pid, st.supervisor_start); i++)
			util_sleep_ms(20);
	}
	/* A pod namespace already gone took the tap and the VM's table with it. */
	if (netns_enter(netns, &back) == 0) {
		net_teardown_dir(dir);
		netns_leave(back);
	}
	vm_dir_remove(dir);
}
