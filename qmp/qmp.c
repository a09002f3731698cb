// SPDX-License-Identifier: MIT
/*
 * qmp.c - non-blocking QMP client: framing, dispatch, timeouts, fd passing.
 *
 * Data flow: qmp_client_send() serialises a command into an output chunk (struct qmp_out) and a
 * pending-reply record (struct qmp_cmd). Chunks are written in order; a chunk that carries fds
 * sends them with its first byte. Input is accumulated in one buffer, cut at '\n' and each line
 * parsed on its own, so a malformed or truncated line never swallows the next good one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"
#include "qmp_internal.h"

#define QMP_READ_CHUNK (64u << 10)
#define QMP_JSON_DEPTH 64
/* Bytes kept from both ends of an oversize line to recover its "id". */
#define QMP_EDGE      96
#define QMP_ID_PREFIX "avm-"

struct qmp_list {
	struct qmp_list *prev, *next;
};

#define qmp_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void list_init(struct qmp_list *h)
{
	h->prev = h->next = h;
}

static bool list_empty(const struct qmp_list *h)
{
	return h->next == h;
}

static void list_add_tail(struct qmp_list *h, struct qmp_list *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static void list_add_head(struct qmp_list *h, struct qmp_list *n)
{
	list_add_tail(h->next, n);
}

static void list_del(struct qmp_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* Move every entry of src to the tail of dst, leaving src empty. */
static void list_splice_tail(struct qmp_list *dst, struct qmp_list *src)
{
	while (!list_empty(src)) {
		struct qmp_list *n = src->next;

		list_del(n);
		list_add_tail(dst, n);
	}
}

struct qmp_cmd;

struct qmp_out {
	struct qmp_list link;
	struct qmp_cmd *owner; /* NULL once the command completed while its bytes were half out */
	char *buf;
	size_t len, off;
	int fds[QMP_MAX_FDS]; /* our dups; closed once handed to the kernel */
	size_t nfds;
	bool held; /* queued before negotiation: not written until READY */
};

struct qmp_cmd {
	struct qmp_list link;
	uint64_t id;
	char name[48];	     /* for error context only, may be truncated */
	int64_t deadline_ns; /* CLOCK_MONOTONIC, 0 = none */
	int timeout_ms;
	qmp_reply_cb cb;
	void *opaque;
	struct qmp_out *out; /* non-NULL until its bytes are completely written */
};

enum qmp_state {
	QMP_ST_GREETING,
	QMP_ST_NEGOTIATING,
	QMP_ST_READY,
	QMP_ST_DEAD,
};

struct qmp_client {
	int fd; /* -1: detached (tests, fuzzing) */
	enum qmp_state state;
	int dead_code;
	struct qmp_error dead_err;
	int write_err; /* fatal write error not yet turned into DEAD by process() */
	int busy;      /* > 0 while a callback runs */

	struct qmp_list cmds; /* struct qmp_cmd, in send order */
	struct qmp_list outs; /* struct qmp_out, in write order; held ones form the tail */
	uint64_t next_id;

	struct qmp_listener {
		qmp_event_cb cb; /* NULL: removed (the slot is reused once no dispatch runs) */
		void *opaque;
	} ev[QMP_MAX_LISTENERS];
	size_t n_ev;

	struct json_tokener *tok;
	char *in;
	size_t in_len, in_cap;
	size_t scanned; /* in[0..scanned) holds no '\n' */

	size_t max_msg;	 /* QMP_MAX_MESSAGE, lowered only by tests and the fuzzer */
	bool discarding; /* inside an oversize line: drop until '\n' */
	size_t discard_len;
	char head[QMP_EDGE], tail[QMP_EDGE];
	size_t head_len, tail_len;

	bool greeted, have_version;
	int ver_major, ver_minor, ver_micro;

	/* first non-fatal error during the current process()/feed() */
	int soft_code;
	struct qmp_error soft_err;

	struct qmp_client_stats st;
};

static int set_err(struct qmp_error *err, int code, const char *klass, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int set_err(struct qmp_error *err, int code, const char *klass, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	err->code = code;
	snprintf(err->klass, sizeof(err->klass), "%s", klass ? klass : "");
	va_start(ap, fmt);
	vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
	va_end(ap);
	return code;
}

static void copy_err(struct qmp_error *dst, const struct qmp_error *src)
{
	if (dst && src)
		*dst = *src;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool is_fatal(int rc)
{
	return rc < 0 && rc != -EBADMSG && rc != -EMSGSIZE;
}

int qmp_error_class_to_errno(const char *klass)
{
	static const struct {
		const char *klass;
		int code;
	} map[] = {
		{ "GenericError", -EIO },	  { "CommandNotFound", -ENOSYS },
		{ "DeviceNotFound", -ENODEV },	  { "DeviceNotActive", -ENXIO },
		{ "KVMMissingCap", -EOPNOTSUPP },
	};

	for (size_t i = 0; klass && i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(klass, map[i].klass))
			return map[i].code;
	return -EIO;
}

/* ---- output ---------------------------------------------------------------------------- */

static void out_free(struct qmp_out *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->nfds; i++)
		close(o->fds[i]);
	free(o->buf);
	free(o);
}

static void out_remove(struct qmp_out *o)
{
	if (o->owner)
		o->owner->out = NULL;
	list_del(&o->link);
	out_free(o);
}

/*
 * Detach a completed command from its output. Bytes not yet started are dropped (QEMU never
 * sees the command); a half-written chunk must still go out whole, or the stream is corrupt.
 */
static void cmd_detach_out(struct qmp_cmd *cmd)
{
	struct qmp_out *o = cmd->out;

	if (!o)
		return;
	cmd->out = NULL;
	o->owner = NULL;
	if (o->off == 0) {
		list_del(&o->link);
		out_free(o);
	}
}

static bool has_writable_output(const struct qmp_client *c)
{
	if (c->state == QMP_ST_DEAD || c->write_err || list_empty(&c->outs))
		return false;
	return !qmp_container_of(c->outs.next, struct qmp_out, link)->held;
}

/* Write what the socket takes. 0 (maybe with output left) or a fatal -errno. No callbacks. */
static int write_out(struct qmp_client *c)
{
	while (has_writable_output(c)) {
		struct qmp_out *o = qmp_container_of(c->outs.next, struct qmp_out, link);
		union {
			char buf[CMSG_SPACE(sizeof(int) * QMP_MAX_FDS)];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = { .iov_base = o->buf + o->off, .iov_len = o->len - o->off };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (c->fd < 0) {
			/* Detached (fuzzing): output vanishes as if the peer read it at once. */
			out_remove(o);
			continue;
		}
		if (o->nfds) {
			struct cmsghdr *cm;

			memset(&ctl, 0, sizeof(ctl));
			msg.msg_control = ctl.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * o->nfds);
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * o->nfds);
			memcpy(CMSG_DATA(cm), o->fds, sizeof(int) * o->nfds);
		}
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		if (o->nfds) {
			/* The kernel holds its own references now; ours are done. */
			for (size_t i = 0; i < o->nfds; i++)
				close(o->fds[i]);
			o->nfds = 0;
		}
		o->off += (size_t)n;
		if (o->off == o->len)
			out_remove(o);
	}
	return 0;
}

static int do_flush(struct qmp_client *c, struct qmp_error *err)
{
	int rc;

	if (c->state == QMP_ST_DEAD)
		return copy_err(err, &c->dead_err), c->dead_code;
	if (c->write_err)
		return set_err(err, c->write_err, "", "write to QMP socket failed: %s",
			       strerror(-c->write_err));
	rc = write_out(c);
	if (rc < 0) {
		c->write_err = rc;
		return set_err(err, rc, "", "write to QMP socket failed: %s", strerror(-rc));
	}
	return 0;
}

/* ---- commands -------------------------------------------------------------------------- */

static void cmd_complete(struct qmp_client *c, struct qmp_cmd *cmd, int status,
			 struct json_object *ret, const struct qmp_error *e)
{
	cmd_detach_out(cmd);
	if (cmd->cb) {
		c->busy++;
		cmd->cb(cmd->opaque, status, status < 0 ? NULL : ret, status < 0 ? e : NULL);
		c->busy--;
	}
	free(cmd);
}

/* Complete every command on `list` (already unlinked from the client) with code. */
static void fail_list(struct qmp_client *c, struct qmp_list *list, int code, const char *why)
{
	while (!list_empty(list)) {
		struct qmp_cmd *cmd = qmp_container_of(list->next, struct qmp_cmd, link);
		struct qmp_error e;

		list_del(&cmd->link);
		set_err(&e, code, "", "%s (" QMP_ID_PREFIX "%llu): %s", cmd->name,
			(unsigned long long)cmd->id, why);
		cmd_complete(c, cmd, code, NULL, &e);
	}
}

/*
 * The connection is over (EOF, reset, write error, failed negotiation). Every pending command
 * completes with cmd_code; later calls return code with *e.
 */
static void go_dead(struct qmp_client *c, int code, int cmd_code, const struct qmp_error *e)
{
	struct qmp_list doomed;

	if (c->state == QMP_ST_DEAD)
		return;
	c->state = QMP_ST_DEAD;
	c->dead_code = code;
	c->dead_err = *e;
	while (!list_empty(&c->outs))
		out_remove(qmp_container_of(c->outs.next, struct qmp_out, link));
	list_init(&doomed);
	list_splice_tail(&doomed, &c->cmds);
	fail_list(c, &doomed, cmd_code, e->desc);
}

static int queue_cmd(struct qmp_client *c, const char *cmd, struct json_object *args,
		     const int *fds, size_t nfds, int timeout_ms, qmp_reply_cb cb, void *opaque,
		     bool front, struct qmp_error *err)
{
	struct json_object *req;
	struct qmp_cmd *pc;
	struct qmp_out *o;
	char idbuf[32];
	const char *text;
	size_t len;

	pc = calloc(1, sizeof(*pc));
	o = calloc(1, sizeof(*o));
	req = json_object_new_object();
	if (!pc || !o || !req)
		goto nomem;
	snprintf(idbuf, sizeof(idbuf), QMP_ID_PREFIX "%llu", (unsigned long long)c->next_id);
	if (json_object_object_add(req, "execute", json_object_new_string(cmd)) < 0 ||
	    (args && json_object_object_add(req, "arguments", json_object_get(args)) < 0) ||
	    json_object_object_add(req, "id", json_object_new_string(idbuf)) < 0)
		goto nomem;
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
							   JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text)
		goto nomem;
	len = strlen(text);
	o->buf = malloc(len + 1);
	if (!o->buf)
		goto nomem;
	memcpy(o->buf, text, len);
	o->buf[len] = '\n';
	o->len = len + 1;
	json_object_put(req);
	req = NULL;

	for (size_t i = 0; i < nfds; i++) {
		int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);

		if (d < 0) {
			int rc = -errno;

			set_err(err, rc, "", "%s: cannot dup fd %d: %s", cmd, fds[i],
				strerror(errno));
			out_free(o);
			free(pc);
			return rc;
		}
		o->fds[o->nfds++] = d;
	}

	pc->id = c->next_id++;
	snprintf(pc->name, sizeof(pc->name), "%s", cmd);
	pc->timeout_ms = timeout_ms;
	pc->deadline_ns = timeout_ms > 0 ? now_ns() + (int64_t)timeout_ms * 1000000 : 0;
	pc->cb = cb;
	pc->opaque = opaque;
	pc->out = o;
	o->owner = pc;
	o->held = c->state != QMP_ST_READY && !front;
	list_add_tail(&c->cmds, &pc->link);
	if (front)
		list_add_head(&c->outs, &o->link);
	else
		list_add_tail(&c->outs, &o->link);
	c->st.commands_sent++;
	return 0;

nomem:
	json_object_put(req);
	out_free(o);
	free(pc);
	return set_err(err, -ENOMEM, "", "%s: out of memory", cmd ? cmd : "?");
}

