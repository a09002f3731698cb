/* SPDX-License-Identifier: MIT */
/*
 * Boot templates (see boot_cache.h): keyed by the boot shape, built once by a cold boot whose
 * guest RAM is a file, restored as copy-on-write clones by vm_launch() (vm_restore.c does the
 * QEMU side, as for snapshot clones). Everything here fails soft: a template that cannot be
 * built or trusted costs one warning line and a cold boot, never the run.
 */
#include "vm/boot_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm/host.h"
#include "base/sha256.h"
#include "state/file_input.h"
#include "state/statedir.h"
#include "base/util.h"
#include "state/paths.h"
#include "vm/vm_restore.h"

#define FORMAT 1
#define BLANK_DISK_BYTES (1 << 20)
#define META_MAX (64 * 1024)
/* A .tmp- build dir older than this is the leftover of a killed build. */
#define STALE_TMP_S 3600

/* The caller's one-line warnings (the CLI's words); none without a callback. */
#define WARN(bo, ...)                                                                              \
	do {                                                                                       \
		if ((bo)->warn)                                                                    \
			(bo)->warn(__VA_ARGS__);                                                   \
	} while (0)

bool boot_cache_enabled(void)
{
	const char *e = getenv("AGENTVM_BOOT_CACHE");

	return !(e && !strcmp(e, "0"));
}

/* A template dir's description (its shape, inputs and size): this file owns its format. */
#define TEMPLATE_META "meta.json"

const char *boot_cache_dir(void)
{
	return paths_template_dir();
}

static long env_long(const char *name, long def, long max)
{
	long v;

	if (!getenv(name) || parse_long(getenv(name), 0, max, &v) < 0)
		return def;
	return v;
}

int boot_cache_shape_text(const struct boot_shape *sh, char *buf, size_t len,
			  char key[BOOT_CACHE_KEY_LEN + 1])
{
	struct sha256 s;
	uint8_t d[32];
	int n = snprintf(buf, len,
			 "format %d\nagentvm %s\nqemu %s\nkernel %s\ninitrd %s\naccel %s\n"
			 "tsc_khz %lu\ncpus %u\nmemory_mib %u\nnic %d\ndisks %s\nshares %s\n"
			 "share_uid %ld\ndebug %d\n",
			 FORMAT, sh->agentvm, sh->qemu, sh->kernel, sh->initrd, sh->accel,
			 sh->tsc_khz, sh->cpus, sh->memory_mib, sh->nic, sh->disks, sh->shares,
			 sh->share_uid, sh->guest_debug);

	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	sha256_init(&s);
	sha256_update(&s, buf, (size_t)n);
	sha256_final(&s, d);
	for (int i = 0; i < BOOT_CACHE_KEY_LEN / 2; i++)
		sprintf(key + 2 * i, "%02x", d[i]);
	return 0;
}

static int record_sha(char out[65], const char *path, struct avm_error *err)
{
	struct file_input in = { 0 };
	int r = file_input_record(&in, path, err);

	if (r == 0)
		memcpy(out, in.sha256, 65);
	free(in.path);
	return r;
}

