/* SPDX-License-Identifier: MIT */
#include "jail/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jail_bpf.h" /* generated: $(B)/gen */
#include "state/statedir.h"
#include "base/util.h"
#include "state/paths.h"

/* One warning per process and kind: a pool restoring many VMs says it once. */
static void warn_once(bool *done, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (*done)
		return;
	*done = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	avm_warn("%s", msg);
}

static bool warned_user, warned_cgroup;

static int add_path(struct jail *j, const char *path, bool rw)
{
	for (size_t i = 0; i < j->n_paths; i++)
		if (!strcmp(j->paths[i].path, path)) {
			j->paths[i].rw |= rw;
			return 0;
		}
	if (j->n_paths == JAIL_MAX_PATHS)
		return -E2BIG;
	if (path[0] != '/' || snprintf(j->paths[j->n_paths].path, PATH_MAX, "%s", path) >= PATH_MAX)
		return -EINVAL;
	j->paths[j->n_paths].dir = false;
	j->paths[j->n_paths++].rw = rw;
	return 0;
}

/*
 * The 9p share directories: bound whole. A writable share makes QEMU run as its owner (what
 * the guest writes there must be the owner's files, and agentvm-qemu may not write there at
 * all); two writable shares of different owners cannot both be served by one QEMU.
 */
static int add_share_dirs(struct jail *j, const struct jail_opts *o, struct avm_error *err)
{
	struct stat st;
	bool owner_set = false;
	int r;

	for (int rw = 1; rw >= 0; rw--) {
		const char *const *list = rw ? o->dirs_rw : o->dirs_ro;
		for (size_t i = 0; i < 8 && list[i]; i++) {
			if (stat(list[i], &st) < 0)
				return avm_error_setx(err, -errno, "jail: share %s", list[i]);
			if (!S_ISDIR(st.st_mode))
				return avm_error_set(err, -ENOTDIR, "jail: share %s is no directory",
						     list[i]);
			if (j->userns) {
				/* Rootless: QEMU is the caller and reaches what the caller can. */
			} else if (rw && !owner_set) {
				j->uid = st.st_uid;
				j->gid = st.st_gid;
				owner_set = true;
			} else if (rw && st.st_uid != j->uid) {
				return avm_error_set(err, -EPERM,
						     "the writable shares %s and %s have different "
						     "owners; QEMU writes as one of them: share "
						     "directories of one owner",
						     o->dirs_rw[0], list[i]);
			} else if (!rw && !(st.st_mode & S_IROTH) && st.st_uid != j->uid &&
				   st.st_gid != j->gid) {
				return avm_error_set(err, -EACCES,
						     "QEMU cannot read the share %s (mode %o); make it "
						     "readable by others (chmod o+rx)",
						     list[i], st.st_mode & 07777);
			}
			if ((r = add_path(j, list[i], rw)) < 0)
				return avm_error_setx(err, r, "jail: too many files (%s)", list[i]);
			j->paths[j->n_paths - 1].dir = true;
		}
	}
	return 0;
}

/*
 * The backing file a qcow2 image names (its header: magic, version, backing_file_offset (u64 at
 * 8), backing_file_size (u32 at 16)), made absolute against the image's directory; "" when it has
 * none or is no qcow2.
 */
static int qcow2_backing(const char *image, char *out, size_t len)
{
	uint8_t h[20];
	char name[1024];
	int fd = open(image, O_RDONLY | O_CLOEXEC);
	uint64_t off = 0;
	uint32_t sz = 0;

	out[0] = '\0';
	if (fd < 0)
		return -errno;
	if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4) != 0) {
		close(fd);
		return 0;
	}
	for (int i = 0; i < 8; i++)
		off = off << 8 | h[8 + i];
	for (int i = 0; i < 4; i++)
		sz = sz << 8 | h[16 + i];
	if (off == 0 || sz == 0) {
		close(fd);
		return 0;
	}
	if (sz >= sizeof(name) || pread(fd, name, sz, (off_t)off) != (ssize_t)sz) {
		close(fd);
		return -EBADMSG;
	}
	close(fd);
	name[sz] = '\0';
	if (name[0] == '/') {
		snprintf(out, len, "%s", name);
	} else {
		const char *slash = strrchr(image, '/');
		snprintf(out, len, "%.*s/%s", slash ? (int)(slash - image) : 1, slash ? image : ".",
			 name);
	}
	return 0;
}

