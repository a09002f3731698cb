/* SPDX-License-Identifier: MIT */
/*
 * The image store: names, ids, resolving, listing, verifying and removing (image.h). Building
 * and importing are in image_build.c, the defaults inside an image in image_oci.c.
 */
#include "image/image.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/sha256.h"
#include "state/statedir.h"
#include "base/util.h"
#include "state/paths.h"

#define IMAGE_PREFIX_MIN 12
#define IMAGE_NAME_MAX 63

const char *image_store_dir(void)
{
	return paths_image_store();
}

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	return true;
}

static bool is_id(const char *s)
{
	return strlen(s) == IMAGE_ID_LEN && is_hex(s, IMAGE_ID_LEN);
}

int image_validate_name(const char *name, struct avm_error *err)
{
	if (is_id(name))
		return avm_error_set(err, -EINVAL,
				     "invalid image name '%s': 64 hex digits is an image id; pick "
				     "another name",
				     name);
	if (!name_is_valid(name, IMAGE_NAME_MAX))
		return avm_error_set(err, -EINVAL,
				     "invalid image name '%s': use 1-%d letters, digits, '_', '.' "
				     "or '-', starting with a letter or digit",
				     name, IMAGE_NAME_MAX);
	return 0;
}

void image_info_free(struct image_info *i)
{
	if (!i)
		return;
	free(i->name);
	free(i->id);
	free(i->dir);
	free(i->rootfs);
	free(i);
}

/* The id images/names/NAME holds (64 hex), or -ENOENT / -EIO. */
static int name_lookup(const char *name, char id[IMAGE_ID_LEN + 1])
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	int r;

	if (snprintf(path, sizeof(path), "%s/names/%s", image_store_dir(), name) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	if ((r = read_file(path, &text, 256)) < 0)
		return r;
	text[strcspn(text, "\n")] = '\0';
	if (!is_id(text))
		return -EIO;
	memcpy(id, text, IMAGE_ID_LEN + 1);
	return 0;
}

int image_name_set(const char *name, const char *id, struct avm_error *err)
{
	char path[PATH_MAX], line[IMAGE_ID_LEN + 2];
	int r;

	if (snprintf(path, sizeof(path), "%s/names", image_store_dir()) >= (int)sizeof(path))
		return avm_error_set(err, -ENAMETOOLONG, "cache dir path too long");
	if ((r = mkdir_p(path, 0755)) < 0)
		return avm_error_setx(err, r, "cannot create %s", path);
	snprintf(path, sizeof(path), "%s/names/%s", image_store_dir(), name);
	snprintf(line, sizeof(line), "%s\n", id);
	if ((r = write_file_atomic(path, line, strlen(line))) < 0)
		return avm_error_setx(err, r, "cannot write %s", path);
	return 0;
}

/* Builds of NAME in progress or interrupted: their work dirs are ".build-NAME-XXXXXX". */
static int build_dirs_of(const char *name, bool *in_progress)
{
	DIR *d = opendir(image_store_dir());
	struct dirent *e;
	char prefix[PATH_MAX];
	int n = 0;

	*in_progress = false;
	snprintf(prefix, sizeof(prefix), ".build-%s-", name);
	while (d && (e = readdir(d))) {
		size_t pl = strlen(prefix);
		/* The suffix is mkdtemp's 6 characters: NAME-x does not match NAME's dirs. */
		if (strncmp(e->d_name, prefix, pl) || strlen(e->d_name) != pl + 6)
			continue;
		n++;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0) {
			if (flock(fd, LOCK_SH | LOCK_NB) < 0)
				*in_progress = true;
			close(fd);
		}
	}
	if (d)
		closedir(d);
	return n;
}

static int not_found(const char *name, struct avm_error *err)
{
	bool busy;

	if (name_is_valid(name, IMAGE_NAME_MAX) && build_dirs_of(name, &busy) > 0) {
		if (busy)
			return avm_error_set(err, -EBUSY,
					     "image %s is being built right now; wait for that "
					     "'agentvm image build' to finish",
					     name);
		return avm_error_set(err, -EIO,
				     "image %s is half-built (an interrupted build left %s/.build-%s-*); "
				     "clean up with 'agentvm image rm %s' and rebuild it with "
				     "'agentvm image build %s'",
				     name, image_store_dir(), name, name, name);
	}
	return avm_error_set(err, -ENOENT,
			     "image %s not found; build it with 'agentvm image build %s' (see "
			     "agentvm image ls)",
			     name, name);
}

