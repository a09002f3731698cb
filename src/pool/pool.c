/* SPDX-License-Identifier: MIT */
/*
 * The pool daemon's loop (see pool.h for the protocol). Restores and removals run in forked
 * workers (pool_vm.c), so the loop (epoll + timerfd + signalfd, one thread) always answers at
 * once: an acquire with a ready VM is one round trip. Every second the loop checks that its
 * VMs' processes live (a dead one is removed and replaced) and PINGs one ready VM's agent
 * (one that misses PING_MISSES in a row is replaced); ready VMs older than the TTL are
 * replaced. Connections idle for CONN_IDLE_MS without a request are closed.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "obs/audit.h"
#include "jail/launcher.h"
#include "obs/metrics.h"
#include "report/metrics_render.h"
#include "report/metrics_http.h"
#include "pool/pool_internal.h"
#include "snapshot/snapshot.h"
#include "base/util.h"

#define PING_MISSES 3 /* the message in tick() says 3 */
#define CONN_IDLE_MS 10000

/* Consecutive PINGs the ready VM in each slot did not answer (a busy guest may miss one). */
static unsigned char ping_misses[MAX_VMS];

int pool_ep_add(int ep, int fd, uint32_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

void pool_log(const char *fmt, ...)
{
	va_list ap;
	char ts[64], msg[2048];

	snap_time_ny(time(NULL), ts, sizeof(ts));
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	avm_log("%s agentvm serve: %s\n", ts, msg);
}

void pool_count(const struct pool *p, int *starting, int *ready, int *leased)
{
	*starting = *ready = *leased = 0;
	for (int i = 0; i < MAX_VMS; i++) {
		*starting += p->vms[i].state == PVM_STARTING;
		*ready += p->vms[i].state == PVM_READY;
		*leased += p->vms[i].state == PVM_LEASED;
	}
}

int pool_waiters(const struct pool *p)
{
	int n = 0;
	for (int i = 0; i < MAX_CONNS; i++)
		n += p->conns[i].used && p->conns[i].waiting;
	return n;
}

void pool_refill(struct pool *p)
{
	int starting, ready, leased;

	if (p->stopping || now_ms() < p->backoff_until_ms)
		return;
	pool_count(p, &starting, &ready, &leased);
	long want = p->min - (ready + starting);
	long w = pool_waiters(p) - ready - starting;
	if (w > want)
		want = w;
	long room = p->max - (starting + ready + leased);
	if (want > room)
		want = room;
	if (want > 0)
		audit_vm_int("pool.refill", NULL, "count", want);
	for (long i = 0; i < want; i++)
		pool_vm_spawn(p);
}

void pool_lease_end(struct pool *p, const char *name)
{
	audit_vm("pool.release", name);
	for (int i = 0; i < MAX_VMS; i++) {
		if (p->vms[i].state == PVM_LEASED && !strcmp(p->vms[i].name, name)) {
			pool_drop_vm(p, i, "its run is over");
			pool_refill(p);
			return;
		}
	}
	/* No longer counted (it stopped under the run: tick()); still ours to remove. */
	pool_log("removing %s: its run is over", name);
	pool_vm_destroy(p, name);
}

void pool_drop_vm(struct pool *p, int i, const char *why)
{
	pool_log("removing %s: %s", p->vms[i].name, why);
	pool_vm_destroy(p, p->vms[i].name);
	p->vms[i].state = PVM_FREE;
}

/* Hand ready VMs to waiting acquirers, oldest waiter first, oldest VM first. */
void pool_serve_waiters(struct pool *p)
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
		if (!pool_vm_alive(p->vms[v].name)) { /* died since the last health check */
			pool_drop_vm(p, v, "died");
			pool_refill(p);
			continue;
		}
		struct conn *c = &p->conns[w];
		if (c->run) {
			/*
			 * A run's lease, not marked acquired: should we die, the VM's supervisor stops
			 * and removes it (the run's command then ends with it) rather than leave a VM
			 * that nobody would remove once the run is over.
			 */
			_Static_assert(sizeof(c->lease) == sizeof(p->vms[v].name), "lease holds a name");
			/* A client gone before it heard the name never got the VM: it stays ready. */
			if (pool_reply_keep(p, w, "OK %s", p->vms[v].name) == 0) {
				memcpy(c->lease, p->vms[v].name, sizeof(c->lease));
				c->waiting = false;
				p->vms[v].state = PVM_LEASED;
				audit_vm("pool.acquire", p->vms[v].name);
			}
			continue;
		}
		/*
		 * Marked before the answer: should we die right after it, the VM's supervisor must
		 * know it is the caller's now (and stop it otherwise). Dying between the two leaves
		 * a running VM nobody heard of rather than a caller whose VM vanishes.
		 */
		int r = pool_vm_mark_acquired(p->vms[v].name, true);
		if (r < 0) {
			char why[128];
			snprintf(why, sizeof(why), "cannot mark it acquired: %s", strerror(-r));
			pool_drop_vm(p, v, why);
			pool_refill(p);
			continue;
		}
		if (pool_reply(p, w, "OK %s", p->vms[v].name) == 0) {
			p->vms[v].state = PVM_LEASED;
			audit_vm("pool.acquire", p->vms[v].name);
		} else {
			/* A client gone before it heard the name never got the VM: keep it ready. */
			pool_vm_mark_acquired(p->vms[v].name, false);
		}
	}
}