/* Whether uid/gid (and supplementary kvm) may read path by its mode bits. */
static bool readable_by(const struct stat *st, uid_t uid, gid_t gid)
{
	if (st->st_uid == uid)
		return st->st_mode & S_IRUSR;
	if (st->st_gid == gid)
		return st->st_mode & S_IRGRP;
	return st->st_mode & S_IROTH;
}

static int write_str(const char *dir, const char *file, const char *val)
{
	char path[PATH_MAX];
	int fd, r = 0;

	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Our own cgroup path in the v1 hierarchy that has controller ctl, from /proc/self/cgroup. */
static int own_cgroup_v1(const char *ctl, char *out, size_t len)
{
	_cleanup_free_ char *buf = NULL;
	char *line, *save = NULL;

	if (read_file("/proc/self/cgroup", &buf, 64 * 1024) < 0)
		return -ENOENT;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;
		if (!p)
			continue;
		*p = '\0';
		for (char *t = strtok(c + 1, ","); t; t = strtok(NULL, ","))
			if (!strcmp(t, ctl)) {
				snprintf(out, len, "%s", p + 1);
				return 0;
			}
	}
	return -ENOENT;
}

unsigned jail_io_weight_for(const char *file, unsigned w)
{
	unsigned lo = 1, hi = 10000;

	if (!strcmp(file, "blkio.weight")) {
		/* CFQ's range 10-1000 around 500: the same share of the default. */
		w *= 5;
		lo = 10;
		hi = 1000;
	} else if (strcmp(file, "io.weight") != 0) {
		hi = 1000; /* BFQ: 1-1000 around 100 */
	}
	return w < lo ? lo : w > hi ? hi : w;
}

/* The io weight files, most precise first: io.cost (v2), BFQ (v2, v1), CFQ (v1, old kernels). */
static const char *const io_weight_files[] = { "io.weight", "io.bfq.weight", "blkio.bfq.weight",
					       "blkio.weight" };

/* Set the weight in whichever file cg has; -ENOENT when none (no io.cost, no BFQ). */
static int io_weight_set(const char *cg, unsigned w)
{
	char val[16];
	int r = -ENOENT;

	for (size_t i = 0; i < ARRAY_SIZE(io_weight_files) && r == -ENOENT; i++) {
		snprintf(val, sizeof(val), "%u", jail_io_weight_for(io_weight_files[i], w));
		r = write_str(cg, io_weight_files[i], val);
	}
	return r;
}

static int cgroups_v2(struct jail *j, const struct jail_opts *o, const char *leaf)
{
	char slice[PATH_MAX], val[64];
	int r;

	/* A pure v2 host: a slice of ours under the root (the root is exempt from the rule that a
	 * cgroup with processes cannot hand controllers to its children). */
	snprintf(slice, sizeof(slice), "/sys/fs/cgroup/agentvm.slice");
	if ((r = write_str("/sys/fs/cgroup", "cgroup.subtree_control", "+cpu +memory +pids")) < 0)
		return r;
	if (mkdir(slice, 0755) < 0 && errno != EEXIST)
		return -errno;
	if ((r = write_str(slice, "cgroup.subtree_control", "+cpu +memory +pids")) < 0)
		return r;
	/* io on its own: a host without it still gets the other limits. */
	if (o->io_weight && write_str("/sys/fs/cgroup", "cgroup.subtree_control", "+io") == 0)
		(void)write_str(slice, "cgroup.subtree_control", "+io");
	if (snprintf(j->cgroups[0], PATH_MAX, "%s/%s", slice, leaf) >= PATH_MAX)
		return -ENAMETOOLONG;
	if (mkdir(j->cgroups[0], 0755) < 0)
		return -errno;
	j->n_cgroups = 1;
	j->cgroup_v2 = true;
	snprintf(val, sizeof(val), "%u 100000", o->cpus * 100000);
	if ((r = write_str(j->cgroups[0], "cpu.max", val)) < 0)
		return r;
	snprintf(val, sizeof(val), "%llu",
		 (unsigned long long)(o->memory_mib + JAIL_MEM_OVERHEAD_MIB) << 20);
	if ((r = write_str(j->cgroups[0], "memory.max", val)) < 0 ||
	    (r = write_str(j->cgroups[0], "memory.swap.max", "0")) < 0)
		if (r != -ENOENT) /* no swap accounting: fine */
			return r;
	snprintf(val, sizeof(val), "%d", JAIL_PIDS_MAX);
	if ((r = write_str(j->cgroups[0], "pids.max", val)) < 0)
		return r;
	/* Best effort: a host without io.cost or BFQ has no weight to set. */
	if (o->io_weight)
		(void)io_weight_set(j->cgroups[0], o->io_weight);
	return 0;
}