static int damaged(const char *name, const char *what, struct avm_error *err)
{
	return avm_error_set(err, -EIO,
			     "image %s is damaged (%s); remove it with 'agentvm image rm --force %s' "
			     "and rebuild it with 'agentvm image build %s'",
			     name, what, name, name);
}

/* A unique dir under images/ whose name starts with prefix (>= 12 hex digits). */
static int prefix_lookup(const char *prefix, char id[IMAGE_ID_LEN + 1], struct avm_error *err)
{
	DIR *d = opendir(image_store_dir());
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d))) {
		if (!is_id(e->d_name) || strncmp(e->d_name, prefix, strlen(prefix)))
			continue;
		if (n++ == 0)
			memcpy(id, e->d_name, IMAGE_ID_LEN + 1);
	}
	if (d)
		closedir(d);
	if (n > 1)
		return avm_error_set(err, -EINVAL,
				     "image id prefix %s matches %d images; give more digits (see "
				     "agentvm image ls)",
				     prefix, n);
	return n == 1 ? 0 : -ENOENT;
}

static struct json_object *meta_load(const char *dir)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;

	if (snprintf(path, sizeof(path), "%s/meta.json", dir) >= (int)sizeof(path) ||
	    read_file(path, &text, 4 << 20) < 0)
		return NULL;
	struct json_object *o = json_tokener_parse(text);
	if (o && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static bool jint(struct json_object *o, const char *k, int64_t *out)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_int64(v);
	return true;
}

/*
 * What is wrong with images/<id>, in a few words, or NULL when it looks whole: rootfs.ext4
 * and meta.json there, meta's id the dir's, meta's size the file's. The cheap checks: a full
 * re-hash is image_verify's (image inspect --verify).
 */
static const char *dir_problem(const char *dir, const char *id, struct stat *st)
{
	char path[PATH_MAX];
	struct stat dst;

	if (stat(dir, &dst) < 0)
		return "its directory is missing";
	snprintf(path, sizeof(path), "%s/rootfs.ext4", dir);
	if (stat(path, st) < 0)
		return "rootfs.ext4 is missing";
	if (!S_ISREG(st->st_mode))
		return "rootfs.ext4 is not a regular file";
	struct json_object *meta = meta_load(dir);
	if (!meta)
		return "meta.json is missing or not JSON";
	const char *mid = json_get_str(meta, "id");
	int64_t size = -1;
	const char *p = NULL;
	if (!mid || strcmp(mid, id))
		p = "meta.json names another id";
	else if (!jint(meta, "size", &size) || size != (int64_t)st->st_size)
		p = "rootfs.ext4's size differs from meta.json's";
	json_object_put(meta);
	return p;
}

