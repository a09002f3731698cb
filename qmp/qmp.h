/* SPDX-License-Identifier: MIT */
/*
 * qmp.h - a small, non-blocking QMP client on json-c.
 *
 * One struct qmp_client drives one QMP monitor connection (a connected stream socket). The core is
 * asynchronous and made for a single-threaded event loop: qmp_client_send() queues a command with
 * a completion callback, the caller polls qmp_client_fd() for qmp_client_poll_events() with a
 * timeout of qmp_client_next_timeout_ms(), and calls qmp_client_process() when the fd is ready or
 * the timeout has passed (with epoll, keep EPOLLOUT registered only while poll_events() asks for
 * it; small commands normally go out whole inside qmp_client_send()). Blocking helpers
 * (handshake, execute, the typed commands) are thin poll loops over the same machinery.
 *
 * Depends on libc and json-c only. Never prints, never logs, never exits, never raises SIGPIPE
 * (writes use MSG_NOSIGNAL). Fallible functions return >= 0 on success or -errno, and fill the
 * optional last argument `err` (may be NULL) with context.
 *
 * Capabilities negotiation is automatic: when the greeting arrives the client sends
 * qmp_capabilities itself, before anything else. Commands sent earlier are QUEUED, not refused:
 * they are held in memory (nothing is written) and go out in order once negotiation succeeded; if
 * negotiation fails they complete with its error. Their timeout runs from the moment of
 * qmp_client_send(), so a QEMU that never greets makes them time out rather than hang.
 *
 * Framing: one JSON object per line, which is what QEMU writes unless the monitor was created
 * with pretty=on (not supported: pretty output spans several lines).
 *
 * Callback contract: when qmp_client_send() returns >= 0 its reply callback is called exactly
 * once, later, from qmp_client_process() (or a blocking helper that runs it) or from
 * qmp_client_free(); never from inside qmp_client_send() or qmp_client_flush(). When it returns
 * < 0 the callback is never called. Callbacks may call qmp_client_send(); they must not call
 * qmp_client_free(), and the blocking helpers and qmp_client_process() refuse to nest
 * (-EDEADLK).
 *
 * errno mapping of QMP error classes (struct qmp_error.klass keeps the class verbatim):
 *   GenericError      -> -EIO
 *   CommandNotFound   -> -ENOSYS   ("not implemented" is what it means: this QEMU lacks the
 *                                   command; -ENOENT stays free for callers' own not-found)
 *   DeviceNotFound    -> -ENODEV
 *   DeviceNotActive   -> -ENXIO
 *   KVMMissingCap     -> -EOPNOTSUPP
 *   any other class   -> -EIO
 * Local errors (klass ""):
 *   -ETIMEDOUT   the command's timeout passed before its reply
 *   -EPIPE       QEMU closed the connection (or a write hit EPIPE) before the reply
 *   -ECONNRESET  the connection was reset (returned by qmp_client_process(); callbacks get -EPIPE)
 *   -ECANCELED   the client was freed with the command still pending
 *   -EMSGSIZE    the reply was larger than QMP_MAX_MESSAGE (the callback gets it when the id
 *                could be recovered from the discarded line, i.e. it was a top-level member at
 *                either end, as QEMU writes it; otherwise the command ends by its timeout or EOF;
 *                process() always reports it)
 *   -EBADMSG     malformed JSON, or a well-formed message that is not QMP (process()); an error
 *                reply without a string "class" (callback)
 *   -EPROTO      capabilities negotiation failed (the client is then unusable)
 *   -EINVAL      bad arguments; -ENOMEM out of memory; -EDEADLK nested blocking call
 */
#ifndef AGENTVM_QMP_H
#define AGENTVM_QMP_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* Hard cap on one incoming message (one line), newline excluded. Larger ones are discarded. */
#define QMP_MAX_MESSAGE (16u << 20)
/* Most fds one command may carry: QEMU's socket chardev accepts 16 per message (TCP_MAX_FDS). */
#define QMP_MAX_FDS 16

struct qmp_error {
	int code;	/* -errno */
	char klass[64]; /* QMP error class ("GenericError", ...) or "" for local errors */
	char desc[256]; /* human-readable: QMP desc or local context */
};