/*
 * v1: a blkio cgroup only where the hierarchy offers a weight (BFQ's or CFQ's file in our own
 * blkio cgroup); throttling alone is no use for a weight. Best effort, like v2's.
 */
static void cgroup_v1_blkio(struct jail *j, const struct jail_opts *o, const char *leaf)
{
	char own[PATH_MAX], parent[PATH_MAX], probe[PATH_MAX + 32];
	char *cg = j->cgroups[j->n_cgroups];
	bool any = false;

	if (!o->io_weight || own_cgroup_v1("blkio", own, sizeof(own)) < 0)
		return;
	if (snprintf(parent, sizeof(parent), "/sys/fs/cgroup/blkio%s", strcmp(own, "/") ? own : "") >=
	    (int)sizeof(parent))
		return;
	/* BFQ's weight file is not on the root cgroup: its statistics files are. */
	static const char *const probes[] = { "blkio.bfq.io_service_bytes", "blkio.bfq.weight",
					      "blkio.weight" };
	for (size_t i = 0; i < ARRAY_SIZE(probes) && !any; i++) {
		snprintf(probe, sizeof(probe), "%s/%s", parent, probes[i]);
		any = access(probe, F_OK) == 0;
	}
	if (!any || snprintf(cg, PATH_MAX, "%s/%s", parent, leaf) >= PATH_MAX || mkdir(cg, 0755) < 0)
		return;
	if (io_weight_set(cg, o->io_weight) < 0)
		rmdir(cg); /* best effort: the other limits stand without it */
	else
		j->n_cgroups++;
}

static int cgroups_v1(struct jail *j, const struct jail_opts *o, const char *leaf)
{
	static const char *const ctl[] = { "cpu", "memory", "pids" };
	char own[PATH_MAX], val[64];
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(ctl); i++) {
		char *cg = j->cgroups[j->n_cgroups];
		if ((r = own_cgroup_v1(ctl[i], own, sizeof(own))) < 0)
			return r;
		if (snprintf(cg, PATH_MAX, "/sys/fs/cgroup/%s%s/%s", ctl[i],
			     strcmp(own, "/") ? own : "", leaf) >= PATH_MAX)
			return -ENAMETOOLONG;
		if (mkdir(cg, 0755) < 0)
			return -errno;
		j->n_cgroups++;
		if (i == 0) {
			snprintf(val, sizeof(val), "%u", o->cpus * 100000);
			/* cpu.cfs_period_us: the kernel's default, 100000 us. */
			if ((r = write_str(cg, "cpu.cfs_quota_us", val)) < 0)
				return r;
		} else if (i == 1) {
			snprintf(val, sizeof(val), "%llu",
				 (unsigned long long)(o->memory_mib + JAIL_MEM_OVERHEAD_MIB) << 20);
			if ((r = write_str(cg, "memory.limit_in_bytes", val)) < 0)
				return r;
		} else {
			snprintf(val, sizeof(val), "%d", JAIL_PIDS_MAX);
			if ((r = write_str(cg, "pids.max", val)) < 0)
				return r;
		}
	}
	cgroup_v1_blkio(j, o, leaf);
	return 0;
}

static void cgroup_rmdir(const char *p);

static void cgroups_remove(struct jail *j)
{
	for (size_t i = 0; i < j->n_cgroups; i++)
		cgroup_rmdir(j->cgroups[i]);
	j->n_cgroups = 0;
}

