/* SPDX-License-Identifier: MIT */
/*
 * Running one command in the guest with its stdio forwarded: the host half of EXEC. One epoll
 * loop over the agent channel, the user's stdin, QMP, QEMU's pidfd, signals and the timeout.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "obs/audit.h"
#include "vm/monitor.h"
#include "base/util.h"
#include "obs/metrics.h"
#include "vm/vm_internal.h"

struct exec_state {
	struct vm *vm;
	const struct vm_exec_request *req;
	struct vm_exec_result *res;
	uint32_t id;
	int timer_fd;
	bool stdin_open;      /* still forwarding the user's stdin */
	bool stdin_polled;    /* registered in epoll (false for regular files: always readable) */
	bool stdin_paused;    /* not read while the agent queue is full */
	bool stdout_broken;   /* our stdout reader went away (EPIPE) */
	int signals_seen;
	bool done;
	uint64_t bytes_out; /* stdout + stderr received, for the audit log */
};

static int build_exec(const struct vm_exec_request *req, struct avm_buf *b)
{
	int r = 0;

	for (char *const *a = req->argv; *a && r == 0; a++)
		r = avm_tlv_put_str(b, AVM_TAG_ARG, *a);
	for (char *const *e = req->env; e && *e && r == 0; e++)
		r = avm_tlv_put_str(b, AVM_TAG_ENV, *e);
	if (r == 0 && req->cwd)
		r = avm_tlv_put_str(b, AVM_TAG_CWD, req->cwd);
	if (r == 0 && req->timeout_s)
		r = avm_tlv_put_u32(b, AVM_TAG_TIMEOUT_MS, req->timeout_s * 1000u);
	if (r == 0)
		r = avm_tlv_put_u32(b, AVM_TAG_STDIN, req->stdin_fd >= 0);
	/* Copies run as root, like docker cp, whatever user the image names. */
	if (r == 0 && req->builtin)
		r = avm_tlv_put_u32(b, AVM_TAG_BUILTIN, 1);
	if (r == 0 && req->builtin)
		r = avm_tlv_put_u32(b, AVM_TAG_UID, 0);
	if (r == 0 && req->root)
		r = avm_tlv_put_str(b, AVM_TAG_ROOT, req->root);
	if (r == 0 && req->set_ids && !req->builtin)
		r = avm_tlv_put_u32(b, AVM_TAG_UID, req->uid);
	if (r == 0 && req->set_ids && !req->builtin)
		r = avm_tlv_put_u32(b, AVM_TAG_GID, req->gid);
	return r;
}

static int send_frame(struct exec_state *s, uint16_t type, const void *p, uint32_t len,
		      struct avm_error *err)
{
	int r = agent_conn_send(&s->vm->agent, type, s->id, p, len);

	if (r < 0 && r != -EPIPE)
		return avm_error_setx(err, r, "sending %s to the guest", avm_msg_type_name(type));
	vm__agent_want_out(s->vm);
	return 0; /* a closed channel shows up as EOF on the read side, with a better message */
}

static int send_signal(struct exec_state *s, int signo, struct avm_error *err)
{
	uint8_t p[4];

	avm_put_le32(p, (uint32_t)signo);
	return send_frame(s, AVM_MSG_SIGNAL, p, sizeof(p), err);
}

static void stdin_set_paused(struct exec_state *s, bool pause)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = EV_STDIN };

	if (pause == s->stdin_paused || !s->stdin_open)
		return;
	s->stdin_paused = pause;
	if (s->stdin_polled)
		epoll_ctl(s->vm->epfd, pause ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, s->req->stdin_fd, &ev);
}

static void stdin_close(struct exec_state *s)
{
	if (!s->stdin_open)
		return;
	if (s->stdin_polled && !s->stdin_paused)
		epoll_ctl(s->vm->epfd, EPOLL_CTL_DEL, s->req->stdin_fd, NULL);
	s->stdin_open = false;
}