struct qmp_client;

/* Counters, for tests and for an engineer wondering where a reply went. */
struct qmp_client_stats {
	uint64_t commands_sent;	    /* accepted by qmp_client_send(), plus negotiation */
	uint64_t replies;	    /* replies matched to a pending command */
	uint64_t unknown_replies;   /* replies with a missing or unknown id: dropped */
	uint64_t events;	    /* events dispatched (counted even with no event callback) */
	uint64_t bad_messages;	    /* malformed JSON / non-QMP messages: dropped */
	uint64_t oversize_messages; /* messages over QMP_MAX_MESSAGE: dropped */
	uint64_t timeouts;	    /* commands completed with -ETIMEDOUT */
};

/*
 * Create a client on a connected stream socket to a QMP monitor (e.g. one end of a socketpair
 * whose other end QEMU got as -chardev socket,fd=N). On success the client owns fd and
 * qmp_client_free() closes it; the fd is made O_NONBLOCK and FD_CLOEXEC. On failure returns NULL
 * with errno set (EBADF, ENOMEM) and fd still belongs to the caller (its flags may have changed).
 * Not thread-safe: one client belongs to one thread (the event loop).
 */
struct qmp_client *qmp_client_new(int fd);

/*
 * Free the client and close its fd. Pending commands' callbacks are called with -ECANCELED first
 * (so their opaque can be released); they must not use the client. Unsent output is dropped.
 * NULL is a no-op.
 */
void qmp_client_free(struct qmp_client *c);

/* The socket (still owned by the client; valid until qmp_client_free()). */
int qmp_client_fd(const struct qmp_client *c);

/*
 * Event listeners: each is called for every QMP event, in the order they were added, with the
 * event name and data (NULL when the event has none) borrowed for the call only (take
 * json_object_get() to keep data); ts_* is QEMU's timestamp (-1 if absent). Events with no
 * listener are dropped (still counted). Several parts of a program watch one VM's events (its
 * lifecycle, a restore waiting for MIGRATION, an events log), each with its own listener.
 *
 * add: 0, -EEXIST (the same cb and opaque already listen) or -ENOSPC (QMP_MAX_LISTENERS).
 * remove: 0 or -ENOENT; safe from inside a listener (a removed listener is not called again,
 * not even for the event being dispatched). A listener added during a dispatch sees the next
 * event first.
 */
#define QMP_MAX_LISTENERS 8
typedef void (*qmp_event_cb)(void *opaque, const char *event, struct json_object *data,
			     int64_t ts_sec, int64_t ts_usec);
int qmp_client_add_event_listener(struct qmp_client *c, qmp_event_cb cb, void *opaque);
int qmp_client_remove_event_listener(struct qmp_client *c, qmp_event_cb cb, void *opaque);

/*
 * A command's completion. status 0: ret is the "return" value, borrowed for the call only (take
 * json_object_get() to keep it), err is NULL. status < 0: ret is NULL and err (borrowed) says why;
 * see the errno mapping above.
 */
typedef void (*qmp_reply_cb)(void *opaque, int status, struct json_object *ret,
			     const struct qmp_error *err);

/*
 * Queue command `cmd` (borrowed) with arguments `args` (borrowed, a JSON object or NULL) and
 * send it with id "avm-<n>". fds[0..nfds) (borrowed; at most QMP_MAX_FDS) are dup'ed at once
 * (the caller may close its copies when this returns) and passed with SCM_RIGHTS on the
 * command's first byte, for QEMU commands such as getfd/add-fd. timeout_ms 0 = no timeout.
 * Writes as much as it can without blocking; the rest goes out from qmp_client_flush() or
 * qmp_client_process() (see qmp_client_poll_events()). "qmp_capabilities" is refused (-EINVAL):
 * the client negotiates by itself. cb may be NULL (reply dropped). See the callback contract in
 * the header comment. On a dead connection returns its error
 * (-EPIPE, -ECONNRESET, -EPROTO). Returns 0 on success.
 */