/*
 * The VM's cgroups, one path a line, in its state dir: a supervisor killed with -9 never runs
 * jail_release, and `rm`/`gc` find them here (jail_release_dir).
 */
static void cgroups_record(const struct jail *j, const char *dir)
{
	FILE *f;
	int fd = statedir_open(dir, JAIL_CGROUPS_FILE, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	for (size_t i = 0; i < j->n_cgroups; i++)
		fprintf(f, "%s\n", j->cgroups[i]);
	fclose(f);
}

/* Only an agentvm cgroup: under /sys/fs/cgroup, named agentvm-*, no "." or ".." step. */
static bool cgroup_path_ours(const char *p)
{
	const char *base = strrchr(p, '/');

	return !strncmp(p, "/sys/fs/cgroup/", 15) && !strstr(p, "/../") && !strstr(p, "/./") &&
	       !strstr(p, "//") && base && !strncmp(base + 1, "agentvm-", 8);
}

/* rmdir of a cgroup its last process just left: the kernel may still say EBUSY for a moment. */
static void cgroup_rmdir(const char *p)
{
	for (int i = 0; i < 100 && rmdir(p) < 0 && errno == EBUSY; i++)
		usleep(10000);
}

void jail_release_dir(const char *dir)
{
	char line[PATH_MAX + 2];
	FILE *f;
	int fd = statedir_open(dir, JAIL_CGROUPS_FILE, O_RDONLY, 0);

	if (fd < 0 || !(f = fdopen(fd, "r"))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	for (int n = 0; n < JAIL_MAX_CGROUPS && fgets(line, sizeof(line), f); n++) {
		line[strcspn(line, "\n")] = '\0';
		if (cgroup_path_ours(line))
			cgroup_rmdir(line);
	}
	fclose(f);
}

static void cgroups_setup(struct jail *j, const struct jail_opts *o)
{
	char leaf[96];
	uint32_t rnd = 0;
	int r;

	/* The VM's name plus a random part: two state roots may hold VMs of the same name. */
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid();
	snprintf(leaf, sizeof(leaf), "agentvm-%s-%08x", o->name, rnd);
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0)
		r = cgroups_v2(j, o, leaf);
	else
		r = cgroups_v1(j, o, leaf);
	if (r < 0) {
		cgroups_remove(j);
		warn_once(&warned_cgroup, "no cgroup limits for QEMU (cpu, memory, pids): %s",
			  strerror(-r));
		return;
	}
	cgroups_record(j, o->dir);
}

/* Under agentvm's own roots (state, snapshots, cache): files agentvm made, not the user's. */
static bool ours(const char *path)
{
	char cache[PATH_MAX], *slash;
	const char *roots[3] = { statedir_root(), paths_snapshot_root(), cache };

	snprintf(cache, sizeof(cache), "%s", paths_hash_cache_dir());
	slash = strrchr(cache, '/');
	if (slash && slash != cache)
		*slash = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(roots); i++) {
		size_t n = strlen(roots[i]);
		if (n && !strncmp(path, roots[i], n) && path[n] == '/')
			return true;
	}
	return false;
}

/* One of agentvm's files (a snapshot's disk copy, a cached image) QEMU reads: group-readable
 * by agentvm-qemu's group, nothing more. */
static int share_ro(const char *path, gid_t gid)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || fchown(fd, (uid_t)-1, gid) < 0 ||
	    fchmod(fd, (st.st_mode & 07777 & ~(mode_t)S_IWGRP) | S_IRGRP) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Keep what jail_attach needs: the cgroups are made after the fork. */
static void cgroups_defer(struct jail *j, const struct jail_opts *o)
{
	if (getenv("AGENTVM_CGROUPS") && !strcmp(getenv("AGENTVM_CGROUPS"), "0"))
		return;
	if (snprintf(j->cg_name, sizeof(j->cg_name), "%s", o->name) >= (int)sizeof(j->cg_name) ||
	    snprintf(j->cg_dir, sizeof(j->cg_dir), "%s", o->dir) >= (int)sizeof(j->cg_dir))
		return;
	j->cg_cpus = o->cpus;
	j->cg_memory_mib = o->memory_mib;
	j->cg_io_weight = o->io_weight;
	j->cg_want = true;
}

