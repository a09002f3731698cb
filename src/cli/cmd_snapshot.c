/* SPDX-License-Identifier: MIT */
/*
 * agentvm snapshot save|ls|rm, restore, reset: snapshots of detached VMs and new VMs from them.
 * A save stops the VM, migrates it over QMP into a file QEMU gets with getfd (SCM_RIGHTS), and
 * resumes it; a restore starts a supervised VM whose QEMU loads that stream (vm_restore.c).
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "cli.h"
#include "disk.h"
#include "migrate.h"
#include "pool.h"
#include "qmp.h"
#include "restore.h"
#include "snapshot.h"
#include "statedir.h"
#include "strv.h"
#include "util.h"
#include "vm.h"
#include "vmstate.h"

#define SAVE_TIMEOUT_MS 120000
#define EXIT_INTERRUPTED 130
/* A save's temp dir older than this whose saver is gone (no flock on it) is removed. */
#define STALE_TMP_S 600


static struct json_object *read_json(const char *dir, const char *file)
{
	_cleanup_free_ char *buf = NULL;

	if (statedir_read(dir, file, &buf, 1 << 20) < 0)
		return NULL;
	return json_tokener_parse(buf);
}

static const char *json_str(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static int json_int(struct json_object *o, const char *k)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int(v) : 0;
}