static void worker_done(struct pool *p, int slot)
{
	struct pvm *v = &p->vms[slot];
	const char *msg = p->worker_msgs[slot];

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
		ping_misses[slot] = 0;
		p->failures = 0;
		if (p->stopping)
			pool_drop_vm(p, slot, "shutting down");
		else
			pool_serve_waiters(p);
	} else {
		pool_log("restore of %s failed: %s", v->name, msg[0] ? msg : "worker died");
		/* A worker killed halfway may leave a VM its supervisor went on to start. */
		pool_vm_destroy(p, v->name);
		v->state = PVM_FREE;
		/* Do not spin on a broken snapshot: back off up to 10 s. */
		p->failures++;
		p->refill_failures++;
		p->backoff_until_ms = now_ms() + (p->failures > 10 ? 10000 : 1000u * p->failures);
	}
	pool_refill(p);
}

static void tick(struct pool *p)
{
	uint64_t t;
	(void)!read(p->timer_fd, &t, sizeof(t));
	uint64_t now = now_ms();

	for (int i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &p->conns[i];
		if (c->used && c->waiting && now >= c->deadline_ms)
			pool_reply(p, i, "ERR TIMEOUT no VM became free in time (the pool has %ld at most)",
			      p->max);
		else if (c->used && !c->waiting && !c->lease[0] && now - c->since_ms > CONN_IDLE_MS)
			pool_reply(p, i, "ERR no request for %d s; closing", CONN_IDLE_MS / 1000);
	}
	/* Waiter deadlines every 100 ms; the health check once a second. */
	if (++p->ticks % 10 != 0)
		return;
	int ready_idx[MAX_VMS], n_ready = 0;
	for (int i = 0; i < MAX_VMS; i++) {
		struct pvm *v = &p->vms[i];
		if (v->state != PVM_READY && v->state != PVM_LEASED)
			continue;
		if (!pool_vm_alive(v->name)) {
			if (v->state == PVM_LEASED) {
				/* The caller's VM (it may be mid-reset): stop counting it, touch nothing. */
				pool_log("%s, acquired, is gone or stopped: no longer counted", v->name);
				v->state = PVM_FREE;
			} else {
				pool_drop_vm(p, i, "died");
			}
			continue;
		}
		if (v->state == PVM_READY && p->ttl_s > 0 &&
		    now - v->ready_ms > (uint64_t)p->ttl_s * 1000) {
			pool_drop_vm(p, i, "older than the TTL");
			continue;
		}
		if (v->state == PVM_READY)
			ready_idx[n_ready++] = i;
	}
	/* One agent PING per tick, round robin over the ready VMs. */
	if (n_ready > 0) {
		int i = ready_idx[p->ping_rr++ % (unsigned)n_ready];
		if (pool_vm_ping(p->vms[i].name))
			ping_misses[i] = 0;
		else if (++ping_misses[i] >= PING_MISSES)
			pool_drop_vm(p, i, "its agent did not answer 3 PINGs in a row");
		else
			pool_log("%s: its agent did not answer PING (%d in a row)", p->vms[i].name,
				 ping_misses[i]);
	}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		; /* destroy workers */
	pool_refill(p);
}

/* GET /metrics from serve itself: the pool's numbers from memory (its socket is ours). */
static int render_metrics(FILE *f, void *ctx)
{
	struct pool *p = ctx;
	struct metrics_pool mp = { .present = true, .refill_failures = p->refill_failures };
	int starting, ready, leased;

	pool_count(p, &starting, &ready, &leased);
	mp.ready = ready;
	mp.starting = starting;
	mp.acquired = leased;
	mp.waiting = pool_waiters(p);
	return metrics_render(f, &mp, NULL);
}

/* Block the stop signals into a signalfd, start the 100 ms timer, and put both on the loop. */
static void loop_setup(struct pool *p)
{
	struct itimerspec its = { .it_interval = { 0, 100000000 }, .it_value = { 0, 100000000 } };

	p->sig_fd = daemon_signalfd(0);
	p->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	timerfd_settime(p->timer_fd, 0, &its, NULL);
	p->ep = epoll_create1(EPOLL_CLOEXEC);
	pool_ep_add(p->ep, p->listen_fd, TAG_LISTEN);
	pool_ep_add(p->ep, p->sig_fd, TAG_SIG);
	pool_ep_add(p->ep, p->timer_fd, TAG_TIMER);
}

