/* SPDX-License-Identifier: MIT */
/* The shim's adapter to agentvm, through the public libagentvm only (see shim_vm.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "include/agentvm.h"

#include "base/proc.h"
#include "base/sha256.h"
#include "shim.h"
#include "shim_vm.h"

static int err_vset(struct shim_err *e, int code, bool x, const char *fmt, va_list ap)
{
	int n;

	if (!e)
		return code;
	e->code = code;
	n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	if (x && n >= 0 && (size_t)n < sizeof(e->msg))
		snprintf(e->msg + n, sizeof(e->msg) - (size_t)n, ": %s", strerror(-code));
	return code;
}

int shim_err_set(struct shim_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, code, false, fmt, ap);
	va_end(ap);
	return code;
}

int shim_err_setx(struct shim_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, code, true, fmt, ap);
	va_end(ap);
	return code;
}

/* A library failure r into e, with the library's message. */
static int from_lib(struct shim_err *e, int r, const struct agentvm_error *ae)
{
	const char *msg = agentvm_error_message(ae);

	return shim_err_set(e, r < 0 ? r : -EIO, "%s", msg[0] ? msg : strerror(r < 0 ? -r : EIO));
}

/*
 * A context for one call (the shim is single-threaded and its pod's VM is one): the VM's
 * network namespace when the pod has one (agentvm_ctx_set_netns).
 */
static struct agentvm_ctx *ctx_open(const char *netns, struct agentvm_error *ae)
{
	struct agentvm_ctx *ctx = NULL;

	if (agentvm_ctx_new(&ctx, ae) < 0)
		return NULL;
	if (netns && agentvm_ctx_set_netns(ctx, netns, ae) < 0) {
		agentvm_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

const char *shim_vm_state_root(void)
{
	static char *root;
	struct agentvm_ctx *ctx;

	if (!root && (ctx = ctx_open(NULL, NULL))) {
		agentvm_ctx_get_state_dir(ctx, &root, NULL);
		agentvm_ctx_free(ctx);
	}
	return root ? root : "/run/agentvm";
}

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
		       struct shim_err *err)
{
	static const char *const keys[] = { "profile", "cpus", "memory", "network", "image",
					    "pool" };
	const char **slots[] = { &c->profile, &c->cpus,  &c->memory,
				 &c->network, &c->image, &c->pool };

	if (strncmp(key, SHIM_ANNOTATION_PREFIX, strlen(SHIM_ANNOTATION_PREFIX)) != 0)
		return 0; /* not ours */
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!strcmp(key + strlen(SHIM_ANNOTATION_PREFIX), keys[i])) {
			if (slots[i] == &c->pool && strcmp(value, "true") && strcmp(value, "false"))
				return shim_err_set(err, -EINVAL, "annotation '%s' is true "
						    "or false, not '%s'", key, value);
			*slots[i] = value;
			return 0;
		}
	}
	return shim_err_set(err, -EINVAL,
			    "unknown annotation '%s'; agentvm knows io.agentvm.profile, "
			    "io.agentvm.cpus, io.agentvm.memory, io.agentvm.network, "
			    "io.agentvm.image and io.agentvm.pool",
			    key);
}

