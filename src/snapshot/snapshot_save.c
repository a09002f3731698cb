/* SPDX-License-Identifier: MIT */
/* Saving, listing and removing snapshots (snapshot_save.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "obs/audit.h"
#include "vm/disk.h"
#include "vm/migrate.h"
#include "qmp/qmp.h"
#include "snapshot/restore.h"
#include "snapshot/snapshot.h"
#include "snapshot/snapshot_save.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"
#include "control/vmctl.h"
#include "state/vmstate.h"

#define SAVE_TIMEOUT_MS 120000
/* A save's temp dir older than this whose saver is gone (no flock on it) is removed. */
#define STALE_TMP_S 600

/*
 * Migrate the (stopped) VM into fd; wait for the end. 0, or -errno with err filled. QEMU says
 * a full disk only in words: that is read here, once, into -ENOSPC.
 */
static int save_stream(struct qmp_client *q, int fd, struct avm_error *err)
{
	static const struct migrate_req rq = {
		.fdname = "avm-snapshot", .timeout_ms = SAVE_TIMEOUT_MS, .poll_ms = 2,
		.qmp_timeout_ms = 5000,
	};
	struct migrate_end end;
	int r = migrate_to_fd(q, fd, &rq, &end, err);

	if (r == -EIO && end.ended) {
		const char *d = end.has_desc ? end.desc : "migration failed";
		return avm_error_set(err, strstr(d, "No space") || strstr(d, "space left") ? -ENOSPC
											   : -EIO,
				     "%s", d);
	}
	if (r == -ETIMEDOUT && end.ended) {
		qmp_client_execute(q, "migrate_cancel", NULL, NULL, 0, NULL, 5000, NULL);
		return avm_error_set(err, -ETIMEDOUT, "the save took over %d s",
				     SAVE_TIMEOUT_MS / 1000);
	}
	return r;
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* cancel_fd turned readable (a stop signal in the CLI's signalfd); sticky once seen. */
static bool got_stop(int cancel_fd, bool *seen)
{
	struct pollfd p = { .fd = cancel_fd, .events = POLLIN };

	if (!*seen && cancel_fd >= 0 && poll(&p, 1, 0) > 0)
		*seen = true;
	return *seen;
}

void snap_remove_stale_tmp(void)
{
	_cleanup_closedir_ DIR *d = opendir(paths_snapshot_root());
	struct dirent *e;
	time_t now = time(NULL);

	while (d && (e = readdir(d))) {
		struct stat st;
		char path[PATH_MAX];
		if (!snap_is_tmp_name(e->d_name) ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode) || now - st.st_mtime < STALE_TMP_S)
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 &&
		    snprintf(path, sizeof(path), "%s/%s", paths_snapshot_root(), e->d_name) <
			    (int)sizeof(path))
			remove_flat_dir(path);
		close(fd);
	}
}

/* Before anything stops: every disk still stands on what it stood on at launch. */
static int check_disks(const struct vm_spec *disks, const char *vm_dir, struct avm_error *err)
{
	int r;

	for (size_t i = 0; i < disks->n_disks; i++)
		if ((r = disk_identity_check(vm_dir, i, disks->disks[i].file, err)) < 0)
			return r;
	return 0;
}

/*
 * The disks' overlays into the snapshot's temp dir: while QEMU is still stopped after the
 * migration (which flushed them), so they match the RAM state byte for byte.
 */
static int save_disks(const struct vm_spec *disks, const char *vm_dir, const char *tmp,
		      struct avm_error *err)
{
	char src[PATH_MAX], dst[PATH_MAX];
	int r;

	for (size_t i = 0; i < disks->n_disks; i++) {
		if (disk_overlay_path(src, sizeof(src), vm_dir, i) < 0 ||
		    disk_overlay_path(dst, sizeof(dst), tmp, i) < 0)
			return avm_error_set(err, -ENAMETOOLONG, "path too long");
		if ((r = disk_snapshot_copy(src, dst, err)) < 0)
			return r;
	}
	return 0;
}

/* With the VM running again: make each copy stand on the user's image alone. */
static int rebase_disks(const struct vm_spec *disks, const char *tmp, struct avm_error *err)
{
	char dst[PATH_MAX];
	int r;

	for (size_t i = 0; i < disks->n_disks; i++) {
		if (disk_overlay_path(dst, sizeof(dst), tmp, i) < 0)
			return avm_error_set(err, -ENAMETOOLONG, "path too long");
		if ((r = disk_snapshot_rebase(dst, disks->disks[i].file, err)) < 0)
			return r;
	}
	return 0;
}