/* Stopping: remove the ready VMs, refuse waiters; done once no restore is under way. */
static bool drained(struct pool *p)
{
	int starting, ready, leased;

	for (int i = 0; i < MAX_VMS; i++)
		if (p->vms[i].state == PVM_READY)
			pool_drop_vm(p, i, "shutting down");
	for (int i = 0; i < MAX_CONNS; i++)
		if (p->conns[i].used)
			pool_reply(p, i, "ERR the pool is shutting down");
	pool_count(p, &starting, &ready, &leased);
	return starting == 0;
}

static int serve(const struct pool_opts *o, struct avm_error *err)
{
	static struct pool pool;
	struct pool *p = &pool;
	int r;

	p->snap = o->snap;
	p->min = o->min;
	p->max = o->max;
	p->ttl_s = o->ttl_s;
	p->boot_timeout_s = o->boot_timeout_s;
	p->listen_fd = p->sig_fd = p->timer_fd = -1;
	if (o->pod || o->run) {
		/* A spec that does not fit (its flags together) fails here, not in every refill. */
		if ((r = pool_pod_prepare(p, o, err)) < 0)
			return r;
	} else {
		if ((r = restore_prepare(p->snap, &p->rs, err)) < 0)
			return r;
		p->rs.net_override = o->net_override;
		p->rs.net_mode_given = o->net_mode_given;
		p->rs.policy_given = o->policy_given;
		/* Flags that do not fit the snapshot fail here, once, not in every refill. */
		if ((r = restore_check_override(&p->rs, err)) < 0) {
			restore_release(&p->rs);
			return r;
		}
	}
	p->worker_msgs = mmap(NULL, (size_t)MAX_VMS * MSG_LEN, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p->worker_msgs == MAP_FAILED) {
		restore_release(&p->rs);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	/* Kept by every pool VM's supervisor: our exit, even by kill -9, is an event there. */
	p->self_pidfd = pidfd_open_cloexec(getpid());
	if (p->self_pidfd < 0) {
		restore_release(&p->rs);
		return avm_error_setx(err, p->self_pidfd, "pidfd_open");
	}
	if (o->metrics_listen &&
	    (r = metrics_http_start(o->metrics_listen, render_metrics, p, &p->http, err)) < 0) {
		close(p->self_pidfd);
		restore_release(&p->rs);
		return r;
	}
	if ((r = pool_listen(p, err)) < 0) {
		metrics_http_free(TAKE_PTR(p->http));
		close(p->self_pidfd);
		restore_release(&p->rs);
		return r;
	}
	loop_setup(p);
	if (p->http) {
		pool_ep_add(p->ep, metrics_http_fd(p->http), TAG_METRICS);
		pool_log("metrics on http://%s/metrics", metrics_http_address(p->http));
	}
	pool_log("serving pool of %s%s%s (min %ld, max %ld, ttl %ld s) on %s",
		 p->snap ? "'" : p->run ? "VMs for agentvm run" : "pod VMs", p->snap ? p->snap : "",
		 p->snap ? "'" : "", p->min, p->max, p->ttl_s, p->sock_path);
	if (p->pod_spec && !p->run && (r = pool_pod_janitor(p)) < 0)
		pool_log("cannot fork the janitor (%s): a kill -9 may leave pod directories "
			 "(the next serve removes them)", strerror(-r));
	pool_vm_adopt(p);
	pool_refill(p);

	for (;;) {
		struct epoll_event evs[32];
		int n = epoll_wait(p->ep, evs, 32, p->stopping ? 100 : -1);
		for (int i = 0; i < n; i++) {
			uint32_t tag = evs[i].data.u32;
			if (tag == TAG_LISTEN)
				pool_accept(p);
			else if (tag == TAG_SIG) {
				struct signalfd_siginfo si;
				(void)!read(p->sig_fd, &si, sizeof(si));
				p->stopping = true;
			} else if (tag == TAG_TIMER) {
				tick(p);
				if (p->http) /* connections that timed out */
					metrics_http_run(p->http);
			} else if (tag == TAG_METRICS)
				metrics_http_run(p->http);
			else if (tag >= TAG_CONN && tag < TAG_CONN + MAX_CONNS)
				pool_conn_read(p, (int)(tag - TAG_CONN));
			else if (tag >= TAG_WORKER && tag < TAG_WORKER + MAX_VMS)
				worker_done(p, (int)(tag - TAG_WORKER));
		}
		if (p->stopping && drained(p))
			break;
	}
	pool_log("stopped (acquired VMs stay with their callers)");
	metrics_http_free(TAKE_PTR(p->http));
	unlink(p->sock_path);
	while (wait(NULL) > 0)
		; /* the destroy workers */
	restore_release(&p->rs);
	return 0;
}

int pool_serve(const struct pool_opts *o, struct avm_error *err)
{
	int r = serve(o, err);

	/* A pool that cannot serve (its snapshot, a flag that does not fit it, the socket) is a
	   refusal, not a crash: only running out of memory is internal. */
	if (r < 0 && r != -ENOMEM && err->kind != AVM_ERR_INTERRUPTED)
		avm_error_kind(err, AVM_ERR_STATE, r);
	return r;
}