int qmp_client_send(struct qmp_client *c, const char *cmd, struct json_object *args, const int *fds,
		    size_t nfds, int timeout_ms, qmp_reply_cb cb, void *opaque,
		    struct qmp_error *err)
{
	int rc;

	if (!c || !cmd || !*cmd || timeout_ms < 0 || nfds > QMP_MAX_FDS || (nfds && !fds) ||
	    (args && !json_object_is_type(args, json_type_object)))
		return set_err(err, -EINVAL, "", "%s: invalid arguments", cmd ? cmd : "(null)");
	if (!strcmp(cmd, "qmp_capabilities"))
		return set_err(err, -EINVAL, "",
			       "qmp_capabilities is sent by the client itself after the greeting");
	if (c->state == QMP_ST_DEAD) {
		copy_err(err, &c->dead_err);
		return c->dead_code;
	}
	if (c->write_err)
		return set_err(err, c->write_err, "", "%s: QMP connection broken: %s", cmd,
			       strerror(-c->write_err));
	rc = queue_cmd(c, cmd, args, fds, nfds, timeout_ms, cb, opaque, false, err);
	if (rc < 0)
		return rc;
	/* A write failure here is reported to the callback by the next process(). */
	do_flush(c, NULL);
	return 0;
}

int qmp_client_flush(struct qmp_client *c, struct qmp_error *err)
{
	if (!c)
		return set_err(err, -EINVAL, "", "no client");
	return do_flush(c, err);
}

