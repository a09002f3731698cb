/* SPDX-License-Identifier: MIT */
#include "vm/supervisor.h"

#include <fcntl.h>
#include <malloc.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "obs/metrics.h"
#include "vm/monitor.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/vm_internal.h"

#define MAX_CLIENTS 1024
/*
 * Output queued for one client: above the high mark the supervisor stops reading the guest's
 * agent channel (the guest's writes then wait, and its commands' pipes fill and block them), and
 * reads again once every client is below the low mark. Nothing is dropped and the supervisor's
 * memory stays bounded (MAX_CLIENTS x high mark at worst); the price is that one slow reader
 * holds up the other commands' output of the same VM while it is behind.
 */
#define CLIENT_HIGH_WATER (1u << 20)
#define CLIENT_LOW_WATER (256u << 10)
/*
 * The other way: input queued for the guest (clients' STDIN frames, a `cp` into the VM). Above
 * the high mark the supervisor stops reading every client (their writes then block: a 1 GiB cp
 * in keeps a flat memory), and reads them again once the guest took it below the low mark.
 */
#define GUEST_HIGH_WATER (1u << 20)
#define GUEST_LOW_WATER (256u << 10)
#define MAX_ROUTES 1024
#define EV_LISTEN 100
#define EV_POOL 101 /* the pool's pidfd: serve exited */
#define EV_NOTIFY 102 /* the starting CLI's pipe: it exited before READY */
#define EV_DNS 103 /* the VM's DNS forwarder (--allow-domain) exited */
#define EV_DNS_TIMER 104 /* time to start it again */
#define EV_CLIENT0 1000 /* EV_CLIENT0 + slot */

struct client {
	bool used;
	int fd;
	struct agent_conn conn;
	uint32_t events;
};

/* One request in flight: which client asked, under which id, and our id towards the guest. */
struct route {
	bool used;
	int client; /* slot, or -1 once the client went away */
	uint32_t client_id;
	uint32_t guest_id;
	uint16_t type; /* EXEC, PING, SYNC, POWEROFF, STATS */
	uint64_t t0_us; /* EXEC: when it was sent, for agentvm_exec_duration_seconds */
};

struct sup {
	struct vm *vm;
	int listen_fd;
	int sig_fd;
	struct client clients[MAX_CLIENTS];
	struct route routes[MAX_ROUTES];
	uint32_t next_guest_id;
	bool clients_in_paused; /* not reading clients: the guest is behind (GUEST_HIGH_WATER) */
	bool poweroff_requested;
	bool quit_requested;
	int pool_fd; /* a pool VM: pidfd of the serve it was started for, until it exits */
	bool remove_at_exit; /* serve died holding the VM: leave no state dir either */
	FILE *events;
	int dns_timer; /* timerfd of a forwarder restart that waits (backoff), or -1 */
	struct monitor *mon; /* connections, drops, anomalies */
};

static void drain_guest(struct sup *s);

/* Read the guest again once every client has caught up (see CLIENT_HIGH_WATER). */
static void guest_flow(struct sup *s)
{
	bool behind = false;

	for (int i = 0; i < MAX_CLIENTS && !behind; i++)
		behind = s->clients[i].used &&
			 agent_conn_pending(&s->clients[i].conn) >
				 (s->vm->agent_in_paused ? CLIENT_LOW_WATER : CLIENT_HIGH_WATER);
	if (behind != s->vm->agent_in_paused) {
		s->vm->agent_in_paused = behind;
		vm__agent_want_out(s->vm);
		if (!behind)
			drain_guest(s); /* frames decoded before the pause */
	}
}

