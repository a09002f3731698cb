/* SPDX-License-Identifier: MIT */
/*
 * The warm pool: `agentvm serve --pool SNAP` keeps min..max VMs restored from a snapshot and
 * hands them out over a Unix socket (<state root>/.pool.sock, one line per request and reply):
 *   ACQUIRE <timeout_ms>  ->  OK <name> | ERR <message>
 *   RELEASE <name>        ->  OK | ERR <message>
 *   STATUS                ->  one line of JSON
 * Restores and removals run in forked workers, so the loop (epoll + timerfd + signalfd, one
 * thread) always answers at once: an acquire with a ready VM is one round trip. An acquired VM
 * belongs to the caller until `pool release` (it still counts towards max). Every second the
 * loop checks that its VMs' processes live (a dead one is removed and replaced) and PINGs one
 * ready VM's agent; ready VMs older than the TTL are replaced.
 */
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent_conn.h"
#include "cli.h"
#include "launcher.h"
#include "restore.h"
#include "statedir.h"
#include "util.h"
#include "vmstate.h"

#define POOL_SOCK ".pool.sock"
#define MAX_VMS 256
#define MAX_CONNS 128
#define TAG_LISTEN 1u
#define TAG_SIG 2u
#define TAG_TIMER 3u
#define TAG_WORKER 0x10000u /* + vm slot */
#define TAG_CONN 0x20000u   /* + conn slot */

enum pvm_state { PVM_FREE = 0, PVM_STARTING, PVM_READY, PVM_LEASED };

struct pvm {
	enum pvm_state state;
	char name[STATEDIR_MAX_NAME + 1];
	uint64_t ready_ms; /* monotonic */
	pid_t worker;
	int worker_fd; /* pidfd of the restore worker */
};

/*
 * A worker's result message lives in memory shared with the daemon, not in a pipe: the
 * supervisor the worker forks would inherit a pipe and hold it open forever.
 */
#define MSG_LEN 1100
static char (*worker_msgs)[MSG_LEN];

struct conn {
	bool used;
	int fd;
	char in[512];
	size_t in_len;
	bool waiting; /* an ACQUIRE waiting for a VM */
	uint64_t deadline_ms;
	uint64_t since_ms;
};

struct pool {
	const char *snap;
	struct restore rs;
	long min, max, ttl_s, boot_timeout_s;
	int ep, listen_fd, sig_fd, timer_fd;
	struct pvm vms[MAX_VMS];
	struct conn conns[MAX_CONNS];
	unsigned ping_rr;
	unsigned ticks;
	unsigned failures; /* consecutive restore failures: back off */
	uint64_t backoff_until_ms;
	bool stopping;
	char sock_path[PATH_MAX];
};

static int ep_add(int ep, int fd, uint32_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void plog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void plog(const char *fmt, ...)
{
	va_list ap;
	char ts[64];

	snap_time_ny(time(NULL), ts, sizeof(ts));
	fprintf(stderr, "%s agentvm serve: ", ts);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* In a forked worker: keep stdio and `keep`, close everything else the daemon holds. */
static void worker_fds(int keep)
{
	if (keep >= 0 && keep != 3) {
		dup2(keep, 3);
		close(keep);
	}
	syscall(SYS_close_range, keep >= 0 ? 4U : 3U, ~0U, 0);
}

static void destroy_async(const char *name)
{
	pid_t p = fork();

	if (p == 0) {
		char *av[] = { "rm", "--force", (char *)name, NULL };
		int nul = open("/dev/null", O_WRONLY);
		worker_fds(-1);
		if (nul >= 0)
			dup2(nul, 2);
		_exit(cmd_rm(3, av));
	}
}

static void count(const struct pool *p, int *starting, int *ready, int *leased)
{
	*starting = *ready = *leased = 0;
	for (int i = 0; i < MAX_VMS; i++) {
		*starting += p->vms[i].state == PVM_STARTING;
		*ready += p->vms[i].state == PVM_READY;
		*leased += p->vms[i].state == PVM_LEASED;
	}
}

static void spawn_restore(struct pool *p)
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
	worker_msgs[slot][0] = '\0';
	pid_t pid = fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		struct avm_error err = { 0 };
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		worker_fds(-1);
		int r = restore_one(&p->rs, v->name, p->boot_timeout_s, &err);
		snprintf(worker_msgs[slot], MSG_LEN, "%s", r < 0 ? err.msg : "OK");
		_exit(r < 0 ? 1 : 0);
	}
	v->state = PVM_STARTING;
	v->worker = pid;
	v->worker_fd = pidfd_open_cloexec(pid);
	if (v->worker_fd >= 0)
		ep_add(p->ep, v->worker_fd, TAG_WORKER + (uint32_t)slot);
}

