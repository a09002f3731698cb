/* SPDX-License-Identifier: MIT */
#include "obs/audit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/statedir.h"
#include "base/tz.h"
#include "base/util.h"
#include "state/vmstate.h"

static char dir_buf[PATH_MAX], path_buf[PATH_MAX];

const char *audit_dir(void)
{
	const char *e = getenv("AGENTVM_LOG_DIR"), *home;

	if (dir_buf[0])
		return dir_buf;
	if (e && *e)
		snprintf(dir_buf, sizeof(dir_buf), "%s", e);
	else if (geteuid() == 0)
		snprintf(dir_buf, sizeof(dir_buf), "/var/log/agentvm");
	else if ((e = getenv("XDG_STATE_HOME")) && *e == '/')
		snprintf(dir_buf, sizeof(dir_buf), "%s/agentvm", e);
	else if ((home = getenv("HOME")) && *home == '/')
		snprintf(dir_buf, sizeof(dir_buf), "%s/.local/state/agentvm", home);
	else
		snprintf(dir_buf, sizeof(dir_buf), "/tmp/agentvm-%u/log", (unsigned)geteuid());
	return dir_buf;
}

const char *audit_path(void)
{
	if (!path_buf[0])
		snprintf(path_buf, sizeof(path_buf), "%s/" AUDIT_FILE, audit_dir());
	return path_buf;
}

bool audit_enabled(void)
{
	const char *e = getenv("AGENTVM_AUDIT");

	return !(e && (!strcmp(e, "off") || !strcmp(e, "0")));
}

int audit_check_trust(struct avm_error *err)
{
	return statedir_check_trust(audit_dir(), "AGENTVM_LOG_DIR", err);
}

static uint64_t max_bytes(void)
{
	const char *e = getenv("AGENTVM_AUDIT_MAX_BYTES");
	char *end;
	unsigned long long v;

	if (!e || !*e)
		return AUDIT_MAX_BYTES;
	v = strtoull(e, &end, 10);
	return *end || v < 4096 ? AUDIT_MAX_BYTES : v;
}

/*
 * Rename audit.jsonl to .1 (and .1 to .2 ...) once it is over the limit. Under an flock so two
 * writers that both saw a full file rotate once; the size is checked again under the lock.
 */
static void rotate(void)
{
	char lock[PATH_MAX + 32], from[PATH_MAX + 32], to[PATH_MAX + 32];
	struct stat st;

	snprintf(lock, sizeof(lock), "%s/audit.lock", audit_dir());
	_cleanup_close_ int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || flock(fd, LOCK_EX) < 0)
		return;
	if (lstat(audit_path(), &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < max_bytes())
		return;
	for (int i = AUDIT_KEEP - 1; i >= 1; i--) {
		snprintf(from, sizeof(from), "%s.%d", audit_path(), i);
		snprintf(to, sizeof(to), "%s.%d", audit_path(), i + 1);
		rename(from, to);
	}
	snprintf(to, sizeof(to), "%s.1", audit_path());
	rename(audit_path(), to);
}