/* The shape of the VM o would boot. */
static int shape_of(const struct vm_launch_opts *o, struct boot_shape *sh, struct avm_error *err)
{
	const struct vm_spec *s = o->spec;
	const char *dbg = getenv("AGENTVM_GUEST_DEBUG");
	char self[65];
	size_t off = 0;
	int r;

	memset(sh, 0, sizeof(*sh));
	/* agentvm's build: the host half of the guest protocol and of the kernel cmdline. */
	if ((r = record_sha(self, "/proc/self/exe", err)) < 0 ||
	    (r = record_sha(sh->qemu, o->qemu, err)) < 0 ||
	    (r = record_sha(sh->kernel, o->kernel, err)) < 0 ||
	    (r = record_sha(sh->initrd, o->initrd, err)) < 0)
		return r;
	snprintf(sh->agentvm, sizeof(sh->agentvm), "build %s", self);
	sh->accel = vm_accel_name(o->accel);
	sh->tsc_khz = o->accel == VM_ACCEL_TCG ? host_tsc_khz() : 0;
	sh->cpus = s->cpus;
	sh->memory_mib = s->memory_mib;
	sh->nic = s->net_mode != VM_NET_ISOLATED;
	for (size_t i = 0; i < s->n_disks; i++)
		off += (size_t)snprintf(sh->disks + off, sizeof(sh->disks) - off, "%s%s-%s",
					i ? "," : "", s->disks[i].root ? "root" : "work",
					s->disks[i].readonly ? "ro" : "rw");
	/*
	 * Only the number of shares shapes QEMU's device state (one virtio-9p device each, its
	 * mount tag avm-share<i> in the config space the stream carries); readonly= and
	 * security_model= are fsdev options outside the stream. The kinds are keyed all the same,
	 * so that a template's QEMU ran with the options (and as the jail user) its clones have.
	 */
	off = 0;
	sh->share_uid = -1;
	for (size_t i = 0; i < s->n_shares; i++) {
		struct stat st;

		off += (size_t)snprintf(sh->shares + off, sizeof(sh->shares) - off, "%s%s%s",
					i ? "," : "", s->shares[i].readonly ? "ro" : "rw",
					s->shares[i].container_root ? "-root" : "");
		/*
		 * A writable share makes a jailed QEMU run as the share's owner, and the jail hands
		 * the files QEMU writes, a clone's guest RAM file included, to that user. One
		 * template per owner: its build and all its clones run as one user, so no launch
		 * takes the RAM file from under another's QEMU (which would fail to open it).
		 */
		if (!s->shares[i].readonly && sh->share_uid < 0 && geteuid() == 0 &&
		    stat(s->shares[i].host_dir, &st) == 0)
			sh->share_uid = (long)st.st_uid;
	}
	sh->guest_debug = dbg && !strcmp(dbg, "1");
	return 0;
}

static void summary_of(const struct boot_shape *sh, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s %u vCPU %u MiB %s%s%s", sh->accel, sh->cpus,
			 sh->memory_mib, sh->nic ? "nic" : "isolated", sh->disks[0] ? " disks=" : "",
			 sh->disks);

	if (n > 0 && (size_t)n < len && sh->shares[0])
		snprintf(buf + n, len - (size_t)n, " shares=%.48s owner=%ld", sh->shares,
			 sh->share_uid);
}

/* What meta.json says about a template. */
struct tmeta {
	char shape[2048];
	char summary[128];
	char qemu_version[32];
	char devstate_sha[65];
	int64_t devstate_size, mem_size, mem_mtime_ns, created, build_ms;
};

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int write_meta(const char *dir, const char *text, const char *summary,
		      const char *qemu_version, int64_t build_ms, struct avm_error *err)
{
	char p[PATH_MAX], hex[65];
	struct stat dst, mst;
	struct json_object *o;
	int r;

	statedir_file(p, sizeof(p), dir, "devstate");
	if (stat(p, &dst) < 0 || (r = sha256_file(p, hex)) < 0)
		return avm_error_setx(err, -errno, "cannot read %s", p);
	statedir_file(p, sizeof(p), dir, "mem");
	if (stat(p, &mst) < 0)
		return avm_error_setx(err, -errno, "cannot stat %s", p);
	o = json_object_new_object();
	json_object_object_add(o, "format", json_object_new_int(FORMAT));
	json_object_object_add(o, "shape", json_object_new_string(text));
	json_object_object_add(o, "summary", json_object_new_string(summary));
	json_object_object_add(o, "qemu_version", json_object_new_string(qemu_version));
	json_object_object_add(o, "created", json_object_new_int64(time(NULL)));
	json_object_object_add(o, "build_ms", json_object_new_int64(build_ms));
	json_object_object_add(o, "devstate_size", json_object_new_int64(dst.st_size));
	json_object_object_add(o, "devstate_sha256", json_object_new_string(hex));
	json_object_object_add(o, "mem_size", json_object_new_int64(mst.st_size));
	json_object_object_add(o, "mem_mtime_ns", json_object_new_int64(mtime_ns(&mst)));
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	statedir_file(p, sizeof(p), dir, TEMPLATE_META);
	r = write_file_atomic(p, s, strlen(s));
	json_object_put(o);
	return r < 0 ? avm_error_setx(err, r, "cannot write %s", p) : 0;
}