int qmp_client_send(struct qmp_client *c, const char *cmd, struct json_object *args, const int *fds,
		    size_t nfds, int timeout_ms, qmp_reply_cb cb, void *opaque,
		    struct qmp_error *err);

/*
 * Write queued output without blocking. Returns 0 (possibly with output still pending) or the
 * fatal write error (-EPIPE, ...); pending callbacks then get -EPIPE from the next
 * qmp_client_process(). Calls no callback itself.
 */
int qmp_client_flush(struct qmp_client *c, struct qmp_error *err);

/* What to poll the fd for: POLLIN always, POLLOUT while writable output is pending. */
short qmp_client_poll_events(const struct qmp_client *c);

/*
 * Run the client: write pending output, read everything available, dispatch the greeting,
 * replies (matched by id, in any order) and events in arrival order, then expire timed-out
 * commands (callback gets -ETIMEDOUT). Call it when the fd is readable or writable or when
 * qmp_client_next_timeout_ms() has passed; spurious calls are harmless.
 * Returns:
 *   0                    all fine
 *   -EBADMSG, -EMSGSIZE  garbage was dropped (the first such error is in err); NOT fatal: the
 *                        client resynchronised at the next newline and stays usable
 *   -EPIPE, -ECONNRESET  QEMU closed the connection: every pending command got -EPIPE, further
 *                        sends fail; close down (fatal, and returned again by later calls)
 *   -EPROTO              negotiation failed (fatal, as above)
 *   -EDEADLK             called from inside a callback
 */
int qmp_client_process(struct qmp_client *c, struct qmp_error *err);

/*
 * Milliseconds (rounded up) until the earliest command deadline, 0 if one has passed, or -1 if
 * no command has a deadline: use it as the poll/epoll timeout.
 */
int qmp_client_next_timeout_ms(const struct qmp_client *c);

/*
 * Blocking: wait for the greeting and complete capabilities negotiation (timeout_ms <= 0: no
 * limit). Events and other commands' replies are dispatched meanwhile. Returns 0 once
 * negotiated (at once if already), -ETIMEDOUT, or the fatal error of qmp_client_process().
 */
int qmp_client_handshake(struct qmp_client *c, int timeout_ms, struct qmp_error *err);

/*
 * Blocking: send one command (arguments as qmp_client_send()) and run the client until its reply.
 * On success *ret (if ret != NULL) gets a new reference to the "return" value, which the caller
 * must json_object_put(); on failure *ret is set to NULL. Negotiates first if needed. Returns 0 or
 * the command's -errno (QMP errors mapped as above, -ETIMEDOUT, -EPIPE, ...).
 */
int qmp_client_execute(struct qmp_client *c, const char *cmd, struct json_object *args,
		       const int *fds, size_t nfds, struct json_object **ret, int timeout_ms,
		       struct qmp_error *err);

/*
 * QEMU's version from the greeting (any pointer may be NULL). -EAGAIN before the greeting
 * arrived, -ENODATA if the greeting had no usable version.
 */
int qmp_client_version(const struct qmp_client *c, int *major, int *minor, int *micro);

/* Copy the counters into *st. */
void qmp_client_get_stats(const struct qmp_client *c, struct qmp_client_stats *st);

/* Map a QMP error class to -errno (the table above); NULL or unknown -> -EIO. */
int qmp_error_class_to_errno(const char *klass);

/*
 * Thin typed helpers over qmp_client_execute() (blocking).
 * qmp_query_status: copies the run state ("running", "paused", "prelaunch", ...) into
 * buf[0..len) (NUL-terminated; -ENOBUFS if it does not fit, -EBADMSG if the reply lacks it).
 * qmp_quit: a connection closed by the exiting QEMU before the reply counts as success.
 */
int qmp_query_status(struct qmp_client *c, char *buf, size_t len, int timeout_ms,
		     struct qmp_error *err);
int qmp_stop(struct qmp_client *c, int timeout_ms, struct qmp_error *err);
int qmp_cont(struct qmp_client *c, int timeout_ms, struct qmp_error *err);
int qmp_quit(struct qmp_client *c, int timeout_ms, struct qmp_error *err);

#endif /* AGENTVM_QMP_H */