/* Open the log for one append: the directory checked once per process, the file no symlink. */
static int open_log(void)
{
	static int trusted; /* 0 unknown, 1 yes, -1 no */
	struct stat st;

	int fd;

	for (int tries = 0;; tries++) {
		if (trusted == 0) {
			struct avm_error e = { 0 };
			trusted = mkdir_p(audit_dir(), 0700) == 0 && audit_check_trust(&e) == 0 ? 1
												 : -1;
		}
		if (trusted < 0)
			return -EPERM;
		fd = open(audit_path(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
						O_NOCTTY | O_NONBLOCK, 0600);
		if (fd >= 0)
			break;
		if (errno != ENOENT || tries)
			return -errno;
		trusted = 0; /* the directory went away: make it (and check it) again */
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		close(fd);
		return -EPERM;
	}
	return fd;
}

/* Cut long strings and arrays of the event's fields so the line stays under AUDIT_MAX_LINE. */
static void shorten(struct json_object *o)
{
	json_object_object_foreach(o, k, v)
	{
		(void)k;
		if (json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 256) {
			char buf[260];
			snprintf(buf, sizeof(buf), "%.250s...", json_object_get_string(v));
			json_object_set_string(v, buf);
		} else if (json_object_is_type(v, json_type_array)) {
			size_t n = json_object_array_length(v);
			if (n > 32)
				json_object_array_del_idx(v, 32, n - 32);
			for (size_t i = 0; i < json_object_array_length(v); i++) {
				struct json_object *e = json_object_array_get_idx(v, i);
				if (json_object_is_type(e, json_type_string) &&
				    json_object_get_string_len(e) > 128) {
					char buf[132];
					snprintf(buf, sizeof(buf), "%.125s...",
						 json_object_get_string(e));
					json_object_set_string(e, buf);
				}
			}
		}
	}
	json_object_object_add(o, "truncated", json_object_new_boolean(1));
}

void audit_log(const char *event, const char *vm, struct json_object *fields)
{
	char ts[40];
	int64_t ms = realtime_ms();
	struct json_object *o;

	if (!audit_enabled()) {
		json_object_put(fields);
		return;
	}
	o = json_object_new_object();
	if (!o) {
		json_object_put(fields);
		return;
	}
	tz_format_rfc3339(tz_new_york(), ms, ts, sizeof(ts));
	json_object_object_add(o, "ts", json_object_new_string(ts));
	json_object_object_add(o, "epoch_ms", json_object_new_int64(ms));
	json_object_object_add(o, "event", json_object_new_string(event));
	if (vm)
		json_object_object_add(o, "vm", json_object_new_string(vm));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	if (fields) {
		json_object_object_foreach(fields, k, v) json_object_object_add(
			o, k, json_object_get(v));
		json_object_put(fields);
	}
	size_t len;
	const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
	if (s && len + 1 > AUDIT_MAX_LINE) {
		shorten(o);
		s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
	}
	if (s && len + 1 <= AUDIT_MAX_LINE) {
		char line[AUDIT_MAX_LINE];
		memcpy(line, s, len);
		line[len] = '\n';
		int fd = open_log();
		if (fd >= 0) {
			struct stat st;
			/* One write: O_APPEND places the whole line at the end atomically. */
			ssize_t n = write(fd, line, len + 1);
			if (n > 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size >= max_bytes())
				rotate();
			close(fd);
		}
	}
	json_object_put(o);
}

void audit_vm(const char *event, const char *vm)
{
	audit_log(event, vm, NULL);
}

void audit_vm_str(const char *event, const char *vm, const char *key, const char *value)
{
	struct json_object *f = json_object_new_object();

	if (f && value)
		json_object_object_add(f, key, json_object_new_string(value));
	audit_log(event, vm, f);
}

void audit_vm_int(const char *event, const char *vm, const char *key, int64_t value)
{
	struct json_object *f = json_object_new_object();

	if (f)
		json_object_object_add(f, key, json_object_new_int64(value));
	audit_log(event, vm, f);
}

void audit_vm_state(const char *vm, enum vm_run_state old, enum vm_run_state state,
		    const char *reason)
{
	const char *ev = NULL;

	if (old == state)
		return;
	if (state == VMS_CREATED)
		ev = "vm.created";
	else if (state == VMS_RUNNING)
		ev = old == VMS_PAUSED ? "vm.resumed" : "vm.ready";
	else if (state == VMS_PAUSED)
		ev = "vm.paused";
	else if (state == VMS_STOPPED)
		ev = "vm.stopped";
	else if (state == VMS_CRASHED)
		ev = "vm.crashed";
	if (ev)
		audit_vm_str(ev, vm, "reason", reason && *reason ? reason : NULL);
}

static struct json_object *argv_json(char *const *argv)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; argv && argv[i] && a; i++)
		json_object_array_add(a, json_object_new_string(argv[i]));
	return a;
}

void audit_exec_start(const char *vm, char *const *argv, const char *cwd)
{
	struct json_object *f = json_object_new_object();

	if (f) {
		json_object_object_add(f, "argv", argv_json(argv));
		if (cwd)
			json_object_object_add(f, "workdir", json_object_new_string(cwd));
	}
	audit_log("exec.start", vm, f);
}

