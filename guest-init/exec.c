/* SPDX-License-Identifier: MIT */
/* Running commands: the exec table, starting, signals, reaping, timeouts, EXIT reports. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cgroup.h"
#include "exec_int.h"
#include "port.h"
#include "proto.h"
#include "rootfs.h"
#include "util.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static struct exec *execs;     /* live */
static struct exec *graveyard; /* finished, freed at the end of the loop iteration */
static unsigned int n_execs;
static int devnull = -1;
static bool unfinished; /* reaped during a send, EXIT not sent yet */
static bool started;    /* a command was spawned once */

bool exec_started(void)
{
	return started;
}

struct exec *exec_find(uint32_t id)
{
	for (struct exec *e = execs; e; e = e->next)
		if (e->id == id)
			return e;
	return NULL;
}

static struct exec *find_pid(pid_t pid)
{
	for (struct exec *e = execs; e; e = e->next)
		if (e->pid == pid && !e->reaped)
			return e;
	return NULL;
}

static void unlink_exec(struct exec *ex)
{
	for (struct exec **pp = &execs; *pp; pp = &(*pp)->next)
		if (*pp == ex) {
			*pp = ex->next;
			break;
		}
	ex->next = graveyard;
	graveyard = ex;
	n_execs--;
}

static uint64_t tv_us(const struct timeval *tv)
{
	return (uint64_t)tv->tv_sec * 1000000u + (uint64_t)tv->tv_usec;
}

void exec_maybe_finish(struct exec *ex)
{
	struct avm_exit_info info = { 0 };
	uint8_t buf[AVM_EXIT_INFO_SIZE];

	if (ex->dead || !ex->reaped || ex->fd_out >= 0 || ex->fd_err >= 0)
		return;
	exec_close_stdin(ex);
	if (ex->start_err) {
		info.kind = AVM_EXIT_START_FAILED;
		info.code = ex->start_err;
	} else if (WIFEXITED(ex->status)) {
		info.kind = AVM_EXIT_CODE;
		info.code = WEXITSTATUS(ex->status);
	} else {
		/* Killed by a signal: by us when the timeout fired, by the kernel's OOM killer
		 * (its cgroup counted it), otherwise by anyone. */
		info.kind = ex->timed_out		     ? AVM_EXIT_TIMEOUT
			    : cgroup_exec_oom(ex->cg_fd) ? AVM_EXIT_OOM
							 : AVM_EXIT_SIGNAL;
		info.code = WIFSIGNALED(ex->status) ? WTERMSIG(ex->status) : 0;
	}
	info.duration_us = (ex->end_ns - ex->start_ns) / 1000;
	info.utime_us = tv_us(&ex->ru.ru_utime);
	info.stime_us = tv_us(&ex->ru.ru_stime);
	info.maxrss_kb = ex->ru.ru_maxrss > 0 ? (uint64_t)ex->ru.ru_maxrss : 0;
	avm_exit_info_encode(&info, buf);
	log_debug("exec %u: exit kind %u code %d after %llu us", ex->id, info.kind, info.code,
		  (unsigned long long)info.duration_us);
	port_send(AVM_MSG_EXIT, ex->id, buf, sizeof(buf));
	/* What it left running (setsid'd or not) goes with it only on a kill; the cgroup itself
	 * goes once empty. After EXIT: removing a cgroup costs ~2 ms the host need not wait for. */
	cgroup_exec_release(ex->cg_n, ex->cg_fd);
	ex->cg_fd = -1;
	ex->dead = true;
	unlink_exec(ex);
}

static int make_pipe(int fds[2], bool parent_writes)
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	/* Only our end is nonblocking; the command gets an ordinary blocking pipe. */
	return fd_set_nonblock(fds[parent_writes ? 1 : 0]);
}

static void close_pair(int fds[2])
{
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	fds[0] = fds[1] = -1;
}

/* The loop's handlers of a command's fds (loop.h): a watch inside its struct exec. */
#define EXEC_OF(w, member) ((struct exec *)((char *)(w) - offsetof(struct exec, member)))

static void on_stdout(struct watch *w, uint32_t events)
{
	struct exec *ex = EXEC_OF(w, w_out);

	(void)events;
	if (!ex->dead)
		exec_forward_output(ex, &ex->fd_out, AVM_MSG_STDOUT);
}

static void on_stderr(struct watch *w, uint32_t events)
{
	struct exec *ex = EXEC_OF(w, w_err);

	(void)events;
	if (!ex->dead)
		exec_forward_output(ex, &ex->fd_err, AVM_MSG_STDERR);
}