static int waiters(const struct pool *p)
{
	int n = 0;
	for (int i = 0; i < MAX_CONNS; i++)
		n += p->conns[i].used && p->conns[i].waiting;
	return n;
}

static void refill(struct pool *p)
{
	int starting, ready, leased;

	if (p->stopping || now_ms() < p->backoff_until_ms)
		return;
	count(p, &starting, &ready, &leased);
	long want = p->min - (ready + starting);
	long w = waiters(p) - ready - starting;
	if (w > want)
		want = w;
	long room = p->max - (starting + ready + leased);
	if (want > room)
		want = room;
	for (long i = 0; i < want; i++)
		spawn_restore(p);
}

static void conn_close(struct pool *p, int slot)
{
	struct conn *c = &p->conns[slot];

	if (!c->used)
		return;
	epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	memset(c, 0, sizeof(*c));
}

static void reply(struct pool *p, int slot, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply(struct pool *p, int slot, const char *fmt, ...)
{
	char buf[65536];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	write_all(p->conns[slot].fd, buf, (size_t)n);
	conn_close(p, slot);
}

static bool vm_alive(const char *name)
{
	char dir[PATH_MAX];
	struct vm_state st;

	snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), name);
	if (vmstate_read(dir, &st, NULL) < 0)
		return false;
	vmstate_effective(dir, &st);
	return !strcmp(st.state, "running");
}

static void drop_vm(struct pool *p, int i, const char *why);
static void refill(struct pool *p);

/* Hand ready VMs to waiting acquirers, oldest waiter first, oldest VM first. */
static void serve_waiters(struct pool *p)
{
	for (;;) {
		int w = -1, v = -1;
		for (int i = 0; i < MAX_CONNS; i++)
			if (p->conns[i].used && p->conns[i].waiting &&
			    (w < 0 || p->conns[i].since_ms < p->conns[w].since_ms))
				w = i;
		if (w < 0)
			return;
		for (int i = 0; i < MAX_VMS; i++)
			if (p->vms[i].state == PVM_READY &&
			    (v < 0 || p->vms[i].ready_ms < p->vms[v].ready_ms))
				v = i;
		if (v < 0)
			return;
		if (!vm_alive(p->vms[v].name)) { /* died since the last health check */
			drop_vm(p, v, "died");
			refill(p);
			continue;
		}
		p->vms[v].state = PVM_LEASED;
		reply(p, w, "OK %s", p->vms[v].name);
	}
}

static void drop_vm(struct pool *p, int i, const char *why)
{
	plog("removing %s: %s", p->vms[i].name, why);
	destroy_async(p->vms[i].name);
	p->vms[i].state = PVM_FREE;
}