void audit_exec_end(const char *vm, char *const *argv, const char *cwd, const char *kind, int code,
		    uint64_t duration_us, uint64_t bytes_out)
{
	struct json_object *f = json_object_new_object();

	if (f) {
		json_object_object_add(f, "argv", argv_json(argv));
		if (cwd)
			json_object_object_add(f, "workdir", json_object_new_string(cwd));
		json_object_object_add(f, "result", json_object_new_string(kind));
		if (!strcmp(kind, "exited"))
			json_object_object_add(f, "exit_code", json_object_new_int(code));
		else if (!strcmp(kind, "signaled") || !strcmp(kind, "oom-killed"))
			json_object_object_add(f, "signal", json_object_new_int(code));
		char d[32];
		snprintf(d, sizeof(d), "%llu.%llu", (unsigned long long)(duration_us / 1000),
			 (unsigned long long)(duration_us / 100 % 10));
		json_object_object_add(f, "duration_ms", json_object_new_double_s(
								 (double)duration_us / 1000.0, d));
		json_object_object_add(f, "bytes_out", json_object_new_int64((int64_t)bytes_out));
	}
	audit_log("exec.end", vm, f);
}

void audit_error(const char *vm, const char *what, const struct avm_error *err)
{
	struct json_object *f = json_object_new_object();

	if (f) {
		json_object_object_add(f, "what", json_object_new_string(what));
		if (err && err->msg[0])
			json_object_object_add(f, "message", json_object_new_string(err->msg));
	}
	audit_log("error", vm, f);
}

/* --- reading -------------------------------------------------------------------------------- */

static int64_t ny_local_to_utc(int64_t local)
{
	const struct tz *ny = tz_new_york();
	int64_t utc = local - tz_offset(ny, local + 5 * 3600, NULL);

	return local - tz_offset(ny, utc, NULL);
}

int audit_parse_since(const char *s, int64_t now_ms, int64_t *out_ms, struct avm_error *err)
{
	int Y, M, D, h = 0, m = 0, sec = 0, n = 0, oh, om;
	char *end;
	long long v = strtoll(s, &end, 10);
	struct tm tm = { 0 };

	if (end != s && v >= 0 && *end && !end[1] && strchr("smhd", *end)) {
		int64_t unit = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : 86400;
		if (v > 100LL * 365 * 86400 / unit)
			goto bad;
		*out_ms = now_ms - v * unit * 1000;
		return 0;
	}
	if (sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &n) != 3 || M < 1 || M > 12 || D < 1 || D > 31)
		goto bad;
	const char *p = s + n;
	int frac = 0;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		int k = 0;
		if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &m, &sec, &k) != 3 || h > 23 || m > 59 ||
		    sec > 60)
			goto bad;
		p += 1 + k;
		if (*p == '.') {
			int digits = 0;
			for (p++; *p >= '0' && *p <= '9'; p++, digits++)
				if (digits < 3)
					frac = frac * 10 + (*p - '0');
			if (!digits)
				goto bad;
			for (; digits < 3; digits++)
				frac *= 10;
		}
	}
	tm.tm_year = Y - 1900;
	tm.tm_mon = M - 1;
	tm.tm_mday = D;
	tm.tm_hour = h;
	tm.tm_min = m;
	tm.tm_sec = sec;
	int64_t local = (int64_t)timegm(&tm);
	if (*p == 'Z' || *p == 'z') {
		if (p[1])
			goto bad;
		*out_ms = local * 1000 + frac;
	} else if (*p == '+' || *p == '-') {
		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || p[1 + n] || oh > 23 || om > 59)
			goto bad;
		int off = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
		*out_ms = (local - off) * 1000 + frac;
	} else if (!*p) {
		*out_ms = ny_local_to_utc(local) * 1000 + frac; /* New York time, like the log */
	} else {
		goto bad;
	}
	return 0;
bad:
	return avm_error_set(err, -EINVAL,
			     "invalid --since '%s': use a duration (30s, 10m, 2h, 7d), a date "
			     "(2026-12-06) or an RFC 3339 time (2026-12-06T09:00:00-05:00)",
			     s);
}

