/* SPDX-License-Identifier: MIT */
/*
 * The audit log: one JSON object per line in <log dir>/audit.jsonl, appended by every agentvm
 * process (run, exec, the per-VM supervisors, serve) at once. Each line goes out in one write(2)
 * on an O_APPEND fd, so lines never interleave and a crash loses at most the line being written.
 *
 * Location: $AGENTVM_LOG_DIR, else /var/log/agentvm for root, else $XDG_STATE_HOME/agentvm
 * (~/.local/state/agentvm). The directory is created 0700 and must pass the state dir's trust
 * check (a real directory of the caller's, not group/other-writable); the file is opened with
 * O_NOFOLLOW and must be a regular file of the caller's. Rotation: once the file reaches
 * AUDIT_MAX_BYTES ($AGENTVM_AUDIT_MAX_BYTES), the writer that sees it renames it to
 * audit.jsonl.1 (.1 -> .2 ... up to AUDIT_KEEP) under a lock; a writer that still holds the old
 * file open finishes its line there, so no line is lost. $AGENTVM_AUDIT=off turns it off.
 *
 * Every line: {"ts": RFC 3339 in America/New_York with ms and offset, "epoch_ms": UTC ms,
 * "event": name, "vm": name or absent, "pid": writer, ...event fields}. Logging never fails
 * the operation it records: the calls return nothing and errors only cost the line.
 */
#ifndef AGENTVM_AUDIT_H
#define AGENTVM_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/error.h"
#include "state/vmstate.h"

#define AUDIT_FILE "audit.jsonl"
#define AUDIT_MAX_BYTES (8u << 20)
#define AUDIT_KEEP 4
/* A longer line has its long strings and arrays cut (and says "truncated": true). */
#define AUDIT_MAX_LINE 8192

/* The directory and file in use (static storage). */
const char *audit_dir(void);
const char *audit_path(void);
bool audit_enabled(void);
/* The trust check of the log directory (absent is fine: created on the first line). */
int audit_check_trust(struct avm_error *err);

/*
 * Append one event. fields: a JSON object of the event's own fields, taken over (freed here),
 * or NULL. vm: may be NULL.
 */
void audit_log(const char *event, const char *vm, struct json_object *fields);

/* One-line helpers for the call sites. */
void audit_vm(const char *event, const char *vm);
void audit_vm_str(const char *event, const char *vm, const char *key, const char *value);
void audit_vm_int(const char *event, const char *vm, const char *key, int64_t value);
/* A VM's state.json moved from old to state: vm.created/ready/paused/resumed/stopped/crashed. */
void audit_vm_state(const char *vm, enum vm_run_state old, enum vm_run_state state,
		    const char *reason);
void audit_exec_start(const char *vm, char *const *argv, const char *cwd);
/* kind: "exited", "signaled", "timeout", "error"; code: exit code or signal number. */
void audit_exec_end(const char *vm, char *const *argv, const char *cwd, const char *kind, int code,
		    uint64_t duration_us, uint64_t bytes_out);
void audit_error(const char *vm, const char *what, const struct avm_error *err);

/* Reading: what `agentvm audit` shows. */
struct audit_filter {
	const char *vm;   /* NULL: every VM */
	int64_t since_ms; /* 0: everything */
};
/*
 * "30s", "10m", "2h", "7d" (that long ago), an RFC 3339 time ("2026-12-06T09:00:00-05:00",
 * fraction optional, "Z" allowed) or a date "2026-12-06" (00:00 New York time). 0 or -EINVAL.
 */
int audit_parse_since(const char *s, int64_t now_ms, int64_t *out_ms, struct avm_error *err);
/* Whether a parsed line passes the filter. */
bool audit_match(struct json_object *ev, const struct audit_filter *f);
/*
 * Call fn on every matching line, oldest first (the rotated files, then the current one).
 * follow: then wait for new lines (through rotations) until fn returns non-zero or stop_fd
 * (>= 0) becomes readable. A line that is not JSON is passed with ev == NULL. 0 or -errno.
 */
int audit_read(const struct audit_filter *f, bool follow, int stop_fd,
	       int (*fn)(void *opaque, const char *line, struct json_object *ev), void *opaque,
	       struct avm_error *err);

#endif