bool jail_wants_attach(const struct jail *j)
{
	return j && j->cg_want;
}

void jail_attach(struct jail *j, pid_t pid)
{
	struct jail_opts o = { .name = j->cg_name, .dir = j->cg_dir, .cpus = j->cg_cpus,
			       .memory_mib = j->cg_memory_mib, .io_weight = j->cg_io_weight };
	char val[24];
	int r = 0;

	if (!j->cg_want)
		return;
	cgroups_setup(j, &o);
	snprintf(val, sizeof(val), "%d", (int)pid);
	for (size_t i = 0; i < j->n_cgroups && r == 0; i++)
		r = write_str(j->cgroups[i], "cgroup.procs", val);
	if (r < 0) {
		cgroups_remove(j);
		warn_once(&warned_cgroup, "no cgroup limits for QEMU (cpu, memory, pids): %s",
			  strerror(-r));
	}
}

/* The jail's root mount point and every file and directory QEMU is given, backing chains too. */
static int collect_paths(struct jail *j, const struct jail_opts *o, struct avm_error *err)
{
	char back[PATH_MAX];
	int r;

	if (snprintf(j->root, sizeof(j->root), "%s/jail", o->dir) >= (int)sizeof(j->root))
		return avm_error_set(err, -ENAMETOOLONG, "state dir path too long");
	if (mkdir(j->root, 0755) < 0 && errno != EEXIST)
		return avm_error_setx(err, -errno, "cannot create %s", j->root);
	if (strncmp(o->qemu, "/usr/", 5) != 0 && (r = add_path(j, o->qemu, false)) < 0)
		return avm_error_setx(err, r, "jail: %s", o->qemu);
	if ((r = add_share_dirs(j, o, err)) < 0)
		return r;
	for (int rw = 0; rw < 2; rw++) {
		const char *const *list = rw ? o->rw : o->ro;
		for (size_t i = 0; i < 8 && list[i]; i++) {
			if ((r = add_path(j, list[i], rw)) < 0)
				return avm_error_setx(err, r, "jail: too many files (%s)", list[i]);
			/* An image's backing chain, read-only, at the paths its headers name. */
			const char *img = list[i];
			for (int depth = 0; depth < 16; depth++) {
				if (qcow2_backing(img, back, sizeof(back)) < 0 || !back[0])
					break;
				if ((r = add_path(j, back, false)) < 0)
					return avm_error_setx(err, r, "jail: too many files (%s)",
							      back);
				img = j->paths[j->n_paths - 1].path;
			}
		}
	}
	return 0;
}

static bool warned_userns;

/* Whether this user may create a user namespace (Debian's and Ubuntu's switches included). */
static bool userns_available(void)
{
	_cleanup_free_ char *max = NULL, *clone = NULL, *aa = NULL;

	if (read_file("/proc/sys/user/max_user_namespaces", &max, 64) < 0 || atoi(max) <= 0)
		return false;
	if (read_file("/proc/sys/kernel/unprivileged_userns_clone", &clone, 64) >= 0 &&
	    atoi(clone) == 0)
		return false;
	return !(read_file("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", &aa, 64) >= 0 &&
		 atoi(aa) != 0);
}

static int collect_paths(struct jail *j, const struct jail_opts *o, struct avm_error *err);

