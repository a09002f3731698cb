// SPDX-License-Identifier: MIT
/*
 * test_qmp.c - unit tests for qmp/ against a fake QEMU on a socketpair, plus one group against a
 * real qemu-system-x86_64 (skipped with a reason when it is not installed).
 *
 * The fake server is mostly in-process: the test writes the server side by hand between client
 * calls, which keeps every step deterministic. Tests of the blocking helpers fork a scripted
 * child instead (the helper blocks, so someone else has to answer).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "qmp/qmp.h"
#include "qmp/qmp_internal.h"

#define GREETING                                                                           \
	"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, " \
	"\"package\": \"Debian\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define IO_TIMEOUT_MS 3000

/* ---- helpers --------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

/* Everything callbacks do goes into one log, so tests can assert on order. */
static char g_log[16384];

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	size_t l = strlen(g_log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g_log + l, sizeof(g_log) - l, fmt, ap);
	va_end(ap);
}

/*
 * Tests declare their recs static: a failed assertion longjmps out of the test, and teardown's
 * qmp_client_free() then calls the pending callbacks, which must not land in a dead frame.
 */
struct rec {
	const char *tag;
	int n; /* times called */
	int status;
	struct json_object *ret;
	struct qmp_error err;
};

static void rec_reset(struct rec *r, const char *tag)
{
	json_object_put(r->ret);
	memset(r, 0, sizeof(*r));
	r->tag = tag;
	r->status = 12345;
}

static void reply_cb(void *opaque, int status, struct json_object *ret, const struct qmp_error *e)
{
	struct rec *r = opaque;

	r->n++;
	r->status = status;
	json_object_put(r->ret);
	r->ret = json_object_get(ret);
	if (status < 0) {
		assert_non_null(e);
		assert_null(ret);
		r->err = *e;
	} else {
		assert_null(e);
	}
	logf_("R:%s:%d ", r->tag, status);
}

struct evrec {
	int n;
	char last[64];
	struct json_object *data; /* of the last event */
	int64_t sec, usec;
};

static void event_cb(void *opaque, const char *event, struct json_object *data, int64_t sec,
		     int64_t usec)
{
	struct evrec *ev = opaque;

	ev->n++;
	snprintf(ev->last, sizeof(ev->last), "%s", event);
	json_object_put(ev->data);
	ev->data = json_object_get(data);
	ev->sec = sec;
	ev->usec = usec;
	logf_("E:%s ", event);
}

/* The fake QEMU's end: a line reader that also collects SCM_RIGHTS fds. */
struct srv {
	int fd;
	char buf[1 << 16];
	size_t len;
	int rfds[32];
	size_t nrfds;
};

struct fix {
	struct qmp_client *c;
	struct srv s;
	struct evrec ev;
	int fds_before;
};

static void srv_write(struct srv *s, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(s->fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		data += n;
		len -= (size_t)n;
	}
}

static void srv_writef(struct srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_writef(struct srv *s, const char *fmt, ...)
{
	char *p;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	srv_write(s, p, (size_t)n);
	free(p);
}

/* Read one line (without '\n') within IO_TIMEOUT_MS; returns malloc'd text or NULL on EOF. */
static char *srv_read_line(struct srv *s)
{
	int64_t end = mono_ms() + IO_TIMEOUT_MS;

	for (;;) {
		char *nl = memchr(s->buf, '\n', s->len);
		union {
			char b[CMSG_SPACE(sizeof(int) * 16)];
			struct cmsghdr a;
		} ctl;
		struct iovec iov;
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - s->buf);
			char *line = strndup(s->buf, l);

			memmove(s->buf, nl + 1, s->len - l - 1);
			s->len -= l + 1;
			return line;
		}
		assert_true(s->len < sizeof(s->buf));
		assert_true(mono_ms() < end);
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		iov.iov_base = s->buf + s->len;
		iov.iov_len = sizeof(s->buf) - s->len;
		msg.msg_control = ctl.b;
		msg.msg_controllen = sizeof(ctl.b);
		n = recvmsg(s->fd, &msg, MSG_CMSG_CLOEXEC);
		if (n == 0)
			return NULL;
		assert_true(n > 0);
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

				for (size_t i = 0; i < k; i++) {
					assert_true(s->nrfds < 32);
					memcpy(&s->rfds[s->nrfds++],
					       CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				}
			}
		}
		s->len += (size_t)n;
	}
}

/* Nothing readable on the server side right now (client wrote nothing). */
static bool srv_idle(struct srv *s)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };

	return s->len == 0 && poll(&pfd, 1, 0) == 0;
}

/* Read one command; assert its name; copy its id; return it parsed (caller puts). */
static struct json_object *srv_expect(struct srv *s, const char *cmd, char id[32])
{
	char *line = srv_read_line(s);
	struct json_object *o, *v;

	assert_non_null(line);
	o = json_tokener_parse(line);
	free(line);
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "execute", &v));
	assert_string_equal(json_object_get_string(v), cmd);
	assert_true(json_object_object_get_ex(o, "id", &v));
	assert_true(json_object_is_type(v, json_type_string));
	assert_true(strlen(json_object_get_string(v)) < 32);
	strcpy(id, json_object_get_string(v));
	return o;
}

static void srv_expect_put(struct srv *s, const char *cmd, char id[32])
{
	json_object_put(srv_expect(s, cmd, id));
}