/* Migrate the (stopped) VM into fd; wait for the end. 0, or -errno with err filled. */
static int save_stream(struct qmp_client *q, int fd, struct avm_error *err)
{
	static const struct migrate_req rq = {
		.fdname = "avm-snapshot", .timeout_ms = SAVE_TIMEOUT_MS, .poll_ms = 2,
		.qmp_timeout_ms = 5000,
	};
	struct migrate_end end;
	int r = migrate_to_fd(q, fd, &rq, &end, err);

	if (r == -EIO && end.ended)
		return avm_error_set(err, -EIO, "%s", end.has_desc ? end.desc : "migration failed");
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

/* A stop signal came in on sig_fd (blocked by cli_block_signals); sticky once seen. */
static bool got_stop(int sig_fd, bool *seen)
{
	struct signalfd_siginfo si;

	while (sig_fd >= 0 && read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		*seen = true;
	return *seen;
}

/*
 * Remove the temp dirs (".NAME.tmp-XXXXXX") of saves that died: no saver holds their flock and
 * they are older than STALE_TMP_S (a saver from before the flock was taken never held one).
 */
static void remove_stale_tmp(void)
{
	DIR *d = opendir(snap_root());
	struct dirent *e;
	time_t now = time(NULL);

	while (d && (e = readdir(d))) {
		struct stat st;
		char path[PATH_MAX];
		if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp-") ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode) || now - st.st_mtime < STALE_TMP_S)
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 &&
		    snprintf(path, sizeof(path), "%s/%s", snap_root(), e->d_name) <
			    (int)sizeof(path))
			remove_flat_dir(path);
		close(fd);
	}
	if (d)
		closedir(d);
}

/*
 * The disks' overlays into the snapshot's temp dir: while QEMU is still stopped after the
 * migration (which flushed them), so they match the RAM state byte for byte.
 */
/* Before anything stops: every disk still stands on what it stood on at launch. */
static int check_disks(const struct vm_spec *disks, const char *vm_dir, struct avm_error *err)
{
	int r;

	for (size_t i = 0; i < disks->n_disks; i++)
		if ((r = disk_identity_check(vm_dir, i, disks->disks[i].file, err)) < 0)
			return r;
	return 0;
}

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

static int snapshot_save(const char *vm, const char *snap, const char *desc)
{
	struct avm_error err = { 0 };
	struct qmp_error qe = { 0 };
	struct snap_meta m = { 0 };
	struct qmp_client *q = NULL;
	struct vm_state st;
	struct json_object *spec = NULL;
	struct vm_spec *disks = NULL; /* only its disks are used */
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1, fd = -1, sig_fd = -1, tmp_lock = -1;
	char tmp[PATH_MAX - 64], final[PATH_MAX], path[PATH_MAX], created[64], status[32];
	_cleanup_free_ char *text = NULL;
	bool was_running = false, tmp_made = false, saved = false, intr = false;
	int r, code = EXIT_INTERNAL;

	if (snap_validate_name(snap, &err) < 0 || statedir_find(vm, &dir, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	statedir_file(path, sizeof(path), dir, "lock");
	lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX) < 0 || vmstate_read(dir, &st, &err) < 0) {
		cli_error("cannot lock or read VM '%s'%s%s", vm, err.msg[0] ? ": " : "", err.msg);
		return EXIT_INTERNAL;
	}
	vmstate_effective(dir, &st);
	if (strcmp(st.state, "running") != 0 && strcmp(st.state, "paused") != 0) {
		cli_error("VM '%s' is %s; only a running or paused VM can be saved", vm, st.state);
		return 1;
	}
	snap_path(final, sizeof(final), snap, NULL);
	if (access(final, F_OK) == 0) {
		cli_error("a snapshot named '%s' already exists; pick another name or remove it with "
			  "'agentvm snapshot rm %s'",
			  snap, snap);
		return EXIT_USAGE;
	}
	spec = read_json(dir, "spec.json");
	if (!spec) {
		cli_error("cannot read %s/spec.json", dir);
		return EXIT_INTERNAL;
	}
	/*
	 * QEMU refuses to migrate while a 9p export is mounted, and unmounting it under a running
	 * command would pull its files away: a VM with shares is not saved (decided in issue 11).
	 */
	struct json_object *shares;
	if (json_object_object_get_ex(spec, "shares", &shares) &&
	    json_object_array_length(shares) > 0) {
		cli_error("VM '%s' has shares (--share/--workspace) and QEMU cannot snapshot a VM "
			  "with a mounted 9p share; start it without shares (move files with "
			  "'agentvm cp') to save it",
			  vm);
		json_object_put(spec);
		return EXIT_USAGE;
	}
	m.name = strdup(snap);
	m.description = strdup(desc ? desc : "");
	m.source_vm = strdup(vm);
	m.profile = strdup(json_str(spec, "profile") ? json_str(spec, "profile") : "custom");
	m.cpus = (unsigned)json_int(spec, "cpus");
	m.memory_mib = (unsigned)json_int(spec, "memory_mib");
	snprintf(m.accel, sizeof(m.accel), "%s", st.accel);
	statedir_file(path, sizeof(path), dir, "net.json");
	m.network = access(path, F_OK) == 0; /* the VM has a NIC exactly when it has a net.json */
	m.spec = spec;
	snap_time_ny(time(NULL), created, sizeof(created));
	m.created = strdup(created);
	if (!(disks = vm_spec_new()) || vm_spec_disks_from_json(disks, spec, &err) < 0) {
		cli_error("VM '%s' has a damaged spec.json: %s", vm, disks ? err.msg : "no memory");
		code = 1;
		goto out;
	}
	if ((r = snap_record_inputs(&m, json_str(spec, "kernel"), json_str(spec, "initrd"),
				      &err)) < 0 ||
	    (r = snap_record_disks(&m, disks, &err)) < 0) {
		cli_error("%s", err.msg);
		code = EXIT_HOST_MISSING;
		goto out;
	}
	if (check_disks(disks, dir, &err) < 0) {
		cli_error("cannot save VM '%s': %s", vm, err.msg);
		code = 1;
		goto out;
	}

	r = mkdir_p(snap_root(), 0700);
	if (r < 0) {
		cli_error("cannot create the snapshot directory %s: %s (set AGENTVM_SNAPSHOT_DIR)",
			  snap_root(), strerror(-r));
		goto out;
	}
	remove_stale_tmp();
	/*
	 * From here a Ctrl-C, SIGTERM or SIGHUP waits in sig_fd: the save is aborted cleanly (the
	 * migration cancelled, the VM resumed, the temp dir removed) instead of leaving the VM
	 * paused and a RAM-sized temp dir behind.
	 */
	sig_fd = cli_block_signals();
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-XXXXXX", snap_root(), snap);
	if (!mkdtemp(tmp)) {
		cli_error("cannot create a directory in %s: %s", snap_root(), strerror(errno));
		goto out;
	}
	tmp_made = true;
	/* Held while we live: a later save's clean-up leaves this dir alone. */
	tmp_lock = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tmp_lock >= 0)
		flock(tmp_lock, LOCK_EX);
	snprintf(path, sizeof(path), "%s/state", tmp);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		cli_error("cannot create %s: %s", path, strerror(errno));
		goto out;
	}

	if ((r = cli_qmp_open(dir, &q, &err)) < 0) {
		cli_error("%s", err.msg);
		code = EXIT_VM_LOST;
		goto out;
	}
	if ((r = qmp_query_status(q, status, sizeof(status), 5000, &qe)) < 0 ||
	    (r = migrate_set_fast(q, 5000, &qe)) < 0) {
		cli_error("QMP: %s", qe.desc);
		code = EXIT_VM_LOST;
		goto out;
	}
	was_running = !strcmp(status, "running");
	/* QEMU 7.2 will not migrate a VM that a migration left paused ("postmigrate"). */
	if (!strcmp(status, "postmigrate")) {
		cli_error("VM '%s' is still paused from an earlier save; resume it ('agentvm resume "
			  "%s') and save again",
			  vm, vm);
		code = 1;
		goto out;
	}
	{
		int ma = 0, mi = 0, mc = 0;
		qmp_client_version(q, &ma, &mi, &mc);
		snprintf(m.qemu_version, sizeof(m.qemu_version), "%d.%d.%d", ma, mi, mc);
	}
	if (got_stop(sig_fd, &intr))
		goto out;
	uint64_t t0 = now_ms();
	if (was_running && (r = qmp_stop(q, 5000, &qe)) < 0) {
		cli_error("QMP stop: %s", qe.desc);
		code = EXIT_VM_LOST;
		goto out;
	}
	r = save_stream(q, fd, &err); /* -EINTR (cancelled) on a stop signal */
	if (r == 0)
		r = save_disks(disks, dir, tmp, &err);
	m.save_ms = (int64_t)(now_ms() - t0);
	if (was_running && qmp_cont(q, 5000, &qe) < 0)
		cli_warn("VM '%s' could not be resumed after the save: %s", vm, qe.desc);
	if (r == 0 && !got_stop(sig_fd, &intr))
		r = rebase_disks(disks, tmp, &err);
	if (got_stop(sig_fd, &intr) || r == -EINTR) {
		intr = true;
		goto out;
	}
	if (r < 0) {
		if (strstr(err.msg, "No space") || strstr(err.msg, "space left"))
			cli_error("cannot save snapshot '%s': the disk holding %s is full (%s)", snap,
				  snap_root(), err.msg);
		else
			cli_error("cannot save snapshot '%s': %s", snap, err.msg);
		goto out;
	}
	struct stat sst;
	if (fsync(fd) < 0 || fstat(fd, &sst) < 0) {
		cli_error("cannot save snapshot '%s': %s%s", snap, strerror(errno),
			  errno == ENOSPC ? " (the disk is full)" : "");
		goto out;
	}
	m.state_size = sst.st_size;
	text = snap_meta_to_string(&m);
	snprintf(path, sizeof(path), "%s/meta.json", tmp);
	if (!text || (r = write_file_atomic(path, text, strlen(text))) < 0 ||
	    (r = fsync_path(path)) < 0) {
		cli_error("cannot write %s: %s%s", path, strerror(text ? -r : ENOMEM),
			  r == -ENOSPC ? " (the disk is full)" : "");
		goto out;
	}
	if (got_stop(sig_fd, &intr))
		goto out;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) < 0) {
		cli_error("cannot create snapshot '%s': %s", snap,
			  errno == EEXIST || errno == ENOTEMPTY ? "it was created meanwhile"
								: strerror(errno));
		goto out;
	}
	tmp_made = false;
	saved = true;
	audit_vm_str("snapshot.save", vm, "snapshot", snap);
	fsync_path(snap_root());
	code = 0;
	/* Build the copy-on-write template now, so the first restore is as fast as the rest. */
	if (restore_cow() && !got_stop(sig_fd, &intr)) {
		struct restore rs;
		if (restore_prepare(snap, &rs, &err) < 0) {
			if (!got_stop(sig_fd, &intr))
				cli_warn("snapshot '%s' saved; %s", snap, err.msg);
		} else {
			restore_release(&rs);
		}
	}