/* Rootless: the jail in a user namespace; QEMU keeps the caller's uid and gid. */
static int prepare_rootless(struct jail *j, const struct jail_opts *o, struct avm_error *err)
{
	int r;

	if (!userns_available()) {
		warn_once(&warned_userns,
			  "QEMU runs unjailed (as you): unprivileged user namespaces are not "
			  "available (sysctl user.max_user_namespaces, "
			  "kernel.unprivileged_userns_clone or an AppArmor restriction)");
		return 0;
	}
	j->on = true;
	j->userns = true;
	j->uid = getuid();
	j->gid = getgid();
	j->kvm = o->kvm;
	if ((r = collect_paths(j, o, err)) < 0)
		return r;
	/* A file QEMU writes is bound at its path: it must exist (a new template's guest RAM). */
	for (size_t i = 0; i < j->n_paths; i++) {
		int fd;
		if (j->paths[i].dir || !j->paths[i].rw)
			continue;
		fd = open(j->paths[i].path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return avm_error_setx(err, -errno, "jail: cannot open %s", j->paths[i].path);
		close(fd);
	}
	return 0;
}

int jail_prepare(struct jail *j, const struct jail_opts *o, struct avm_error *err)
{
	struct passwd *pw;
	struct group *gr;
	int r;

	memset(j, 0, sizeof(*j));
	j->kvm_gid = (gid_t)-1;
	if (getenv("AGENTVM_JAIL") && !strcmp(getenv("AGENTVM_JAIL"), "0"))
		return 0;
	if (geteuid() != 0)
		return prepare_rootless(j, o, err);
	cgroups_defer(j, o);
	pw = getpwnam(JAIL_USER);
	if (!pw) {
		warn_once(&warned_user,
			  "QEMU runs unjailed as root: there is no user " JAIL_USER
			  " ('make deps' creates it)");
		return 0;
	}
	j->on = true;
	j->uid = pw->pw_uid;
	j->gid = pw->pw_gid;
	j->kvm = o->kvm;
	if (o->kvm && (gr = getgrnam("kvm")))
		j->kvm_gid = gr->gr_gid;
	if ((r = collect_paths(j, o, err)) < 0)
		return r;
	for (size_t i = 0; i < j->n_paths; i++) {
		struct jail_path *p = &j->paths[i];
		struct stat st;
		if (p->dir)
			continue; /* checked by add_share_dirs, and never chowned */
		if (p->rw) {
			/* A file QEMU writes is made here (guest RAM of a new template) and handed
			 * to its user; files of this VM or its snapshot only. */
			int fd = open(p->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
			if (fd < 0 || fchown(fd, j->uid, j->gid) < 0) {
				r = -errno;
				if (fd >= 0)
					close(fd);
				return avm_error_setx(err, r, "jail: cannot hand %s to " JAIL_USER,
						      p->path);
			}
			close(fd);
		} else if (stat(p->path, &st) == 0 && !readable_by(&st, j->uid, j->gid) &&
			   !(st.st_uid == geteuid() && ours(p->path) &&
			     share_ro(p->path, j->gid) == 0)) {
			return avm_error_set(
				err, -EACCES,
				"QEMU runs as " JAIL_USER " and cannot read %s; make it readable "
				"(chmod o+r, or chgrp " JAIL_USER " and chmod g+r)",
				p->path);
		}
	}
	return 0;
}

unsigned long jail_clone_flags(const struct jail *j)
{
	/* CLONE_NEWNET too: QEMU only needs the tap fd it inherits, never a socket of its own. */
	if (!j || !j->on)
		return 0;
	return CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
	       (j->userns ? CLONE_NEWUSER : 0);
}

/* --- in the child, between fork and exec ------------------------------------------------------ */

static int mkdir_parents(const char *root, const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(root);

	if (snprintf(buf, sizeof(buf), "%s%s", root, path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *s = buf + n + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return 0;
}

/* Bind host path at the same path under root; read-only unless rw. */
static int bind_path(const char *root, const char *path, bool rw, bool dir)
{
	char dst[PATH_MAX];
	int r;

	if ((r = mkdir_parents(root, path)) < 0)
		return r;
	snprintf(dst, sizeof(dst), "%s%s", root, path);
	if (dir) {
		if (mkdir(dst, 0755) < 0 && errno != EEXIST)
			return -errno;
	} else {
		int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		close(fd);
	}
	if (mount(path, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
		return -errno;
	if (rw)
		return 0;
	/* In a user namespace the source mount's nodev/noexec are locked: keep them. */
	struct statvfs sv;
	unsigned long keep = 0;
	if (statvfs(dst, &sv) == 0)
		keep = (sv.f_flag & ST_NODEV ? MS_NODEV : 0) | (sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0);
	if (mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | keep, NULL) < 0)
		return -errno;
	return 0;
}

static int top_link(const char *root, const char *name)
{
	char src[64], dst[PATH_MAX], target[64];
	struct stat st;
	ssize_t n;

	snprintf(src, sizeof(src), "/%s", name);
	if (lstat(src, &st) < 0)
		return 0;
	if (!S_ISLNK(st.st_mode)) /* a split-/usr host: the directory itself */
		return bind_path(root, src, false, true);
	n = readlink(src, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	if (snprintf(dst, sizeof(dst), "%s/%s", root, name) >= (int)sizeof(dst))
		return -ENAMETOOLONG;
	return symlink(target, dst) < 0 ? -errno : 0;
}

int jail_seccomp_load(void)
{
	/* The allowlist compiled by libseccomp at build time (jail_seccomp.c, src/gen): compiling
	 * its ~140 rules here cost ~1.7 ms of CPU per start. no_new_privs is the caller's. */
	struct sock_fprog prog = { .len = ARRAY_SIZE(jail_bpf),
				   .filter = (struct sock_filter *)jail_bpf };

	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0 ? -errno : 0;
}

int jail_enter(const struct jail *j)
{
	char old[PATH_MAX];
	int r;

	if (!j->on)
		return 0;
	/* Rootless: map only the caller's ids (the kernel allows exactly that without privilege);
	 * setgroups must be denied before a gid map can be written. */
	if (j->userns) {
		char map[48];
		snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)j->uid, (unsigned)j->uid);
		if ((r = write_str("/proc/self", "uid_map", map)) < 0 ||
		    (r = write_str("/proc/self", "setgroups", "deny")) < 0)
			return r;
		snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)j->gid, (unsigned)j->gid);
		if ((r = write_str("/proc/self", "gid_map", map)) < 0)
			return r;
	}
	/* Nothing mounted here may reach the host's mount table. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	if (mount("tmpfs", j->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
		return -errno;
	if ((r = bind_path(j->root, "/usr", false, true)) < 0)
		return r;
	static const char *const tops[] = { "bin", "sbin", "lib", "lib64", "lib32", "libx32" };
	for (size_t i = 0; i < ARRAY_SIZE(tops); i++)
		if ((r = top_link(j->root, tops[i])) < 0)
			return r;
	if ((r = bind_path(j->root, "/dev/null", true, false)) < 0 ||
	    (r = bind_path(j->root, "/dev/urandom", false, false)) < 0 ||
	    (j->kvm && (r = bind_path(j->root, "/dev/kvm", true, false)) < 0))
		return r;
	for (size_t i = 0; i < j->n_paths; i++) {
		const struct jail_path *p = &j->paths[i];
		if (!strncmp(p->path, "/usr/", 5))
			continue; /* there already, read-only */
		if ((r = bind_path(j->root, p->path, p->rw, p->dir)) < 0)
			return r;
	}
	/* A /proc of the new pid namespace: QEMU finds its firmware through /proc/self/exe. */
	if (snprintf(old, sizeof(old), "%s/proc", j->root) >= (int)sizeof(old))
		return -ENAMETOOLONG;
	/* Read-only: QEMU only reads it, and no sysctl is reachable through it. */
	if (mkdir(old, 0555) < 0 ||
	    mount("proc", old, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL) < 0)
		return -errno;
	if (snprintf(old, sizeof(old), "%s/.old", j->root) >= (int)sizeof(old))
		return -ENAMETOOLONG;
	if (mkdir(old, 0700) < 0 || syscall(SYS_pivot_root, j->root, old) < 0 || chdir("/") < 0 ||
	    umount2("/.old", MNT_DETACH) < 0 || rmdir("/.old") < 0)
		return -errno;
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
		return -errno;
	(void)!sethostname("agentvm-qemu", 12);
	/* No capability can come back: the bounding set goes before the uid changes. */
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -errno;
	gid_t groups[1] = { j->kvm_gid };
	/* (Rootless: setgroups is denied, and the caller's groups stay, like the caller's ids.) */
	if ((!j->userns && setgroups(j->kvm_gid != (gid_t)-1 ? 1 : 0, groups) < 0) ||
	    setresgid(j->gid, j->gid, j->gid) < 0 || setresuid(j->uid, j->uid, j->uid) < 0)
		return -errno;
	/* A credential change clears the parent-death signal: set it again. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return jail_seccomp_load() < 0 ? -EPERM : 0;
}

void jail_release(struct jail *j)
{
	cgroups_remove(j);
	if (j->root[0])
		rmdir(j->root);
}