static void on_stdin(struct watch *w, uint32_t events)
{
	struct exec *ex = EXEC_OF(w, w_in);

	if (!ex->dead && ex->fd_in >= 0 && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		exec_flush_stdin(ex);
}

void exec_start(uint32_t id, const uint8_t *p, size_t len)
{
	int pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 };
	struct exec_req req;
	struct exec *ex;
	const char *why = NULL;
	uint64_t t_in = mono_ns(); /* for the debug line: EXEC read to command started */
	pid_t pid;
	int r;

	if (rootfs_error()) {
		/* The root image did not mount: a command must not run in the initramfs instead. */
		port_send_error(id, EIO, "%s", rootfs_error());
		return;
	}
	if (exec_find(id)) {
		port_send_error(id, EEXIST, "exec id %u is already running", id);
		return;
	}
	if (n_execs >= MAX_EXECS) {
		port_send_error(id, EAGAIN, "too many running commands (limit %d)", MAX_EXECS);
		return;
	}
	r = exec_req_parse(p, len, &req, &why);
	if (r < 0) {
		port_send_error(id, -r, "bad EXEC request: %s", why ? why : "invalid");
		return;
	}
	ex = calloc(1, sizeof(*ex));
	if (!ex) {
		exec_req_free(&req);
		port_send_error(id, ENOMEM, "out of memory");
		return;
	}
	if (devnull < 0)
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	r = make_pipe(pout, false);
	if (r == 0)
		r = make_pipe(perr, false);
	if (r == 0 && req.stdin_pipe)
		r = make_pipe(pin, true);
	if (r == 0 && !req.stdin_pipe && devnull < 0)
		r = -ENOENT;
	if (r < 0) {
		/* No fds (or no /dev/null): refuse the request, nothing ran. */
		close_pair(pin);
		close_pair(pout);
		close_pair(perr);
		exec_req_free(&req);
		free(ex);
		port_send_error(id, -r, "cannot create pipes: %s", strerror(-r));
		return;
	}

	/* Best effort: a full pipe-buffer quota (pipe-user-pages-soft) just keeps 64 KiB. */
	fcntl(pout[0], F_SETPIPE_SZ, OUTPUT_PIPE_SIZE);
	fcntl(perr[0], F_SETPIPE_SZ, OUTPUT_PIPE_SIZE);
	ex->id = id;
	ex->cg_fd = cgroup_exec_create(&ex->cg_n);
	ex->fd_out = pout[0];
	ex->fd_err = perr[0];
	ex->fd_in = pin[1];
	ex->in_pipe = req.stdin_pipe;
	ex->w_out.ready = on_stdout;
	ex->w_err.ready = on_stderr;
	ex->w_in.ready = on_stdin;
	ex->start_ns = mono_ns();
	if (req.timeout_ms)
		ex->deadline_ns = ex->start_ns + (uint64_t)req.timeout_ms * NSEC_PER_MSEC;

	started = true; /* even a failed spawn may have run something first */
	pid = spawn_command(&req, req.stdin_pipe ? pin[0] : devnull, pout[1], perr[1], ex->cg_fd);
	/* The command's ends belong to it now (or to nobody). */
	if (pin[0] >= 0)
		close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	exec_req_free(&req);

	ex->next = execs;
	execs = ex;
	n_execs++;
	if (pid < 0) {
		log_debug("exec %u: start failed: %s", id, strerror(-pid));
		ex->start_err = -pid;
		ex->reaped = true;
		ex->end_ns = ex->start_ns;
		exec_close_output(ex, &ex->fd_out, AVM_MSG_STDOUT);
		exec_close_output(ex, &ex->fd_err, AVM_MSG_STDERR);
		exec_maybe_finish(ex);
		return;
	}
	ex->pid = pid;
	if (loop_add(ex->fd_out, EPOLLIN, &ex->w_out) < 0 ||
	    loop_add(ex->fd_err, EPOLLIN, &ex->w_err) < 0) {
		/* Cannot watch its output: kill it, the host gets EOFs and the signal. */
		log_msg("exec %u: epoll: %m", id);
		kill(-pid, SIGKILL);
		exec_close_output(ex, &ex->fd_out, AVM_MSG_STDOUT);
		exec_close_output(ex, &ex->fd_err, AVM_MSG_STDERR);
	}
	log_debug("exec %u: pid %d, started %llu us after its EXEC was read", id, pid,
		  (unsigned long long)(mono_ns() - t_in) / 1000);
}

void exec_signal(uint32_t id, const uint8_t *p, size_t len)
{
	struct exec *ex = exec_find(id);
	uint32_t sig;

	if (len != 4) {
		port_send_error(id, EINVAL, "SIGNAL payload must be a u32");
		return;
	}
	sig = avm_get_le32(p);
	if (sig == 0 || sig >= (uint32_t)NSIG) {
		port_send_error(id, EINVAL, "bad signal number %u", sig);
		return;
	}
	if (!ex || ex->start_err)
		return; /* already finished: a race the host cannot avoid, not an error */
	/* The whole group: a shell's children get it too. ESRCH: everyone is gone already. */
	if (kill(-ex->pid, (int)sig) < 0 && errno != ESRCH)
		port_send_error(id, errno, "kill: %s", strerror(errno));
	/* And whatever left the group (setsid) but not the cgroup. */
	cgroup_exec_signal(ex->cg_fd, (int)sig);
}