/* Run the client until *flag != 0 (or fail after IO_TIMEOUT_MS). Returns the last rc. */
static int pump_until(struct qmp_client *c, const int *flag)
{
	int64_t end = mono_ms() + IO_TIMEOUT_MS;
	int rc = 0;

	while (!*flag) {
		struct pollfd pfd = { .fd = qmp_client_fd(c), .events = qmp_client_poll_events(c) };
		int t = qmp_client_next_timeout_ms(c);

		assert_true(mono_ms() < end);
		poll(&pfd, 1, t < 0 || t > 100 ? 100 : t);
		rc = qmp_client_process(c, NULL);
	}
	return rc;
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	int sv[2];

	g_log[0] = '\0';
	f->fds_before = count_fds();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->c = qmp_client_new(sv[0]);
	assert_non_null(f->c);
	f->s.fd = sv[1];
	assert_int_equal(qmp_client_add_event_listener(f->c, event_cb, &f->ev), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	qmp_client_free(f->c);
	if (f->s.fd >= 0)
		close(f->s.fd);
	for (size_t i = 0; i < f->s.nrfds; i++)
		close(f->s.rfds[i]);
	json_object_put(f->ev.data);
	/* Every fd the client created (dups for SCM_RIGHTS, ...) must be gone. */
	assert_int_equal(count_fds(), f->fds_before);
	free(f);
	return 0;
}

/* Greeting + negotiation by hand, leaving the client READY. */
static void negotiate(struct fix *f)
{
	char id[32];

	srv_write(&f->s, GREETING, strlen(GREETING));
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	srv_expect_put(&f->s, "qmp_capabilities", id);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_new_free(void **state)
{
	int sv[2], fl;
	struct qmp_client *c;

	(void)state;
	qmp_client_free(NULL);
	errno = 0;
	assert_null(qmp_client_new(-1));
	assert_int_equal(errno, EBADF);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	c = qmp_client_new(sv[0]);
	assert_non_null(c);
	assert_int_equal(qmp_client_fd(c), sv[0]);
	fl = fcntl(sv[0], F_GETFL);
	assert_true(fl & O_NONBLOCK);
	assert_true(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);
	assert_int_equal(qmp_client_poll_events(c), POLLIN);
	assert_int_equal(qmp_client_next_timeout_ms(c), -1);
	qmp_client_free(c);
	/* The client owned sv[0]: it is closed now. */
	assert_int_equal(fcntl(sv[0], F_GETFD), -1);
	close(sv[1]);
}

static void test_greeting_negotiation(void **state)
{
	struct fix *f = *state;
	struct json_object *o, *v;
	static struct rec r = { 0 };
	char id[32];
	int maj = 0, min = 0, mic = 0;

	rec_reset(&r, "A");
	assert_int_equal(qmp_client_version(f->c, &maj, &min, &mic), -EAGAIN);
	/* The greeting split in two reads: nothing happens on the first half. */
	srv_write(&f->s, GREETING, 20);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(qmp_client_version(f->c, NULL, NULL, NULL), -EAGAIN);
	assert_true(srv_idle(&f->s));
	srv_write(&f->s, &GREETING[20], strlen(GREETING) - 20);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(qmp_client_version(f->c, &maj, &min, &mic), 0);
	assert_int_equal(maj, 7);
	assert_int_equal(min, 2);
	assert_int_equal(mic, 22);

	o = srv_expect(&f->s, "qmp_capabilities", id);
	assert_false(json_object_object_get_ex(o, "arguments", NULL));
	assert_string_equal(id, "avm-1");
	json_object_put(o);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);

	/* READY: a command goes straight out, with its arguments. */
	v = json_object_new_object();
	json_object_object_add(v, "x", json_object_new_int(5));
	assert_int_equal(qmp_client_send(f->c, "some-cmd", v, NULL, 0, 0, reply_cb, &r, NULL), 0);
	json_object_put(v);
	o = srv_expect(&f->s, "some-cmd", id);
	assert_string_equal(id, "avm-2");
	assert_true(json_object_object_get_ex(o, "arguments", &v));
	assert_true(json_object_object_get_ex(v, "x", &v));
	assert_int_equal(json_object_get_int(v), 5);
	json_object_put(o);
	srv_writef(&f->s, "{\"return\": {\"ok\": true}, \"id\": \"%s\"}\r\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.status, 0);
	assert_true(json_object_object_get_ex(r.ret, "ok", &v));
	assert_true(json_object_get_boolean(v));
	rec_reset(&r, NULL);
}

static void test_command_before_negotiation(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 };
	struct qmp_error err;
	char id[32], idq[32];
	struct qmp_client_stats st;

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	assert_int_equal(
		qmp_client_send(f->c, "qmp_capabilities", NULL, NULL, 0, 0, reply_cb, &a, &err),
		-EINVAL);
	assert_int_equal(err.code, -EINVAL);

	/* Queued: nothing is written before the greeting, and nothing to poll out for. */
	assert_int_equal(
		qmp_client_send(f->c, "query-status", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_poll_events(f->c), POLLIN);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_true(srv_idle(&f->s));
	assert_int_equal(a.n, 0);

	/* Greeting: negotiation goes out first, alone. */
	srv_write(&f->s, GREETING, strlen(GREETING));
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	srv_expect_put(&f->s, "qmp_capabilities", id);
	assert_true(srv_idle(&f->s));
	/* Sent while negotiating: still held. */
	assert_int_equal(qmp_client_send(f->c, "query-name", NULL, NULL, 0, 0, reply_cb, &b, NULL),
			 0);
	assert_true(srv_idle(&f->s));
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);

	/* Then the queued commands, in order. */
	srv_expect_put(&f->s, "query-status", idq);
	assert_string_equal(idq, "avm-1");
	srv_expect_put(&f->s, "query-name", id);
	srv_writef(&f->s, "{\"return\": {\"status\": \"prelaunch\"}, \"id\": \"%s\"}\r\n", idq);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, 0);
	assert_string_equal(json_object_get_string(json_object_object_get(a.ret, "status")),
			    "prelaunch");
	assert_int_equal(b.n, 1);
	assert_string_equal(g_log, "R:A:0 R:B:0 ");
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.commands_sent, 3);
	assert_int_equal(st.replies, 3);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
}

static void test_negotiation_refused(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 };
	struct qmp_error err;
	char id[32];

	rec_reset(&a, "A");
	assert_int_equal(
		qmp_client_send(f->c, "query-status", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	srv_write(&f->s, GREETING, strlen(GREETING));
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	srv_expect_put(&f->s, "qmp_capabilities", id);
	srv_writef(
		&f->s,
		"{\"id\": \"%s\", \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\r\n",
		id);
	assert_int_equal(qmp_client_process(f->c, &err), -EPROTO);
	assert_int_equal(err.code, -EPROTO);
	assert_string_equal(err.klass, "GenericError");
	assert_non_null(strstr(err.desc, "no"));
	/* The held command completes with the negotiation error and was never written. */
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, -EPROTO);
	assert_true(srv_idle(&f->s));
	assert_int_equal(qmp_client_send(f->c, "x", NULL, NULL, 0, 0, reply_cb, &a, NULL), -EPROTO);
	assert_int_equal(a.n, 1);
	rec_reset(&a, NULL);
}

static void test_events_between_replies(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 };
	char ida[32], idb[32];
	struct qmp_client_stats st;

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "stop", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "cont", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);
	srv_expect_put(&f->s, "stop", ida);
	srv_expect_put(&f->s, "cont", idb);
	/* All in one write: several messages in one read. */
	srv_writef(
		&f->s,
		"{\"timestamp\": {\"seconds\": 1234, \"microseconds\": 5678}, \"event\": \"STOP\"}\r\n"
		"{\"return\": {}, \"id\": \"%s\"}\r\n"
		"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n"
		"{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, \"event\": \"SHUTDOWN\", "
		"\"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}\r\n"
		"{\"return\": {}, \"id\": \"%s\"}\r\n",
		ida, idb);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_string_equal(g_log, "E:STOP R:A:0 E:RESUME E:SHUTDOWN R:B:0 ");
	assert_int_equal(f->ev.n, 3);
	assert_int_equal(f->ev.sec, 3);
	assert_int_equal(f->ev.usec, 4);
	assert_string_equal(json_object_get_string(json_object_object_get(f->ev.data, "reason")),
			    "host-qmp-quit");

	/* An event without data or timestamp: data NULL, ts -1. */
	srv_writef(&f->s, "{\"event\": \"POWERDOWN\"}\n");
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_string_equal(f->ev.last, "POWERDOWN");
	assert_null(f->ev.data);
	assert_int_equal(f->ev.sec, -1);
	assert_int_equal(f->ev.usec, -1);
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.events, 4);

	/* Without a listener events are counted and dropped. */
	assert_int_equal(qmp_client_remove_event_listener(f->c, event_cb, &f->ev), 0);
	srv_writef(&f->s, "{\"event\": \"STOP\"}\n");
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(f->ev.n, 4);
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.events, 5);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
}