int image_resolve(const char *name, struct image_info **out, struct avm_error *err)
{
	char id[IMAGE_ID_LEN + 1], dir[PATH_MAX];
	struct stat st;
	int r;

	*out = NULL;
	if (!name || !*name)
		return avm_error_set(err, -EINVAL, "empty image name; see agentvm image ls");
	if (name_is_valid(name, IMAGE_NAME_MAX) && !is_id(name)) {
		r = name_lookup(name, id);
		if (r == -EIO)
			return damaged(name, "its entry in images/names holds no id", err);
		if (r < 0 && r != -ENOENT)
			return avm_error_setx(err, r, "cannot read image name %s", name);
		if (r == 0)
			goto found;
	}
	if (is_id(name)) {
		memcpy(id, name, sizeof(id));
		snprintf(dir, sizeof(dir), "%s/%s", image_store_dir(), id);
		if (access(dir, F_OK) == 0)
			goto found;
	} else if (strlen(name) >= IMAGE_PREFIX_MIN && strlen(name) < IMAGE_ID_LEN &&
		   is_hex(name, strlen(name))) {
		if ((r = prefix_lookup(name, id, err)) == 0)
			goto found;
		if (r != -ENOENT)
			return r;
	}
	return not_found(name, err);
found:
	snprintf(dir, sizeof(dir), "%s/%s", image_store_dir(), id);
	const char *p = dir_problem(dir, id, &st);
	if (p)
		return damaged(name, p, err);
	struct image_info *i = calloc(1, sizeof(*i));
	if (!i || !(i->name = strdup(name)) || !(i->id = strdup(id)) || !(i->dir = strdup(dir)) ||
	    asprintf(&i->rootfs, "%s/rootfs.ext4", dir) < 0) {
		if (i)
			i->rootfs = NULL;
		image_info_free(i);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	i->size = st.st_size;
	*out = i;
	return 0;
}

int image_meta_read(const struct image_info *i, struct json_object **out, struct avm_error *err)
{
	if (!(*out = meta_load(i->dir)))
		return damaged(i->name, "meta.json is missing or not JSON", err);
	return 0;
}

int image_verify(const struct image_info *i, struct avm_error *err)
{
	char hex[65];
	int r;

	if ((r = sha256_file(i->rootfs, hex)) < 0)
		return avm_error_setx(err, r, "cannot read %s", i->rootfs);
	if (strcmp(hex, i->id)) {
		char what[160];
		snprintf(what, sizeof(what), "rootfs.ext4 hashes to %.12s, not its id %.12s", hex,
			 i->id);
		return damaged(i->name, what, err);
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of dir's entries that pass keep (strv). */
static int list_dir(const char *dir, bool (*keep)(const char *), struct strv *out)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)))
		if (keep(e->d_name))
			strv_add(out, e->d_name);
	closedir(d);
	if (out->failed)
		return out->failed;
	if (out->n)
		qsort(out->v, out->n, sizeof(char *), cmp_str);
	return 0;
}

static bool keep_name(const char *n)
{
	return n[0] != '.' && name_is_valid(n, IMAGE_NAME_MAX);
}

static bool keep_id(const char *n)
{
	return is_id(n);
}

void image_list_free(struct image_entry *e, size_t n)
{
	for (size_t i = 0; e && i < n; i++) {
		free(e[i].name);
		free(e[i].id);
		free(e[i].problem);
		if (e[i].meta)
			json_object_put(e[i].meta);
	}
	free(e);
}

static int entry_add(struct image_entry **v, size_t *n, const char *name, const char *id)
{
	struct image_entry *nv = realloc(*v, (*n + 1) * sizeof(**v));
	char dir[PATH_MAX];
	struct stat st;

	if (!nv)
		return -ENOMEM;
	*v = nv;
	struct image_entry *e = &nv[(*n)++];
	memset(e, 0, sizeof(*e));
	e->name = name ? strdup(name) : NULL;
	e->id = strdup(id);
	snprintf(dir, sizeof(dir), "%s/%s", image_store_dir(), id);
	const char *p = dir_problem(dir, id, &st);
	if (p)
		e->problem = strdup(p);
	else
		e->meta = meta_load(dir);
	return 0;
}

int image_list(struct image_entry **out, size_t *n, struct avm_error *err)
{
	char path[PATH_MAX];
	struct strv names = { 0 }, ids = { 0 };
	struct image_entry *v = NULL;
	size_t k = 0;
	int r;

	snprintf(path, sizeof(path), "%s/names", image_store_dir());
	if ((r = list_dir(path, keep_name, &names)) < 0 ||
	    (r = list_dir(image_store_dir(), keep_id, &ids)) < 0) {
		strv_release(&names);
		strv_release(&ids);
		return avm_error_setx(err, r, "cannot list %s", image_store_dir());
	}
	struct strv named = { 0 };
	for (size_t i = 0; i < names.n && r >= 0; i++) {
		char id[IMAGE_ID_LEN + 1];
		if (name_lookup(names.v[i], id) < 0)
			snprintf(id, sizeof(id), "%s", "?");
		else
			strv_add(&named, id);
		r = entry_add(&v, &k, names.v[i], id);
	}
	for (size_t i = 0; i < ids.n && r >= 0; i++) {
		bool has_name = false;
		for (size_t j = 0; j < named.n; j++)
			has_name |= !strcmp(named.v[j], ids.v[i]);
		if (!has_name)
			r = entry_add(&v, &k, NULL, ids.v[i]);
	}
	strv_release(&names);
	strv_release(&ids);
	strv_release(&named);
	if (r < 0) {
		image_list_free(v, k);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	*out = v;
	*n = k;
	return 0;
}

/*
 * Whether the spec in file path names image id ({"image": {"id": ...}}): a VM's spec.json, or
 * the "spec" a snapshot's meta.json holds.
 */
static bool spec_uses(const char *path, const char *id)
{
	_cleanup_free_ char *text = NULL;
	struct json_object *o, *spec, *img;
	bool used = false;

	if (read_file(path, &text, 4 << 20) < 0 || !(o = json_tokener_parse(text)))
		return false;
	if (!json_object_object_get_ex(o, "spec", &spec))
		spec = o;
	if (json_object_object_get_ex(spec, "image", &img)) {
		const char *v = json_get_str(img, "id");
		used = v && !strcmp(v, id);
	}
	json_object_put(o);
	return used;
}

/* Each subdir of root whose file (spec.json, meta.json) uses id, as "<kind> NAME". */
static void users_in(const char *root, const char *file, const char *kind, const char *id,
		     struct strv *out)
{
	DIR *d = opendir(root);
	struct dirent *e;
	char path[PATH_MAX];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s/%s", root, e->d_name, file) <
			    (int)sizeof(path) &&
		    spec_uses(path, id))
			strv_addf(out, "%s %s", kind, e->d_name);
	}
	if (d)
		closedir(d);
}