static bool get_str(struct json_object *o, const char *k, char *out, size_t len)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string) ||
	    (size_t)json_object_get_string_len(v) >= len)
		return false;
	memcpy(out, json_object_get_string(v), (size_t)json_object_get_string_len(v) + 1);
	return true;
}

static bool get_i64(struct json_object *o, const char *k, int64_t *out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_int64(v);
	return *out >= 0;
}

/*
 * Read dir's meta.json into m and check the files against it: sizes and the RAM file's mtime
 * always, the device state's sha256 when verify. expect (or NULL): the shape text it must have.
 * 0, -ENOENT (no such template), or -EBADMSG with why filled.
 */
static int load_meta(const char *dir, const char *expect, bool verify, struct tmeta *m,
		     char *why, size_t why_len)
{
	char p[PATH_MAX], hex[65];
	_cleanup_free_ char *text = NULL;
	struct json_object *o;
	struct stat st;
	int64_t fmt = 0;
	bool ok;

	memset(m, 0, sizeof(*m));
	if (lstat(dir, &st) < 0)
		return -ENOENT;
	statedir_file(p, sizeof(p), dir, TEMPLATE_META);
	if (read_file(p, &text, META_MAX) < 0) {
		snprintf(why, why_len, "no readable meta.json");
		return -EBADMSG;
	}
	o = json_tokener_parse(text);
	ok = o && get_i64(o, "format", &fmt) && get_str(o, "shape", m->shape, sizeof(m->shape)) &&
	     get_str(o, "summary", m->summary, sizeof(m->summary)) &&
	     get_str(o, "qemu_version", m->qemu_version, sizeof(m->qemu_version)) &&
	     get_str(o, "devstate_sha256", m->devstate_sha, sizeof(m->devstate_sha)) &&
	     get_i64(o, "devstate_size", &m->devstate_size) && get_i64(o, "mem_size", &m->mem_size) &&
	     get_i64(o, "mem_mtime_ns", &m->mem_mtime_ns) && get_i64(o, "created", &m->created) &&
	     get_i64(o, "build_ms", &m->build_ms);
	json_object_put(o);
	if (!ok) {
		snprintf(why, why_len, "meta.json is damaged");
		return -EBADMSG;
	}
	if (fmt != FORMAT || (expect && strcmp(m->shape, expect) != 0)) {
		snprintf(why, why_len, "it was built for another boot shape or agentvm build");
		return -EBADMSG;
	}
	statedir_file(p, sizeof(p), dir, "mem");
	if (stat(p, &st) < 0 || st.st_size != m->mem_size || mtime_ns(&st) != m->mem_mtime_ns) {
		snprintf(why, why_len, "its guest RAM file is missing, truncated or was changed");
		return -EBADMSG;
	}
	statedir_file(p, sizeof(p), dir, "devstate");
	if (stat(p, &st) < 0 || st.st_size != m->devstate_size ||
	    (verify && (sha256_file(p, hex) < 0 || strcmp(hex, m->devstate_sha) != 0))) {
		snprintf(why, why_len, "its device state is missing, truncated or corrupt");
		return -EBADMSG;
	}
	return 0;
}

/*
 * Remove the template in dir: under its lock, exclusive (wait: block until no launch is opening
 * it; else -EBUSY), renamed away first so no launch finds it half-removed.
 */
static int remove_template(const char *dir, bool wait)
{
	char p[PATH_MAX], gone[PATH_MAX], name[32];
	_cleanup_close_ int lock = -1;
	const char *base = strrchr(dir, '/');

	statedir_file(p, sizeof(p), dir, "lock");
	lock = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (lock >= 0 && flock(lock, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0)
		return -EBUSY;
	statedir_random_name(name, sizeof(name));
	snprintf(gone, sizeof(gone), "%s/.rm-%s-%s", boot_cache_dir(), base ? base + 1 : "x",
		 name + 3);
	if (rename(dir, gone) < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	return remove_flat_dir(gone);
}

/* Bytes on disk of the files in dir. */
static int64_t dir_size(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct stat st;
	int64_t n = 0;

	while (d && (e = readdir(d)))
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode))
			n += (int64_t)st.st_blocks * 512;
	if (d)
		closedir(d);
	return n;
}