static struct qmp_cmd *find_sent_cmd(struct qmp_client *c, uint64_t id)
{
	for (struct qmp_list *n = c->cmds.next; n != &c->cmds; n = n->next) {
		struct qmp_cmd *cmd = qmp_container_of(n, struct qmp_cmd, link);

		/* QEMU cannot answer what it has not seen: unsent commands never match. */
		if (cmd->id == id)
			return (!cmd->out || cmd->out->off > 0) ? cmd : NULL;
	}
	return NULL;
}

/* Remove a command without calling its callback (the blocking helpers' safety net). */
static void cancel_cmd(struct qmp_client *c, uint64_t id)
{
	for (struct qmp_list *n = c->cmds.next; n != &c->cmds; n = n->next) {
		struct qmp_cmd *cmd = qmp_container_of(n, struct qmp_cmd, link);

		if (cmd->id == id) {
			list_del(&cmd->link);
			cmd_detach_out(cmd);
			free(cmd);
			return;
		}
	}
}

static void expire(struct qmp_client *c)
{
	struct qmp_list doomed;
	int64_t now = now_ns();

	list_init(&doomed);
	for (struct qmp_list *n = c->cmds.next, *next; n != &c->cmds; n = next) {
		struct qmp_cmd *cmd = qmp_container_of(n, struct qmp_cmd, link);

		next = n->next;
		if (cmd->deadline_ns && cmd->deadline_ns <= now) {
			list_del(&cmd->link);
			list_add_tail(&doomed, &cmd->link);
		}
	}
	while (!list_empty(&doomed)) {
		struct qmp_cmd *cmd = qmp_container_of(doomed.next, struct qmp_cmd, link);
		struct qmp_error e;

		list_del(&cmd->link);
		set_err(&e, -ETIMEDOUT, "", "%s (" QMP_ID_PREFIX "%llu): no reply within %d ms",
			cmd->name, (unsigned long long)cmd->id, cmd->timeout_ms);
		c->st.timeouts++;
		cmd_complete(c, cmd, -ETIMEDOUT, NULL, &e);
	}
}

/* ---- input ----------------------------------------------------------------------------- */