/* Removes the fixture's event_cb listener and itself: from inside a dispatch. */
static void remover_cb(void *opaque, const char *event, struct json_object *data, int64_t sec,
		       int64_t usec)
{
	struct fix *f = opaque;

	logf_("X:%s ", event);
	assert_int_equal(qmp_client_remove_event_listener(f->c, event_cb, &f->ev), 0);
	assert_int_equal(qmp_client_remove_event_listener(f->c, remover_cb, f), 0);
}

static void count_cb(void *opaque, const char *event, struct json_object *data, int64_t sec,
		     int64_t usec)
{
	(*(int *)opaque)++;
}

/* Several listeners: called in the order added; one removed inside a dispatch is not called. */
static void test_event_listeners(void **state)
{
	struct fix *f = *state;
	int counts[QMP_MAX_LISTENERS] = { 0 };

	/* event_cb (added by setup) first, then a second one: both, in order. */
	assert_int_equal(qmp_client_add_event_listener(f->c, count_cb, &counts[0]), 0);
	assert_int_equal(qmp_client_add_event_listener(f->c, count_cb, &counts[0]), -EEXIST);
	srv_writef(&f->s, "{\"event\": \"STOP\"}\n");
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(f->ev.n, 1);
	assert_int_equal(counts[0], 1);

	/* The remover, placed before event_cb, removes it before its turn comes. */
	assert_int_equal(qmp_client_remove_event_listener(f->c, event_cb, &f->ev), 0);
	assert_int_equal(qmp_client_remove_event_listener(f->c, event_cb, &f->ev), -ENOENT);
	assert_int_equal(qmp_client_add_event_listener(f->c, remover_cb, f), 0);
	assert_int_equal(qmp_client_add_event_listener(f->c, event_cb, &f->ev), 0);
	g_log[0] = '\0';
	srv_writef(&f->s, "{\"event\": \"RESUME\"}\n");
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_string_equal(g_log, "X:RESUME ");
	assert_int_equal(f->ev.n, 1);
	assert_int_equal(counts[0], 2);

	/* Removed slots are reused; the table has a bound. */
	for (int i = 1; i < QMP_MAX_LISTENERS; i++)
		assert_int_equal(qmp_client_add_event_listener(f->c, count_cb, &counts[i]), 0);
	assert_int_equal(qmp_client_add_event_listener(f->c, event_cb, &f->ev), -ENOSPC);
	srv_writef(&f->s, "{\"event\": \"STOP\"}\n");
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	for (int i = 0; i < QMP_MAX_LISTENERS; i++)
		assert_int_equal(counts[i], i == 0 ? 3 : 1);
	assert_int_equal(qmp_client_add_event_listener(f->c, NULL, NULL), -EINVAL);
}

static void test_out_of_order(void **state)
{
	struct fix *f = *state;
	static struct rec r[3] = { 0 };
	char id[3][32];
	const char *tags[3] = { "0", "1", "2" };
	struct qmp_client_stats st;

	negotiate(f);
	for (int i = 0; i < 3; i++) {
		rec_reset(&r[i], tags[i]);
		assert_int_equal(
			qmp_client_send(f->c, "cmd", NULL, NULL, 0, 0, reply_cb, &r[i], NULL), 0);
	}
	for (int i = 0; i < 3; i++)
		srv_expect_put(&f->s, "cmd", id[i]);
	assert_string_not_equal(id[0], id[1]);
	assert_string_not_equal(id[1], id[2]);
	/* Replies 2, 0, 1, and junk ids that must match nothing. */
	srv_writef(&f->s, "{\"return\": {\"n\": 2}, \"id\": \"%s\"}\r\n", id[2]);
	srv_writef(&f->s, "{\"return\": {\"n\": 99}, \"id\": \"avm-999\"}\r\n");
	srv_writef(&f->s, "{\"return\": {\"n\": 98}, \"id\": 1}\r\n");
	srv_writef(&f->s, "{\"return\": {\"n\": 97}}\r\n");
	srv_writef(&f->s, "{\"return\": {\"n\": 96}, \"id\": \"avm-01x\"}\r\n");
	srv_writef(&f->s, "{\"return\": {\"n\": 0}, \"id\": \"%s\"}\r\n", id[0]);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_string_equal(g_log, "R:2:0 R:0:0 ");
	srv_writef(&f->s, "{\"return\": {\"n\": 1}, \"id\": \"%s\"}\r\n", id[1]);
	/* A duplicate reply to an already completed command is unknown too. */
	srv_writef(&f->s, "{\"return\": {\"n\": 0}, \"id\": \"%s\"}\r\n", id[0]);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_string_equal(g_log, "R:2:0 R:0:0 R:1:0 ");
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].n, 1);
		assert_int_equal(json_object_get_int(json_object_object_get(r[i].ret, "n")), i);
		rec_reset(&r[i], NULL);
	}
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.unknown_replies, 5);
	assert_int_equal(st.replies, 4); /* 3 + negotiation */
}

static void test_malformed_recovery(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 };
	struct qmp_error err;
	char id[32];
	struct qmp_client_stats st;
	static const char bad[] = "{\"return\": {}, \"id\"\r\n" /* truncated */
				  "garbage\r\n"
				  "[1, 2]\r\n"
				  "{\"foo\": 1}\r\n"
				  "{\"return\": {}} trailing\r\n"
				  "{\"return\": \"\xff\xfe\"}\r\n" /* invalid UTF-8 */
				  "{\"ret\0urn\": 1}\r\n"	   /* NUL byte */
				  "\r\n"			   /* blank: harmless */
				  "{\"return\": {}\r\n";	   /* unterminated object */

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	srv_expect_put(&f->s, "a", id);
	srv_write(&f->s, bad, sizeof(bad) - 1);
	/* The good reply right after an unterminated object must survive it. */
	srv_writef(&f->s, "{\"return\": {\"ok\": 1}, \"id\": \"%s\"}\r\n", id);
	memset(&err, 0, sizeof(err));
	assert_int_equal(qmp_client_process(f->c, &err), -EBADMSG);
	assert_int_equal(err.code, -EBADMSG);
	assert_string_equal(err.klass, "");
	assert_non_null(strstr(err.desc, "malformed"));
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, 0);
	assert_int_equal(json_object_get_int(json_object_object_get(a.ret, "ok")), 1);
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.bad_messages, 8);

	/* Still usable; the soft error does not stick. */
	assert_int_equal(qmp_client_send(f->c, "b", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);
	srv_expect_put(&f->s, "b", id);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.status, 0);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
}