static void status_json(struct pool *p, int slot)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
	int starting, ready, leased;
	static const char *const names[] = { "free", "starting", "ready", "leased" };

	count(p, &starting, &ready, &leased);
	json_object_object_add(o, "snapshot", json_object_new_string(p->snap));
	json_object_object_add(o, "min", json_object_new_int64(p->min));
	json_object_object_add(o, "max", json_object_new_int64(p->max));
	json_object_object_add(o, "ttl_s", json_object_new_int64(p->ttl_s));
	json_object_object_add(o, "ready", json_object_new_int(ready));
	json_object_object_add(o, "starting", json_object_new_int(starting));
	json_object_object_add(o, "leased", json_object_new_int(leased));
	json_object_object_add(o, "waiting", json_object_new_int(waiters(p)));
	for (int i = 0; i < MAX_VMS; i++) {
		if (p->vms[i].state == PVM_FREE)
			continue;
		struct json_object *v = json_object_new_object();
		json_object_object_add(v, "name", json_object_new_string(p->vms[i].name));
		json_object_object_add(v, "state", json_object_new_string(names[p->vms[i].state]));
		json_object_object_add(
			v, "age_s",
			json_object_new_double(p->vms[i].ready_ms ?
						       (double)(now_ms() - p->vms[i].ready_ms) / 1000 :
						       0));
		json_object_array_add(arr, v);
	}
	json_object_object_add(o, "vms", arr);
	reply(p, slot, "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

static void handle_line(struct pool *p, int slot, char *line)
{
	struct conn *c = &p->conns[slot];

	if (!strncmp(line, "ACQUIRE", 7)) {
		long ms = 0;
		if (line[7] == ' ' && parse_long(line + 8, 0, 86400000, &ms) < 0)
			ms = 0;
		c->waiting = true;
		c->since_ms = now_ms();
		c->deadline_ms = c->since_ms + (uint64_t)ms;
		serve_waiters(p);
		if (c->used && c->waiting)
			refill(p); /* below max: one more for this caller */
	} else if (!strncmp(line, "RELEASE ", 8)) {
		for (int i = 0; i < MAX_VMS; i++) {
			if (p->vms[i].state == PVM_LEASED && !strcmp(p->vms[i].name, line + 8)) {
				drop_vm(p, i, "released");
				reply(p, slot, "OK");
				refill(p);
				return;
			}
		}
		reply(p, slot, "ERR '%s' is not a VM acquired from this pool", line + 8);
	} else if (!strcmp(line, "STATUS")) {
		status_json(p, slot);
	} else {
		reply(p, slot, "ERR unknown request");
	}
}

static void conn_read(struct pool *p, int slot)
{
	struct conn *c = &p->conns[slot];
	ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len);

	if (n <= 0) {
		conn_close(p, slot); /* an acquirer that gave up */
		return;
	}
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	char *nl = strchr(c->in, '\n');
	if (!nl) {
		if (c->in_len >= sizeof(c->in) - 1)
			reply(p, slot, "ERR request too long");
		return;
	}
	*nl = '\0';
	handle_line(p, slot, c->in);
}

static void accept_conn(struct pool *p)
{
	int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CONNS; i++) {
		if (p->conns[i].used)
			continue;
		p->conns[i] = (struct conn){ .used = true, .fd = fd };
		ep_add(p->ep, fd, TAG_CONN + (uint32_t)i);
		return;
	}
	close(fd);
}

static void worker_done(struct pool *p, int slot)
{
	struct pvm *v = &p->vms[slot];
	const char *msg = worker_msgs[slot];

	epoll_ctl(p->ep, EPOLL_CTL_DEL, v->worker_fd, NULL);
	close(v->worker_fd);
	v->worker_fd = -1;
	int st = 0;
	waitpid(v->worker, &st, 0);
	if (v->state != PVM_STARTING)
		return;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && !strcmp(msg, "OK")) {
		v->state = PVM_READY;
		v->ready_ms = now_ms();
		p->failures = 0;
		if (p->stopping)
			drop_vm(p, slot, "shutting down");
		else
			serve_waiters(p);
	} else {
		plog("restore of %s failed: %s", v->name, msg[0] ? msg : "worker died");
		v->state = PVM_FREE;
		/* Do not spin on a broken snapshot: back off up to 10 s. */
		p->failures++;
		p->backoff_until_ms = now_ms() + (p->failures > 10 ? 10000 : 1000u * p->failures);
	}
	refill(p);
}