static void soft_error(struct qmp_client *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void soft_error(struct qmp_client *c, int code, const char *fmt, ...)
{
	va_list ap;

	if (code == -EMSGSIZE)
		c->st.oversize_messages++;
	else
		c->st.bad_messages++;
	if (c->soft_code)
		return;
	c->soft_code = code;
	c->soft_err.code = code;
	c->soft_err.klass[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(c->soft_err.desc, sizeof(c->soft_err.desc), fmt, ap);
	va_end(ap);
}

/* "avm-<digits>" -> id; anything else (ids we never send) -> false. */
static bool parse_id(const char *s, size_t n, uint64_t *id)
{
	size_t plen = strlen(QMP_ID_PREFIX);
	uint64_t v = 0;

	if (n <= plen || n > plen + 20 || memcmp(s, QMP_ID_PREFIX, plen))
		return false;
	for (size_t i = plen; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*id = v;
	return true;
}

static void cap_done(void *opaque, int status, struct json_object *ret, const struct qmp_error *e)
{
	struct qmp_client *c = opaque;
	struct qmp_error de;

	(void)ret;
	if (status == 0) {
		c->state = QMP_ST_READY;
		for (struct qmp_list *n = c->outs.next; n != &c->outs; n = n->next)
			qmp_container_of(n, struct qmp_out, link)->held = false;
		do_flush(c, NULL);
		return;
	}
	if (status == -ECANCELED)
		return; /* the client is being freed */
	set_err(&de, -EPROTO, e ? e->klass : "", "capabilities negotiation failed: %s",
		e ? e->desc : "?");
	go_dead(c, -EPROTO, -EPROTO, &de);
}

static void handle_greeting(struct qmp_client *c, struct json_object *msg)
{
	struct json_object *qmp, *ver, *qemu, *v;
	int nums[3];
	static const char *const keys[3] = { "major", "minor", "micro" };
	bool ok = true;

	if (c->state != QMP_ST_GREETING) {
		soft_error(c, -EBADMSG, "unexpected second QMP greeting");
		return;
	}
	json_object_object_get_ex(msg, "QMP", &qmp);
	if (!json_object_is_type(qmp, json_type_object)) {
		soft_error(c, -EBADMSG, "malformed QMP greeting");
		return;
	}
	c->greeted = true;
	if (json_object_object_get_ex(qmp, "version", &ver) &&
	    json_object_object_get_ex(ver, "qemu", &qemu)) {
		for (int i = 0; i < 3; i++) {
			if (!json_object_object_get_ex(qemu, keys[i], &v) ||
			    !json_object_is_type(v, json_type_int)) {
				ok = false;
				break;
			}
			nums[i] = json_object_get_int(v);
		}
		if (ok) {
			c->have_version = true;
			c->ver_major = nums[0];
			c->ver_minor = nums[1];
			c->ver_micro = nums[2];
		}
	}
	c->state = QMP_ST_NEGOTIATING;
	if (queue_cmd(c, "qmp_capabilities", NULL, NULL, 0, 0, cap_done, c, true, NULL) < 0) {
		struct qmp_error e;

		set_err(&e, -ENOMEM, "", "out of memory queueing qmp_capabilities");
		go_dead(c, -ENOMEM, -ENOMEM, &e);
		return;
	}
	/* Out at once, not after the rest of this read: a fast peer may answer within it. */
	do_flush(c, NULL);
}

static void handle_reply(struct qmp_client *c, struct json_object *msg)
{
	struct json_object *idv, *ev, *ret, *k, *d;
	struct qmp_cmd *cmd;
	struct qmp_error e;
	uint64_t id;

	if (!json_object_object_get_ex(msg, "id", &idv) ||
	    !json_object_is_type(idv, json_type_string) ||
	    !parse_id(json_object_get_string(idv), (size_t)json_object_get_string_len(idv), &id) ||
	    !(cmd = find_sent_cmd(c, id))) {
		c->st.unknown_replies++;
		return;
	}
	list_del(&cmd->link);
	c->st.replies++;
	if (json_object_object_get_ex(msg, "error", &ev)) {
		if (json_object_is_type(ev, json_type_object) &&
		    json_object_object_get_ex(ev, "class", &k) &&
		    json_object_is_type(k, json_type_string)) {
			const char *desc = "";

			if (json_object_object_get_ex(ev, "desc", &d) &&
			    json_object_is_type(d, json_type_string))
				desc = json_object_get_string(d);
			set_err(&e, qmp_error_class_to_errno(json_object_get_string(k)),
				json_object_get_string(k), "%s", desc);
		} else {
			set_err(&e, -EBADMSG, "",
				"%s (" QMP_ID_PREFIX "%llu): malformed error reply", cmd->name,
				(unsigned long long)id);
		}
		cmd_complete(c, cmd, e.code, NULL, &e);
		return;
	}
	json_object_object_get_ex(msg, "return", &ret);
	cmd_complete(c, cmd, 0, ret, NULL);
}

static void handle_event(struct qmp_client *c, struct json_object *msg, struct json_object *name)
{
	struct json_object *data = NULL, *ts, *v;
	int64_t sec = -1, usec = -1;

	json_object_object_get_ex(msg, "data", &data);
	if (json_object_object_get_ex(msg, "timestamp", &ts)) {
		if (json_object_object_get_ex(ts, "seconds", &v) &&
		    json_object_is_type(v, json_type_int))
			sec = json_object_get_int64(v);
		if (json_object_object_get_ex(ts, "microseconds", &v) &&
		    json_object_is_type(v, json_type_int))
			usec = json_object_get_int64(v);
	}
	c->st.events++;
	/* n fixed before the loop: a listener added by a listener waits for the next event. */
	for (size_t i = 0, n = c->n_ev; i < n; i++) {
		if (!c->ev[i].cb)
			continue;
		c->busy++;
		c->ev[i].cb(c->ev[i].opaque, json_object_get_string(name), data, sec, usec);
		c->busy--;
	}
}

static void handle_message(struct qmp_client *c, struct json_object *msg)
{
	struct json_object *v;

	if (json_object_object_get_ex(msg, "QMP", NULL))
		handle_greeting(c, msg);
	else if (json_object_object_get_ex(msg, "event", &v) &&
		 json_object_is_type(v, json_type_string))
		handle_event(c, msg, v);
	else if (json_object_object_get_ex(msg, "return", NULL) ||
		 json_object_object_get_ex(msg, "error", NULL))
		handle_reply(c, msg);
	else
		soft_error(c, -EBADMSG, "JSON object that is not a QMP message dropped");
}

static void handle_line(struct qmp_client *c, const char *p, size_t n)
{
	struct json_object *msg;
	enum json_tokener_error jerr;

	while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (!n)
		return; /* blank lines are harmless */
	if (memchr(p, '\0', n)) {
		soft_error(c, -EBADMSG, "malformed QMP message: NUL byte");
		return;
	}
	json_tokener_reset(c->tok);
	msg = json_tokener_parse_ex(c->tok, p, (int)n);
	jerr = json_tokener_get_error(c->tok);
	if (!msg) {
		soft_error(c, -EBADMSG, "malformed QMP message: %s",
			   jerr == json_tokener_continue ? "truncated JSON"
							 : json_tokener_error_desc(jerr));
		return;
	}
	if (json_tokener_get_parse_end(c->tok) != n) {
		soft_error(c, -EBADMSG, "malformed QMP message: trailing bytes after JSON");
	} else if (!json_object_is_type(msg, json_type_object)) {
		soft_error(c, -EBADMSG, "malformed QMP message: not a JSON object");
	} else {
		handle_message(c, msg);
	}
	json_object_put(msg);
}

static void skip_ws_fwd(const char *s, size_t n, size_t *i)
{
	while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\r'))
		(*i)++;
}

static bool match_fwd(const char *s, size_t n, size_t *i, const char *lit)
{
	size_t l = strlen(lit);

	if (n - *i < l || memcmp(s + *i, lit, l))
		return false;
	*i += l;
	return true;
}

/*
 * Find the "id" of an oversize reply from its first and last bytes. QEMU writes the id as a
 * top-level member, first or last; requiring it directly after the opening brace or directly
 * before the closing one keeps ids nested inside the payload from matching.
 */
static bool edge_id(const struct qmp_client *c, uint64_t *id)
{
	const char *s = c->head;
	size_t n = c->head_len, i = 0, j;

	skip_ws_fwd(s, n, &i);
	if (match_fwd(s, n, &i, "{")) {
		skip_ws_fwd(s, n, &i);
		if (match_fwd(s, n, &i, "\"id\"")) {
			skip_ws_fwd(s, n, &i);
			if (match_fwd(s, n, &i, ":")) {
				skip_ws_fwd(s, n, &i);
				if (match_fwd(s, n, &i, "\"")) {
					j = i;
					while (j < n && s[j] != '"')
						j++;
					if (j < n && parse_id(s + i, j - i, id))
						return true;
				}
			}
		}
	}

	/* backwards from the end: ... "id" : "avm-N" } */
	s = c->tail;
	n = c->tail_len;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		n--;
	if (!n || s[n - 1] != '}')
		return false;
	n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (!n || s[n - 1] != '"')
		return false;
	j = --n; /* s[j] is the closing quote */
	while (n && s[n - 1] != '"')
		n--;
	if (!n || !parse_id(s + n, j - n, id))
		return false;
	n--; /* opening quote */
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (!n || s[n - 1] != ':')
		return false;
	n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n >= 4 && !memcmp(s + n - 4, "\"id\"", 4);
}

static void tail_append(struct qmp_client *c, const char *p, size_t n)
{
	if (n >= QMP_EDGE) {
		memcpy(c->tail, p + n - QMP_EDGE, QMP_EDGE);
		c->tail_len = QMP_EDGE;
		return;
	}
	if (c->tail_len + n > QMP_EDGE) {
		size_t drop = c->tail_len + n - QMP_EDGE;

		memmove(c->tail, c->tail + drop, c->tail_len - drop);
		c->tail_len -= drop;
	}
	memcpy(c->tail + c->tail_len, p, n);
	c->tail_len += n;
}

static void discard_begin(struct qmp_client *c, const char *p, size_t n)
{
	c->discarding = true;
	c->discard_len = n;
	c->head_len = n < QMP_EDGE ? n : QMP_EDGE;
	memcpy(c->head, p, c->head_len);
	c->tail_len = 0;
	tail_append(c, p, n);
}

static void discard_end(struct qmp_client *c)
{
	struct qmp_cmd *cmd = NULL;
	uint64_t id;

	c->discarding = false;
	if (edge_id(c, &id))
		cmd = find_sent_cmd(c, id);
	soft_error(c, -EMSGSIZE, "QMP message of %zu bytes exceeds the %zu-byte cap, dropped%s",
		   c->discard_len, c->max_msg, cmd ? " (reply to a pending command)" : "");
	if (cmd) {
		struct qmp_error e;

		list_del(&cmd->link);
		c->st.replies++;
		set_err(&e, -EMSGSIZE, "",
			"%s (" QMP_ID_PREFIX "%llu): reply of %zu bytes exceeds the %zu-byte cap",
			cmd->name, (unsigned long long)id, c->discard_len, c->max_msg);
		cmd_complete(c, cmd, -EMSGSIZE, NULL, &e);
	}
}

/* Cut c->in into lines and dispatch them; keep the incomplete rest. */
static void consume(struct qmp_client *c)
{
	size_t start = 0;

	while (start < c->in_len && c->state != QMP_ST_DEAD) {
		char *p = c->in + start, *nl;
		size_t avail = c->in_len - start, from = 0;

		if (c->discarding) {
			nl = memchr(p, '\n', avail);
			if (!nl) {
				tail_append(c, p, avail);
				c->discard_len += avail;
				start = c->in_len;
				break;
			}
			tail_append(c, p, (size_t)(nl - p));
			c->discard_len += (size_t)(nl - p);
			start += (size_t)(nl - p) + 1;
			discard_end(c);
			continue;
		}
		if (start == 0)
			from = c->scanned;
		nl = memchr(p + from, '\n', avail - from);
		if (!nl) {
			if (avail > c->max_msg) {
				discard_begin(c, p, avail);
				start = c->in_len;
			} else if (start == 0) {
				c->scanned = avail;
			}
			break;
		}
		if ((size_t)(nl - p) > c->max_msg) {
			discard_begin(c, p, (size_t)(nl - p));
			discard_end(c);
		} else {
			handle_line(c, p, (size_t)(nl - p));
		}
		start += (size_t)(nl - p) + 1;
		c->scanned = 0;
	}
	if (c->state == QMP_ST_DEAD) {
		c->in_len = c->scanned = 0;
		return;
	}
	if (start) {
		/* Only complete lines were removed, so the scan restarts on a short remainder. */
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
		c->scanned = 0;
	}
	/* Give back the memory of a huge reply once it is gone. */
	if (c->in_cap > 4 * QMP_READ_CHUNK && c->in_len < c->in_cap / 8) {
		size_t ncap =
			c->in_len * 2 > 2 * QMP_READ_CHUNK ? c->in_len * 2 : 2 * QMP_READ_CHUNK;
		char *nb = realloc(c->in, ncap);

		if (nb) {
			c->in = nb;
			c->in_cap = ncap;
		}
	}
}

static int reserve_in(struct qmp_client *c, size_t want)
{
	size_t ncap = c->in_cap ? c->in_cap : 2 * QMP_READ_CHUNK;
	char *nb;

	if (c->in_cap - c->in_len >= want)
		return 0;
	while (ncap - c->in_len < want)
		ncap *= 2;
	nb = realloc(c->in, ncap);
	if (!nb)
		return -ENOMEM;
	c->in = nb;
	c->in_cap = ncap;
	return 0;
}

static void begin_round(struct qmp_client *c)
{
	c->soft_code = 0;
	memset(&c->soft_err, 0, sizeof(c->soft_err));
}

static int end_round(struct qmp_client *c, struct qmp_error *err)
{
	if (c->state == QMP_ST_DEAD) {
		copy_err(err, &c->dead_err);
		return c->dead_code;
	}
	if (c->soft_code) {
		copy_err(err, &c->soft_err);
		return c->soft_code;
	}
	return 0;
}

static void die(struct qmp_client *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void die(struct qmp_client *c, int code, const char *fmt, ...)
{
	struct qmp_error e = { .code = code };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e.desc, sizeof(e.desc), fmt, ap);
	va_end(ap);
	go_dead(c, code, -EPIPE, &e);
}

static void read_in(struct qmp_client *c)
{
	while (c->state != QMP_ST_DEAD) {
		union {
			char buf[CMSG_SPACE(sizeof(int) * QMP_MAX_FDS)];
			struct cmsghdr align;
		} ctl;
		struct iovec iov;
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		struct cmsghdr *cm;
		ssize_t n;

		if (reserve_in(c, QMP_READ_CHUNK) < 0) {
			die(c, -ENOMEM, "out of memory reading QMP input");
			return;
		}
		iov.iov_base = c->in + c->in_len;
		iov.iov_len = c->in_cap - c->in_len;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == ECONNRESET)
				die(c, -ECONNRESET, "QMP connection reset by QEMU");
			else
				die(c, -errno, "read from QMP socket failed: %s", strerror(errno));
			return;
		}
		/* QEMU never sends us fds; never leak ones a peer pushes anyway. */
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				int fd;

				for (size_t i = 0; i < k; i++) {
					memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
					close(fd);
				}
			}
		}
		if (n == 0) {
			die(c, -EPIPE, "QEMU closed the QMP connection");
			return;
		}
		c->in_len += (size_t)n;
		consume(c);
	}
}