/* Fill err with kind and return its code (err->code set by the callee, or `code`). */
static int fail(struct avm_error *err, enum avm_error_kind kind, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(struct avm_error *err, enum avm_error_kind kind, int code, const char *fmt, ...)
{
	char msg[sizeof(err->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return avm_error_kind(err, kind, avm_error_set(err, code, "%s", msg));
}

/* The checks before anything is touched, and the metadata the VM's spec gives. */
static int save_prepare(const char *vm, const char *snap, const char *desc, const char *dir,
			struct vm_state *st, struct snap_meta *m, struct vm_spec **disks,
			struct avm_error *err)
{
	char final[PATH_MAX], path[PATH_MAX], created[64];
	struct vm_spec_summary sum;
	struct json_object *spec;
	int r;

	if (!vmstate_is_up(st->state))
		return fail(err, AVM_ERR_STATE, -EBUSY,
			    "VM '%s' is %s; only a running or paused VM can be saved", vm,
			    vmstate_name(st->state));
	snap_path(final, sizeof(final), snap, NULL);
	if (access(final, F_OK) == 0)
		return fail(err, AVM_ERR_USAGE, -EEXIST,
			    "a snapshot named '%s' already exists; pick another name or remove it "
			    "with 'agentvm snapshot rm %s'",
			    snap, snap);
	if ((r = vm_spec_read(dir, &spec, err)) < 0)
		return fail(err, AVM_ERR_INTERNAL, r, "cannot read %s/" VM_SPEC_FILE, dir);
	m->spec = spec; /* owned by m from here */
	vm_spec_summary_from_json(spec, &sum);
	/*
	 * QEMU refuses to migrate while a 9p export is mounted, and unmounting it under a running
	 * command would pull its files away: a VM with shares is not saved (decided in issue 11).
	 */
	if (sum.n_shares > 0)
		return fail(err, AVM_ERR_USAGE, -EOPNOTSUPP,
			    "VM '%s' has shares (--share/--workspace) and QEMU cannot snapshot a VM "
			    "with a mounted 9p share; start it without shares (move files with "
			    "'agentvm cp') to save it",
			    vm);
	m->name = strdup(snap);
	m->description = strdup(desc ? desc : "");
	m->source_vm = strdup(vm);
	m->profile = strdup(sum.profile);
	m->cpus = sum.cpus;
	m->memory_mib = sum.memory_mib;
	snprintf(m->accel, sizeof(m->accel), "%s", st->accel);
	statedir_file(path, sizeof(path), dir, STATEDIR_NET);
	m->network = access(path, F_OK) == 0; /* the VM has a NIC exactly when it has a net.json */
	snap_time_ny(time(NULL), created, sizeof(created));
	m->created = strdup(created);
	if (!(*disks = vm_spec_new()) || vm_spec_disks_from_json(*disks, spec, err) < 0)
		return fail(err, AVM_ERR_STATE, *disks ? err->code : -ENOMEM,
			    "VM '%s' has a damaged spec.json: %s", vm,
			    *disks ? err->msg : "no memory");
	if ((r = snap_record_inputs(m, sum.kernel, sum.initrd, err)) < 0 ||
	    (r = snap_record_disks(m, *disks, err)) < 0)
		return avm_error_kind(err, AVM_ERR_HOST, r);
	if (check_disks(*disks, dir, err) < 0)
		return fail(err, AVM_ERR_STATE, err->code, "cannot save VM '%s': %s", vm, err->msg);
	return 0;
}

int snap_save(const char *vm, const char *snap, const char *desc, int cancel_fd,
	      struct avm_error *err)
{
	struct avm_error e = { 0 };
	struct qmp_error qe = { 0 };
	struct snap_meta m = { 0 };
	struct qmp_client *q = NULL;
	struct vm_state st;
	struct vm_spec *disks = NULL; /* only its disks are used */
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1, fd = -1, tmp_lock = -1;
	char tmp[PATH_MAX - 64], final[PATH_MAX], path[PATH_MAX], status[32];
	_cleanup_free_ char *text = NULL;
	bool was_running = false, tmp_made = false, saved = false, intr = false;
	int r;

	if ((r = snap_validate_name(snap, err)) < 0 || (r = statedir_find(vm, &dir, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	statedir_file(path, sizeof(path), dir, STATEDIR_LOCK);
	lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX) < 0 || vmstate_read(dir, &st, &e) < 0)
		return fail(err, AVM_ERR_INTERNAL, e.code ? e.code : -errno,
			    "cannot lock or read VM '%s'%s%s", vm, e.msg[0] ? ": " : "", e.msg);
	vmstate_effective(dir, &st);
	if ((r = save_prepare(vm, snap, desc, dir, &st, &m, &disks, err)) < 0)
		goto out;

	r = mkdir_p(paths_snapshot_root(), 0700);
	if (r < 0) {
		fail(err, AVM_ERR_INTERNAL, r,
		     "cannot create the snapshot directory %s: %s (set AGENTVM_SNAPSHOT_DIR)",
		     paths_snapshot_root(), strerror(-r));
		goto out;
	}
	snap_remove_stale_tmp();
	snap_tmp_pattern(tmp, sizeof(tmp), snap);
	if (!mkdtemp(tmp)) {
		r = avm_error_setx(err, -errno, "cannot create a directory in %s", paths_snapshot_root());
		goto out;
	}
	tmp_made = true;
	/* Held while we live: a later save's clean-up leaves this dir alone. */
	tmp_lock = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tmp_lock >= 0)
		flock(tmp_lock, LOCK_EX);
	snprintf(path, sizeof(path), "%s/" SNAP_STATE_FILE, tmp);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = avm_error_setx(err, -errno, "cannot create %s", path);
		goto out;
	}

	if ((r = vm_qmp_open(dir, &q, err)) < 0)
		goto out;
	if ((r = qmp_query_status(q, status, sizeof(status), 5000, &qe)) < 0 ||
	    (r = migrate_set_fast(q, 5000, &qe)) < 0) {
		fail(err, AVM_ERR_VM_LOST, r, "QMP: %s", qe.desc);
		goto out;
	}
	was_running = !strcmp(status, "running");
	/* QEMU 7.2 will not migrate a VM that a migration left paused ("postmigrate"). */
	if (!strcmp(status, "postmigrate")) {
		r = fail(err, AVM_ERR_STATE, -EBUSY,
			 "VM '%s' is still paused from an earlier save; resume it ('agentvm resume "
			 "%s') and save again",
			 vm, vm);
		goto out;
	}
	{
		int ma = 0, mi = 0, mc = 0;
		qmp_client_version(q, &ma, &mi, &mc);
		snprintf(m.qemu_version, sizeof(m.qemu_version), "%d.%d.%d", ma, mi, mc);
	}
	if (got_stop(cancel_fd, &intr))
		goto out;
	uint64_t t0 = now_ms();
	if (was_running && (r = qmp_stop(q, 5000, &qe)) < 0) {
		fail(err, AVM_ERR_VM_LOST, r, "QMP stop: %s", qe.desc);
		goto out;
	}
	r = save_stream(q, fd, &e); /* -EINTR (cancelled) on a stop signal */
	if (r == 0)
		r = save_disks(disks, dir, tmp, &e);
	m.save_ms = (int64_t)(now_ms() - t0);
	if (was_running && qmp_cont(q, 5000, &qe) < 0)
		avm_warn("VM '%s' could not be resumed after the save: %s", vm, qe.desc);
	if (r == 0 && !got_stop(cancel_fd, &intr))
		r = rebase_disks(disks, tmp, &e);
	if (got_stop(cancel_fd, &intr) || r == -EINTR) {
		intr = true;
		goto out;
	}
	if (r < 0) {
		/* qemu-img (the disk copies) says a full disk only in its message. */
		if (r == -ENOSPC || strstr(e.msg, "No space"))
			fail(err, AVM_ERR_INTERNAL, r,
			     "cannot save snapshot '%s': the disk holding %s is full (%s)", snap,
			     paths_snapshot_root(), e.msg);
		else
			fail(err, AVM_ERR_INTERNAL, r, "cannot save snapshot '%s': %s", snap, e.msg);
		goto out;
	}
	struct stat sst;
	if (fsync(fd) < 0 || fstat(fd, &sst) < 0) {
		r = fail(err, AVM_ERR_INTERNAL, -errno, "cannot save snapshot '%s': %s%s", snap,
			 strerror(errno), errno == ENOSPC ? " (the disk is full)" : "");
		goto out;
	}
	m.state_size = sst.st_size;
	text = snap_meta_to_string(&m);
	snprintf(path, sizeof(path), "%s/" SNAP_META_FILE, tmp);
	if (!text || (r = write_file_atomic(path, text, strlen(text))) < 0 ||
	    (r = fsync_path(path)) < 0) {
		r = text ? r : -ENOMEM;
		fail(err, AVM_ERR_INTERNAL, r, "cannot write %s: %s%s", path, strerror(-r),
		     r == -ENOSPC ? " (the disk is full)" : "");
		goto out;
	}
	if (got_stop(cancel_fd, &intr))
		goto out;
	snap_path(final, sizeof(final), snap, NULL);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) < 0) {
		r = fail(err, AVM_ERR_INTERNAL, -errno, "cannot create snapshot '%s': %s", snap,
			 errno == EEXIST || errno == ENOTEMPTY ? "it was created meanwhile"
							       : strerror(errno));
		goto out;
	}
	tmp_made = false;
	saved = true;
	audit_vm_str("snapshot.save", vm, "snapshot", snap);
	fsync_path(paths_snapshot_root());
	r = 0;
	/* Build the copy-on-write template now, so the first restore is as fast as the rest. */
	if (restore_cow() && !got_stop(cancel_fd, &intr)) {
		struct restore rs;
		if (restore_prepare(snap, &rs, &e) < 0) {
			if (!got_stop(cancel_fd, &intr))
				avm_warn("snapshot '%s' saved; %s", snap, e.msg);
		} else {
			restore_release(&rs);
		}
	}
out:
	qmp_client_free(q);
	if (tmp_made)
		remove_flat_dir(tmp);
	if (got_stop(cancel_fd, &intr)) {
		if (saved)
			r = fail(err, AVM_ERR_INTERRUPTED, -EINTR,
				 "interrupted; snapshot '%s' was saved", snap);
		else
			r = fail(err, AVM_ERR_INTERRUPTED, -EINTR,
				 "interrupted; snapshot '%s' was not saved and VM '%s' is %s as "
				 "before",
				 snap, vm, was_running ? "running" : "paused");
	}
	if (r < 0 && err && err->kind == AVM_ERR_ERRNO)
		err->kind = AVM_ERR_INTERNAL; /* a save fails inside agentvm unless said otherwise */
	vm_spec_free(disks);
	snap_meta_release(&m);
	return r;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int snap_list(char ***out)
{
	DIR *d;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;

	snap_remove_stale_tmp(); /* of saves that died (a SIGKILL, a crash) */
	d = opendir(paths_snapshot_root());
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.' || snap_validate_name(e->d_name, NULL) < 0)
			continue;
		char **nn = realloc(names, (n + 2) * sizeof(*names));
		if (!nn || !(nn[n] = strdup(e->d_name))) {
			names = nn ? nn : names;
			if (names)
				names[n] = NULL;
			strv_free(names);
			closedir(d);
			return -ENOMEM;
		}
		names = nn;
		names[++n] = NULL;
	}
	if (d)
		closedir(d);
	if (n)
		qsort(names, n, sizeof(names[0]), cmp_str);
	*out = names ? names : calloc(1, sizeof(*names));
	return *out ? (int)n : -ENOMEM;
}