int image_users(const char *id, char ***out)
{
	struct strv sv = { 0 };

	users_in(statedir_root(), STATEDIR_SPEC, "vm", id, &sv);
	users_in(paths_snapshot_root(), PATHS_SNAPSHOT_META, "snapshot", id, &sv);
	if (!sv.v && !sv.failed && !(sv.v = calloc(1, sizeof(char *))))
		sv.failed = -ENOMEM;
	if (sv.failed) {
		strv_release(&sv);
		return -ENOMEM;
	}
	*out = sv.v;
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/*
 * A builder killed inside mmdebstrap (root mode) leaves /proc, /sys and /dev mounted in its
 * tree: detach every mount under path, deepest first, before removing it.
 */
static void unmount_under(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], mnt[PATH_MAX];
	struct strv found = { 0 };
	size_t pl = strlen(path);

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1 && !strncmp(mnt, path, pl) &&
		    mnt[pl] == '/')
			strv_add(&found, mnt);
	if (f)
		fclose(f);
	for (size_t i = found.n; i-- > 0;)
		umount2(found.v[i], MNT_DETACH);
	strv_release(&found);
}

/* rm -rf that stays on one file system and never follows a link (a build tree may hold any). */
int image_remove_tree(const char *path)
{
	if (access(path, F_OK) < 0)
		return 0;
	if (geteuid() == 0)
		unmount_under(path);
	return nftw(path, rm_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 ? -errno : 0;
}

/*
 * flock with a deadline: a builder killed with SIGKILL can leave, for a moment, a process that
 * still holds its work dir's lock (its children die on their own, not at once).
 */
static int flock_within(int fd, int wait_ms)
{
	for (int waited = 0;; waited += 50) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK || waited >= wait_ms)
			return -1;
		usleep(50 * 1000);
	}
}

static int clean_stale_builds(const char *name, int wait_ms);

int image_clean_stale_builds(const char *name)
{
	return clean_stale_builds(name, 0);
}

static int clean_stale_builds(const char *name, int wait_ms)
{
	DIR *d = opendir(image_store_dir());
	struct dirent *e;
	char prefix[PATH_MAX], path[PATH_MAX];
	int n = 0;

	snprintf(prefix, sizeof(prefix), ".build-%s%s", name ? name : "", name ? "-" : "");
	while (d && (e = readdir(d))) {
		size_t pl = strlen(prefix);
		if (strncmp(e->d_name, prefix, pl) || (name && strlen(e->d_name) != pl + 6))
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* A live builder holds an exclusive flock on its work dir for the whole build. */
		if (flock_within(fd, wait_ms) == 0 &&
		    snprintf(path, sizeof(path), "%s/%s", image_store_dir(), e->d_name) <
			    (int)sizeof(path) &&
		    image_remove_tree(path) == 0)
			n++;
		close(fd);
	}
	if (d)
		closedir(d);
	return n;
}