static bool is_key(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == BOOT_CACHE_KEY_LEN;
}

static time_t last_use(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;

	statedir_file(p, sizeof(p), dir, "used");
	return stat(p, &st) == 0 ? st.st_mtime : 0;
}

int boot_cache_list(struct boot_cache_entry **out, size_t *n, struct avm_error *err)
{
	const char *root = boot_cache_dir();
	struct boot_cache_entry *v = NULL;
	size_t cnt = 0;
	DIR *d = opendir(root);
	struct dirent *e;

	*out = NULL;
	*n = 0;
	if (!d)
		return errno == ENOENT ? 0 : avm_error_setx(err, -errno, "cannot read %s", root);
	while ((e = readdir(d))) {
		char dir[PATH_MAX], why[128];
		struct tmeta m;
		struct boot_cache_entry *t;

		if (!is_key(e->d_name))
			continue;
		t = realloc(v, (cnt + 1) * sizeof(*v));
		if (!t) {
			closedir(d);
			free(v);
			return avm_error_set(err, -ENOMEM, "out of memory");
		}
		v = t;
		t = &v[cnt++];
		memset(t, 0, sizeof(*t));
		statedir_file(dir, sizeof(dir), root, e->d_name);
		memcpy(t->key, e->d_name, sizeof(t->key)); /* is_key(): 16 characters */
		if (load_meta(dir, NULL, false, &m, why, sizeof(why)) < 0) {
			snprintf(t->summary, sizeof(t->summary), "damaged: %.100s", why);
		} else {
			snprintf(t->summary, sizeof(t->summary), "%s", m.summary);
			snprintf(t->qemu_version, sizeof(t->qemu_version), "%s", m.qemu_version);
			t->created = (time_t)m.created;
			t->build_ms = m.build_ms;
		}
		t->size = dir_size(dir);
		t->last_use = last_use(dir);
	}
	closedir(d);
	/* Most recently used first. */
	for (size_t i = 1; i < cnt; i++)
		for (size_t j = i; j > 0 && v[j].last_use > v[j - 1].last_use; j--) {
			struct boot_cache_entry x = v[j];
			v[j] = v[j - 1];
			v[j - 1] = x;
		}
	*out = v;
	*n = cnt;
	return 0;
}

int boot_cache_remove(const char *key, struct avm_error *err)
{
	char dir[PATH_MAX];
	int r;

	if (!is_key(key))
		return avm_error_kind(err, AVM_ERR_USAGE,
				      avm_error_set(err, -EINVAL,
						    "'%s' is not a template key (16 hex digits: see "
						    "agentvm cache ls)",
						    key));
	statedir_file(dir, sizeof(dir), boot_cache_dir(), key);
	r = remove_template(dir, true);
	if (r == -ENOENT)
		return avm_error_kind(err, AVM_ERR_USAGE,
				      avm_error_set(err, r, "no boot template %s (see agentvm cache "
							    "ls)",
						    key));
	if (r < 0)
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_setx(err, r, "cannot remove %s", dir));
	return 0;
}