static int forward_stdin(struct exec_state *s, struct avm_error *err)
{
	uint8_t buf[AVM_PROTO_CHUNK];
	ssize_t n;

	do
		n = read(s->req->stdin_fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n <= 0) {
		/* EOF (or an unreadable stdin): the command sees EOF. */
		stdin_close(s);
		return send_frame(s, AVM_MSG_STDIN, NULL, 0, err);
	}
	int r = send_frame(s, AVM_MSG_STDIN, buf, (uint32_t)n, err);
	if (agent_conn_pending(&s->vm->agent) > STDIN_HIGH_WATER)
		stdin_set_paused(s, true);
	return r;
}

static int write_output(struct exec_state *s, int fd, const uint8_t *p, uint32_t len,
			struct avm_error *err)
{
	s->bytes_out += len;
	if (len == 0 || (fd == s->req->stdout_fd && s->stdout_broken))
		return 0;
	int r = write_all(fd, p, len);
	if (r == -EPIPE && fd == s->req->stdout_fd) {
		/* Like a local pipeline: the writer gets SIGPIPE when its reader is gone. */
		s->stdout_broken = true;
		return send_signal(s, SIGPIPE, err);
	}
	if (r < 0 && fd == s->req->stdout_fd) {
		/* Output that cannot be written is lost output: never exit 0 over it. */
		s->res->output_error = r;
		return avm_error_setx(err, r, "cannot write the command's standard output");
	}
	return 0; /* stderr trouble is not worth failing the command for */
}

static int on_frame(struct exec_state *s, const struct avm_frame_hdr *h, const uint8_t *p,
		    struct avm_error *err)
{
	/* Id 0 is no request's: an ERROR under it is about the connection (a full supervisor). */
	if (h->id == 0 && h->type == AVM_MSG_ERROR) {
		int mlen = h->len > 4 ? (int)(h->len - 4) : 0;
		return avm_error_set(err, -(int)(h->len >= 4 ? avm_get_le32(p) : EPROTO), "%.*s",
				     mlen, mlen ? (const char *)p + 4 : "the VM refused the connection");
	}
	if (h->id != s->id)
		return 0; /* another request's frame, or an unsolicited one */
	switch (h->type) {
	case AVM_MSG_STDOUT:
		return write_output(s, s->req->stdout_fd, p, h->len, err);
	case AVM_MSG_STDERR:
		return write_output(s, s->req->stderr_fd, p, h->len, err);
	case AVM_MSG_EXIT:
		if (avm_exit_info_decode(p, h->len, &s->res->info) < 0)
			return avm_error_set(err, -EBADMSG, "the guest sent a malformed EXIT message");
		if (s->res->info.kind == AVM_EXIT_TIMEOUT)
			s->res->timed_out = true;
		s->done = true;
		return 0;
	case AVM_MSG_ERROR: {
		uint32_t e = h->len >= 4 ? avm_get_le32(p) : EPROTO;
		if (e == ENOBUFS) {
			/* The guest dropped stdin the command never read; the command goes on. */
			s->res->stdin_dropped = true;
			stdin_close(s);
			return 0;
		}
		int mlen = h->len > 4 ? (int)(h->len - 4) : 0;
		return avm_error_set(err, -(int)(e ? e : EPROTO), "the guest agent refused the command: %.*s",
				     mlen, mlen ? (const char *)p + 4 : "no reason given");
	}
	default:
		return 0;
	}
}

static int drain_frames(struct exec_state *s, struct avm_error *err)
{
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int d, r = 0;

	while (r == 0 && !s->done && (d = agent_conn_next(&s->vm->agent, &h, &p, &why)) != 0) {
		if (d == AVM_DECODE_FRAME)
			r = on_frame(s, &h, p, err);
		/* A corrupt frame from the guest is skipped; the stream resynchronises. */
	}
	return r;
}

