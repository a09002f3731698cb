/* SPDX-License-Identifier: MIT */
#include "state/vmstate.h"

#include <json-c/json.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/stat.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "state/statedir.h"
#include "base/util.h"

#define STATE_RESERVE 4096
#define STATE_SPARE "state.json.spare"

static const char *const state_names[] = {
	[VMS_UNKNOWN] = "unknown",   [VMS_CREATED] = "created", [VMS_STARTING] = "starting",
	[VMS_RUNNING] = "running",   [VMS_PAUSED] = "paused",   [VMS_STOPPING] = "stopping",
	[VMS_STOPPED] = "stopped",   [VMS_CRASHED] = "crashed",
};

const char *vmstate_name(enum vm_run_state s)
{
	return (unsigned)s < ARRAY_SIZE(state_names) ? state_names[s] : "unknown";
}

enum vm_run_state vmstate_parse(const char *word)
{
	for (size_t i = 1; i < ARRAY_SIZE(state_names); i++)
		if (!strcmp(word, state_names[i]))
			return (enum vm_run_state)i;
	return VMS_UNKNOWN;
}

int vmstate_reserve(const char *dir)
{
	char path[PATH_MAX];
	int fd, r = 0;

	if (statedir_file(path, sizeof(path), dir, STATE_SPARE) < 0)
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	/* Real blocks, not a size: a sparse file would need room at the moment of the write. */
	if (fallocate(fd, 0, 0, STATE_RESERVE) < 0) {
		r = -errno;
		if (r == -EOPNOTSUPP) /* no fallocate (rare): write the bytes */
			r = ftruncate(fd, 0) < 0 ? -errno : 0;
	}
	close(fd);
	return r;
}

/*
 * Write the new text into the spare's already allocated blocks (no new room needed), then
 * exchange it with state.json: readers see the old or the new file, never a half, and the old
 * state.json with its blocks becomes the next spare. Without a spare (a state dir of an older
 * agentvm): the usual tmp + rename.
 */