out:
	qmp_client_free(q);
	if (tmp_made)
		remove_flat_dir(tmp);
	if (got_stop(sig_fd, &intr)) {
		if (saved)
			cli_error("interrupted; snapshot '%s' was saved", snap);
		else
			cli_error("interrupted; snapshot '%s' was not saved and VM '%s' is %s as "
				  "before",
				  snap, vm, was_running ? "running" : "paused");
		code = EXIT_INTERRUPTED;
	}
	m.spec = NULL;
	json_object_put(spec);
	vm_spec_free(disks);
	snap_meta_release(&m);
	return code;
}

static int cmd_snapshot_save(int argc, char **argv)
{
	const char *desc = NULL, *pos[2];
	int n = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--description") || !strcmp(argv[i], "-d")) {
			if (++i >= argc) {
				cli_error("--description needs a value");
				return EXIT_USAGE;
			}
			desc = argv[i];
		} else if (!strncmp(argv[i], "--description=", 14)) {
			desc = argv[i] + 14;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			puts("usage: agentvm snapshot save VM SNAPSHOT [--description TEXT]");
			return 0;
		} else if (argv[i][0] == '-' || n == 2) {
			cli_error("unexpected argument '%s'; usage: agentvm snapshot save VM SNAPSHOT "
				  "[--description TEXT]",
				  argv[i]);
			return EXIT_USAGE;
		} else {
			pos[n++] = argv[i];
		}
	}
	if (n != 2) {
		cli_error("usage: agentvm snapshot save VM SNAPSHOT [--description TEXT]");
		return EXIT_USAGE;
	}
	return snapshot_save(pos[0], pos[1], desc);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_snapshot_ls(int argc, char **argv)
{
	bool json = argc >= 2 && !strcmp(argv[1], "--json");
	struct json_object *arr = json_object_new_array();
	DIR *d = opendir(snap_root());
	struct dirent *e;
	char *names[4096];
	size_t n = 0;

	if (argc >= 2 && !json) {
		cli_error("usage: agentvm snapshot ls [--json]");
		return EXIT_USAGE;
	}
	remove_stale_tmp(); /* of saves that died (a SIGKILL, a crash) */
	while (d && (e = readdir(d)) && n < ARRAY_SIZE(names))
		if (e->d_name[0] != '.' && snap_validate_name(e->d_name, NULL) == 0)
			names[n++] = strdup(e->d_name);
	if (d)
		closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	if (!json)
		printf("%-24s %-25s %9s %6s %5s %-16s %s\n", "NAME", "CREATED", "SIZE", "ACCEL",
		       "DISKS", "VM", "DESCRIPTION");
	for (size_t i = 0; i < n; i++) {
		struct snap_meta m;
		struct avm_error err = { 0 };
		char path[PATH_MAX];
		_cleanup_free_ char *text = NULL;
		int ok = snap_load(names[i], &m, &err) == 0;

		if (json) {
			struct json_object *o = NULL;
			snap_path(path, sizeof(path), names[i], "meta.json");
			if (ok && read_file(path, &text, 1 << 20) >= 0)
				o = json_tokener_parse(text);
			if (!o) {
				o = json_object_new_object();
				json_object_object_add(o, "name", json_object_new_string(names[i]));
			}
			json_object_object_add(o, "damaged", json_object_new_boolean(!ok));
			if (!ok)
				json_object_object_add(o, "error", json_object_new_string(err.msg));
			json_object_array_add(arr, o);
		} else if (ok) {
			printf("%-24s %-25s %8.1fM %6s %5zu %-16s %s\n", names[i], m.created,
			       (double)m.state_size / (1024.0 * 1024.0), m.accel, m.n_disks,
			       m.source_vm, m.description);
		} else {
			printf("%-24s %-25s %9s %6s %5s %-16s (damaged: %s)\n", names[i], "-", "-", "-",
			       "-", "-", err.msg);
		}
		if (ok)
			snap_meta_release(&m);
		free(names[i]);
	}
	if (json)
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_SPACED |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
	return 0;
}