bool audit_match(struct json_object *ev, const struct audit_filter *f)
{
	struct json_object *v;

	if (!ev)
		return !f->vm && !f->since_ms;
	if (f->vm && (!json_object_object_get_ex(ev, "vm", &v) ||
		      strcmp(json_object_get_string(v), f->vm) != 0))
		return false;
	if (f->since_ms && (!json_object_object_get_ex(ev, "epoch_ms", &v) ||
			    json_object_get_int64(v) < f->since_ms))
		return false;
	return true;
}

struct reader {
	const struct audit_filter *f;
	int (*fn)(void *, const char *, struct json_object *);
	void *opaque;
	char line[AUDIT_MAX_LINE + 1];
	size_t len;
	bool skipping; /* in a line longer than any writer makes: dropped */
};

static int emit_line(struct reader *rd)
{
	struct json_object *ev;
	int r = 0;

	rd->line[rd->len] = 0;
	ev = json_tokener_parse(rd->line);
	if (audit_match(ev, rd->f))
		r = rd->fn(rd->opaque, rd->line, ev);
	json_object_put(ev);
	rd->len = 0;
	return r;
}

/* Feed everything readable from fd; complete lines go to fn. >0: fn asked to stop. */
static int pump(struct reader *rd, int fd)
{
	char buf[16384];
	ssize_t n;
	int r;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				if (!rd->skipping && (r = emit_line(rd)) != 0)
					return r;
				rd->skipping = false;
				rd->len = 0;
			} else if (rd->len < AUDIT_MAX_LINE) {
				rd->line[rd->len++] = buf[i];
			} else {
				rd->skipping = true;
			}
		}
	}
	return n < 0 ? -errno : 0;
}

int audit_read(const struct audit_filter *f, bool follow, int stop_fd,
	       int (*fn)(void *opaque, const char *line, struct json_object *ev), void *opaque,
	       struct avm_error *err)
{
	_cleanup_free_ struct reader *rd = calloc(1, sizeof(*rd));
	char path[PATH_MAX + 32];
	int r;

	if (!rd)
		return avm_error_set(err, -ENOMEM, "out of memory");
	rd->f = f;
	rd->fn = fn;
	rd->opaque = opaque;
	if ((r = audit_check_trust(err)) < 0)
		return r;
	for (int i = AUDIT_KEEP; i >= 1; i--) {
		snprintf(path, sizeof(path), "%s.%d", audit_path(), i);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		if ((r = pump(rd, fd)) != 0)
			return r > 0 ? 0 : avm_error_setx(err, r, "reading %s", path);
		rd->len = 0; /* a torn last line of a file (a crash) does not glue onto the next */
	}
	_cleanup_close_ int fd = open(audit_path(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && (errno != ENOENT || !follow))
		return errno == ENOENT ? 0 : avm_error_setx(err, -errno, "opening %s", audit_path());
	for (;;) {
		if (fd >= 0 && (r = pump(rd, fd)) != 0)
			return r > 0 ? 0 : avm_error_setx(err, r, "reading %s", audit_path());
		if (!follow)
			return 0;
		/* Rotated (or created): finish the old file, then go on in the one after it, which
		 * is not the current one when several rotations passed between two looks. */
		struct stat a, b;
		if (stat(audit_path(), &b) == 0 && (fd < 0 || (fstat(fd, &a) == 0 && a.st_ino != b.st_ino))) {
			if (fd >= 0 && (r = pump(rd, fd)) != 0)
				return r > 0 ? 0 : avm_error_setx(err, r, "reading %s", audit_path());
			const char *next = audit_path();
			for (int k = 1; fd >= 0 && k <= AUDIT_KEEP; k++) {
				struct stat c;
				snprintf(path, sizeof(path), "%s.%d", audit_path(), k);
				if (stat(path, &c) == 0 && c.st_ino == a.st_ino && c.st_dev == a.st_dev) {
					if (k > 1) {
						snprintf(path, sizeof(path), "%s.%d", audit_path(), k - 1);
						next = path;
					}
					break;
				}
			}
			if (fd >= 0)
				close(fd);
			fd = open(next, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			rd->len = 0;
			continue;
		}
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		if (poll(&p, stop_fd >= 0 ? 1 : 0, 200) > 0)
			return 0;
	}
}