static void test_split_byte_by_byte(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 };
	char id[32], *msg;
	int n;

	rec_reset(&a, "A");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	srv_expect_put(&f->s, "a", id);
	n = asprintf(&msg,
		     "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}"
		     "\r\n{\"return\": {\"s\": \"caf\xc3\xa9 \\u00e9\\n\"}, \"id\": \"%s\"}\r\n",
		     id);
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		srv_write(&f->s, msg + i, 1);
		assert_int_equal(qmp_client_process(f->c, NULL), 0);
		/* The event completes at its '\n', the reply only at the very last byte. */
		assert_int_equal(a.n, i == n - 1 ? 1 : 0);
		assert_int_equal(f->ev.n, msg[i] == '\n' || i > (int)(strchr(msg, '\n') - msg));
	}
	assert_int_equal(a.status, 0);
	assert_string_equal(json_object_get_string(json_object_object_get(a.ret, "s")),
			    "caf\xc3\xa9 \xc3\xa9\n");
	assert_string_equal(g_log, "E:STOP R:A:0 ");
	free(msg);
	rec_reset(&a, NULL);
}

/* Write len bytes while running the client, as a slow reader would see it. */
static int write_while_processing(struct fix *f, const char *buf, size_t len, int *saw)
{
	size_t off = 0;
	int64_t end = mono_ms() + 30000;
	int fl = fcntl(f->s.fd, F_GETFL);

	fcntl(f->s.fd, F_SETFL, fl | O_NONBLOCK);
	while (off < len) {
		ssize_t n = write(f->s.fd, buf + off, len - off);
		int rc;

		if (n > 0)
			off += (size_t)n;
		else
			assert_true(errno == EAGAIN || errno == EINTR);
		rc = qmp_client_process(f->c, NULL);
		if (rc < 0)
			*saw = rc;
		assert_true(mono_ms() < end);
	}
	fcntl(f->s.fd, F_SETFL, fl);
	return 0;
}

static char *big_reply(const char *id, size_t payload, bool id_first)
{
	size_t cap = payload + 128;
	char *buf = malloc(cap);
	int h;

	assert_non_null(buf);
	if (id_first)
		h = snprintf(buf, cap, "{\"id\": \"%s\", \"return\": {\"data\": \"", id);
	else
		h = snprintf(buf, cap, "{\"return\": {\"data\": \"");
	memset(buf + h, 'x', payload);
	buf[h] = 'A';
	buf[h + payload - 1] = 'Z';
	if (id_first)
		snprintf(buf + h + payload, cap - h - payload, "\"}}\r\n");
	else
		snprintf(buf + h + payload, cap - h - payload, "\"}, \"id\": \"%s\"}\r\n", id);
	return buf;
}

static void test_huge_reply(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	const size_t under = 8u << 20, over = QMP_MAX_MESSAGE + (1u << 20);
	char ida[32], idb[32], idc[32], idd[32], *buf;
	const char *s;
	int saw = 0;
	struct qmp_client_stats st;

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	rec_reset(&c, "C");
	rec_reset(&d, "D");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "b", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "c", NULL, NULL, 0, 0, reply_cb, &c, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "d", NULL, NULL, 0, 0, reply_cb, &d, NULL), 0);
	srv_expect_put(&f->s, "a", ida);
	srv_expect_put(&f->s, "b", idb);
	srv_expect_put(&f->s, "c", idc);
	srv_expect_put(&f->s, "d", idd);

	/* 8 MiB: below the cap, arrives intact. */
	buf = big_reply(ida, under, false);
	write_while_processing(f, buf, strlen(buf), &saw);
	free(buf);
	pump_until(f->c, &a.n);
	assert_int_equal(saw, 0);
	assert_int_equal(a.status, 0);
	s = json_object_get_string(json_object_object_get(a.ret, "data"));
	assert_int_equal(strlen(s), under);
	assert_int_equal(s[0], 'A');
	assert_int_equal(s[under - 1], 'Z');

	/* 17 MiB, id last (QEMU's usual order) then id first: both dropped, both commands get
	 * -EMSGSIZE, and the small reply behind them still arrives. */
	buf = big_reply(idb, over, false);
	write_while_processing(f, buf, strlen(buf), &saw);
	free(buf);
	assert_int_equal(saw, -EMSGSIZE);
	saw = 0;
	buf = big_reply(idc, over, true);
	write_while_processing(f, buf, strlen(buf), &saw);
	free(buf);
	assert_int_equal(saw, -EMSGSIZE);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", idd);
	pump_until(f->c, &d.n);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.status, -EMSGSIZE);
	assert_non_null(strstr(b.err.desc, "cap"));
	assert_int_equal(c.n, 1);
	assert_int_equal(c.status, -EMSGSIZE);
	assert_int_equal(d.status, 0);
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.oversize_messages, 2);
	assert_int_equal(qmp_client_pending_commands(f->c), 0);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
	rec_reset(&c, NULL);
	rec_reset(&d, NULL);
}