/*
 * The live VMs restored from snapshot `snap`, space-separated into buf (empty: none). Their disk
 * overlays stand on the snapshot's disk copies, and reset goes back to it.
 */
static void snapshot_users(const char *snap, char *buf, size_t len)
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

static int cmd_snapshot_rm(int argc, char **argv)
{
	struct avm_error err = { 0 };
	char path[PATH_MAX], users[1024];
	bool force = argc == 3 && !strcmp(argv[1], "--force");
	const char *snap = argv[argc - 1];

	if (argc != 2 && !force) {
		cli_error("usage: agentvm snapshot rm [--force] SNAPSHOT");
		return EXIT_USAGE;
	}
	if (snap_validate_name(snap, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	snap_path(path, sizeof(path), snap, NULL);
	if (access(path, F_OK) < 0) {
		cli_error("no snapshot named '%s' (see 'agentvm snapshot ls')", snap);
		return EXIT_USAGE;
	}
	snapshot_users(snap, users, sizeof(users));
	if (users[0] && !force) {
		cli_error("snapshot '%s' is in use by VMs restored from it (%s): their disks stand on "
			  "it and reset goes back to it; remove them first, or --force (they run "
			  "on, but cannot be reset, and those with disks cannot be saved)",
			  snap, users);
		return 1;
	}
	if (remove_flat_dir(path) < 0) {
		cli_error("cannot remove %s: %s", path, strerror(errno));
		return EXIT_INTERNAL;
	}
	audit_vm_str("snapshot.rm", NULL, "snapshot", snap);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "save"))
		return cmd_snapshot_save(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "ls"))
		return cmd_snapshot_ls(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "rm"))
		return cmd_snapshot_rm(argc - 1, argv + 1);
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		puts("usage: agentvm snapshot save VM SNAPSHOT [--description TEXT]\n"
		     "       agentvm snapshot ls [--json]\n"
		     "       agentvm snapshot rm [--force] SNAPSHOT");
		return 0;
	}
	cli_error("usage: agentvm snapshot save|ls|rm ...; see 'agentvm snapshot --help'");
	return EXIT_USAGE;
}