int qmp_client_process(struct qmp_client *c, struct qmp_error *err)
{
	if (!c)
		return set_err(err, -EINVAL, "", "no client");
	if (c->busy)
		return set_err(err, -EDEADLK, "", "qmp_client_process called from a QMP callback");
	begin_round(c);
	if (c->state != QMP_ST_DEAD && c->fd >= 0) {
		do_flush(c, NULL);
		/* Even after a failed write: replies QEMU sent before closing are still queued. */
		read_in(c);
		/* Replies may have queued more (negotiation, callbacks' sends). */
		if (c->state != QMP_ST_DEAD)
			do_flush(c, NULL);
		if (c->state != QMP_ST_DEAD && c->write_err)
			die(c, c->write_err == -ECONNRESET ? -ECONNRESET : -EPIPE,
			    "write to QMP socket failed: %s", strerror(-c->write_err));
	}
	if (c->state != QMP_ST_DEAD)
		expire(c);
	return end_round(c, err);
}

int qmp_client_feed(struct qmp_client *c, const void *data, size_t len, struct qmp_error *err)
{
	const char *p = data;

	if (!c || (len && !data))
		return set_err(err, -EINVAL, "", "invalid arguments");
	if (c->busy)
		return set_err(err, -EDEADLK, "", "qmp_client_feed called from a QMP callback");
	begin_round(c);
	/* Same slices as reads, so memory stays bounded by the cap however much is fed. */
	while (len && c->state != QMP_ST_DEAD) {
		size_t n = len < QMP_READ_CHUNK ? len : QMP_READ_CHUNK;

		if (reserve_in(c, n) < 0) {
			die(c, -ENOMEM, "out of memory reading QMP input");
			break;
		}
		memcpy(c->in + c->in_len, p, n);
		c->in_len += n;
		p += n;
		len -= n;
		consume(c);
	}
	if (c->state != QMP_ST_DEAD)
		do_flush(c, NULL);
	return end_round(c, err);
}

