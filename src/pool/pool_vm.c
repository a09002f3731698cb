/* SPDX-License-Identifier: MIT */
/*
 * The pool's work on single VMs, away from its loop: restores and removals run in forked
 * children (so the loop always answers at once), and the health probes (state, agent PING).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vm/agent_conn.h"
#include "vm/vm.h"
#include "jail/launcher.h"
#include "pool/pool_internal.h"
#include "control/vm_start.h"
#include "control/vmctl.h"
#include "base/strv.h"
#include "base/util.h"
#include "state/vmstate.h"

/* In a forked worker: keep stdio and `keep`, close everything else the daemon holds. */
static void worker_fds(int keep)
{
	if (keep >= 0 && keep != 3) {
		dup2(keep, 3);
		close(keep);
	}
	syscall(SYS_close_range, keep >= 0 ? 4U : 3U, ~0U, 0);
}

int pool_pod_dir(const char *name, char *buf, size_t len)
{
	return snprintf(buf, len, "%s/" POOL_POD_DIR_PREFIX "%s", statedir_root(), name) >=
			       (int)len
		       ? -ENAMETOOLONG
		       : 0;
}

/* VM `name`'s pod directory, with the mount points a caller (the shim) made in it: nothing is
 * mounted there on the host (the mounts live in QEMU's namespace). Absent is fine. */
static void pod_dir_remove(const char *name)
{
	char dir[PATH_MAX], sub[PATH_MAX + 256];
	struct dirent *e;
	DIR *d;

	if (pool_pod_dir(name, dir, sizeof(dir)) < 0 || !(d = opendir(dir)))
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) < (int)sizeof(sub))
			rmdir(sub);
	closedir(d);
	rmdir(dir);
}

/*
 * Remove the pod directories of pool VMs that are gone (their supervisors, which removed them
 * when serve died, cannot know of the directories). True while some unacquired pool VM with
 * a pod directory still exists (its supervisor is still removing it).
 */
static bool pod_dirs_sweep(void)
{
	static const char pre[] = POOL_POD_DIR_PREFIX "pool-";
	DIR *d = opendir(statedir_root());
	struct dirent *e;
	bool pending = false;

	while (d && (e = readdir(d))) {
		const char *name = e->d_name + strlen(POOL_POD_DIR_PREFIX);
		char dir[PATH_MAX], path[PATH_MAX];
		/* Only ours: "pool-" and hex (the shim's files there are .pod-ctr-*). */
		if (strncmp(e->d_name, pre, strlen(pre)) != 0 ||
		    strspn(name + 5, "0123456789abcdef") != strlen(name + 5) ||
		    statedir_file(dir, sizeof(dir), statedir_root(), name) < 0)
			continue;
		if (access(dir, F_OK) < 0) {
			pod_dir_remove(name);
			continue;
		}
		statedir_file(path, sizeof(path), dir, POOL_ACQUIRED_FILE);
		if (access(path, F_OK) < 0)
			pending = true;
	}
	if (d)
		closedir(d);
	return pending;
}

int pool_pod_prepare(struct pool *p, const struct pool_opts *o, struct avm_error *err)
{
	struct vm_spec *s = o->net_override;
	int r = 0;

	if (!s)
		return avm_error_set(err, -EINVAL, "a pod pool needs its VMs' spec");
	/* A pod: no network unless asked for, as the shim's own pod VMs. A run pool keeps the
	 * spec's default (nat-filtered), as agentvm run. */
	if (!o->run && !o->net_mode_given)
		r = vm_spec_set_network(s, "isolated", err);
	if (r == 0)
		r = vm_spec_validate(s, false, err);
	if (r == 0 && o->run)
		r = pool_run_key(s, p->run_key, err);
	p->pod_spec = s;
	p->run = o->run;
	return r;
}

int pool_pod_janitor(const struct pool *p)
{
	int ws;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid > 0) {
		while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
			;
		return 0;
	}
	/* Twice: serve, stopping, waits for its children; the janitor waits for serve. */
	if (fork() != 0)
		_exit(0);
	setpgid(0, 0);
	worker_fds(p->self_pidfd);
	/* Not serve's stdio either: a reader of serve's output would wait for us too. */
	int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int i = 0; nul >= 0 && i < 3; i++)
		dup2(nul, i);
	struct pollfd pf = { .fd = 3, .events = POLLIN };
	while (poll(&pf, 1, -1) < 0 && errno == EINTR)
		;
	/* A restore under way stops within its boot timeout; 2 s at least for a worker that
	   had made its directory but not yet its VM when serve died. */
	uint64_t t0 = now_ms(), end = t0 + (uint64_t)(p->boot_timeout_s + 30) * 1000;
	while ((pod_dirs_sweep() || now_ms() - t0 < 2000) && now_ms() < end)
		usleep(200 * 1000);
	_exit(0);
}