static void test_big_command_partial_write(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 };
	struct json_object *args, *o, *v;
	const size_t big = 4u << 20;
	char *payload = malloc(big + 1), id[32];
	char *line;
	size_t got = 0, cap = big + 4096;
	char *all = malloc(cap);

	rec_reset(&a, "A");
	negotiate(f);
	memset(payload, 'q', big);
	payload[big] = '\0';
	args = json_object_new_object();
	json_object_object_add(args, "blob", json_object_new_string(payload));
	assert_int_equal(qmp_client_send(f->c, "big", args, NULL, 0, 0, reply_cb, &a, NULL), 0);
	json_object_put(args);
	/* The socket cannot take 4 MiB at once: the rest waits, and the client asks for POLLOUT. */
	assert_true(qmp_client_pending_output(f->c) > 0);
	assert_true(qmp_client_poll_events(f->c) & POLLOUT);
	while (got == 0 || all[got - 1] != '\n') {
		ssize_t n;

		assert_int_equal(qmp_client_process(f->c, NULL), 0);
		n = read(f->s.fd, all + got, cap - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_int_equal(qmp_client_pending_output(f->c), 0);
	assert_int_equal(qmp_client_poll_events(f->c), POLLIN);
	line = strndup(all, got - 1);
	o = json_tokener_parse(line);
	assert_non_null(o);
	assert_string_equal(json_object_get_string(json_object_object_get(o, "execute")), "big");
	v = json_object_object_get(json_object_object_get(o, "arguments"), "blob");
	assert_int_equal(json_object_get_string_len(v), (int)big);
	snprintf(id, sizeof(id), "%s", json_object_get_string(json_object_object_get(o, "id")));
	json_object_put(o);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(a.status, 0);
	free(line);
	free(all);
	free(payload);
	rec_reset(&a, NULL);
}

static void test_qmp_error(void **state)
{
	struct fix *f = *state;
	static const struct {
		const char *klass;
		int code;
	} cases[] = {
		{ "GenericError", -EIO },	  { "CommandNotFound", -ENOSYS },
		{ "DeviceNotFound", -ENODEV },	  { "DeviceNotActive", -ENXIO },
		{ "KVMMissingCap", -EOPNOTSUPP }, { "SomethingNew", -EIO },
	};
	static struct rec r = { 0 };
	char id[32];

	negotiate(f);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rec_reset(&r, "E");
		assert_int_equal(qmp_error_class_to_errno(cases[i].klass), cases[i].code);
		assert_int_equal(qmp_client_send(f->c, "x", NULL, NULL, 0, 0, reply_cb, &r, NULL),
				 0);
		srv_expect_put(&f->s, "x", id);
		srv_writef(
			&f->s,
			"{\"id\": \"%s\", \"error\": {\"class\": \"%s\", \"desc\": \"went wrong %zu\"}}"
			"\r\n",
			id, cases[i].klass, i);
		assert_int_equal(qmp_client_process(f->c, NULL), 0);
		assert_int_equal(r.n, 1);
		assert_int_equal(r.status, cases[i].code);
		assert_int_equal(r.err.code, cases[i].code);
		assert_string_equal(r.err.klass, cases[i].klass);
		assert_true(strstr(r.err.desc, "went wrong") != NULL);
	}
	/* An error reply that is not {class, desc}: the command still completes. */
	rec_reset(&r, "E");
	assert_int_equal(qmp_client_send(f->c, "x", NULL, NULL, 0, 0, reply_cb, &r, NULL), 0);
	srv_expect_put(&f->s, "x", id);
	srv_writef(&f->s, "{\"id\": \"%s\", \"error\": \"oops\"}\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(r.status, -EBADMSG);
	assert_string_equal(r.err.klass, "");
	rec_reset(&r, NULL);
	assert_int_equal(qmp_error_class_to_errno(NULL), -EIO);
}

static void test_disconnect_mid_command(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 }, late = { 0 };
	struct qmp_error err;
	char ida[32], idb[32];

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	rec_reset(&late, "L");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "b", NULL, NULL, 0, 5000, reply_cb, &b, NULL), 0);
	srv_expect_put(&f->s, "a", ida);
	srv_expect_put(&f->s, "b", idb);
	/* A's reply, half of B's, then QEMU dies. */
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n{\"return\": {}, \"id\"", ida);
	close(f->s.fd);
	f->s.fd = -1;
	memset(&err, 0, sizeof(err));
	assert_int_equal(qmp_client_process(f->c, &err), -EPIPE);
	assert_int_equal(err.code, -EPIPE);
	assert_int_equal(a.status, 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.status, -EPIPE);
	assert_non_null(strstr(b.err.desc, "b ("));
	assert_string_equal(g_log, "R:A:0 R:B:-32 ");
	assert_int_equal(qmp_client_next_timeout_ms(f->c), -1);
	assert_int_equal(qmp_client_pending_commands(f->c), 0);
	/* Dead for good: sends fail synchronously and never call back. */
	assert_int_equal(qmp_client_send(f->c, "c", NULL, NULL, 0, 0, reply_cb, &late, &err),
			 -EPIPE);
	assert_int_equal(err.code, -EPIPE);
	assert_int_equal(qmp_client_process(f->c, NULL), -EPIPE);
	assert_int_equal(late.n, 0);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
	rec_reset(&late, NULL);
}

static void test_connection_reset(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 };

	rec_reset(&a, "A");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	/* Closing with unread data makes the kernel reset the connection. */
	close(f->s.fd);
	f->s.fd = -1;
	assert_int_equal(qmp_client_process(f->c, NULL), -ECONNRESET);
	assert_int_equal(a.status, -EPIPE);
	/* Writing to the dead socket must not raise SIGPIPE. */
	assert_int_equal(qmp_client_send(f->c, "b", NULL, NULL, 0, 0, reply_cb, &a, NULL),
			 -ECONNRESET);
	rec_reset(&a, NULL);
}

static void test_write_after_peer_gone(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 };

	rec_reset(&a, "A");
	negotiate(f);
	close(f->s.fd);
	f->s.fd = -1;
	/* The write fails (EPIPE, no signal); the command is accepted and fails from process(). */
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(a.n, 0);
	assert_int_equal(qmp_client_process(f->c, NULL), -EPIPE);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, -EPIPE);
	rec_reset(&a, NULL);
}

static void test_timeout(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 }, h = { 0 };
	char ida[32], idb[32];
	int64_t t0;
	int t;
	struct qmp_client_stats st;

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	rec_reset(&h, "H");
	/* A command held before negotiation times out and is never written. */
	assert_int_equal(qmp_client_send(f->c, "held", NULL, NULL, 0, 100, reply_cb, &h, NULL), 0);
	pump_until(f->c, &h.n);
	assert_int_equal(h.status, -ETIMEDOUT);
	negotiate(f);
	assert_true(srv_idle(&f->s));

	t0 = mono_ms();
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 300, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "b", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);
	t = qmp_client_next_timeout_ms(f->c);
	assert_in_range(t, 1, 300);
	srv_expect_put(&f->s, "a", ida);
	srv_expect_put(&f->s, "b", idb);
	pump_until(f->c, &a.n);
	assert_true(mono_ms() - t0 >= 300);
	assert_int_equal(a.status, -ETIMEDOUT);
	assert_int_equal(a.err.code, -ETIMEDOUT);
	assert_non_null(strstr(a.err.desc, "300 ms"));
	assert_int_equal(b.n, 0);
	assert_int_equal(qmp_client_next_timeout_ms(f->c), -1);

	/* The late reply is dropped; B still works. */
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", ida);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", idb);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(a.n, 1);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.status, 0);
	qmp_client_get_stats(f->c, &st);
	assert_int_equal(st.timeouts, 2);
	assert_int_equal(st.unknown_replies, 1);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
	rec_reset(&h, NULL);
}

