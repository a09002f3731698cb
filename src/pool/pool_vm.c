/* SPDX-License-Identifier: MIT */
/*
 * The pool's work on single VMs, away from its loop: restores and removals run in forked
 * children (so the loop always answers at once), and the health probes (state, agent PING).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm/agent_conn.h"
#include "jail/launcher.h"
#include "pool/pool_internal.h"
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

void pool_vm_destroy(const struct pool *p, const char *name)
{
	pid_t pid = fork();

	if (pid == 0) {
		worker_fds(-1);
		/* Opened after worker_fds(), which would close it. */
		int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (nul >= 0)
			dup2(nul, 2);
		_exit(vm_remove(name, true, NULL) < 0 ? 1 : 0);
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
		int r = restore_one(&p->rs, v->name, p->boot_timeout_s, &err);
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
		statedir_file(path, sizeof(path), dir, RESTORE_ORIGIN_FILE);
		if (read_file(path, &origin, 4096) < 0 || strcmp(origin, p->snap) != 0 ||
		    !pool_vm_alive(names[i]))
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