int qmp_client_feed_eof(struct qmp_client *c, struct qmp_error *err)
{
	if (!c)
		return set_err(err, -EINVAL, "", "no client");
	if (c->busy)
		return set_err(err, -EDEADLK, "", "qmp_client_feed_eof called from a QMP callback");
	die(c, -EPIPE, "QEMU closed the QMP connection");
	copy_err(err, &c->dead_err);
	return c->dead_code;
}

/* ---- lifetime and queries -------------------------------------------------------------- */

static struct qmp_client *client_alloc(int fd)
{
	struct qmp_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->tok = json_tokener_new_ex(QMP_JSON_DEPTH);
	if (!c->tok) {
		free(c);
		return NULL;
	}
	json_tokener_set_flags(c->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	c->fd = fd;
	c->max_msg = QMP_MAX_MESSAGE;
	c->next_id = 1;
	c->state = QMP_ST_GREETING;
	list_init(&c->cmds);
	list_init(&c->outs);
	return c;
}

struct qmp_client *qmp_client_new(int fd)
{
	struct qmp_client *c;
	int fl, fdfl;

	if (fd < 0) {
		errno = EBADF;
		return NULL;
	}
	fl = fcntl(fd, F_GETFL);
	fdfl = fcntl(fd, F_GETFD);
	if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
		return NULL;
	c = client_alloc(fd);
	if (!c)
		errno = ENOMEM;
	return c;
}

struct qmp_client *qmp_client_new_detached(void)
{
	struct qmp_client *c = client_alloc(-1);