static void test_fd_passing(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 };
	struct json_object *args;
	int p[2], fds[QMP_MAX_FDS + 1];
	struct qmp_error err;
	char id[32], idq[32], buf[16] = { 0 };

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	negotiate(f);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	args = json_object_new_object();
	json_object_object_add(args, "fdname", json_object_new_string("tap0"));
	assert_int_equal(
		qmp_client_send(f->c, "query-status", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "getfd", args, &p[1], 1, 0, reply_cb, &a, NULL), 0);
	json_object_put(args);
	/* fds are borrowed: ours can go at once, the client holds a dup until it is sent. */
	close(p[1]);

	/* (One read may return both commands: the fd rides on getfd's first byte, and the
	 * kernel ends a read after the segment that carries fds.) */
	srv_expect_put(&f->s, "query-status", idq);
	srv_expect_put(&f->s, "getfd", id);
	assert_int_equal(f->s.nrfds, 1);
	/* The fake QEMU received a working fd: write through it, read from our pipe end. */
	assert_int_equal(write(f->s.rfds[0], "hello", 5), 5);
	assert_true(fcntl(f->s.rfds[0], F_GETFD) >= 0);
	close(f->s.rfds[0]);
	f->s.nrfds = 0;
	assert_int_equal(read(p[0], buf, sizeof(buf)), 5);
	assert_string_equal(buf, "hello");
	/* Every writer is closed now (ours, the client's dup, the server's): EOF, not a hang. */
	{
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };

		assert_int_equal(poll(&pfd, 1, IO_TIMEOUT_MS), 1);
		assert_int_equal(read(p[0], buf, sizeof(buf)), 0);
	}
	close(p[0]);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\r\n", idq);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(a.status, 0);
	assert_int_equal(b.status, 0);

	/* Argument checks. */
	for (int i = 0; i <= QMP_MAX_FDS; i++)
		fds[i] = 0;
	assert_int_equal(
		qmp_client_send(f->c, "getfd", NULL, fds, QMP_MAX_FDS + 1, 0, reply_cb, &a, &err),
		-EINVAL);
	fds[0] = 1000;
	assert_int_equal(qmp_client_send(f->c, "getfd", NULL, fds, 1, 0, reply_cb, &a, &err),
			 -EBADF);
	assert_int_equal(err.code, -EBADF);
	assert_int_equal(a.n, 1);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
}

/* Pending fds must be closed when the command never goes out. */
static void test_fd_not_leaked_when_unsent(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 };
	int p[2];

	rec_reset(&a, "A");
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* Held (no greeting yet), then freed by teardown: the dup must be closed. */
	assert_int_equal(qmp_client_send(f->c, "getfd", NULL, &p[1], 1, 0, reply_cb, &a, NULL), 0);
	close(p[1]);
	close(p[0]);
	qmp_client_free(f->c);
	f->c = NULL;
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, -ECANCELED);
	rec_reset(&a, NULL);
}

struct reenter {
	struct qmp_client *c;
	int process_rc, execute_rc, send_rc;
	struct rec inner;
	int n;
};

static void reenter_cb(void *opaque, int status, struct json_object *ret, const struct qmp_error *e)
{
	struct reenter *r = opaque;

	(void)status;
	(void)ret;
	(void)e;
	r->n++;
	r->process_rc = qmp_client_process(r->c, NULL);
	r->execute_rc = qmp_client_execute(r->c, "x", NULL, NULL, 0, NULL, 0, NULL);
	r->send_rc = qmp_client_send(r->c, "inner", NULL, NULL, 0, 0, reply_cb, &r->inner, NULL);
}

static void test_reentrancy(void **state)
{
	struct fix *f = *state;
	static struct reenter r;
	char id[32];

	r.c = f->c;
	r.n = 0;
	rec_reset(&r.inner, "I");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "outer", NULL, NULL, 0, 0, reenter_cb, &r, NULL), 0);
	srv_expect_put(&f->s, "outer", id);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.process_rc, -EDEADLK);
	assert_int_equal(r.execute_rc, -EDEADLK);
	assert_int_equal(r.send_rc, 0);
	/* The command sent from the callback went out and completes normally. */
	srv_expect_put(&f->s, "inner", id);
	srv_writef(&f->s, "{\"return\": {}, \"id\": \"%s\"}\n", id);
	assert_int_equal(qmp_client_process(f->c, NULL), 0);
	assert_int_equal(r.inner.status, 0);
	rec_reset(&r.inner, NULL);
}

static void test_free_cancels(void **state)
{
	struct fix *f = *state;
	static struct rec a = { 0 }, b = { 0 };
	char id[32];

	rec_reset(&a, "A");
	rec_reset(&b, "B");
	negotiate(f);
	assert_int_equal(qmp_client_send(f->c, "a", NULL, NULL, 0, 1000, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_send(f->c, "b", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);
	srv_expect_put(&f->s, "a", id);
	qmp_client_free(f->c);
	f->c = NULL;
	assert_string_equal(g_log, "R:A:-125 R:B:-125 ");
	assert_int_equal(a.err.code, -ECANCELED);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
}

static void test_feed_detached(void **state)
{
	struct qmp_client *c = qmp_client_new_detached();
	static struct rec a = { 0 };
	struct qmp_error err;
	static const char in[] = GREETING "{\"return\": {}, \"id\": \"avm-2\"}\n"
					  "{\"return\": {\"v\": 1}, \"id\": \"avm-1\"}\n";

	(void)state;
	rec_reset(&a, "A");
	assert_non_null(c);
	assert_int_equal(qmp_client_send(c, "q", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_feed(c, in, sizeof(in) - 1, NULL), 0);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, 0);
	assert_int_equal(qmp_client_execute(c, "q", NULL, NULL, 0, NULL, 0, &err), -ENOTCONN);
	assert_int_equal(qmp_client_send(c, "q", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_feed_eof(c, NULL), -EPIPE);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.status, -EPIPE);
	qmp_client_free(c);
	rec_reset(&a, NULL);
}

/* The id of an oversize reply is recovered only when it is a top-level member. */
static void test_oversize_id_recovery(void **state)
{
	struct qmp_client *c = qmp_client_new_detached();
	static struct rec a = { 0 }, b = { 0 };
	static const char pad[] =
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	char *m;
	struct qmp_client_stats st;

	(void)state;
	rec_reset(&a, "A");
	rec_reset(&b, "B");
	assert_non_null(c);
	qmp_client_set_max_message(c, 64);
	assert_int_equal(qmp_client_feed(c, GREETING, strlen(GREETING), NULL), -EMSGSIZE);
	/* The greeting itself was over 64 bytes: start again with the cap raised for it. */
	qmp_client_free(c);
	c = qmp_client_new_detached();
	assert_int_equal(qmp_client_feed(c, GREETING, strlen(GREETING), NULL), 0);
	m = "{\"return\": {}, \"id\": \"avm-1\"}\n";
	assert_int_equal(qmp_client_feed(c, m, strlen(m), NULL), 0);
	qmp_client_set_max_message(c, 64);
	assert_int_equal(qmp_client_send(c, "a", NULL, NULL, 0, 0, reply_cb, &a, NULL), 0);
	assert_int_equal(qmp_client_send(c, "b", NULL, NULL, 0, 0, reply_cb, &b, NULL), 0);

	/* Nested "id" at the end or the start of the payload: not ours. */
	assert_true(asprintf(&m, "{\"return\": {\"pad\": \"%s\", \"id\": \"avm-2\"}}\r\n", pad) >
		    0);
	assert_int_equal(qmp_client_feed(c, m, strlen(m), NULL), -EMSGSIZE);
	free(m);
	assert_true(asprintf(&m, "{\"return\": [{\"id\": \"avm-2\", \"p\": \"%s\"}]}\n", pad) > 0);
	assert_int_equal(qmp_client_feed(c, m, strlen(m), NULL), -EMSGSIZE);
	free(m);
	assert_int_equal(a.n, 0);
	/* Top-level, last (split over two feeds) and first. */
	assert_true(asprintf(&m, "{\"return\": \"%s\",  \"id\" :\"avm-2\" }\r\n", pad) > 0);
	assert_int_equal(qmp_client_feed(c, m, 70, NULL), 0);
	assert_int_equal(qmp_client_feed(c, m + 70, strlen(m) - 70, NULL), -EMSGSIZE);
	free(m);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.status, -EMSGSIZE);
	assert_true(asprintf(&m, " { \"id\": \"avm-3\", \"return\": \"%s\"}\n", pad) > 0);
	assert_int_equal(qmp_client_feed(c, m, strlen(m), NULL), -EMSGSIZE);
	free(m);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.status, -EMSGSIZE);
	qmp_client_get_stats(c, &st);
	assert_int_equal(st.oversize_messages, 4);
	qmp_client_free(c);
	rec_reset(&a, NULL);
	rec_reset(&b, NULL);
}