/* Remove least recently used templates (not keep) until the cache holds at most max bytes. */
static unsigned evict(int64_t max, const char *keep)
{
	struct boot_cache_entry *v;
	size_t n;
	int64_t total = 0;
	unsigned removed = 0;

	if (boot_cache_list(&v, &n, NULL) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		total += v[i].size;
	for (size_t i = n; i-- > 0 && total > max;) {
		char dir[PATH_MAX];

		if (keep && !strcmp(v[i].key, keep))
			continue;
		statedir_file(dir, sizeof(dir), boot_cache_dir(), v[i].key);
		if (remove_template(dir, false) == 0) {
			total -= v[i].size;
			removed++;
		}
	}
	free(v);
	return removed;
}

static int64_t max_bytes(void)
{
	return (int64_t)env_long("AGENTVM_BOOT_CACHE_MAX_MB", BOOT_CACHE_DEFAULT_MAX_MB,
				 1L << 30) << 20;
}

int boot_cache_gc(unsigned *removed, struct avm_error *err)
{
	const char *root = boot_cache_dir();
	long days = env_long("AGENTVM_BOOT_CACHE_MAX_AGE_DAYS", BOOT_CACHE_DEFAULT_MAX_AGE_DAYS,
			     100000);
	time_t now = time(NULL);
	DIR *d = opendir(root);
	struct dirent *e;

	*removed = 0;
	if (!d)
		return errno == ENOENT ? 0 : avm_error_setx(err, -errno, "cannot read %s", root);
	while ((e = readdir(d))) {
		char dir[PATH_MAX];
		struct stat st;

		statedir_file(dir, sizeof(dir), root, e->d_name);
		if (is_key(e->d_name)) {
			if (now - last_use(dir) > days * 86400 && remove_template(dir, false) == 0)
				(*removed)++;
		} else if ((!strncmp(e->d_name, ".tmp-", 5) || !strncmp(e->d_name, ".rm-", 4)) &&
			   lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
			   now - st.st_mtime > STALE_TMP_S) {
			remove_flat_dir(dir);
		}
	}
	closedir(d);
	*removed += evict(max_bytes(), NULL);
	return 0;
}

/* Create an empty file (0600). */
static int touch(const char *dir, const char *name)
{
	char p[PATH_MAX];
	int fd;

	statedir_file(p, sizeof(p), dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	futimens(fd, NULL);
	close(fd);
	return 0;
}

/*
 * The template's own boot: o's shape (sizes, accelerator, a NIC or not, blank placeholder
 * disks of the same kinds), agentvm.template=1, guest RAM in a new file; saved at READY.
 */
static int build(const struct vm_launch_opts *o, const struct boot_cache_opts *bo,
		 const struct boot_shape *sh, const char *key, const char *text,
		 struct avm_error *err)
{
	char tmp[PATH_MAX], blank[PATH_MAX], mem[PATH_MAX], dev[PATH_MAX], final[PATH_MAX];
	char name[32], summary[128], ver[32] = "";
	const struct vm_spec *us = o->spec;
	struct vm_spec *spec = vm_spec_new();
	struct vm *vm = NULL;
	uint64_t t0 = now_ms();
	int fd, r;

	if (!spec)
		return avm_error_set(err, -ENOMEM, "out of memory");
	statedir_random_name(name, sizeof(name));
	snprintf(tmp, sizeof(tmp), "%s/.tmp-%s-%s", boot_cache_dir(), key, name + 3);
	statedir_file(blank, sizeof(blank), tmp, "blank.raw");
	statedir_file(mem, sizeof(mem), tmp, "mem");
	statedir_file(dev, sizeof(dev), tmp, "devstate");
	statedir_file(final, sizeof(final), boot_cache_dir(), key);
	if (mkdir(tmp, 0700) < 0) {
		vm_spec_free(spec);
		return avm_error_setx(err, -errno, "cannot create %s", tmp);
	}
	/* Placeholders: the template's guest probes these, never a user's disk. */
	if (us->n_disks) {
		fd = open(blank, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		r = fd < 0 || ftruncate(fd, BLANK_DISK_BYTES) < 0 ? -errno : 0;
		if (fd >= 0)
			close(fd);
		if (r < 0) {
			avm_error_setx(err, r, "cannot create %s", blank);
			goto out;
		}
	}
	/*
	 * Share placeholders: an empty directory per share, 0555, root's (the caller's, rootless;
	 * a writable one the shares' owner's, as QEMU runs as that user: see shape_of()), that
	 * the template's guest never mounts (it has no agentvm.share word). A clone's QEMU
	 * exports the run's directory under the same fsdev id and mount tag instead: the
	 * migration stream has the device, never the export.
	 */
	for (size_t i = 0; i < us->n_shares; i++) {
		char p[PATH_MAX], leaf[32];

		snprintf(leaf, sizeof(leaf), "share%zu", i);
		statedir_file(p, sizeof(p), tmp, leaf);
		if (mkdir(p, 0555) < 0 || chmod(p, 0555) < 0 ||
		    (!us->shares[i].readonly && sh->share_uid >= 0 &&
		     chown(p, (uid_t)sh->share_uid, (gid_t)-1) < 0)) {
			r = avm_error_setx(err, -errno, "cannot create %s", p);
			goto out;
		}
		spec->shares[i] = (struct vm_share){ .host_dir = strdup(p),
						     .guest_dir = strdup("/mnt"),
						     .readonly = us->shares[i].readonly,
						     .container_root = us->shares[i].container_root };
		spec->n_shares++;
	}
	memcpy(name, "tb", 2); /* "tb-xxxxxxxx": a template's boot */
	spec->name = strdup(name);
	spec->cpus = us->cpus;
	spec->memory_mib = us->memory_mib;
	spec->accel = o->accel;
	spec->net_mode = us->net_mode;
	spec->bridge = us->bridge ? strdup(us->bridge) : NULL;
	for (size_t i = 0; i < us->n_disks; i++) {
		spec->disks[i] = (struct vm_disk){ .file = strdup(blank),
						   .guest_dir = strdup("/mnt"),
						   .readonly = us->disks[i].readonly,
						   .root = us->disks[i].root };
		spec->n_disks++;
	}
	struct vm_launch_opts lo = { .spec = spec, .kernel = o->kernel, .initrd = o->initrd,
				     .qemu = o->qemu, .accel = o->accel, .template_boot = true,
				     .template_mem = mem };
	r = vm_launch(&lo, &vm, err);
	if (r == 0)
		r = vm_wait_ready(vm, bo->boot_timeout_ms, bo->sig_fd, err);
	if (r == 0)
		r = vm_save_cow_state(vm, dev, ver, err);
	vm_destroy(vm);
	if (r < 0)
		goto out;
	unlink(blank);
	for (size_t i = 0; i < spec->n_shares; i++)
		rmdir(spec->shares[i].host_dir);
	/* Guest RAM: as private as a snapshot's (QEMU created it with its umask). */
	if (chmod(mem, 0600) < 0) {
		r = avm_error_setx(err, -errno, "chmod %s", mem);
		goto out;
	}
	summary_of(sh, summary, sizeof(summary));
	if ((r = write_meta(tmp, text, summary, ver, (int64_t)(now_ms() - t0), err)) < 0)
		goto out;
	if ((r = touch(tmp, "lock")) < 0 || (r = touch(tmp, "used")) < 0) {
		avm_error_setx(err, r, "cannot write in %s", tmp);
		goto out;
	}
	/* Another launch may have built it meanwhile (after a gc of its lock): keep theirs. */
	if (rename(tmp, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		r = avm_error_setx(err, -errno, "cannot rename %s", tmp);
out:
	vm_spec_free(spec);
	remove_flat_dir(tmp); /* gone already after the rename */
	return r;
}

/* Failures that say the template (or its clone) is bad, not the host or the request. */
static bool template_trouble(int r)
{
	return r == -ECHILD || r == -ETIMEDOUT || r == -EPROTO || r == -EIO || r == -ESTALE ||
	       r == -EPIPE || r == -ECONNRESET || r == -EBADMSG;
}

enum use { USE_DONE, USE_MISS, USE_BAD };

/* Start a clone of the template in dir if it is there and sound; *res: start()'s result. */
static enum use try_use(const struct vm_launch_opts *o, const struct boot_cache_opts *bo,
			const char *dir, const char *key, const char *text,
			boot_cache_start_fn start, void *ctx, int *res, struct avm_error *err)
{
	char p[PATH_MAX], mem[PATH_MAX], dev[PATH_MAX], why[128];
	struct tmeta m;
	int lock, r;

	statedir_file(p, sizeof(p), dir, "lock");
	lock = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (lock < 0 && errno == ENOENT && access(dir, F_OK) < 0)
		return USE_MISS;
	/* Shared while QEMU opens the files: a removal waits for it. */
	if (lock >= 0)
		flock(lock, LOCK_SH);
	r = lock < 0 ? (snprintf(why, sizeof(why), "it has no lock file"), -EBADMSG)
		     : load_meta(dir, text, true, &m, why, sizeof(why));
	if (r == -ENOENT) {
		close(lock);
		return USE_MISS;
	}
	if (r < 0) {
		if (lock >= 0)
			close(lock);
		WARN(bo, "boot template %s is damaged (%s); removed it, booting cold", key, why);
		remove_template(dir, true);
		return USE_BAD;
	}
	touch(dir, "used");
	statedir_file(mem, sizeof(mem), dir, "mem");
	statedir_file(dev, sizeof(dev), dir, "devstate");
	struct vm_incoming in = { .state_path = dev, .mem_path = mem,
				  .qemu_version = m.qemu_version };
	struct vm_launch_opts lo = *o;
	lo.incoming = &in;
	lo.template_boot = true;
	r = start(&lo, bo->boot_timeout_ms < BOOT_CACHE_RESTORE_TIMEOUT_MS
			       ? bo->boot_timeout_ms : BOOT_CACHE_RESTORE_TIMEOUT_MS,
		  ctx, err);
	close(lock);
	if (r < 0 && template_trouble(r)) {
		WARN(bo, "boot template %s failed (%s); removed it, booting cold", key, err->msg);
		remove_template(dir, true);
		return USE_BAD;
	}
	*res = r;
	return USE_DONE;
}

int boot_cache_start(const struct vm_launch_opts *o, const struct boot_cache_opts *bo,
		     boot_cache_start_fn start, void *ctx, struct avm_error *err)
{
	struct avm_error e = { 0 };
	struct boot_shape sh;
	char text[2048], key[BOOT_CACHE_KEY_LEN + 1], dir[PATH_MAX], lockp[PATH_MAX];
	const char *root = boot_cache_dir();
	_cleanup_close_ int build_lock = -1;
	enum use u;
	int r = 0;

	if (bo->cold || !boot_cache_enabled() || o->incoming)
		return start(o, bo->boot_timeout_ms, ctx, err);
	if (shape_of(o, &sh, &e) < 0 || boot_cache_shape_text(&sh, text, sizeof(text), key) < 0 ||
	    mkdir_p(root, 0700) < 0) {
		WARN(bo, "boot cache: %s; booting cold", e.msg[0] ? e.msg : strerror(errno));
		return start(o, bo->boot_timeout_ms, ctx, err);
	}
	statedir_file(dir, sizeof(dir), root, key);
	u = try_use(o, bo, dir, key, text, start, ctx, &r, err);
	if (u == USE_DONE)
		return r;
	if (u == USE_BAD)
		return start(o, bo->boot_timeout_ms, ctx, err);
	/* Missing: one launch builds it, the others boot cold meanwhile. */
	snprintf(lockp, sizeof(lockp), "%s/.%s.build", root, key);
	build_lock = open(lockp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (build_lock < 0 || flock(build_lock, LOCK_EX | LOCK_NB) < 0)
		return start(o, bo->boot_timeout_ms, ctx, err);
	u = try_use(o, bo, dir, key, text, start, ctx, &r, err); /* built while we waited? */
	if (u == USE_DONE)
		return r;
	if (u == USE_BAD)
		return start(o, bo->boot_timeout_ms, ctx, err);
	r = build(o, bo, &sh, key, text, &e);
	if (r == -EINTR)
		return avm_error_set(err, r, "%s", e.msg);
	if (r < 0) {
		WARN(bo, "cannot save a boot template (%s); booting cold", e.msg);
		return start(o, bo->boot_timeout_ms, ctx, err);
	}
	evict(max_bytes(), key);
	u = try_use(o, bo, dir, key, text, start, ctx, &r, err);
	return u == USE_DONE ? r : start(o, bo->boot_timeout_ms, ctx, err);
}