	if (!c)
		errno = ENOMEM;
	return c;
}

void qmp_client_free(struct qmp_client *c)
{
	struct qmp_list doomed;

	if (!c)
		return;
	while (!list_empty(&c->outs))
		out_remove(qmp_container_of(c->outs.next, struct qmp_out, link));
	list_init(&doomed);
	list_splice_tail(&doomed, &c->cmds);
	/* Let owners of pending commands release their opaque; new sends are refused. */
	c->state = QMP_ST_DEAD;
	c->dead_code = -ECANCELED;
	set_err(&c->dead_err, -ECANCELED, "", "QMP client freed");
	fail_list(c, &doomed, -ECANCELED, "QMP client freed");
	/* Commands sent by those callbacks (refused above, but be safe). */
	list_splice_tail(&doomed, &c->cmds);
	fail_list(c, &doomed, -ECANCELED, "QMP client freed");
	while (!list_empty(&c->outs))
		out_remove(qmp_container_of(c->outs.next, struct qmp_out, link));
	if (c->fd >= 0)
		close(c->fd);
	json_tokener_free(c->tok);
	free(c->in);
	free(c);
}

int qmp_client_fd(const struct qmp_client *c)
{
	return c ? c->fd : -EINVAL;
}

int qmp_client_add_event_listener(struct qmp_client *c, qmp_event_cb cb, void *opaque)
{
	size_t live = 0;

	if (!c || !cb)
		return -EINVAL;
	for (size_t i = 0; i < c->n_ev; i++)
		if (c->ev[i].cb == cb && c->ev[i].opaque == opaque)
			return -EEXIST;
	if (!c->busy) { /* drop removed slots, keeping the order */
		for (size_t i = 0; i < c->n_ev; i++)
			if (c->ev[i].cb)
				c->ev[live++] = c->ev[i];
		c->n_ev = live;
	}
	if (c->n_ev == QMP_MAX_LISTENERS)
		return -ENOSPC;
	c->ev[c->n_ev++] = (struct qmp_listener){ cb, opaque };
	return 0;
}

int qmp_client_remove_event_listener(struct qmp_client *c, qmp_event_cb cb, void *opaque)
{
	for (size_t i = 0; c && i < c->n_ev; i++)
		if (c->ev[i].cb == cb && c->ev[i].opaque == opaque) {
			c->ev[i].cb = NULL;
			c->ev[i].opaque = NULL;
			return 0;
		}
	return -ENOENT;
}

short qmp_client_poll_events(const struct qmp_client *c)
{
	if (!c)
		return 0;
	return POLLIN | (has_writable_output(c) ? POLLOUT : 0);
}

int qmp_client_next_timeout_ms(const struct qmp_client *c)
{
	int64_t best = 0, now;

	if (!c || c->state == QMP_ST_DEAD)
		return -1;
	for (const struct qmp_list *n = c->cmds.next; n != &c->cmds; n = n->next) {
		const struct qmp_cmd *cmd = qmp_container_of(n, struct qmp_cmd, link);

		if (cmd->deadline_ns && (!best || cmd->deadline_ns < best))
			best = cmd->deadline_ns;
	}
	if (!best)
		return -1;
	now = now_ns();
	if (best <= now)
		return 0;
	/* Round up: waking a hair early would only spin once more. */
	best = (best - now + 999999) / 1000000;
	return best > INT_MAX ? INT_MAX : (int)best;
}

int qmp_client_version(const struct qmp_client *c, int *major, int *minor, int *micro)
{
	if (!c)
		return -EINVAL;
	if (!c->greeted)
		return -EAGAIN;
	if (!c->have_version)
		return -ENODATA;
	if (major)
		*major = c->ver_major;
	if (minor)
		*minor = c->ver_minor;
	if (micro)
		*micro = c->ver_micro;
	return 0;
}

void qmp_client_set_max_message(struct qmp_client *c, size_t max)
{
	if (c)
		c->max_msg = max && max < QMP_MAX_MESSAGE ? max : QMP_MAX_MESSAGE;
}

void qmp_client_get_stats(const struct qmp_client *c, struct qmp_client_stats *st)
{
	if (c && st)
		*st = c->st;
}

size_t qmp_client_pending_output(const struct qmp_client *c)
{
	size_t n = 0;

	for (const struct qmp_list *l = c->outs.next; l != &c->outs; l = l->next) {
		const struct qmp_out *o = qmp_container_of(l, struct qmp_out, link);

		n += o->len - o->off;
	}
	return n;
}

size_t qmp_client_pending_commands(const struct qmp_client *c)
{
	size_t n = 0;

	for (const struct qmp_list *l = c->cmds.next; l != &c->cmds; l = l->next)
		n++;
	return n;
}

/* ---- blocking helpers ------------------------------------------------------------------ */

/* Wait for the fd (or the earliest command deadline, or `deadline_ns`) and process once. */
static int wait_and_process(struct qmp_client *c, int64_t deadline_ns, struct qmp_error *err)
{
	struct pollfd pfd = { .fd = c->fd, .events = qmp_client_poll_events(c) };
	int t = qmp_client_next_timeout_ms(c);
	int rc;

	if (deadline_ns) {
		int64_t left = deadline_ns - now_ns();
		int lt = left <= 0 ? 0 : (int)((left + 999999) / 1000000);

		if (t < 0 || lt < t)
			t = lt;
	}
	rc = poll(&pfd, 1, t);
	if (rc < 0 && errno != EINTR)
		return set_err(err, -errno, "", "poll on QMP socket failed: %s", strerror(errno));
	return qmp_client_process(c, err);
}

int qmp_client_handshake(struct qmp_client *c, int timeout_ms, struct qmp_error *err)
{
	int64_t deadline = timeout_ms > 0 ? now_ns() + (int64_t)timeout_ms * 1000000 : 0;

	if (!c)
		return set_err(err, -EINVAL, "", "no client");
	if (c->busy)
		return set_err(err, -EDEADLK, "",
			       "qmp_client_handshake called from a QMP callback");
	if (c->fd < 0)
		return set_err(err, -ENOTCONN, "", "QMP client has no socket");
	for (;;) {
		int rc;

		if (c->state == QMP_ST_READY)
			return 0;
		if (c->state == QMP_ST_DEAD)
			return copy_err(err, &c->dead_err), c->dead_code;
		if (deadline && now_ns() >= deadline)
			return set_err(err, -ETIMEDOUT, "", "no QMP %s within %d ms",
				       c->greeted ? "capabilities reply" : "greeting", timeout_ms);
		rc = wait_and_process(c, deadline, err);
		if (is_fatal(rc))
			return rc;
	}
}

struct exec_state {
	bool done;
	int status;
	struct json_object *ret;
	struct qmp_error err;
};

static void exec_cb(void *opaque, int status, struct json_object *ret, const struct qmp_error *e)
{
	struct exec_state *x = opaque;

	x->done = true;
	x->status = status;
	x->ret = status == 0 ? json_object_get(ret) : NULL;
	if (e)
		x->err = *e;
}

int qmp_client_execute(struct qmp_client *c, const char *cmd, struct json_object *args,
		       const int *fds, size_t nfds, struct json_object **ret, int timeout_ms,
		       struct qmp_error *err)
{
	struct exec_state x = { 0 };
	uint64_t id;
	int rc;