/* ---- blocking helpers against a forked fake QEMU --------------------------------------- */

/* Child-side line reader: no cmocka in the child, just exit codes. */
static int child_read_cmd(int fd, char *buf, size_t cap, char id[32], const char *want)
{
	size_t n = 0;
	struct json_object *o, *v;

	while (n + 1 < cap) {
		ssize_t r = read(fd, buf + n, 1);

		if (r <= 0)
			return -1;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	o = json_tokener_parse(buf);
	if (!o || !json_object_object_get_ex(o, "execute", &v) ||
	    strcmp(json_object_get_string(v), want) || !json_object_object_get_ex(o, "id", &v)) {
		json_object_put(o);
		return -1;
	}
	snprintf(id, 32, "%s", json_object_get_string(v));
	json_object_put(o);
	return 0;
}

static int child_writef(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int child_writef(int fd, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return write(fd, buf, (size_t)n) == n ? 0 : -1;
}

enum script {
	SCRIPT_OK,
	SCRIPT_DIE_MID_COMMAND,
	SCRIPT_SILENT
};

static void child_main(int fd, enum script sc)
{
	char buf[4096], id[32];

	if (sc == SCRIPT_SILENT) {
		/* Never greet; wait for the parent to hang up. */
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		_exit(0);
	}
	if (child_writef(fd, GREETING) ||
	    child_read_cmd(fd, buf, sizeof(buf), id, "qmp_capabilities") ||
	    child_writef(fd, "{\"return\": {}, \"id\": \"%s\"}\r\n", id))
		_exit(1);
	if (child_read_cmd(fd, buf, sizeof(buf), id, "query-status"))
		_exit(2);
	if (sc == SCRIPT_DIE_MID_COMMAND) {
		child_writef(fd, "{\"event\": \"STOP\"}\r\n{\"return\": {\"status\": ");
		_exit(0);
	}
	if (child_writef(
		    fd,
		    "{\"event\": \"RESUME\"}\r\n"
		    "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": \"%s\"}\r\n",
		    id))
		_exit(3);
	if (child_read_cmd(fd, buf, sizeof(buf), id, "bogus") ||
	    child_writef(fd,
			 "{\"id\": \"%s\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": "
			 "\"The command bogus has not been found\"}}\r\n",
			 id))
		_exit(4);
	if (child_read_cmd(fd, buf, sizeof(buf), id, "slow"))
		_exit(5);
	/* No answer to "slow": the parent times out, then hangs up. */
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	_exit(0);
}

static pid_t fork_server(struct qmp_client **c, enum script sc)
{
	int sv[2];
	pid_t pid;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		child_main(sv[1], sc);
	}
	close(sv[1]);
	*c = qmp_client_new(sv[0]);
	assert_non_null(*c);
	return pid;
}

static int reap(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_blocking_helpers(void **state)
{
	struct qmp_client *c;
	struct json_object *ret = (void *)1;
	struct qmp_error err;
	struct evrec ev = { 0 };
	char status[32];
	pid_t pid;
	int maj;

	(void)state;
	g_log[0] = '\0';
	pid = fork_server(&c, SCRIPT_OK);
	assert_int_equal(qmp_client_add_event_listener(c, event_cb, &ev), 0);
	assert_int_equal(qmp_client_handshake(c, 5000, &err), 0);
	assert_int_equal(qmp_client_version(c, &maj, NULL, NULL), 0);
	assert_int_equal(maj, 7);
	/* Already negotiated: returns at once. */
	assert_int_equal(qmp_client_handshake(c, 5000, &err), 0);
	assert_int_equal(qmp_query_status(c, status, sizeof(status), 5000, &err), 0);
	assert_string_equal(status, "running");
	assert_string_equal(g_log, "E:RESUME ");
	assert_int_equal(qmp_client_execute(c, "bogus", NULL, NULL, 0, &ret, 5000, &err), -ENOSYS);
	assert_null(ret);
	assert_string_equal(err.klass, "CommandNotFound");
	assert_string_equal(err.desc, "The command bogus has not been found");
	assert_int_equal(qmp_client_execute(c, "slow", NULL, NULL, 0, &ret, 200, &err), -ETIMEDOUT);
	assert_int_equal(err.code, -ETIMEDOUT);
	qmp_client_free(c);
	assert_int_equal(reap(pid), 0);
	json_object_put(ev.data);
}

static void test_blocking_die_mid_command(void **state)
{
	struct qmp_client *c;
	struct json_object *ret = NULL;
	struct qmp_error err;
	pid_t pid;

	(void)state;
	pid = fork_server(&c, SCRIPT_DIE_MID_COMMAND);
	/* execute() negotiates by itself when needed. */
	assert_int_equal(qmp_client_execute(c, "query-status", NULL, NULL, 0, &ret, 5000, &err),
			 -EPIPE);
	assert_null(ret);
	assert_int_equal(err.code, -EPIPE);
	assert_non_null(strstr(err.desc, "query-status"));
	assert_int_equal(qmp_client_handshake(c, 1000, &err), -EPIPE);
	qmp_client_free(c);
	assert_int_equal(reap(pid), 0);
}

static void test_handshake_timeout(void **state)
{
	struct qmp_client *c;
	struct qmp_error err;
	int64_t t0 = mono_ms();
	pid_t pid;

	(void)state;
	pid = fork_server(&c, SCRIPT_SILENT);
	assert_int_equal(qmp_client_handshake(c, 200, &err), -ETIMEDOUT);
	assert_true(mono_ms() - t0 >= 200);
	assert_non_null(strstr(err.desc, "greeting"));
	qmp_client_free(c);
	assert_int_equal(reap(pid), 0);
}

/* ---- against a real QEMU --------------------------------------------------------------- */

struct qemu {
	pid_t pid;
	struct qmp_client *c;
	struct evrec ev;
};

static char *find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	char *copy, *dir, *save = NULL, *res = NULL;

	copy = strdup(path ? path : "/usr/local/bin:/usr/bin:/bin");
	for (dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char *p;

		if (asprintf(&p, "%s/%s", dir, name) < 0)
			break;
		if (access(p, X_OK) == 0) {
			res = p;
			break;
		}
		free(p);
	}
	free(copy);
	return res;
}

static int qemu_setup(void **state)
{
	struct qemu *q = calloc(1, sizeof(*q));

	*state = q;
	return 0;
}

static int qemu_teardown(void **state)
{
	struct qemu *q = *state;

	qmp_client_free(q->c);
	if (q->pid > 0) {
		/* Only reached on failure: the test reaps QEMU itself. */
		kill(q->pid, SIGKILL);
		waitpid(q->pid, NULL, 0);
	}
	json_object_put(q->ev.data);
	free(q);
	return 0;
}

static int wait_exit(pid_t pid, int timeout_ms, int *status)
{
	int64_t end = mono_ms() + timeout_ms;

	while (mono_ms() < end) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 0;
		usleep(10000);
	}
	return -1;
}