/* --- restore -------------------------------------------------------------------------------- */

static void rm_vm(const char *name)
{
	char *av[] = { "rm", "--force", (char *)name, NULL };
	int saved = dup(STDERR_FILENO), nul = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (nul >= 0)
		dup2(nul, STDERR_FILENO);
	cmd_rm(3, av);
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
	if (nul >= 0)
		close(nul);
}

static int restore_exit_code(int r)
{
	if (r == -EEXIST || r == -EINVAL)
		return EXIT_USAGE;
	return EXIT_BOOT_FAILED;
}

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "count", required_argument, NULL, 'c' },
		{ "boot-timeout", required_argument, NULL, 'b' },
		CLI_NET_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct avm_error err = { 0 };
	struct restore rs;
	struct cli_net_override no = { .spec = vm_spec_new() };
	struct vm_spec *ov = no.spec;
	const char *name = NULL;
	long count = 1, boot_timeout_s = CLI_DEFAULT_BOOT_TIMEOUT_S;
	int c, code = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
			break;
		case 'c':
			if (parse_long(optarg, 1, 256, &count) < 0) {
				cli_error("--count '%s' is not a number from 1 to 256", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (parse_long(optarg, 1, 3600, &boot_timeout_s) < 0) {
				cli_error("--boot-timeout '%s' is not a number of seconds", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'N':
		case 'A':
		case 'H':
		case 'D':
		case 'S':
		case CLI_OPT_ALLOW_CIDR ... CLI_OPT_BANDWIDTH:
			if (cli_net_override_flag(&no, c, optarg, &err) < 0) {
				cli_error("%s", err.msg);
				vm_spec_free(ov);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			puts("usage: agentvm restore SNAPSHOT [--name NAME] [--count N] "
			     "[--boot-timeout S]\n"
			     "       [--network nat-filtered|bridge:BR|isolated] [--allow PROTO:PORT]...\n"
			     "       [--allow-host PROTO:PORT]... [--deny-all-egress] [--dns ADDR]\n"
			     "       [--allow-cidr CIDR[:PROTO:PORT]]... [--allow-domain NAME]...\n"
			     "       [--domain-ttl S] [--conn-limit N] [--conn-rate N] [--bandwidth R]\n"
			     "Start new VMs from a snapshot; prints their names once they are ready.\n"
			     "With --count N and --name NAME the VMs are NAME-1 .. NAME-N.\n"
			     "A clone keeps its snapshot's network policy unless the flags say "
			     "otherwise; a NIC can be neither added nor removed.");
			vm_spec_free(ov);
			return 0;
		default:
			cli_error("unknown or incomplete option '%s'; see 'agentvm restore --help'",
				  argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		cli_error("usage: agentvm restore SNAPSHOT [--name NAME] [--count N]");
		return EXIT_USAGE;
	}
	const char *snap = argv[optind];
	char (*names)[STATEDIR_MAX_NAME + 1] = calloc((size_t)count, sizeof(*names));
	pid_t *pids = calloc((size_t)count, sizeof(*pids));
	if (!names || !pids)
		return EXIT_INTERNAL;
	for (long i = 0; i < count; i++) {
		if (name && count == 1)
			snprintf(names[i], sizeof(names[i]), "%s", name);
		else if (name && snprintf(names[i], sizeof(names[i]), "%s-%ld", name, i + 1) >=
					 (int)sizeof(names[i]))
			names[i][0] = '\0';
		else if (!name)
			statedir_random_name(names[i], sizeof(names[i]));
		if (statedir_validate_name(names[i], &err) < 0) {
			cli_error("%s", err.msg);
			return EXIT_USAGE;
		}
	}
	if (restore_check_flags(snap, ov, no.mode_given, no.policy_given, &err) < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(ov);
		free(names);
		free(pids);
		return EXIT_USAGE;
	}
	if (restore_prepare(snap, &rs, &err) < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(ov);
		free(names);
		free(pids);
		return err.code == -ENOENT || err.code == -EINVAL ? EXIT_USAGE
			: err.code == -EBADMSG || err.code == -ESTALE || err.code == -EPROTO ||
					  err.code == -EOPNOTSUPP
				? 1
			: err.code == -ECHILD || err.code == -ETIMEDOUT || err.code == -EIO
				? EXIT_BOOT_FAILED
				: EXIT_HOST_MISSING;
	}
	rs.net_override = ov;
	rs.net_mode_given = no.mode_given;
	rs.policy_given = no.policy_given;
	/*
	 * A Ctrl-C (SIGTERM, SIGHUP) from here waits in sig_fd, for us and for the children: a
	 * child killed halfway would leave a supervisor that goes on to start its VM. Once every
	 * restore has ended, an interrupt removes all the VMs they started.
	 */
	_cleanup_close_ int sig_fd = cli_block_signals();
	bool intr = false;
	if (count == 1) {
		int r = restore_one(&rs, names[0], boot_timeout_s, &err);
		if (got_stop(sig_fd, &intr)) {
			if (r == 0)
				rm_vm(names[0]);
			cli_error("interrupted; no VM was restored from '%s'", snap);
			code = EXIT_INTERRUPTED;
		} else if (r < 0) {
			cli_error("%s", err.msg);
			code = restore_exit_code(r);
		} else {
			printf("%s\n", names[0]);
		}
		goto out;
	}
	/* Several: one child each, concurrently; all or nothing. */
	fflush(NULL);
	for (long i = 0; i < count; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			close(sig_fd);
			int r = restore_one(&rs, names[i], boot_timeout_s, &err);
			if (r < 0)
				cli_error("%s: %s", names[i], err.msg);
			_exit(r < 0 ? restore_exit_code(r) : 0);
		}
	}
	bool failed = false;
	for (long i = 0; i < count; i++) {
		int st = 0;
		if (pids[i] < 0 || waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) ||
		    WEXITSTATUS(st) != 0) {
			failed = true;
			if (!code)
				code = pids[i] > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_INTERNAL;
			pids[i] = -1;
		}
	}
	if (got_stop(sig_fd, &intr)) {
		for (long i = 0; i < count; i++)
			if (pids[i] > 0) /* started it (a failed one may have met another's VM) */
				rm_vm(names[i]);
		cli_error("interrupted; none of the %ld VMs restored from '%s' was kept", count, snap);
		code = EXIT_INTERRUPTED;
		goto out;
	}
	for (long i = 0; i < count; i++) {
		if (failed && pids[i] > 0)
			rm_vm(names[i]);
		else if (!failed)
			printf("%s\n", names[i]);
	}
out:
	restore_release(&rs);
	vm_spec_free(ov);
	free(names);
	free(pids);
	return code;
}

int cmd_reset(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct restore rs;
	_cleanup_free_ char *dir = NULL, *snap = NULL;
	char path[PATH_MAX];
	int r;

	if (argc != 2 || argv[1][0] == '-') {
		if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
			puts("usage: agentvm reset NAME\nRestore the VM from the snapshot it came from.");
			return 0;
		}
		cli_error("usage: agentvm reset NAME");
		return EXIT_USAGE;
	}
	const char *name = argv[1];
	if (statedir_find(name, &dir, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	statedir_file(path, sizeof(path), dir, RESTORE_ORIGIN_FILE);
	if (read_file(path, &snap, 4096) < 0) {
		cli_error("VM '%s' was not restored from a snapshot, so there is nothing to reset it "
			  "to; use 'agentvm restore SNAPSHOT --name %s'",
			  name, name);
		return 1;
	}
	/*
	 * A pool VM nobody acquired is serve's: its supervisor watches serve and goes with it; a
	 * reset one would not (and serve would count it twice). Acquire it first.
	 */
	char mark[PATH_MAX];
	statedir_file(path, sizeof(path), dir, POOL_VM_FILE);
	statedir_file(mark, sizeof(mark), dir, POOL_ACQUIRED_FILE);
	if (access(path, F_OK) == 0 && access(mark, F_OK) < 0) {
		cli_error("VM '%s' belongs to the warm pool and is not acquired; reset only VMs you "
			  "acquired ('agentvm pool acquire')",
			  name);
		return 1;
	}
	/* Check the snapshot before destroying anything. */
	if (restore_prepare(snap, &rs, &err) < 0) {
		cli_error("cannot reset VM '%s': %s", name, err.msg);
		return 1;
	}
	/* The same network policy as now (restore may have been given flags). */
	struct vm_spec *ov = vm_spec_new();
	struct json_object *spec = read_json(dir, "spec.json");
	if (ov && spec && snap_spec_net_from_json(ov, spec) == 0) {
		rs.net_override = ov;
		rs.net_mode_given = rs.policy_given = true;
	}
	json_object_put(spec);
	/* A pool VM stays one, acquired or not, for the next serve to count or remove (pool.h). */
	char pool_mark[PATH_MAX], acq_mark[PATH_MAX];
	statedir_file(pool_mark, sizeof(pool_mark), dir, POOL_VM_FILE);
	statedir_file(acq_mark, sizeof(acq_mark), dir, POOL_ACQUIRED_FILE);
	bool pooled = access(pool_mark, F_OK) == 0, acquired = access(acq_mark, F_OK) == 0;
	rm_vm(name);
	r = restore_one(&rs, name, CLI_DEFAULT_BOOT_TIMEOUT_S, &err);
	restore_release(&rs);
	vm_spec_free(ov);
	if (r < 0) {
		cli_error("cannot reset VM '%s' (it is gone now): %s", name, err.msg);
		return restore_exit_code(r);
	}
	if (acquired)
		write_file_atomic(acq_mark, "", 0);
	if (pooled)
		write_file_atomic(pool_mark, "", 0);
	return 0;
}