int shim_vm_boot(const char *name, const char *pod_dir, const struct shim_vm_config *c,
		 unsigned boot_timeout_s, struct shim_err *err)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_spec *spec = NULL;
	struct agentvm_ctx *ctx = NULL;
	char share[4096];
	int r;

	if (!ae)
		return shim_err_set(err, -ENOMEM, "out of memory");
	snprintf(share, sizeof(share), "%s:%s", pod_dir, SHIM_GUEST_ROOT);
	r = agentvm_spec_new(&spec, ae);
	if (r == 0)
		r = agentvm_spec_set_name(spec, name, ae);
	/* No network unless asked for (see README). */
	if (r == 0)
		r = agentvm_spec_set_network(spec, c->network ? c->network : "isolated", ae);
	if (r == 0 && c->profile)
		r = agentvm_spec_set_profile(spec, c->profile, ae);
	if (r == 0 && c->image)
		r = agentvm_spec_set_image(spec, c->image, ae);
	if (r == 0 && c->cpus)
		r = agentvm_spec_set_cpus(spec, c->cpus, ae);
	if (r == 0 && c->memory)
		r = agentvm_spec_set_memory(spec, c->memory, ae);
	for (size_t i = 0; r == 0 && i < c->n_allow; i++)
		r = agentvm_spec_add_allow(spec, c->allow[i], ae);
	for (size_t i = 0; r == 0 && i < c->n_allow_cidr; i++)
		r = agentvm_spec_add_allow_cidr(spec, c->allow_cidr[i], ae);
	for (size_t i = 0; r == 0 && i < c->n_allow_domain; i++)
		r = agentvm_spec_add_allow_domain(spec, c->allow_domain[i], ae);
	/* The container roots' share: their owners, modes and symlinks as they are. */
	if (r == 0)
		r = agentvm_spec_add_root_share(spec, share, ae);
	if (r == 0)
		r = agentvm_spec_set_boot_timeout(spec, boot_timeout_s, ae);
	/* In the pod's namespace (when it has one) the VM's tap, nft table and NAT are made. */
	if (r == 0 && !(ctx = ctx_open(c->netns, ae)))
		r = agentvm_error_code(ae) ? agentvm_error_code(ae) : -ENOMEM;
	/* Through the boot cache, as `agentvm start`: a pod VM restores a boot template of its
	 * shape (the pod share included). */
	if (r == 0)
		r = agentvm_start(ctx, spec, NULL, 0, ae);
	if (r < 0)
		from_lib(err, r, ae);
	agentvm_ctx_free(ctx);
	agentvm_spec_free(spec);
	agentvm_error_free(ae);
	return r;
}

int shim_vm_pool_acquire(char *name, size_t len, struct shim_err *err)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_ctx *ctx = ctx_open(NULL, ae);
	char dir[4096];
	struct stat st;
	int r = ctx ? agentvm_pool_acquire(ctx, SHIM_POOL_WAIT_S, name, len, ae) : -ENOMEM;

	if (r < 0) {
		from_lib(err, r, ae);
	} else if (shim_vm_work_path(name, "", dir, sizeof(dir)) < 0 || lstat(dir, &st) < 0 ||
		   !S_ISDIR(st.st_mode)) {
		r = shim_err_set(err, -EXDEV, "the pool's VM %s is no pod VM (the pool serves a "
					      "snapshot, not --pool-pod); released", name);
		agentvm_pool_release(ctx, name, NULL);
		name[0] = '\0';
	}
	agentvm_ctx_free(ctx);
	agentvm_error_free(ae);
	return r;
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
	    (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600)) >= 0) {
		dprintf(fd, "%d\n", code);
		close(fd);
	}
	_exit(code);
}

/* The command of p, chrooted into root, as agentvm_cmd (caller frees); NULL and err on failure. */
static struct agentvm_cmd *proc_cmd(const char *root, const struct shim_proc *p,
				    struct shim_err *err)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_cmd *cmd = NULL;
	int r = ae ? agentvm_cmd_new(&cmd, (const char *const *)p->argv, ae) : -ENOMEM;

	for (size_t i = 0; r == 0 && p->env && p->env[i]; i++)
		r = agentvm_cmd_add_env(cmd, p->env[i], ae);
	if (r == 0)
		r = agentvm_cmd_set_cwd(cmd, p->cwd ? p->cwd : "/", ae);
	if (r == 0)
		r = agentvm_cmd_set_root(cmd, root, ae);
	if (r == 0) {
		agentvm_cmd_set_user(cmd, p->uid, p->gid);
		r = agentvm_cmd_check(cmd, ae);
	}
	if (r < 0) {
		from_lib(err, r, ae);
		agentvm_cmd_free(cmd);
		cmd = NULL;
	}
	agentvm_error_free(ae);
	return cmd;
}

static _Noreturn void helper_main(const char *name, struct agentvm_cmd *cmd, const char *arg0,
				  bool has_stdin, int sig_fd, const char *status_path)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_ctx *ctx = ctx_open(NULL, ae);
	int status = 255, r;

	if (sig_fd < 0 || !ctx) {
		fprintf(stderr, "agentvm-shim: %s\n",
			sig_fd < 0 ? "signalfd failed" : "out of memory");
		helper_exit(status_path, 255);
	}
	agentvm_cmd_set_stdio(cmd, has_stdin ? 0 : -1, 1, 2);
	agentvm_cmd_set_signal_fd(cmd, sig_fd);
	r = agentvm_cmd_run(ctx, name, cmd, &status, ae);
	if (r < 0)
		fprintf(stderr, "agentvm-shim: %s\n", agentvm_error_message(ae));
	else if (agentvm_cmd_start_error(cmd))
		fprintf(stderr, "agentvm-shim: cannot run %s in the container: %s\n", arg0,
			strerror(agentvm_cmd_start_error(cmd)));
	helper_exit(status_path, r < 0 ? 255 : status);
}