/*
 * Collect exit statuses. With finish, also send EXIT for the commands that are done; without
 * (while a send waits on the host) only record them, and exec_run_timers() finishes them.
 */
static void reap(bool finish)
{
	struct rusage ru;
	int status;
	pid_t pid;

	for (;;) {
		pid = wait4(-1, &status, WNOHANG, &ru);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			break;
		/* Orphans reparented to PID 1 are simply reaped. */
		struct exec *ex = find_pid(pid);
		if (!ex)
			continue;
		ex->reaped = true;
		ex->status = status;
		ex->ru = ru;
		ex->end_ns = mono_ns();
		if (ex->fd_out >= 0 || ex->fd_err >= 0)
			ex->grace_ns = ex->end_ns + PIPE_GRACE_NS;
		if (finish)
			exec_maybe_finish(ex);
		else
			unfinished = true;
	}
}

void exec_reap(void)
{
	reap(true);
}

void exec_reap_quiet(void)
{
	reap(false);
}

/* The next deadline: timeouts only, or also pipe grace periods and stdin stalls. */
static uint64_t next_timer_ns(bool kill_only)
{
	uint64_t t = UINT64_MAX;

	for (struct exec *e = execs; e; e = e->next) {
		if (!e->reaped && e->deadline_ns && !e->timed_out && e->deadline_ns < t)
			t = e->deadline_ns;
		if (kill_only)
			continue;
		if (e->reaped && e->grace_ns && e->grace_ns < t)
			t = e->grace_ns;
		if (e->q.len >= STDIN_HIGH && !e->in_dropping &&
		    e->in_progress_ns + STDIN_STALL_NS < t)
			t = e->in_progress_ns + STDIN_STALL_NS;
	}
	return t;
}

int exec_next_timer_ms(void)
{
	uint64_t t = next_timer_ns(false);

	if (unfinished)
		return 0; /* exits reaped during a send still need their EXIT */
	return t == UINT64_MAX ? -1 : ms_until(t, mono_ns());
}

int exec_next_kill_ms(void)
{
	uint64_t t = next_timer_ns(true);

	return t == UINT64_MAX ? -1 : ms_until(t, mono_ns());
}

void exec_kill_expired(void)
{
	uint64_t now = mono_ns();

	for (struct exec *e = execs; e; e = e->next)
		if (!e->reaped && e->deadline_ns && !e->timed_out && now >= e->deadline_ns) {
			log_debug("exec %u: timeout", e->id);
			e->timed_out = true;
			kill(-e->pid, SIGKILL);
			cgroup_exec_signal(e->cg_fd, SIGKILL);
		}
}

void exec_run_timers(void)
{
	uint64_t now = mono_ns();
	struct exec *e, *next;

	exec_kill_expired();
	for (e = execs; e; e = next) {
		next = e->next; /* exec_maybe_finish() moves e to the graveyard */
		if (e->reaped && e->grace_ns && now >= e->grace_ns) {
			/* A background process still holds the pipes: end it and them. */
			log_debug("exec %u: pipes still open after exit, killing group", e->id);
			e->grace_ns = 0;
			kill(-e->pid, SIGKILL);
			cgroup_exec_signal(e->cg_fd, SIGKILL);
			exec_drain_output(e, &e->fd_out, AVM_MSG_STDOUT);
			exec_drain_output(e, &e->fd_err, AVM_MSG_STDERR);
			exec_maybe_finish(e);
			continue;
		}
		if (e->q.len >= STDIN_HIGH && !e->in_dropping &&
		    now >= e->in_progress_ns + STDIN_STALL_NS) {
			exec_drop_stdin(e);
			port_send_error(e->id, ENOBUFS,
					"exec %u has not read its stdin for %llu s; stdin data dropped",
					e->id, (unsigned long long)(STDIN_STALL_NS / NSEC_PER_SEC));
		}
	}
}

bool exec_stdin_backlogged(void)
{
	for (struct exec *e = execs; e; e = e->next)
		if (e->q.len >= STDIN_HIGH && !e->in_dropping)
			return true;
	return false;
}

void exec_gc(void)
{
	cgroup_gc();
	/* Only while nothing runs: on one vCPU, making it would slow a running command. */
	if (n_execs == 0)
		cgroup_make_spare();
	while (graveyard) {
		struct exec *e = graveyard;

		graveyard = e->next;
		free(e->q.buf);
		free(e);
	}
}