static int write_reserved(const char *dir, const char *text, size_t len)
{
	char spare[PATH_MAX], path[PATH_MAX];
	int fd, r = 0;

	if (len > STATE_RESERVE || statedir_file(spare, sizeof(spare), dir, STATE_SPARE) < 0 ||
	    statedir_file(path, sizeof(path), dir, STATEDIR_STATE) < 0)
		return -ENAMETOOLONG;
	fd = open(spare, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			return -errno;
		/* First write of a dir whose spare was not made, or taken by a crash mid-swap. */
		if ((r = write_file_atomic(path, text, len)) < 0)
			return r;
		vmstate_reserve(dir);
		return 0;
	}
	if (pwrite(fd, text, len, 0) != (ssize_t)len)
		r = errno ? -errno : -EIO;
	/* Shrinking frees only blocks past the text; the first stays allocated for the next. */
	if (r == 0 && ftruncate(fd, (off_t)len) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		return r;
	if (renameat2(AT_FDCWD, spare, AT_FDCWD, path, RENAME_EXCHANGE) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	/* No state.json yet: the spare becomes it, and a new spare is made while there is room. */
	if (rename(spare, path) < 0)
		return -errno;
	vmstate_reserve(dir);
	return 0;
}

int vmstate_write(const char *dir, const struct vm_state *s)
{
	char path[PATH_MAX];
	struct json_object *o = json_object_new_object();
	const char *str;
	int r;

	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "state", json_object_new_string(vmstate_name(s->state)));
	json_object_object_add(o, "accel", json_object_new_string(s->accel));
	json_object_object_add(o, "supervisor_pid", json_object_new_int(s->supervisor_pid));
	json_object_object_add(o, "qemu_pid", json_object_new_int(s->qemu_pid));
	json_object_object_add(o, "supervisor_start",
			       json_object_new_int64((int64_t)s->supervisor_start));
	json_object_object_add(o, "qemu_start", json_object_new_int64((int64_t)s->qemu_start));
	json_object_object_add(o, "created_ms", json_object_new_int64(s->created_ms));
	json_object_object_add(o, "ready_ms", json_object_new_int64(s->ready_ms));
	json_object_object_add(o, "stopped_ms", json_object_new_int64(s->stopped_ms));
	json_object_object_add(o, "exit_reason", json_object_new_string(s->exit_reason));
	json_object_object_add(o, "exit_status", json_object_new_int(s->exit_status));
	if (s->error[0])
		json_object_object_add(o, "error", json_object_new_string(s->error));
	str = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	r = statedir_file(path, sizeof(path), dir, STATEDIR_STATE);
	if (r == 0)
		r = write_reserved(dir, str, strlen(str));
	json_object_put(o);
	return r;
}

static void get_str(struct json_object *o, const char *k, char *out, size_t len)
{
	struct json_object *v;

	if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		snprintf(out, len, "%s", json_object_get_string(v));
}

static int64_t get_int(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

int vmstate_read(const char *dir, struct vm_state *s, struct avm_error *err)
{
	char path[PATH_MAX];
	_cleanup_free_ char *buf = NULL;
	struct json_object *o;
	int r;

	memset(s, 0, sizeof(*s));
	s->state = VMS_CREATED;
	r = statedir_file(path, sizeof(path), dir, STATEDIR_STATE);
	if (r == 0)
		r = statedir_read(dir, STATEDIR_STATE, &buf, 64 * 1024);
	if (r < 0)
		return avm_error_setx(err, r, "cannot read %s", path);
	o = json_tokener_parse(buf);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return avm_error_set(err, -EBADMSG, "%s is not valid JSON", path);
	}
	char word[16] = "created";
	get_str(o, "state", word, sizeof(word));
	s->state = vmstate_parse(word);
	get_str(o, "accel", s->accel, sizeof(s->accel));
	get_str(o, "exit_reason", s->exit_reason, sizeof(s->exit_reason));
	get_str(o, "error", s->error, sizeof(s->error));
	s->supervisor_pid = (pid_t)get_int(o, "supervisor_pid");
	s->qemu_pid = (pid_t)get_int(o, "qemu_pid");
	s->supervisor_start = (uint64_t)get_int(o, "supervisor_start");
	s->qemu_start = (uint64_t)get_int(o, "qemu_start");
	s->created_ms = get_int(o, "created_ms");
	s->ready_ms = get_int(o, "ready_ms");
	s->stopped_ms = get_int(o, "stopped_ms");
	s->exit_status = (int)get_int(o, "exit_status");
	json_object_put(o);
	return 0;
}

bool proc_is(pid_t pid, uint64_t start)
{
	return pid > 0 && start != 0 && proc_start_time(pid) == start;
}

int proc_kill(pid_t pid, uint64_t start, int sig)
{
	int fd, r;

	if (pid <= 0 || start == 0)
		return -ESRCH;
	fd = pidfd_open_cloexec(pid);
	if (fd < 0)
		return -ESRCH;
	/* Checked with the pidfd held: from here the pid cannot name another process. */
	r = proc_start_time(pid) == start ? 0 : -ESRCH;
	if (r == 0 && syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0)
		r = -errno;
	close(fd);
	return r;
}

bool proc_wait_gone(pid_t pid, uint64_t start, int ms)
{
	struct pollfd p = { .events = POLLIN };
	bool gone;

	if (pid <= 0 || start == 0)
		return true;
	p.fd = pidfd_open_cloexec(pid);
	if (p.fd < 0)
		return true;
	/* Checked with the pidfd held, as in proc_kill(); readable once the process has ended. */
	gone = proc_start_time(pid) != start;
	while (!gone) {
		int r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		gone = r > 0;
		break;
	}
	close(p.fd);
	return gone;
}

void vmstate_effective(const char *dir, struct vm_state *s)
{
	bool live_state = s->state == VMS_RUNNING || s->state == VMS_PAUSED ||
			  s->state == VMS_STARTING || s->state == VMS_STOPPING;

	if (!live_state)
		return;
	if (s->supervisor_pid > 0 && !proc_is(s->supervisor_pid, s->supervisor_start)) {
		s->state = VMS_CRASHED;
		snprintf(s->exit_reason, sizeof(s->exit_reason), "supervisor-killed");
	} else if (s->qemu_pid > 0 && !proc_is(s->qemu_pid, s->qemu_start)) {
		/*
		 * A live supervisor is about to write down why QEMU ended (it reaps it first, and a
		 * loaded host can take a moment): until then the VM is stopping, not crashed.
		 */
		if (s->supervisor_pid > 0) {
			s->state = VMS_STOPPING;
			return;
		}
		s->state = VMS_CRASHED;
		snprintf(s->exit_reason, sizeof(s->exit_reason), "qemu-gone");
	}
}

bool vmstate_is_live(enum vm_run_state s)
{
	return s == VMS_CREATED || s == VMS_STARTING || s == VMS_RUNNING || s == VMS_PAUSED ||
	       s == VMS_STOPPING;
}

bool vmstate_is_up(enum vm_run_state s)
{
	return s == VMS_RUNNING || s == VMS_PAUSED;
}

/* A state dir without state.json this young may belong to a VM being set up right now. */
#define STARTING_GRACE_S 120

bool vmstate_dir_may_be_live(const char *dir)
{
	struct vm_state st;
	struct stat sb;

	if (vmstate_read(dir, &st, NULL) < 0)
		return stat(dir, &sb) == 0 && time(NULL) - sb.st_mtime < STARTING_GRACE_S;
	vmstate_effective(dir, &st);
	return vmstate_is_live(st.state);
}