void snap_users(const char *snap, char *buf, size_t len)
{
	char **names = NULL, path[PATH_MAX];
	size_t off = 0;

	buf[0] = '\0';
	if (statedir_list(&names) < 0)
		return;
	for (char **n = names; n && *n; n++) {
		_cleanup_free_ char *dir = NULL, *origin = NULL;
		if (statedir_find(*n, &dir, NULL) < 0 ||
		    statedir_file(path, sizeof(path), dir, RESTORE_ORIGIN_FILE) < 0 ||
		    read_file(path, &origin, 256) < 0 || strcmp(origin, snap) != 0 ||
		    !vmstate_dir_may_be_live(dir))
			continue;
		int k = snprintf(buf + off, len - off, "%s%s", off ? " " : "", *n);
		if (k < 0 || (size_t)k >= len - off)
			break;
		off += (size_t)k;
	}
	strv_free(names);
}

int snap_remove(const char *snap, bool force, struct avm_error *err)
{
	char path[PATH_MAX], users[1024];
	int r;

	if ((r = snap_validate_name(snap, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	snap_path(path, sizeof(path), snap, NULL);
	if (access(path, F_OK) < 0)
		return fail(err, AVM_ERR_USAGE, -ENOENT,
			    "no snapshot named '%s' (see 'agentvm snapshot ls')", snap);
	snap_users(snap, users, sizeof(users));
	if (users[0] && !force)
		return fail(err, AVM_ERR_STATE, -EBUSY,
			    "snapshot '%s' is in use by VMs restored from it (%s): their disks stand "
			    "on it and reset goes back to it; remove them first, or --force (they "
			    "run on, but cannot be reset, and those with disks cannot be saved)",
			    snap, users);
	if (remove_flat_dir(path) < 0)
		return avm_error_kind(err, AVM_ERR_INTERNAL,
				      avm_error_setx(err, -errno, "cannot remove %s", path));
	audit_vm_str("snapshot.rm", NULL, "snapshot", snap);
	return 0;
}