int shim_vm_spawn(const char *name, const char *root, const struct shim_proc *p,
		  const int fds[3], const char *status_path, pid_t *pid, struct shim_err *err)
{
	struct agentvm_cmd *cmd = proc_cmd(root, p, err);
	sigset_t set, old;
	int r;

	if (!cmd)
		return err ? err->code : -EINVAL;
	/* Kill's signals come queued on SIGRTMIN (agentvm_cmd_set_signal_fd): blocked before the
	 * fork, so none is lost between fork and the helper's signalfd. */
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN);
	sigprocmask(SIG_BLOCK, &set, &old);
	*pid = fork();
	if (*pid < 0) {
		r = -errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		agentvm_cmd_free(cmd);
		return shim_err_setx(err, r, "cannot fork a process helper");
	}
	if (*pid == 0) {
		sigset_t chld;
		sigemptyset(&chld);
		sigaddset(&chld, SIGCHLD);
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		helper_fds(fds);
		int sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
		helper_main(name, cmd, p->argv[0], fds[0] >= 0, sig_fd, status_path);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	agentvm_cmd_free(cmd);
	return 0;
}

int shim_vm_signal(pid_t pid, int sig)
{
	union sigval v = { .sival_int = sig };

	return sigqueue(pid, SIGRTMIN, v) < 0 ? -errno : 0;
}

int shim_vm_pause(const char *name, bool pause, struct shim_err *err)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_ctx *ctx = ctx_open(NULL, ae);
	int r = !ctx ? -ENOMEM
	      : pause ? agentvm_pause(ctx, name, ae)
		      : agentvm_resume(ctx, name, ae);

	if (r < 0)
		from_lib(err, r, ae);
	agentvm_ctx_free(ctx);
	agentvm_error_free(ae);
	return r;
}

int shim_vm_work_path(const char *name, const char *suffix, char *buf, size_t len)
{
	return snprintf(buf, len, "%s/.pod-%s%s", shim_vm_state_root(), name, suffix) >= (int)len
		       ? -ENAMETOOLONG
		       : 0;
}

/* QEMU's mount namespace (agentvm_open_ns: checked to be that QEMU still). */
static int qemu_mntns(const char *name, struct shim_err *err)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_ctx *ctx = ctx_open(NULL, ae);
	int fd = -1, r = ctx ? agentvm_open_ns(ctx, name, "mnt", &fd, ae) : -ENOMEM;

	if (r < 0)
		from_lib(err, r, ae);
	agentvm_ctx_free(ctx);
	agentvm_error_free(ae);
	return r < 0 ? r : fd;
}