static int on_signal(struct exec_state *s, int sig_fd, struct avm_error *err)
{
	struct signalfd_siginfo si;

	if (read(sig_fd, &si, sizeof(si)) != sizeof(si))
		return 0;
	/*
	 * A signal queued with a value (sigqueue, SI_QUEUE) names the guest signal to send: any
	 * signal, SIGKILL included, as many times as asked, never aborting (the containerd shim's
	 * Kill). Plain signals are the user's Ctrl-C: forwarded once, the second aborts.
	 */
	if (si.ssi_code == SI_QUEUE && si.ssi_int > 0 && si.ssi_int < 65)
		return send_signal(s, si.ssi_int, err);
	if (++s->signals_seen > 1)
		return avm_error_set(err, -EINTR, "interrupted (signal %u twice)", si.ssi_signo);
	return send_signal(s, (int)si.ssi_signo, err);
}

static int on_timer(struct exec_state *s, struct avm_error *err)
{
	uint64_t ticks;

	(void)!read(s->timer_fd, &ticks, sizeof(ticks));
	/* The guest did not report its own timeout in time: kill from here and give up. */
	s->res->timed_out = true;
	send_signal(s, SIGKILL, err);
	agent_conn_flush(&s->vm->agent);
	s->done = true;
	return 0;
}

int vm_exec_check(const struct vm_exec_request *req, struct avm_error *err)
{
	struct avm_buf b = { 0 };
	int r = build_exec(req, &b);

	avm_buf_release(&b);
	if (r < 0)
		return avm_error_set(err, r,
				     "the command, its environment and working directory take more "
				     "than the %u bytes one request holds; pass large data as a file "
				     "or on stdin",
				     AVM_PROTO_MAX_PAYLOAD);
	return 0;
}

static int exec_setup(struct exec_state *s, struct avm_error *err)
{
	struct vm *vm = s->vm;
	struct avm_buf b = { 0 };
	int r = build_exec(s->req, &b);

	if (r < 0) {
		avm_buf_release(&b);
		return avm_error_set(err, r, "the command is too large for one request (limit %u bytes)",
				     AVM_PROTO_MAX_PAYLOAD);
	}
	s->id = ++vm->next_id;
	r = send_frame(s, AVM_MSG_EXEC, b.data, (uint32_t)b.len, err);
	avm_buf_release(&b);
	if (r < 0)
		return r;

	if (s->req->stdin_fd >= 0) {
		s->stdin_open = true;
		fd_set_nonblock(s->req->stdin_fd, true);
		r = vm__ep_add(vm->epfd, s->req->stdin_fd, EPOLLIN, EV_STDIN);
		if (r == -EPERM)
			s->stdin_polled = false; /* a regular file: always readable, read it in turns */
		else if (r < 0)
			return avm_error_setx(err, r, "epoll stdin");
		else
			s->stdin_polled = true;
	}
	if (s->req->sig_fd >= 0 && vm__ep_add(vm->epfd, s->req->sig_fd, EPOLLIN, EV_SIG) < 0)
		return avm_error_setx(err, -errno, "epoll");
	if (s->req->timeout_s) {
		struct itimerspec its = { .it_value.tv_sec = s->req->timeout_s +
							     HOST_TIMEOUT_GRACE_MS / 1000 };
		s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (s->timer_fd < 0 || timerfd_settime(s->timer_fd, 0, &its, NULL) < 0 ||
		    vm__ep_add(vm->epfd, s->timer_fd, EPOLLIN, EV_TIMER) < 0)
			return avm_error_setx(err, -errno, "timerfd");
	}
	return 0;
}

static void exec_teardown(struct exec_state *s)
{
	stdin_close(s);
	if (s->req->stdin_fd >= 0)
		fd_set_nonblock(s->req->stdin_fd, false);
	if (s->req->sig_fd >= 0)
		epoll_ctl(s->vm->epfd, EPOLL_CTL_DEL, s->req->sig_fd, NULL);
	if (s->timer_fd >= 0)
		close(s->timer_fd);
}