/*
 * A run pool's VM runs `true` once before it counts as ready: under TCG every guest code path a
 * restored VM runs is translated afresh in its QEMU, and the first command's (fork, exec, exit,
 * its reporting) is most of what a caller would otherwise wait for (bench/pool.sh). Nothing of
 * a caller's is in the VM yet; the command is ours.
 */
static int warm_up(const char *name, struct avm_error *err)
{
	char *const argv[] = { "true", NULL };
	struct vm_exec_request req = { .argv = argv, .timeout_s = 30, .stdin_fd = -1,
				       .sig_fd = -1 };
	struct vm_exec_result res;
	struct vm *vm = NULL;
	int r, nul = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (nul < 0)
		return avm_error_setx(err, -errno, "/dev/null");
	req.stdout_fd = req.stderr_fd = nul;
	r = vm_connect(name, &vm, err);
	if (r == 0)
		r = vm_exec(vm, &req, &res, err);
	if (r == 0 && (res.info.kind != AVM_EXIT_CODE || res.info.code != 0))
		r = avm_error_set(err, -EIO, "its warm-up command failed");
	vm_destroy(vm);
	close(nul);
	return r;
}

/* A pod or run pool's VM, in its worker (a fork: the spec is our copy to complete). */
static int start_pod(struct pool *p, const char *name, struct avm_error *err)
{
	char dir[PATH_MAX], share[PATH_MAX + 64];
	struct vm_spec *s = p->pod_spec;
	int r;

	if (p->run) {
		if (!(s->name = strdup(name)))
			return avm_error_set(err, -ENOMEM, "out of memory");
		r = vm_start_pooled(s, p->boot_timeout_s, false, 3, err);
		/* AGENTVM_POOL_WARMUP=0: none (for bench/pool_run.sh's comparison). */
		const char *w = getenv("AGENTVM_POOL_WARMUP");
		return r < 0 || (w && !strcmp(w, "0")) ? r : warm_up(name, err);
	}
	if (pool_pod_dir(name, dir, sizeof(dir)) < 0)
		return avm_error_set(err, -ENAMETOOLONG, "the state dir's path is too long");
	/* Read-only for QEMU (root without capabilities: the mode binds it), as the shim's own
	 * pod dirs: the guest writes only in the container roots mounted beneath it. */
	if (mkdir(dir, 0555) < 0)
		return avm_error_setx(err, -errno, "cannot make the pod directory %s", dir);
	snprintf(share, sizeof(share), "%s:%s", dir, POOL_POD_GUEST_DIR);
	if ((r = vm_spec_add_share(s, share, err)) < 0)
		return r;
	s->shares[s->n_shares - 1].container_root = true;
	if (!(s->name = strdup(name)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	/* Through the boot cache, as agentvm start: a template restore once one is built. */
	return vm_start_pooled(s, p->boot_timeout_s, false, 3, err);
}

void pool_vm_destroy(const struct pool *p, const char *name)
{
	pid_t pid = fork();

	if (pid == 0) {
		worker_fds(-1);
		/* Opened after worker_fds(), which would close it. */
		int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (nul >= 0)
			dup2(nul, 2);
		int r = vm_remove(name, true, NULL);
		pod_dir_remove(name);
		_exit(r < 0 ? 1 : 0);
	}
}

void pool_vm_spawn(struct pool *p)
{
	int slot = -1;

	for (int i = 0; i < MAX_VMS && slot < 0; i++)
		if (p->vms[i].state == PVM_FREE)
			slot = i;
	if (slot < 0)
		return;
	struct pvm *v = &p->vms[slot];
	memset(v, 0, sizeof(*v));
	{
		char tmp[32];
		statedir_random_name(tmp, sizeof(tmp));
		snprintf(v->name, sizeof(v->name), "pool-%s", tmp + 3);
	}
	fflush(NULL);
	p->worker_msgs[slot][0] = '\0';
	pid_t pid = fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		struct avm_error err = { 0 };
		/*
		 * The stop signals stay blocked (inherited from the loop) and the worker leaves the
		 * terminal's process group: a Ctrl-C meant for `serve` must not kill a worker halfway,
		 * orphaning the VM its supervisor goes on to start. `serve` removes what it started;
		 * should `serve` die instead, the supervisor, holding our pidfd, removes it itself.
		 */
		setpgid(0, 0);
		worker_fds(p->self_pidfd);
		p->rs.pool_pidfd = 3;
		int r = p->pod_spec ? start_pod(p, v->name, &err)
				    : restore_one(&p->rs, v->name, p->boot_timeout_s, &err);
		snprintf(p->worker_msgs[slot], MSG_LEN, "%s", r < 0 ? err.msg : "OK");
		_exit(r < 0 ? 1 : 0);
	}
	v->state = PVM_STARTING;
	v->worker = pid;
	v->worker_fd = pidfd_open_cloexec(pid);
	if (v->worker_fd >= 0)
		pool_ep_add(p->ep, v->worker_fd, TAG_WORKER + (uint32_t)slot);
}

bool pool_vm_alive(const char *name)
{
	char dir[PATH_MAX];
	struct vm_state st;

	snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), name);
	if (vmstate_read(dir, &st, NULL) < 0)
		return false;
	vmstate_effective(dir, &st);
	/* Paused is alive: a caller may pause or snapshot (stop + migrate) a VM it acquired. */
	return vmstate_is_up(st.state);
}