bool shim_vm_alive(const char *name)
{
	int fd = qemu_mntns(name, NULL);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

uint64_t shim_vm_proc_start(pid_t pid)
{
	return proc_start_time(pid); /* base/proc.c, as agentvm's own records */
}

bool shim_vm_proc_is(pid_t pid, uint64_t start)
{
	return pid > 0 && start != 0 && shim_vm_proc_start(pid) == start;
}

int shim_vm_pod_dir(const char *name, char *buf, size_t len, struct shim_err *err)
{
	if (shim_vm_work_path(name, "", buf, len) < 0)
		return shim_err_set(err, -ENAMETOOLONG, "agentvm's state dir path is too long");
	/* Read-only for QEMU (root without capabilities: the mode binds it), so the guest writes
	 * only in the container roots beneath it; the shim makes their mount points. */
	if (mkdir(buf, 0555) < 0 && errno != EEXIST)
		return shim_err_setx(err, -errno, "cannot make the pod directory %s", buf);
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
	d = opendir(shim_vm_state_root());
	size_t dl = strlen(strrchr(dir, '/') + 1);
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, strrchr(dir, '/') + 1, dl) &&
		    !strncmp(e->d_name + dl, ".exit-", 6) &&
		    snprintf(sub, sizeof(sub), "%s/%s", shim_vm_state_root(), e->d_name) <
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
			const char *sub, struct shim_err *err)
{
	char target[4096];
	int ns, mfd, r;

	if (snprintf(target, sizeof(target), "%s/%s", pod_dir, sub) >= (int)sizeof(target))
		return shim_err_set(err, -ENAMETOOLONG, "path too long: %s/%s", pod_dir, sub);
	/* The mount point, made on the host: the pod dir is the same directory in QEMU's jail. */
	if (mkdir(target, 0755) < 0 && errno != EEXIST)
		return shim_err_setx(err, -errno, "cannot make %s", target);
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
		return shim_err_setx(err, r, "cannot clone the mount %s", host_root);
	}
	r = in_mntns(ns, mfd, target, NULL);
	close(mfd);
	close(ns);
	if (r < 0) {
		rmdir(target);
		return shim_err_setx(err, r, "cannot mount %s in QEMU's namespace at %s",
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
		 const char *src, const char *dest, bool ro, struct shim_err *err)
{
	char croot[4096];
	struct stat st;
	int ns, mfd, root, r;

	if (dest[0] != '/' || stat(src, &st) < 0)
		return shim_err_set(err, dest[0] != '/' ? -EINVAL : -errno,
				    "bind mount %s -> %s: %s", src, dest,
				    dest[0] != '/' ? "relative destination" : strerror(errno));
	root = open(host_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	r = root < 0 ? -errno : make_mount_point(root, dest, S_ISDIR(st.st_mode));
	if (root >= 0)
		close(root);
	if (r < 0)
		return shim_err_setx(err, r, "cannot make the mount point %s in the container",
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
		return shim_err_setx(err, r, "cannot clone the mount %s", src);
	}
	snprintf(croot, sizeof(croot), "%s/%s", pod_dir, sub);
	r = in_mntns(ns, mfd, croot, dest);
	close(mfd);
	close(ns);
	if (r < 0)
		return shim_err_setx(err, r, "cannot bind %s at %s in the container", src, dest);
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
		  struct shim_err *err)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_ctx *ctx = ctx_open(netns, ae);
	struct agentvm_stats st = { .size = sizeof(st) };
	int r = ctx ? agentvm_stats(ctx, name, &st, ae) : -ENOMEM;

	if (r < 0)
		from_lib(err, r, ae);
	else if (!st.live)
		r = shim_err_set(err, -ESRCH, "VM %s is not running", name);
	else
		*u = (struct shim_vm_usage){
			.cpu_ns = st.cpu_ns, .rss_bytes = st.rss_bytes,
			.have_guest = st.have_guest, .guest_total = st.guest_mem_total,
			.guest_available = st.guest_mem_available, .have_net = st.have_net,
			.rx_bytes = st.rx_bytes, .rx_packets = st.rx_packets,
			.rx_dropped = st.rx_drop_packets, .tx_bytes = st.tx_bytes,
			.tx_packets = st.tx_packets, .tx_dropped = st.tx_drop_packets,
		};
	agentvm_ctx_free(ctx);
	agentvm_error_free(ae);
	return r;
}

void shim_vm_remove(const char *name, const char *netns)
{
	struct agentvm_error *ae = agentvm_error_new();
	struct agentvm_ctx *ctx = ctx_open(netns, ae);

	/* A pod namespace already gone took the tap and the VM's table with it: then the rest
	 * is removed from the shim's own. */
	if (!ctx && netns)
		ctx = ctx_open(NULL, ae);
	/* Back to its pool, which removes it (and its pod directory); no pool: removed here. */
	if (ctx && strncmp(name, "ctr-", 4) != 0 && agentvm_pool_release(ctx, name, ae) == 0) {
		agentvm_ctx_free(ctx);
		agentvm_error_free(ae);
		return;
	}
	/* Forced: QEMU and its supervisor killed (a dead supervisor is fine), the network torn
	 * down, the state dir removed. A VM already gone is fine. */
	if (ctx && agentvm_rm(ctx, name, true, ae) < 0 &&
	    agentvm_error_kind(ae) != AGENTVM_ERR_USAGE)
		shim_log("cannot remove VM %s: %s", name, agentvm_error_message(ae));
	agentvm_ctx_free(ctx);
	agentvm_error_free(ae);
}