/* vm_exec()'s end in the audit log: r its return, res its result. */
static void audit_exec_done(const char *vm, const struct vm_exec_request *req,
		     const struct vm_exec_result *res, int r, uint64_t bytes_out)
{
	static const char *const kinds[] = { "exited", "signaled", "timeout", "start-failed",
					     "oom-killed" };
	const char *kind = "error";

	if (r == 0 && res->info.kind < ARRAY_SIZE(kinds))
		kind = kinds[res->info.kind];
	if (r == 0 && res->timed_out)
		kind = "timeout";
	audit_exec_end(vm, req->argv, req->cwd, kind, res->info.code, res->info.duration_us
		       ? res->info.duration_us : res->round_trip_us, bytes_out);
}

int vm_exec(struct vm *vm, const struct vm_exec_request *req, struct vm_exec_result *res,
	    struct avm_error *err)
{
	struct exec_state s = { .vm = vm, .req = req, .res = res, .timer_fd = -1 };
	struct epoll_event evs[8];
	uint64_t t0 = now_us();
	int r;

	memset(res, 0, sizeof(*res));
	if (!vm->ready)
		return avm_error_set(err, -EAGAIN, "the guest is not ready");
	r = exec_setup(&s, err);
	audit_exec_start(vm_name(vm), req->argv, req->cwd);
	while (r == 0 && !s.done) {
		/* A regular-file stdin never signals readiness: feed it between other events. */
		bool busy_stdin = s.stdin_open && !s.stdin_polled && !s.stdin_paused;
		int n = epoll_wait(vm->epfd, evs, ARRAY_SIZE(evs), busy_stdin ? 0 : -1);
		if (n < 0 && errno != EINTR) {
			r = avm_error_setx(err, -errno, "epoll_wait");
			break;
		}
		if (busy_stdin)
			r = forward_stdin(&s, err);
		for (int i = 0; i < n && r == 0 && !s.done; i++) {
			switch (evs[i].data.u32) {
			case EV_AGENT:
				if (evs[i].events & EPOLLOUT) {
					agent_conn_flush(&vm->agent);
					vm__agent_want_out(vm);
					if (agent_conn_pending(&vm->agent) < STDIN_HIGH_WATER / 2)
						stdin_set_paused(&s, false);
				}
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					r = vm__read_agent(vm, "while the command ran", err);
				break;
			case EV_STDIN:
				r = forward_stdin(&s, err);
				break;
			case EV_SIG:
				r = on_signal(&s, req->sig_fd, err);
				break;
			case EV_TIMER:
				r = on_timer(&s, err);
				break;
			case EV_QMP:
			case EV_CONSOLE:
				r = vm__pump_qemu(vm, evs[i].data.u32, err);
				break;
			default:
				if (monitor_owns(vm->mon, evs[i].data.u32))
					monitor_event(vm->mon, evs[i].data.u32);
				break;
			case EV_PIDFD:
				/* Output already received still goes out before the error. */
				drain_frames(&s, err);
				if (!s.done)
					r = vm__qemu_died(vm, "while the command ran", err);
				break;
			}
		}
		if (r == 0)
			r = drain_frames(&s, err);
	}
	exec_teardown(&s);
	res->round_trip_us = now_us() - t0;
	audit_exec_done(vm_name(vm), req, res, r, s.bytes_out);
	/* A detached VM's supervisor records what passes through it; `run` owns its VM. */
	if (!vm->attached)
		metrics_record_exec(vm->dir,
				    r < 0 && !s.done ? METRICS_EXEC_ERROR :
				    res->timed_out   ? METRICS_EXEC_TIMEOUT :
						       metrics_exec_class_of(&res->info),
				    res->round_trip_us);
	return r;
}