static bool ping_vm(const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct agent_conn c;
	bool ok = false;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s/agent.sock", statedir_root(), name);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true; /* our problem, not the VM's */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return false;
	}
	agent_conn_init(&c, fd);
	agent_conn_send(&c, AVM_MSG_PING, 1, "hc", 2);
	for (uint64_t end = now_ms() + 2000; !ok && now_ms() < end;) {
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

static void tick(struct pool *p)
{
	uint64_t t;
	(void)!read(p->timer_fd, &t, sizeof(t));
	uint64_t now = now_ms();

	for (int i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &p->conns[i];
		if (c->used && c->waiting && now >= c->deadline_ms)
			reply(p, i, "ERR TIMEOUT no VM became free in time (the pool has %ld at most)",
			      p->max);
	}
	/* Waiter deadlines every 100 ms; the health check once a second. */
	if (++p->ticks % 10 != 0)
		return;
	int ready_idx[MAX_VMS], n_ready = 0;
	for (int i = 0; i < MAX_VMS; i++) {
		struct pvm *v = &p->vms[i];
		if (v->state != PVM_READY && v->state != PVM_LEASED)
			continue;
		if (!vm_alive(v->name)) {
			drop_vm(p, i, v->state == PVM_LEASED ? "died while acquired" : "died");
			continue;
		}
		if (v->state == PVM_READY && p->ttl_s > 0 &&
		    now - v->ready_ms > (uint64_t)p->ttl_s * 1000) {
			drop_vm(p, i, "older than the TTL");
			continue;
		}
		if (v->state == PVM_READY)
			ready_idx[n_ready++] = i;
	}
	/* One agent PING per tick, round robin over the ready VMs. */
	if (n_ready > 0) {
		int i = ready_idx[p->ping_rr++ % (unsigned)n_ready];
		if (!ping_vm(p->vms[i].name))
			drop_vm(p, i, "its agent did not answer PING");
	}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		; /* destroy workers */
	refill(p);
}

static int listen_sock(struct pool *p, struct avm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int r = mkdir_p(statedir_root(), 0700);

	if (r < 0)
		return avm_error_setx(err, r, "cannot create %s", statedir_root());
	snprintf(p->sock_path, sizeof(p->sock_path), "%s/%s", statedir_root(), POOL_SOCK);
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->sock_path) >=
	    (int)sizeof(sa.sun_path))
		return avm_error_set(err, -ENAMETOOLONG, "socket path too long");
	p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->listen_fd < 0)
		return avm_error_setx(err, -errno, "socket");
	/* A live daemon answers; a stale socket file does not. */
	if (connect(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		p->sock_path[0] = '\0';
		return avm_error_set(err, -EADDRINUSE,
				     "a pool is already serving in %s (see 'agentvm pool status')",
				     statedir_root());
	}
	close(p->listen_fd);
	p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(sa.sun_path);
	if (bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(p->listen_fd, 128) < 0)
		return avm_error_setx(err, -errno, "cannot listen on %s", sa.sun_path);
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pool", required_argument, NULL, 'p' },
		{ "pool-min", required_argument, NULL, 'm' },
		{ "pool-max", required_argument, NULL, 'M' },
		{ "pool-ttl", required_argument, NULL, 't' },
		{ "boot-timeout", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct pool pool;
	struct pool *p = &pool;
	struct avm_error err = { 0 };
	int c;

	p->min = 1;
	p->max = 4;
	p->boot_timeout_s = CLI_DEFAULT_BOOT_TIMEOUT_S;
	p->listen_fd = p->sig_fd = p->timer_fd = -1;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		long *slot = c == 'm' ? &p->min : c == 'M' ? &p->max : c == 't' ? &p->ttl_s :
			     c == 'b' ? &p->boot_timeout_s : NULL;
		if (c == 'p') {
			p->snap = optarg;
		} else if (slot) {
			if (parse_long(optarg, 0, c == 't' ? 30 * 86400 : MAX_VMS, slot) < 0) {
				cli_error("'%s' is not a valid value for %s", optarg,
					  argv[optind - 1]);
				return EXIT_USAGE;
			}
		} else if (c == 'h') {
			puts("usage: agentvm serve --pool SNAPSHOT [--pool-min N] [--pool-max M] "
			     "[--pool-ttl SECONDS]\n"
			     "Keep N..M VMs restored from SNAPSHOT ready for 'agentvm pool acquire'.");
			return 0;
		} else {
			cli_error("unknown or incomplete option '%s'; see 'agentvm serve --help'",
				  argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (!p->snap || optind != argc) {
		cli_error("usage: agentvm serve --pool SNAPSHOT --pool-min N --pool-max M "
			  "[--pool-ttl S]");
		return EXIT_USAGE;
	}
	if (p->max < 1 || p->min > p->max) {
		cli_error("--pool-min (%ld) must not exceed --pool-max (%ld), and max must be >= 1",
			  p->min, p->max);
		return EXIT_USAGE;
	}
	if (restore_prepare(p->snap, &p->rs, &err) < 0) {
		cli_error("%s", err.msg);
		return 1;
	}
	worker_msgs = mmap(NULL, (size_t)MAX_VMS * MSG_LEN, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (worker_msgs == MAP_FAILED) {
		cli_error("out of memory");
		restore_release(&p->rs);
		return EXIT_INTERNAL;
	}
	if (listen_sock(p, &err) < 0) {
		cli_error("%s", err.msg);
		restore_release(&p->rs);
		return 1;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	p->sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
	p->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec its = { .it_interval = { 0, 100000000 }, .it_value = { 0, 100000000 } };
	timerfd_settime(p->timer_fd, 0, &its, NULL);
	p->ep = epoll_create1(EPOLL_CLOEXEC);
	ep_add(p->ep, p->listen_fd, TAG_LISTEN);
	ep_add(p->ep, p->sig_fd, TAG_SIG);
	ep_add(p->ep, p->timer_fd, TAG_TIMER);
	plog("serving pool of '%s' (min %ld, max %ld, ttl %ld s) on %s", p->snap, p->min, p->max,
	     p->ttl_s, p->sock_path);
	refill(p);

	for (;;) {
		struct epoll_event evs[32];
		int n = epoll_wait(p->ep, evs, 32, p->stopping ? 100 : -1);
		for (int i = 0; i < n; i++) {
			uint32_t tag = evs[i].data.u32;
			if (tag == TAG_LISTEN)
				accept_conn(p);
			else if (tag == TAG_SIG) {
				struct signalfd_siginfo si;
				(void)!read(p->sig_fd, &si, sizeof(si));
				p->stopping = true;
			} else if (tag == TAG_TIMER)
				tick(p);
			else if (tag >= TAG_CONN && tag < TAG_CONN + MAX_CONNS)
				conn_read(p, (int)(tag - TAG_CONN));
			else if (tag >= TAG_WORKER && tag < TAG_WORKER + MAX_VMS)
				worker_done(p, (int)(tag - TAG_WORKER));
		}
		if (p->stopping) {
			int starting, ready, leased;
			for (int i = 0; i < MAX_VMS; i++)
				if (p->vms[i].state == PVM_READY)
					drop_vm(p, i, "shutting down");
			for (int i = 0; i < MAX_CONNS; i++)
				if (p->conns[i].used)
					reply(p, i, "ERR the pool is shutting down");
			count(p, &starting, &ready, &leased);
			if (starting == 0)
				break;
		}
	}
	plog("stopped (acquired VMs stay with their callers)");
	unlink(p->sock_path);
	while (wait(NULL) > 0)
		; /* the destroy workers */
	restore_release(&p->rs);
	return 0;
}

/* --- client ---------------------------------------------------------------------------------- */

static int pool_request(const char *req, char *out, size_t len, struct avm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t got = 0;
	ssize_t n;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", statedir_root(), POOL_SOCK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return avm_error_set(err, -ECONNREFUSED,
				     "no pool is serving in %s; start one with 'agentvm serve --pool "
				     "SNAPSHOT ...'",
				     statedir_root());
	if (write_all(fd, req, strlen(req)) < 0)
		return avm_error_setx(err, -errno, "writing to the pool");
	while (got < len - 1 && (n = read(fd, out + got, len - 1 - got)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return avm_error_setx(err, -errno, "reading from the pool");
		}
		got += (size_t)n;
		if (memchr(out, '\n', got))
			break;
	}
	out[got] = '\0';
	char *nl = strchr(out, '\n');
	if (!nl)
		return avm_error_set(err, -EPIPE, "the pool closed the connection");
	*nl = '\0';
	return 0;
}

int cmd_pool(int argc, char **argv)
{
	struct avm_error err = { 0 };
	static char buf[1 << 20];
	char req[256];

	if (argc >= 2 && !strcmp(argv[1], "acquire")) {
		long timeout_s = 30;
		if (argc == 4 && !strcmp(argv[2], "--timeout")) {
			if (parse_long(argv[3], 0, 86400, &timeout_s) < 0) {
				cli_error("--timeout '%s' is not a number of seconds", argv[3]);
				return EXIT_USAGE;
			}
		} else if (argc != 2) {
			cli_error("usage: agentvm pool acquire [--timeout SECONDS]");
			return EXIT_USAGE;
		}
		snprintf(req, sizeof(req), "ACQUIRE %ld\n", timeout_s * 1000);
	} else if (argc == 3 && !strcmp(argv[1], "release")) {
		if (statedir_validate_name(argv[2], &err) < 0) {
			cli_error("%s", err.msg);
			return EXIT_USAGE;
		}
		snprintf(req, sizeof(req), "RELEASE %s\n", argv[2]);
	} else if (argc >= 2 && !strcmp(argv[1], "status") &&
		   (argc == 2 || (argc == 3 && !strcmp(argv[2], "--json")))) {
		snprintf(req, sizeof(req), "STATUS\n");
	} else {
		cli_error("usage: agentvm pool acquire [--timeout S] | release NAME | status [--json]");
		return EXIT_USAGE;
	}
	if (pool_request(req, buf, sizeof(buf), &err) < 0) {
		cli_error("%s", err.msg);
		return 1;
	}
	if (!strncmp(buf, "ERR ", 4)) {
		bool to = !strncmp(buf + 4, "TIMEOUT ", 8);
		cli_error("%s", buf + (to ? 12 : 4));
		return to ? EXIT_TIMEOUT : 1;
	}
	if (req[0] == 'A') {
		puts(buf + 3);
	} else if (req[0] == 'S') {
		struct json_object *o = json_tokener_parse(buf), *v;
		if (argc == 3 || !o) {
			puts(o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
									  JSON_C_TO_STRING_SPACED)
			       : buf);
		} else {
			int r = 0, s = 0, l = 0;
			if (json_object_object_get_ex(o, "ready", &v))
				r = json_object_get_int(v);
			if (json_object_object_get_ex(o, "starting", &v))
				s = json_object_get_int(v);
			if (json_object_object_get_ex(o, "leased", &v))
				l = json_object_get_int(v);
			json_object_object_get_ex(o, "snapshot", &v);
			printf("pool of '%s': %d ready, %d starting, %d acquired\n",
			       json_object_get_string(v), r, s, l);
		}
		json_object_put(o);
	}
	return 0;
}