/* Wait until the event log shows `name` (events arrive before or after the reply). */
static void wait_event(struct qemu *q, const char *name)
{
	int64_t end = mono_ms() + IO_TIMEOUT_MS;
	char pat[64];

	snprintf(pat, sizeof(pat), "E:%s ", name);
	while (!strstr(g_log, pat)) {
		struct pollfd pfd = { .fd = qmp_client_fd(q->c), .events = POLLIN };

		assert_true(mono_ms() < end);
		poll(&pfd, 1, 100);
		assert_false(qmp_client_process(q->c, NULL) < 0);
	}
}

static void test_real_qemu(void **state)
{
	struct qemu *q = *state;
	char *qemu = find_in_path("qemu-system-x86_64");
	char fdarg[64], status[32];
	struct qmp_error err;
	struct json_object *ret = NULL, *args;
	int sv[2], p[2], maj = 0, min = 0, st;

	if (!qemu) {
		print_message("skipped: qemu-system-x86_64 not found in PATH\n");
		skip();
	}
	g_log[0] = '\0';
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	snprintf(fdarg, sizeof(fdarg), "socket,id=qmp0,fd=%d", sv[1]);
	q->pid = fork();
	assert_true(q->pid >= 0);
	if (q->pid == 0) {
		char *argv[] = { qemu,
				 "-M",
				 "microvm,accel=tcg",
				 "-nodefaults",
				 "-no-user-config",
				 "-display",
				 "none",
				 "-S",
				 "-chardev",
				 fdarg,
				 "-mon",
				 "chardev=qmp0,mode=control",
				 NULL };

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Only QEMU's end crosses exec. */
		fcntl(sv[1], F_SETFD, 0);
		execv(qemu, argv);
		_exit(127);
	}
	free(qemu);
	close(sv[1]);
	q->c = qmp_client_new(sv[0]);
	assert_non_null(q->c);
	assert_int_equal(qmp_client_add_event_listener(q->c, event_cb, &q->ev), 0);

	assert_int_equal(qmp_client_handshake(q->c, 20000, &err), 0);
	assert_int_equal(qmp_client_version(q->c, &maj, &min, NULL), 0);
	assert_true(maj >= 2);
	print_message("QEMU %d.%d\n", maj, min);

	assert_int_equal(qmp_query_status(q->c, status, sizeof(status), 10000, &err), 0);
	assert_true(!strcmp(status, "prelaunch") || !strcmp(status, "paused"));

	assert_int_equal(
		qmp_client_execute(q->c, "no-such-command", NULL, NULL, 0, &ret, 10000, &err),
		-ENOSYS);
	assert_string_equal(err.klass, "CommandNotFound");
	assert_non_null(strstr(err.desc, "no-such-command"));

	/* SCM_RIGHTS to a real QEMU: getfd takes the fd, closefd finds it by name, once. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	args = json_object_new_object();
	json_object_object_add(args, "fdname", json_object_new_string("testfd"));
	assert_int_equal(qmp_client_execute(q->c, "getfd", args, &p[1], 1, NULL, 10000, &err), 0);
	close(p[1]);
	close(p[0]);
	assert_int_equal(qmp_client_execute(q->c, "closefd", args, NULL, 0, NULL, 10000, &err), 0);
	assert_int_equal(qmp_client_execute(q->c, "closefd", args, NULL, 0, NULL, 10000, &err),
			 -EIO);
	assert_string_equal(err.klass, "GenericError");
	/* getfd without an fd fails the same way. */
	assert_int_equal(qmp_client_execute(q->c, "getfd", args, NULL, 0, NULL, 10000, &err), -EIO);
	json_object_put(args);

	assert_int_equal(qmp_cont(q->c, 10000, &err), 0);
	wait_event(q, "RESUME");
	assert_int_equal(qmp_query_status(q->c, status, sizeof(status), 10000, &err), 0);
	assert_string_equal(status, "running");
	assert_int_equal(qmp_stop(q->c, 10000, &err), 0);
	wait_event(q, "STOP");
	assert_int_equal(qmp_query_status(q->c, status, sizeof(status), 10000, &err), 0);
	assert_string_equal(status, "paused");
	assert_true(strstr(g_log, "E:RESUME ") < strstr(g_log, "E:STOP "));

	assert_int_equal(qmp_quit(q->c, 10000, &err), 0);
	assert_int_equal(wait_exit(q->pid, 10000, &st), 0);
	q->pid = 0;
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* QEMU is gone: the client sees the hangup. */
	{
		int64_t end = mono_ms() + IO_TIMEOUT_MS;
		int rc;

		while ((rc = qmp_client_process(q->c, NULL)) == 0) {
			struct pollfd pfd = { .fd = qmp_client_fd(q->c), .events = POLLIN };

			assert_true(mono_ms() < end);
			poll(&pfd, 1, 100);
		}
		assert_true(rc == -EPIPE || rc == -ECONNRESET);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_free),
		cmocka_unit_test_setup_teardown(test_greeting_negotiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_before_negotiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiation_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events_between_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_listeners, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_byte_by_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_command_partial_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qmp_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_mid_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_after_peer_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_passing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_not_leaked_when_unsent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reentrancy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_cancels, setup, teardown),
		cmocka_unit_test(test_feed_detached),
		cmocka_unit_test(test_oversize_id_recovery),
		cmocka_unit_test(test_blocking_helpers),
		cmocka_unit_test(test_blocking_die_mid_command),
		cmocka_unit_test(test_handshake_timeout),
	};
	const struct CMUnitTest qemu_tests[] = {
		cmocka_unit_test_setup_teardown(test_real_qemu, qemu_setup, qemu_teardown),
	};
	int failed;

	/*
	 * SIGPIPE keeps its default action on purpose: a write to a dead peer must come back as
	 * EPIPE, not kill us (the library's promise). A watchdog turns a hang (say, a timeout that
	 * never fires) into a failure.
	 */
	alarm(60);
	failed = cmocka_run_group_tests_name("qmp", tests, NULL, NULL);
	failed += cmocka_run_group_tests_name("qmp_qemu", qemu_tests, NULL, NULL);
	return failed ? 1 : 0;
}