static void client_want_out(struct sup *s, int slot)
{
	struct client *c = &s->clients[slot];
	uint32_t want = (s->clients_in_paused ? 0 : EPOLLIN) |
			(agent_conn_pending(&c->conn) ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.u32 = EV_CLIENT0 + (uint32_t)slot };

	if (want != c->events && epoll_ctl(s->vm->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = want;
}

/* Stop or resume reading clients as the guest's input queue crosses its marks. */
static void clients_flow(struct sup *s)
{
	size_t queued = agent_conn_pending(&s->vm->agent);
	bool behind = queued > (s->clients_in_paused ? GUEST_LOW_WATER : GUEST_HIGH_WATER);

	if (behind == s->clients_in_paused)
		return;
	s->clients_in_paused = behind;
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (s->clients[i].used)
			client_want_out(s, i);
}

static void client_close(struct sup *s, int slot)
{
	struct client *c = &s->clients[slot];
	uint8_t sig[4];

	if (!c->used)
		return;
	/* A vanished `agentvm exec` must not leave its command running in the guest. */
	avm_put_le32(sig, SIGKILL);
	for (int i = 0; i < MAX_ROUTES; i++) {
		struct route *r = &s->routes[i];
		if (!r->used || r->client != slot)
			continue;
		if (r->type == AVM_MSG_EXEC) {
			agent_conn_send(&s->vm->agent, AVM_MSG_SIGNAL, r->guest_id, sig, sizeof(sig));
			r->client = -1; /* keep the route until EXIT so the id is not reused early */
		} else {
			r->used = false;
		}
	}
	vm__agent_want_out(s->vm);
	epoll_ctl(s->vm->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	agent_conn_release(&c->conn);
	close(c->fd);
	memset(c, 0, sizeof(*c));
	if (s->vm->agent_in_paused)
		guest_flow(s);
}

static struct route *route_find_client(struct sup *s, int slot, uint32_t id)
{
	for (int i = 0; i < MAX_ROUTES; i++)
		if (s->routes[i].used && s->routes[i].client == slot && s->routes[i].client_id == id)
			return &s->routes[i];
	return NULL;
}

static struct route *route_find_guest(struct sup *s, uint32_t id)
{
	for (int i = 0; i < MAX_ROUTES; i++)
		if (s->routes[i].used && s->routes[i].guest_id == id)
			return &s->routes[i];
	return NULL;
}

static void client_error(struct sup *s, int slot, uint32_t id, int e, const char *msg)
{
	uint8_t buf[256];
	size_t n = strlen(msg);

	if (n > sizeof(buf) - 4)
		n = sizeof(buf) - 4;
	avm_put_le32(buf, (uint32_t)e);
	memcpy(buf + 4, msg, n);
	agent_conn_send(&s->clients[slot].conn, AVM_MSG_ERROR, id, buf, (uint32_t)(n + 4));
	client_want_out(s, slot);
}

/* A frame from a client: re-number it and pass it to the guest. */
static void from_client(struct sup *s, int slot, const struct avm_frame_hdr *h, const uint8_t *p)
{
	struct route *r = route_find_client(s, slot, h->id);

	switch (h->type) {
	case AVM_MSG_EXEC:
	case AVM_MSG_PING:
	case AVM_MSG_SYNC:
	case AVM_MSG_POWEROFF:
	case AVM_MSG_STATS:
		if (r) {
			client_error(s, slot, h->id, EEXIST, "request id already in use");
			return;
		}
		for (int i = 0; i < MAX_ROUTES && !r; i++)
			if (!s->routes[i].used)
				r = &s->routes[i];
		if (!r) {
			client_error(s, slot, h->id, EBUSY, "too many requests in flight");
			return;
		}
		*r = (struct route){ .used = true, .client = slot, .client_id = h->id,
				     .guest_id = ++s->next_guest_id, .type = h->type,
				     .t0_us = now_us() };
		if (h->type == AVM_MSG_POWEROFF)
			s->poweroff_requested = true;
		break;
	case AVM_MSG_STDIN:
	case AVM_MSG_SIGNAL:
		if (!r) {
			client_error(s, slot, h->id, ENOENT, "no such request");
			return;
		}
		break;
	default:
		client_error(s, slot, h->id, EPROTO, "unexpected message type");
		return;
	}
	agent_conn_send(&s->vm->agent, h->type, r->guest_id, p, h->len);
	vm__agent_want_out(s->vm);
}

/* An EXEC's last frame: its duration and how it ended, for `agentvm metrics`. */
static void record_exec(struct sup *s, const struct route *r, const struct avm_frame_hdr *h,
			const uint8_t *p)
{
	struct avm_exit_info info;
	enum metrics_exec_class cls = METRICS_EXEC_ERROR;

	if (h->type == AVM_MSG_EXIT && avm_exit_info_decode(p, h->len, &info) == 0)
		cls = metrics_exec_class_of(&info);
	metrics_record_exec(s->vm->dir, cls, now_us() - r->t0_us);
}

/* A frame from the guest: back to the client that asked, under its own id. */
static void from_guest(struct sup *s, const struct avm_frame_hdr *h, const uint8_t *p)
{
	struct route *r = route_find_guest(s, h->id);
	bool final;

	if (!r)
		return; /* READY after a reboot, or a frame for a client long gone */
	/* The guest answers every request with exactly one of these last (an ENOBUFS ERROR only
	 * says unread stdin was dropped; the command goes on). */
	final = h->type == AVM_MSG_EXIT || h->type == AVM_MSG_PONG ||
		h->type == AVM_MSG_SYNC_DONE || h->type == AVM_MSG_STATS_REPLY ||
		(h->type == AVM_MSG_ERROR && !(h->len >= 4 && avm_get_le32(p) == ENOBUFS));
	if (r->client >= 0) {
		struct agent_conn *c = &s->clients[r->client].conn;
		agent_conn_send(c, h->type, r->client_id, p, h->len);
		client_want_out(s, r->client);
		if (agent_conn_pending(c) > CLIENT_HIGH_WATER && !s->vm->agent_in_paused) {
			s->vm->agent_in_paused = true;
			vm__agent_want_out(s->vm);
		}
	}
	if (h->type == AVM_MSG_EXIT && r->type == AVM_MSG_EXEC) {
		struct avm_exit_info ei;
		if (avm_exit_info_decode(p, h->len, &ei) == 0)
			monitor_note_exec(s->mon, ei.kind != AVM_EXIT_CODE || ei.code != 0);
	}
	if (final && r->type == AVM_MSG_EXEC)
		record_exec(s, r, h, p);
	if (final)
		r->used = false;
}

/*
 * The CLI maps a heap up front and keeps freed memory for the boot (src/cli/main.c,
 * prefault_heap); a supervisor lives as long as its VM, so once the VM is up it goes back to
 * glibc's defaults (mallopt(3): 128 KiB each) and returns what it does not use.
 */
static void release_boot_heap(void)
{
	mallopt(M_TRIM_THRESHOLD, 128 * 1024);
	mallopt(M_TOP_PAD, 128 * 1024);
	malloc_trim(0);
}

static void on_event(void *opaque, const char *event, struct json_object *data, int64_t sec,
		     int64_t usec)
{
	struct sup *s = opaque;
	struct vm *vm = s->vm;

	if (s->events) {
		fprintf(s->events, "{\"event\":\"%s\",\"timestamp\":{\"seconds\":%lld,\"microseconds\":%lld},\"data\":%s}\n",
			event, (long long)sec, (long long)usec,
			data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "{}");
		if (fflush(s->events) != 0 || ferror(s->events)) {
			vm__note_write_error(vm, STATEDIR_EVENTS, -errno);
			clearerr(s->events);
		}
	}
	if (!strcmp(event, "STOP"))
		vm__set_state(vm, VMS_PAUSED);
	else if (!strcmp(event, "RESUME"))
		vm__set_state(vm, VMS_RUNNING);
	else if (!strcmp(event, "SHUTDOWN") || !strcmp(event, "GUEST_PANICKED"))
		vm__set_state(vm, VMS_STOPPING); /* the VM's own listener noted why (vm.c) */
}

static int listen_agent(struct sup *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (statedir_sockaddr(&sa, s->vm->dir, STATEDIR_AGENT_SOCK) < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	s->listen_fd = fd;
	return vm__ep_add(s->vm->epfd, fd, EPOLLIN, EV_LISTEN);
}

static void accept_client(struct sup *s)
{
	int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &s->clients[i];
		if (c->used)
			continue;
		c->used = true;
		c->fd = fd;
		agent_conn_init(&c->conn, fd);
		c->events = EPOLLIN;
		if (vm__ep_add(s->vm->epfd, fd, EPOLLIN, EV_CLIENT0 + (uint32_t)i) < 0)
			client_close(s, i);
		return;
	}
	/* Full: say so (an EOF would read as a dead VM), then close. */
	struct agent_conn tmp;
	if (agent_conn_init(&tmp, fd) == 0) {
		static const char msg[] = "the VM's supervisor has too many clients; retry later";
		uint8_t buf[4 + sizeof(msg)];
		avm_put_le32(buf, EBUSY);
		memcpy(buf + 4, msg, sizeof(msg) - 1);
		agent_conn_send(&tmp, AVM_MSG_ERROR, 0, buf, (uint32_t)(sizeof(buf) - 1));
		agent_conn_release(&tmp);
	}
	close(fd);
}

static void pump_client(struct sup *s, int slot, uint32_t events)
{
	struct client *c = &s->clients[slot];
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int d;

	if (events & EPOLLOUT) {
		if (agent_conn_flush(&c->conn) < 0) {
			client_close(s, slot);
			return;
		}
		client_want_out(s, slot);
		if (s->vm->agent_in_paused)
			guest_flow(s);
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (agent_conn_read(&c->conn) < 0) {
		client_close(s, slot);
		return;
	}
	while ((d = agent_conn_next(&c->conn, &h, &p, &why)) != AVM_DECODE_NEED_MORE) {
		if (d == AVM_DECODE_FRAME)
			from_client(s, slot, &h, p);
		else
			client_error(s, slot, h.id, EBADMSG, why);
		if (!c->used)
			return;
	}
	clients_flow(s);
}

/* The guest's frames already read, up to the moment a client falls behind. */
static void drain_guest(struct sup *s)
{
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int d;

	while (!s->vm->agent_in_paused &&
	       (d = agent_conn_next(&s->vm->agent, &h, &p, &why)) != AVM_DECODE_NEED_MORE)
		if (d == AVM_DECODE_FRAME)
			from_guest(s, &h, p);
}

static void pump_guest(struct sup *s)
{
	if (agent_conn_read(&s->vm->agent) == -EPIPE)
		epoll_ctl(s->vm->epfd, EPOLL_CTL_DEL, s->vm->agent_fd, NULL); /* QEMU is going away */
	drain_guest(s);
}

/* QEMU is gone: write down why, drop the sockets, keep the rest for `ls`/`logs`/`rm`. */
static void record_exit(struct sup *s)
{
	struct vm *vm = s->vm;
	char path[PATH_MAX];
	int st;

	if (waitpid(vm->pid, &st, 0) == vm->pid) {
		vm->exited = true;
		vm->wstatus = st;
	}
	st = vm->wstatus;
	/* The console's last words first: a panic is told apart from a reboot by them. */
	console_close(&vm->con);
	vm->st.exit_status = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
	vm->st.stopped_ms = realtime_ms();
	const char *reason;
	enum vm_run_state state = VMS_STOPPED;
	if (s->poweroff_requested && !WIFSIGNALED(st))
		reason = "poweroff";
	else if (s->quit_requested)
		reason = "stopped";
	else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
		reason = "killed";
	else if (vm__exit_reason(vm)) {
		/* panic=-1 + -no-reboot: a guest kernel panic ends QEMU as a guest reset. */
		reason = vm__exit_reason(vm);
		state = VMS_CRASHED;
	} else if (vm->guest_shutdown && !WIFSIGNALED(st))
		reason = "guest-shutdown";
	else {
		reason = "crashed";
		state = VMS_CRASHED;
	}
	snprintf(vm->st.exit_reason, sizeof(vm->st.exit_reason), "%s", reason);
	/* Commands the VM took with it never get an EXIT: each ended in error. */
	for (int i = 0; i < MAX_ROUTES; i++)
		if (s->routes[i].used && s->routes[i].type == AVM_MSG_EXEC)
			metrics_record_exec(vm->dir, METRICS_EXEC_ERROR,
					    now_us() - s->routes[i].t0_us);
	vm__set_state(vm, state);
	statedir_file(path, sizeof(path), vm->dir, STATEDIR_AGENT_SOCK);
	unlink(path);
	statedir_file(path, sizeof(path), vm->dir, STATEDIR_QMP_SOCK);
	unlink(path);
}

/* Stop QEMU (QMP quit; SIGKILL when QMP cannot take it); the loop ends through the pidfd. */
static void stop_vm(struct sup *s)
{
	s->quit_requested = true;
	vm__set_state(s->vm, VMS_STOPPING);
	if (qmp_client_send(s->vm->qmp, "quit", NULL, NULL, 0, 0, NULL, NULL, NULL) >= 0)
		qmp_client_flush(s->vm->qmp, NULL);
	else
		kill(s->vm->pid, SIGKILL);
}

static void on_signal(struct sup *s)
{
	struct signalfd_siginfo si;

	if (read(s->sig_fd, &si, sizeof(si)) != sizeof(si))
		return;
	/* SIGTERM/SIGINT to the supervisor: stop the VM, then exit through the pidfd path. */
	stop_vm(s);
}

/*
 * The serve this pool VM was started for has exited, however it ended: a pidfd turns readable
 * on kill -9 too, which no message from serve could tell us. serve marks a VM acquired before it
 * hands it out, and is gone now, so the marker cannot come any more: with it the VM is its
 * caller's and runs on as an ordinary detached VM; without it nobody can acquire it, so stop
 * it and remove everything (network, state dir), as serve's own clean stop would have.
 */
static void on_pool_gone(struct sup *s)
{
	char path[PATH_MAX];

	/* A pidfd stays readable: once is enough. */
	epoll_ctl(s->vm->epfd, EPOLL_CTL_DEL, s->pool_fd, NULL);
	close(s->pool_fd);
	s->pool_fd = -1;
	statedir_file(path, sizeof(path), s->vm->dir, STATEDIR_POOL_ACQUIRED);
	if (access(path, F_OK) == 0)
		return;
	s->remove_at_exit = true;
	stop_vm(s);
}

/* Watch the VM's DNS forwarder, if it has one: nothing else restarts it when it dies. */
static void watch_forwarder(struct sup *s)
{
	int fd = net_forwarder_fd(&s->vm->net);

	if (fd >= 0)
		vm__ep_add(s->vm->epfd, fd, EPOLLIN, EV_DNS);
}

static void restart_forwarder(struct sup *s)
{
	struct avm_error err = { 0 }; /* its reason goes to dnsmasq.log */

	if (net_forwarder_restart(&s->vm->net, &err) == 0) {
		net_save(&s->vm->net, s->vm->dir); /* teardown elsewhere finds the new pid */
		watch_forwarder(s);
	}
}

/*
 * The forwarder died (killed, crashed, OOM): the guest's names stop resolving and no new
 * address reaches its set. Start it again, at once the first time, with a growing delay when
 * it keeps dying, and not after NET_DNS_MAX_RESTARTS quick failures in a row (net.c logs one
 * line to dnsmasq.log each time).
 */
static void on_forwarder_exit(struct sup *s)
{
	int fd = net_forwarder_fd(&s->vm->net);
	int delay;

	epoll_ctl(s->vm->epfd, EPOLL_CTL_DEL, fd, NULL);
	delay = net_forwarder_exited(&s->vm->net);
	if (delay == 0) {
		restart_forwarder(s);
	} else if (delay > 0) {
		struct itimerspec it = { .it_value = { .tv_sec = delay / 1000,
						       .tv_nsec = (long)(delay % 1000) * 1000000 } };
		if (s->dns_timer < 0) {
			s->dns_timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
			if (s->dns_timer >= 0 &&
			    vm__ep_add(s->vm->epfd, s->dns_timer, EPOLLIN, EV_DNS_TIMER) < 0) {
				close(s->dns_timer);
				s->dns_timer = -1;
			}
		}
		if (s->dns_timer < 0 || timerfd_settime(s->dns_timer, 0, &it, NULL) < 0)
			restart_forwarder(s); /* no timer: at once rather than never */
	} else {
		net_save(&s->vm->net, s->vm->dir); /* no forwarder any more */
	}
}

static void on_forwarder_timer(struct sup *s)
{
	uint64_t ticks;

	(void)!read(s->dns_timer, &ticks, sizeof(ticks));
	restart_forwarder(s);
}

static void serve(struct sup *s)
{
	struct epoll_event evs[16];

	watch_forwarder(s);
	for (;;) {
		int n = epoll_wait(s->vm->epfd, evs, ARRAY_SIZE(evs), -1);
		if (n < 0 && errno != EINTR)
			return;
		for (int i = 0; i < n; i++) {
			uint32_t tag = evs[i].data.u32;
			if (tag == EV_PIDFD) {
				record_exit(s);
				return;
			} else if (tag == EV_QMP || tag == EV_CONSOLE) {
				vm__pump_qemu(s->vm, tag, NULL);
			} else if (tag == EV_AGENT) {
				if (evs[i].events & EPOLLOUT) {
					agent_conn_flush(&s->vm->agent);
					vm__agent_want_out(s->vm);
					clients_flow(s);
				}
				/* Paused (a client is behind): a hang-up waits too; the pidfd
				 * tells when QEMU is gone. */
				if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
				    !s->vm->agent_in_paused)
					pump_guest(s);
			} else if (tag == EV_LISTEN) {
				accept_client(s);
			} else if (tag == EV_SIG) {
				on_signal(s);
			} else if (tag == EV_POOL) {
				on_pool_gone(s);
			} else if (tag == EV_DNS) {
				on_forwarder_exit(s);
			} else if (tag == EV_DNS_TIMER) {
				on_forwarder_timer(s);
			} else if (monitor_owns(s->mon, tag)) {
				monitor_event(s->mon, tag);
			} else if (tag >= EV_CLIENT0 && tag < EV_CLIENT0 + MAX_CLIENTS) {
				if (s->clients[tag - EV_CLIENT0].used)
					pump_client(s, (int)(tag - EV_CLIENT0), evs[i].events);
			}
		}
	}
}

static void notify(int fd, const char *msg)
{
	(void)!write(fd, msg, strlen(msg));
	close(fd);
}

/*
 * An fd readable when the start must be abandoned (an epoll set is pollable), for waits that take
 * one fd to abort on: a stop signal (sig_fd), the pool's exit (pool_fd) or the starting CLI's
 * exit (notify_fd, our end of its pipe, reports EPOLLERR once its reader is gone: a `start`
 * killed before READY must not leave a VM whose name nobody was told). sig_fd alone when there
 * is no epoll.
 */
static int abort_fd(int sig_fd, int pool_fd, int notify_fd)
{
	struct epoll_event ev = { .events = 0, .data.u32 = EV_NOTIFY };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		return sig_fd;
	if (vm__ep_add(ep, sig_fd, EPOLLIN, EV_SIG) < 0 ||
	    (pool_fd >= 0 && vm__ep_add(ep, pool_fd, EPOLLIN, EV_POOL) < 0) ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, notify_fd, &ev) < 0) {
		close(ep);
		return sig_fd;
	}
	return ep;
}

/* Runs in the daemonised grandchild. Never returns. */
static void supervisor_main(const struct vm_launch_opts *o, int boot_timeout_ms, int notify_fd)
{
	struct sup s = { .listen_fd = -1, .sig_fd = -1, .pool_fd = -1, .dns_timer = -1 };
	struct avm_error err = { 0 };
	char msg[sizeof(err.msg) + 32], path[PATH_MAX];
	int r, wait_fd;

	s.sig_fd = daemon_signalfd(SFD_NONBLOCK);
	if (o->pool_pidfd > 0) {
		struct pollfd pf = { .fd = o->pool_pidfd, .events = POLLIN };
		s.pool_fd = o->pool_pidfd;
		/* Its worker outlived serve: a VM for nobody, do not even start it. */
		if (poll(&pf, 1, 0) != 0) {
			snprintf(msg, sizeof(msg), "ERR %d the pool that asked for this VM is gone",
				 ESRCH);
			notify(notify_fd, msg);
			_exit(1);
		}
	}

	r = vm_launch(o, &s.vm, &err);
	if (r == 0) {
		s.vm->keep_state = false; /* until READY: a failed start leaves nothing */
		statedir_file(path, sizeof(path), s.vm->dir, STATEDIR_EVENTS);
		s.events = fopen(path, "ae");
		qmp_client_add_event_listener(s.vm->qmp, on_event, &s);
		if (s.pool_fd >= 0) {
			statedir_file(path, sizeof(path), s.vm->dir, STATEDIR_POOL_VM);
			if ((r = write_file_atomic(path, "", 0)) < 0)
				avm_error_setx(&err, r, "cannot write %s", path);
		}
		/* A restore under way when serve dies stops at once, like a signal. */
		wait_fd = abort_fd(s.sig_fd, s.pool_fd, notify_fd);
		if (r == 0)
			r = vm_wait_ready(s.vm, boot_timeout_ms, wait_fd, &err);
		if (wait_fd != s.sig_fd)
			close(wait_fd);
	}
	if (r == 0 && (r = listen_agent(&s)) < 0)
		avm_error_setx(&err, r, "cannot listen on the agent socket");
	if (r == 0 && vm__ep_add(s.vm->epfd, s.sig_fd, EPOLLIN, EV_SIG) < 0)
		r = avm_error_setx(&err, -errno, "epoll");
	if (r == 0 && s.pool_fd >= 0 && vm__ep_add(s.vm->epfd, s.pool_fd, EPOLLIN, EV_POOL) < 0)
		r = avm_error_setx(&err, -errno, "epoll");
	if (r < 0) {
		snprintf(msg, sizeof(msg), "ERR %d %s", -r, err.msg);
		if (s.events)
			fclose(s.events);
		vm_destroy(s.vm);
		notify(notify_fd, msg);
		_exit(1);
	}
	s.vm->keep_state = true;
	notify(notify_fd, "OK");
	release_boot_heap();
	s.mon = monitor_new(s.vm, o->spec->cpus, o->spec->memory_mib, s.vm->epfd, EV_MONITOR0);
	serve(&s);
	monitor_free(s.mon);
	if (s.remove_at_exit)
		s.vm->keep_state = false;
	if (s.events)
		fclose(s.events);
	if (s.listen_fd >= 0)
		close(s.listen_fd);
	for (int i = 0; i < MAX_CLIENTS; i++)
		client_close(&s, i);
	vm_destroy(s.vm);
	_exit(0);
}

int supervisor_start(const struct vm_launch_opts *o, int boot_timeout_ms, pid_t *supervisor_pid,
		     struct avm_error *err)
{
	int p[2];
	char buf[sizeof(err->msg) + 32];
	pid_t child;
	ssize_t n;
	size_t len = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return avm_error_setx(err, -errno, "pipe");
	child = fork();
	if (child < 0) {
		close(p[0]);
		close(p[1]);
		return avm_error_setx(err, -errno, "fork");
	}
	if (child == 0) {
		/* Double fork + setsid: the supervisor is nobody's child and has no terminal. */
		close(p[0]);
		if (setsid() < 0)
			_exit(1);
		pid_t gc = fork();
		if (gc < 0)
			_exit(1);
		if (gc > 0)
			_exit(0);
		/* One writer on the pipe: our pid first, then OK or ERR when the guest is up. */
		char pidmsg[32];
		int m = snprintf(pidmsg, sizeof(pidmsg), "PID %d\n", (int)getpid());
		(void)!write(p[1], pidmsg, (size_t)m);
		/* Nothing the caller passed down stays open (a CI runner's pipes, make's jobserver):
		 * `X=$(agentvm start 3>&1)` must return at READY, not when the VM ends. */
		int keep[2] = { p[1], o->pool_pidfd };
		if (close_fds_except(keep, o->pool_pidfd > 0 ? 2 : 1) < 0)
			_exit(1);
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
		}
		if (chdir("/") < 0)
			_exit(1);
		supervisor_main(o, boot_timeout_ms, p[1]);
	}
	close(p[1]);
	waitpid(child, NULL, 0);
	while (len < sizeof(buf) - 1 && (n = read(p[0], buf + len, sizeof(buf) - 1 - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)n;
	}
	close(p[0]);
	buf[len] = '\0';
	char *line2 = strchr(buf, '\n');
	if (strncmp(buf, "PID ", 4) != 0 || !line2)
		return avm_error_set(err, -EIO, "the supervisor died before reporting");
	*supervisor_pid = (pid_t)atoi(buf + 4);
	line2++;
	if (!strncmp(line2, "OK", 2))
		return 0;
	if (!strncmp(line2, "ERR ", 4)) {
		char *sp = strchr(line2 + 4, ' ');
		return avm_error_set(err, -atoi(line2 + 4), "%s", sp ? sp + 1 : "start failed");
	}
	return avm_error_set(err, -EIO, "the supervisor died while starting the VM");
}