int pool_vm_mark_acquired(const char *name, bool acquired)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s/%s", statedir_root(), name, POOL_ACQUIRED_FILE) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	if (acquired)
		return write_file_atomic(path, "", 0);
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/*
 * We are the only serve on this state root (pool_listen saw to it), so every pool VM in it is
 * an earlier serve's. The ones it held ready went with it (their supervisors watched it); one
 * still here lost its supervisor too (killed with it), or is just going: rm --force finishes
 * either, network included. Its acquired VMs that still run and come from our snapshot count
 * as acquired again (towards max; `pool release` takes them); other ones are left alone.
 */
void pool_vm_adopt(struct pool *p)
{
	char **names = NULL;
	int n = statedir_list(&names);

	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX], path[PATH_MAX];
		_cleanup_free_ char *origin = NULL;
		int slot = -1;

		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (statedir_file(path, sizeof(path), dir, POOL_VM_FILE) < 0 || access(path, F_OK) < 0)
			continue;
		statedir_file(path, sizeof(path), dir, POOL_ACQUIRED_FILE);
		if (access(path, F_OK) < 0) {
			pool_log("removing %s: an earlier serve left it unacquired", names[i]);
			pool_vm_destroy(p, names[i]);
			continue;
		}
		/* Ours: restored from our snapshot, or (a pod pool) with its pod directory. */
		if (p->snap) {
			statedir_file(path, sizeof(path), dir, RESTORE_ORIGIN_FILE);
			if (read_file(path, &origin, 4096) < 0 || strcmp(origin, p->snap) != 0)
				continue;
		} else if (p->run || /* a run pool marks none acquired: never ours */
			   pool_pod_dir(names[i], path, sizeof(path)) < 0 ||
			   access(path, F_OK) < 0) {
			continue;
		}
		if (!pool_vm_alive(names[i]))
			continue;
		for (int j = 0; j < MAX_VMS && slot < 0; j++)
			if (p->vms[j].state == PVM_FREE)
				slot = j;
		if (slot < 0)
			break;
		p->vms[slot] = (struct pvm){ .state = PVM_LEASED, .worker_fd = -1 };
		snprintf(p->vms[slot].name, sizeof(p->vms[slot].name), "%s", names[i]);
		pool_log("%s, acquired from an earlier serve, counts as acquired again", names[i]);
	}
	strv_free(names);
	pod_dirs_sweep(); /* an earlier janitor killed too */
}

bool pool_vm_ping(const char *name)
{
	struct sockaddr_un sa;
	struct agent_conn c;
	char dir[PATH_MAX];
	bool ok = false;
	int fd;

	if (statedir_file(dir, sizeof(dir), statedir_root(), name) < 0 ||
	    statedir_sockaddr(&sa, dir, STATEDIR_AGENT_SOCK) < 0)
		return false; /* a path no socket can have: no VM answers there */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true; /* our problem, not the VM's */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return false;
	}
	agent_conn_init(&c, fd);
	agent_conn_send(&c, AVM_MSG_PING, 1, "hc", 2);
	/* Short: the loop waits meanwhile; a slow answer is one miss, and it takes 3 to drop. */
	for (uint64_t end = now_ms() + 500; !ok && now_ms() < end;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN | (agent_conn_pending(&c) ? POLLOUT : 0) };
		if (poll(&pf, 1, 50) <= 0)
			continue;
		if (pf.revents & POLLOUT)
			agent_conn_flush(&c);
		if ((pf.revents & (POLLIN | POLLHUP)) && agent_conn_read(&c) < 0)
			break;
		struct avm_frame_hdr h;
		const uint8_t *pl;
		const char *why;
		int d;
		while ((d = agent_conn_next(&c, &h, &pl, &why)) != AVM_DECODE_NEED_MORE)
			if (d == AVM_DECODE_FRAME && h.type == AVM_MSG_PONG)
				ok = true;
	}
	agent_conn_release(&c);
	close(fd);
	return ok;
}
