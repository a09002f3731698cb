/* SPDX-License-Identifier: MIT */
/*
 * The pool's socket: connections, one request line each (ACQUIRE, RELEASE, STATUS; see
 * pool.h), one reply line, then the connection closes. An ACQUIRE with no ready VM waits (the
 * loop answers it when one is ready or its deadline passes). A connection beyond MAX_CONNS is
 * told so and closed; one idle too long without a request is closed by the loop (tick). A run's
 * ACQUIRE (with the run pool's key) is answered on a connection that stays open: it is the
 * lease, and its end, however the run ends, removes the VM (pool_lease_end()).
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "obs/audit.h"
#include "pool/pool_internal.h"
#include "base/util.h"

static void conn_close(struct pool *p, int slot)
{
	struct conn *c = &p->conns[slot];

	char lease[sizeof(c->lease)];

	if (!c->used)
		return;
	epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	memcpy(lease, c->lease, sizeof(lease));
	memset(c, 0, sizeof(*c));
	if (lease[0])
		pool_lease_end(p, lease);
}

static int vreply(struct pool *p, int slot, bool keep, const char *fmt, va_list ap)
{
	char buf[65536];
	int n, r;

	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	if (n < 0)
		n = snprintf(buf, sizeof(buf), "ERR internal formatting error");
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	r = write_all(p->conns[slot].fd, buf, (size_t)n);
	if (!keep || r < 0)
		conn_close(p, slot);
	return r;
}

int pool_reply(struct pool *p, int slot, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vreply(p, slot, false, fmt, ap);
	va_end(ap);
	return r;
}

int pool_reply_keep(struct pool *p, int slot, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vreply(p, slot, true, fmt, ap);
	va_end(ap);
	return r;
}


static void status_json(struct pool *p, int slot)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
	int starting, ready, leased;
	static const char *const names[] = { "free", "starting", "ready", "leased" };

	pool_count(p, &starting, &ready, &leased);
	json_object_object_add(o, "snapshot", p->snap ? json_object_new_string(p->snap) : NULL);
	json_object_object_add(o, "pod", json_object_new_boolean(p->pod_spec && !p->run));
	json_object_object_add(o, "run", json_object_new_boolean(p->run));
	json_object_object_add(o, "min", json_object_new_int64(p->min));
	json_object_object_add(o, "max", json_object_new_int64(p->max));
	json_object_object_add(o, "ttl_s", json_object_new_int64(p->ttl_s));
	json_object_object_add(o, "ready", json_object_new_int(ready));
	json_object_object_add(o, "starting", json_object_new_int(starting));
	json_object_object_add(o, "leased", json_object_new_int(leased));
	json_object_object_add(o, "waiting", json_object_new_int(pool_waiters(p)));
	json_object_object_add(o, "refill_failures",
			       json_object_new_int64((int64_t)p->refill_failures));
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
	pool_reply(p, slot, "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

static void handle_line(struct pool *p, int slot, char *line)
{
	struct conn *c = &p->conns[slot];

	if (!strncmp(line, "ACQUIRE", 7)) {
		char *key = line[7] == ' ' ? strchr(line + 8, ' ') : NULL;
		long ms = 0;
		if (key)
			*key++ = '\0';
		if (line[7] == ' ' && parse_long(line + 8, 0, 86400000, &ms) < 0)
			ms = 0;
		if (key && (!p->run || strcmp(key, p->run_key) != 0)) {
			pool_reply(p, slot, "ERR MISMATCH this pool's VMs are not what the run asks "
					    "for (serve --pool-run with the run's flags)");
			return;
		}
		c->run = key != NULL;
		c->waiting = true;
		c->since_ms = now_ms();
		c->deadline_ms = c->since_ms + (uint64_t)ms;
		pool_serve_waiters(p);
		/* A run does not wait: it boots by itself when no VM is ready now. */
		if (c->used && c->waiting && ms == 0)
			pool_reply(p, slot, "ERR TIMEOUT no VM is ready");
		if (!c->used || c->waiting || c->lease[0])
			pool_refill(p); /* below max: one more for this caller */
	} else if (!strncmp(line, "RELEASE ", 8)) {
		for (int i = 0; i < MAX_VMS; i++) {
			if (p->vms[i].state == PVM_LEASED && !strcmp(p->vms[i].name, line + 8)) {
				audit_vm("pool.release", p->vms[i].name);
				pool_drop_vm(p, i, "released");
				pool_reply(p, slot, "OK");
				pool_refill(p);
				return;
			}
		}
		pool_reply(p, slot, "ERR '%s' is not a VM acquired from this pool", line + 8);
	} else if (!strcmp(line, "STATUS")) {
		status_json(p, slot);
	} else {
		pool_reply(p, slot, "ERR unknown request");
	}
}

void pool_conn_read(struct pool *p, int slot)
{
	struct conn *c = &p->conns[slot];
	ssize_t n;

	if (c->lease[0]) { /* a run's lease: nothing more to read, only its end */
		char junk[256];
		if (read(c->fd, junk, sizeof(junk)) <= 0)
			conn_close(p, slot);
		return;
	}
	n = read(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len);
	if (n <= 0) {
		conn_close(p, slot); /* an acquirer that gave up */
		return;
	}
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	if (!c->waiting)
		c->since_ms = now_ms(); /* the idle clock (a waiter's is its place in the queue) */
	char *nl = strchr(c->in, '\n');
	if (!nl) {
		if (c->in_len >= sizeof(c->in) - 1)
			pool_reply(p, slot, "ERR request too long");
		return;
	}
	*nl = '\0';
	handle_line(p, slot, c->in);
}

void pool_accept(struct pool *p)
{
	int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CONNS; i++) {
		if (p->conns[i].used)
			continue;
		p->conns[i] = (struct conn){ .used = true, .fd = fd, .since_ms = now_ms() };
		pool_ep_add(p->ep, fd, TAG_CONN + (uint32_t)i);
		return;
	}
	/* A new socket's send buffer is empty: this short line does not block. */
	dprintf(fd, "ERR too many connections (%d); try again\n", MAX_CONNS);
	close(fd);
}

int pool_listen(struct pool *p, struct avm_error *err)
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