	if (ret)
		*ret = NULL;
	if (!c)
		return set_err(err, -EINVAL, "", "no client");
	if (c->busy)
		return set_err(err, -EDEADLK, "", "qmp_client_execute called from a QMP callback");
	if (c->fd < 0)
		return set_err(err, -ENOTCONN, "", "QMP client has no socket");
	id = c->next_id;
	rc = qmp_client_send(c, cmd, args, fds, nfds, timeout_ms, exec_cb, &x, err);
	if (rc < 0)
		return rc;
	while (!x.done) {
		rc = wait_and_process(c, 0, err);
		if (is_fatal(rc) && !x.done) {
			/* Cannot happen (fatal errors complete every command); never leave a
			 * callback pointing at this stack frame. */
			cancel_cmd(c, id);
			return rc;
		}
	}
	if (x.status < 0) {
		copy_err(err, &x.err);
		return x.status;
	}
	if (ret)
		*ret = x.ret;
	else
		json_object_put(x.ret);
	return 0;
}

/* ---- typed helpers --------------------------------------------------------------------- */

int qmp_query_status(struct qmp_client *c, char *buf, size_t len, int timeout_ms,
		     struct qmp_error *err)
{
	struct json_object *ret = NULL, *st;
	const char *s;
	int rc;

	if (!buf || !len)
		return set_err(err, -EINVAL, "", "query-status: no buffer");
	buf[0] = '\0';
	rc = qmp_client_execute(c, "query-status", NULL, NULL, 0, &ret, timeout_ms, err);
	if (rc < 0)
		return rc;
	if (!json_object_object_get_ex(ret, "status", &st) ||
	    !json_object_is_type(st, json_type_string)) {
		json_object_put(ret);
		return set_err(err, -EBADMSG, "", "query-status: reply has no \"status\" string");
	}
	s = json_object_get_string(st);
	if (strlen(s) >= len) {
		json_object_put(ret);
		return set_err(err, -ENOBUFS, "", "query-status: status \"%.64s\" does not fit", s);
	}
	strcpy(buf, s);
	json_object_put(ret);
	return 0;
}

int qmp_stop(struct qmp_client *c, int timeout_ms, struct qmp_error *err)
{
	return qmp_client_execute(c, "stop", NULL, NULL, 0, NULL, timeout_ms, err);
}

int qmp_cont(struct qmp_client *c, int timeout_ms, struct qmp_error *err)
{
	return qmp_client_execute(c, "cont", NULL, NULL, 0, NULL, timeout_ms, err);
}

int qmp_quit(struct qmp_client *c, int timeout_ms, struct qmp_error *err)
{
	int rc = qmp_client_execute(c, "quit", NULL, NULL, 0, NULL, timeout_ms, err);

	/* QEMU may exit before its reply reaches us: the closed socket is the answer. */
	return rc == -EPIPE || rc == -ECONNRESET ? 0 : rc;
}