/* Whether any name other than skip points at id. */
static bool id_named(const char *id, const char *skip)
{
	char path[PATH_MAX];
	struct strv names = { 0 };
	bool named = false;

	snprintf(path, sizeof(path), "%s/names", image_store_dir());
	if (list_dir(path, keep_name, &names) < 0)
		return true; /* unsure: keep the image */
	for (size_t i = 0; i < names.n && !named; i++) {
		char other[IMAGE_ID_LEN + 1];
		if ((!skip || strcmp(names.v[i], skip)) && name_lookup(names.v[i], other) == 0)
			named = !strcmp(other, id);
	}
	strv_release(&names);
	return named;
}

int image_remove(const char *name, bool force, char **removed_id, struct avm_error *err)
{
	char id[IMAGE_ID_LEN + 1] = "", path[PATH_MAX];
	bool by_name = false;
	int r, cleaned = 0;

	if (removed_id)
		*removed_id = NULL;
	if (name_is_valid(name, IMAGE_NAME_MAX) && !is_id(name)) {
		/* rm is what the half-built message tells people to run: give a killed builder's
		 * last processes a few seconds to let go of its work dir. */
		cleaned = clean_stale_builds(name, 5000);
		r = name_lookup(name, id);
		if (r == 0 || r == -EIO)
			by_name = true;
		if (r == -EIO)
			id[0] = '\0';
	}
	if (!by_name) {
		struct image_info *i = NULL;
		struct avm_error e2 = { 0 };
		if (is_id(name))
			memcpy(id, name, sizeof(id));
		else if (strlen(name) >= IMAGE_PREFIX_MIN && is_hex(name, strlen(name)) &&
			 (r = prefix_lookup(name, id, err)) < 0 && r != -ENOENT)
			return r;
		if (!id[0] || (snprintf(path, sizeof(path), "%s/%s", image_store_dir(), id),
			       access(path, F_OK) < 0)) {
			if (cleaned)
				return 0; /* it was a half-built image: its leftovers are gone */
			r = image_resolve(name, &i, &e2);
			image_info_free(i);
			*err = e2;
			return r < 0 ? r : -ENOENT;
		}
	}
	if (id[0]) {
		char **users = NULL;
		if (!by_name && id_named(id, NULL))
			return avm_error_set(err, -EBUSY,
					     "image %s still has a name; remove it by its name (see "
					     "agentvm image ls)",
					     name);
		if (image_users(id, &users) < 0)
			return avm_error_set(err, -ENOMEM, "out of memory");
		if (users[0] && !force) {
			_cleanup_free_ char *list = strv_join(users, ", ");
			strv_free(users);
			return avm_error_set(err, -EBUSY,
					     "image %s is in use by %s; remove those first or pass "
					     "--force",
					     name, list ? list : "VMs");
		}
		strv_free(users);
	}
	if (by_name) {
		snprintf(path, sizeof(path), "%s/names/%s", image_store_dir(), name);
		if (unlink(path) < 0 && errno != ENOENT)
			return avm_error_setx(err, -errno, "cannot remove %s", path);
	}
	if (!id[0] || id_named(id, by_name ? name : NULL))
		return 0; /* another name still points at the image: keep its files */
	snprintf(path, sizeof(path), "%s/%s", image_store_dir(), id);
	if ((r = image_remove_tree(path)) < 0)
		return avm_error_setx(err, r, "cannot remove %s", path);
	if (removed_id)
		*removed_id = strdup(id);
	return 0;
}

int image_prune(const char *id)
{
	char path[PATH_MAX];
	char **users = NULL;
	bool used;

	if (!is_id(id) || id_named(id, NULL) || image_users(id, &users) < 0)
		return 0;
	used = users[0] != NULL;
	strv_free(users);
	if (used)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", image_store_dir(), id);
	return image_remove_tree(path) == 0 ? 1 : 0;
}

int image_error_classify(struct avm_error *err)
{
	if (err->kind != AVM_ERR_ERRNO)
		return err->code;
	switch (err->code) {
	case -EINVAL:
	case -ELOOP:
		return avm_error_kind(err, AVM_ERR_USAGE, err->code);
	case -ENOMEM:
	case -EFAULT:
		return avm_error_kind(err, AVM_ERR_INTERNAL, err->code);
	case -EINTR:
		return avm_error_kind(err, AVM_ERR_INTERRUPTED, err->code);
	default:
		return avm_error_kind(err, AVM_ERR_STATE, err->code);
	}
}
