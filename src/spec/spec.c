/* SPDX-License-Identifier: MIT */
#include "spec/spec.h"
#include "image/image.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <json-c/json.h>
#include <limits.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "netfilter/nf.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"

/*
 * Sizes from the product spec; io weights grow with the CPUs (the host's own processes: 100).
 * Bandwidth too: without a default one sandbox could take a host's whole NIC from the others.
 */
const struct vm_profile vm_profiles[] = {
	{ "light", 1, 512, 100, "200mbit" },
	{ "standard", 2, 2048, 200, "500mbit" },
	{ "intensive", 4, 4096, 400, "1gbit" },
	{ NULL, 0, 0, 0, NULL },
};

const struct vm_profile *vm_profile_find(const char *name)
{
	for (const struct vm_profile *p = vm_profiles; p->name; p++)
		if (!strcmp(p->name, name))
			return p;
	return NULL;
}

unsigned vm_profile_io_weight(const char *name)
{
	const struct vm_profile *p = name ? vm_profile_find(name) : NULL;

	return p ? p->io_weight : VM_IO_WEIGHT_DEFAULT;
}

const char *vm_spec_bandwidth(const struct vm_spec *s)
{
	const struct vm_profile *p = s->profile ? vm_profile_find(s->profile) : NULL;

	if (s->bandwidth)
		return strcmp(s->bandwidth, VM_BANDWIDTH_UNLIMITED) ? s->bandwidth : NULL;
	return p ? p->bandwidth : VM_BANDWIDTH_DEFAULT;
}

struct vm_spec *vm_spec_new(void)
{
	struct vm_spec *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (vm_spec_set_profile(s, VM_SPEC_DEFAULT_PROFILE, NULL) < 0) {
		free(s);
		return NULL;
	}
	return s;
}


void vm_spec_free(struct vm_spec *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->profile);
	strv_free(s->env);
	free(s->workdir);
	free(s->kernel);
	free(s->initrd);
	strv_free(s->argv);
	free(s->bridge);
	strv_free(s->allow);
	strv_free(s->host_allow);
	free(s->dns);
	free(s->image);
	free(s->image_id);
	for (size_t i = 0; i < s->n_shares; i++) {
		free(s->shares[i].host_dir);
		free(s->shares[i].guest_dir);
	}
	strv_free(s->allow_cidr);
	strv_free(s->allow_domain);
	free(s->bandwidth);
	for (size_t i = 0; i < s->n_disks; i++) {
		free(s->disks[i].file);
		free(s->disks[i].guest_dir);
	}
	free(s);
}

int vm_spec_set_profile(struct vm_spec *s, const char *name, struct avm_error *err)
{
	const struct vm_profile *p = vm_profile_find(name);
	char *copy;

	if (!p)
		return avm_error_set(err, -EINVAL,
				     "unknown profile '%s'; use light, standard or intensive", name);
	copy = strdup(p->name);
	if (!copy)
		return avm_error_set(err, -ENOMEM, "out of memory");
	free(s->profile);
	s->profile = copy;
	s->cpus = p->cpus;
	s->memory_mib = p->memory_mib;
	return 0;
}

/* Once a size is given by hand the spec no longer matches a named profile. */
static int mark_custom(struct vm_spec *s)
{
	char *c = strdup("custom");

	if (!c)
		return -ENOMEM;
	free(s->profile);
	s->profile = c;
	return 0;
}

int vm_spec_set_cpus(struct vm_spec *s, const char *value, struct avm_error *err)
{
	long v;

	if (parse_long(value, 1, VM_SPEC_MAX_CPUS, &v) < 0)
		return avm_error_set(err, -EINVAL, "--cpus '%s' is not a number from 1 to %d", value,
				     VM_SPEC_MAX_CPUS);
	s->cpus = (unsigned)v;
	return mark_custom(s);
}

int vm_spec_set_memory(struct vm_spec *s, const char *value, struct avm_error *err)
{
	long v;

	if (parse_long(value, VM_SPEC_MIN_MEMORY_MIB, VM_SPEC_MAX_MEMORY_MIB, &v) < 0)
		return avm_error_set(err, -EINVAL,
				     "--memory '%s' is not a size in MiB from %d to %d", value,
				     VM_SPEC_MIN_MEMORY_MIB, VM_SPEC_MAX_MEMORY_MIB);
	s->memory_mib = (unsigned)v;
	return mark_custom(s);
}

int vm_spec_set_timeout(struct vm_spec *s, const char *value, struct avm_error *err)
{
	long v;

	if (parse_long(value, 0, VM_SPEC_MAX_TIMEOUT_S, &v) < 0)
		return avm_error_set(err, -EINVAL,
				     "--timeout '%s' is not a whole number of seconds from 0 to %d",
				     value, VM_SPEC_MAX_TIMEOUT_S);
	s->timeout_s = (unsigned)v;
	return 0;
}

int vm_spec_set_accel(struct vm_spec *s, const char *value, struct avm_error *err)
{
	if (!strcmp(value, "kvm"))
		s->accel = VM_ACCEL_KVM;
	else if (!strcmp(value, "tcg"))
		s->accel = VM_ACCEL_TCG;
	else if (!strcmp(value, "auto"))
		s->accel = VM_ACCEL_AUTO;
	else
		return avm_error_set(err, -EINVAL, "--accel '%s' is unknown; use kvm, tcg or auto",
				     value);
	return 0;
}

const char *vm_accel_name(enum vm_accel a)
{
	switch (a) {
	case VM_ACCEL_KVM:
		return "kvm";
	case VM_ACCEL_TCG:
		return "tcg";
	default:
		return "auto";
	}
}

/* Append a copy of s to a NULL-terminated vector through the shared strv helper. */
static int strv_append(char ***v, size_t *n, const char *s)
{
	struct strv sv = { .v = *v, .n = *n };

	strv_add(&sv, s);
	if (sv.failed)
		return -ENOMEM;
	*v = sv.v;
	*n = sv.n;
	return 0;
}

int vm_spec_add_env(struct vm_spec *s, const char *kv, struct avm_error *err)
{
	const char *eq = strchr(kv, '=');

	if (!eq || eq == kv)
		return avm_error_set(err, -EINVAL, "--env '%s' must look like KEY=VALUE", kv);
	for (const char *p = kv; p < eq; p++) {
		if (!(isalnum((unsigned char)*p) || *p == '_') || (p == kv && isdigit((unsigned char)*p)))
			return avm_error_set(err, -EINVAL,
					     "--env '%s': the name must be letters, digits and _ "
					     "and not start with a digit",
					     kv);
	}
	if (s->n_env >= 4096)
		return avm_error_set(err, -E2BIG, "too many --env values (at most 4096)");
	if (strv_append(&s->env, &s->n_env, kv) < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

int vm_spec_set_workdir(struct vm_spec *s, const char *dir, struct avm_error *err)
{
	if (dir[0] != '/')
		return avm_error_set(err, -EINVAL,
				     "--workdir '%s' must be an absolute path inside the guest", dir);
	return vm_spec_set_path(&s->workdir, "--workdir", dir, err);
}

int vm_spec_set_path(char **slot, const char *what, const char *path, struct avm_error *err)
{
	char *copy;

	if (!*path)
		return avm_error_set(err, -EINVAL, "%s needs a path", what);
	copy = strdup(path);
	if (!copy)
		return avm_error_set(err, -ENOMEM, "out of memory");
	free(*slot);
	*slot = copy;
	return 0;
}

int vm_spec_set_command(struct vm_spec *s, char *const *argv, size_t argc, struct avm_error *err)
{
	char **v = NULL;
	size_t n = 0;

	if (argc > 4096)
		return avm_error_set(err, -E2BIG, "the command has too many arguments (at most 4096)");
	for (size_t i = 0; i < argc; i++) {
		if (strv_append(&v, &n, argv[i]) < 0) {
			strv_free(v);
			return avm_error_set(err, -ENOMEM, "out of memory");
		}
	}
	strv_free(s->argv);
	s->argv = v;
	s->argc = n;
	return 0;
}

const char *vm_net_mode_name(enum vm_net_mode m)
{
	switch (m) {
	case VM_NET_ISOLATED:
		return "isolated";
	case VM_NET_BRIDGE:
		return "bridge";
	default:
		return "nat-filtered";
	}
}

int vm_spec_set_network(struct vm_spec *s, const char *value, struct avm_error *err)
{
	if (!strcmp(value, "nat-filtered") || !strcmp(value, "isolated")) {
		s->net_mode = value[0] == 'n' ? VM_NET_NAT_FILTERED : VM_NET_ISOLATED;
		return 0;
	}
	if (!strncmp(value, "bridge:", 7)) {
		const char *br = value + 7;
		if (!*br || strlen(br) >= IFNAMSIZ || strchr(br, '/') || strchr(br, ' '))
			return avm_error_set(err, -EINVAL,
					     "--network '%s': the bridge name must be 1..%d "
					     "characters without '/' or spaces",
					     value, IFNAMSIZ - 1);
		s->net_mode = VM_NET_BRIDGE;
		return vm_spec_set_path(&s->bridge, "--network bridge:", br, err);
	}
	return avm_error_set(err, -EINVAL,
			     "--network '%s' is not a mode; use nat-filtered, isolated or "
			     "bridge:BRIDGE",
			     value);
}

/* One validated port for a list of at most VM_SPEC_MAX_ALLOW; `flag` names it in errors. */
static int add_port(char ***v, size_t *n, const char *flag, const char *value,
		    struct avm_error *err)
{
	struct nf_port port;
	struct avm_error nerr = { 0 };

	if (nf_port_parse(value, &port, &nerr) < 0)
		return avm_error_set(err, -EINVAL, "%s: %s", flag, nerr.msg);
	if (*n >= VM_SPEC_MAX_ALLOW)
		return avm_error_set(err, -E2BIG, "too many %s values (at most %d)", flag,
				     VM_SPEC_MAX_ALLOW);
	if (strv_append(v, n, value) < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

/* guest-init's own mounts, and the root: a disk over them would hide the system. */
static bool guest_dir_reserved(const char *d)
{
	static const char *const sys[] = { "/proc", "/sys", "/dev", "/run", "/bin", "/sbin",
					   "/lib", "/usr", "/etc", "/init" };

	if (!strcmp(d, "/"))
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(sys); i++) {
		size_t n = strlen(sys[i]);
		if (!strncmp(d, sys[i], n) && (d[n] == '\0' || d[n] == '/'))
			return true;
	}
	return false;
}

/* Absolute, [A-Za-z0-9._/-], no empty, "." or ".." component, no trailing '/'. */
static bool guest_dir_ok(const char *d)
{
	size_t n = strlen(d);

	if (n < 2 || n > VM_SPEC_MAX_GUEST_DIR || d[0] != '/' || d[n - 1] == '/')
		return false;
	for (const char *p = d; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._/-", *p))
			return false;
	for (const char *c = d; c; c = strchr(c + 1, '/')) {
		size_t len = strcspn(c + 1, "/");
		if (len == 0 || (len == 1 && c[1] == '.') || (len == 2 && !strncmp(c + 1, "..", 2)))
			return false;
	}
	return true;
}

static int add_disk(struct vm_spec *s, const char *file, const char *dir, bool ro, bool root,
		    struct avm_error *err)
{
	struct vm_disk *d;

	if (s->n_disks >= VM_SPEC_MAX_DISKS)
		return avm_error_set(err, -E2BIG, "too many --disk values (at most %d%s)",
				     VM_SPEC_MAX_DISKS, s->image ? ", the root image included" : "");
	for (size_t i = 0; root && i < s->n_disks; i++)
		if (s->disks[i].root)
			return avm_error_set(err, -EINVAL, "a VM has one root image; --image given twice");
	if (root && (strcmp(dir, "/") || ro))
		return avm_error_set(err, -EINVAL, "the root image is mounted read-write at /");
	if (root)
		goto add;
	if (!guest_dir_ok(dir))
		return avm_error_set(err, -EINVAL,
				     "--disk: guest directory '%s' must be an absolute path of "
				     "[A-Za-z0-9._/-] without '.' or '..' (at most %d characters)",
				     dir, VM_SPEC_MAX_GUEST_DIR);
	if (guest_dir_reserved(dir))
		return avm_error_set(err, -EINVAL,
				     "--disk: '%s' is a system directory of the guest; mount the "
				     "disk elsewhere, e.g. /workspace",
				     dir);
	for (size_t i = 0; i < s->n_disks; i++)
		if (!strcmp(s->disks[i].guest_dir, dir))
			return avm_error_set(err, -EINVAL,
					     "--disk: two disks are mounted at %s; give each its "
					     "own directory",
					     dir);
	for (size_t i = 0; i < s->n_shares; i++)
		if (!strcmp(s->shares[i].guest_dir, dir))
			return avm_error_set(err, -EINVAL,
					     "--disk: a share is already mounted at %s; give each its "
					     "own directory",
					     dir);
add:
	d = &s->disks[s->n_disks];
	d->file = strdup(file);
	d->guest_dir = strdup(dir);
	d->readonly = ro;
	d->root = root;
	if (!d->file || !d->guest_dir) {
		free(d->file);
		free(d->guest_dir);
		d->file = d->guest_dir = NULL;
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	s->n_disks++;
	return 0;
}

int vm_spec_add_disk(struct vm_spec *s, const char *value, struct avm_error *err)
{
	char file[PATH_MAX], dir[VM_SPEC_MAX_GUEST_DIR + 2], real[PATH_MAX];
	size_t n = strlen(value);
	bool ro = false;
	const char *split;
	struct stat st;

	if (n >= sizeof(file))
		return avm_error_set(err, -ENAMETOOLONG, "--disk: path too long");
	memcpy(file, value, n + 1);
	if (n > 3 && (!strcmp(file + n - 3, ":ro") || !strcmp(file + n - 3, ":rw"))) {
		ro = file[n - 2] == 'r' && file[n - 1] == 'o';
		file[n -= 3] = '\0';
	}
	/* The mount point starts at the last ":/" (FILE itself may be relative). */
	split = NULL;
	for (char *p = strstr(file, ":/"); p; p = strstr(p + 1, ":/"))
		split = p;
	if (split) {
		if (strlen(split + 1) >= sizeof(dir))
			return avm_error_set(err, -ENAMETOOLONG,
					     "--disk: guest directory too long (at most %d)",
					     VM_SPEC_MAX_GUEST_DIR);
		snprintf(dir, sizeof(dir), "%s", split + 1);
		file[split - file] = '\0';
	} else if (s->n_disks - (s->image != NULL) == 0) {
		snprintf(dir, sizeof(dir), "/workspace");
	} else {
		snprintf(dir, sizeof(dir), "/mnt/disk%zu", s->n_disks - (s->image != NULL));
	}
	if (!file[0])
		return avm_error_set(err, -EINVAL,
				     "--disk '%s': no image file; use --disk FILE[:GUEST_DIR][:ro]",
				     value);
	if ((!realpath(file, real) || stat(real, &st) < 0) && strchr(file, ':') && errno == ENOENT)
		return avm_error_set(err, -ENOENT,
				     "--disk: cannot use '%s': no such file (a guest directory must "
				     "be absolute: --disk FILE:/DIR)",
				     file);
	if (!realpath(file, real) || stat(real, &st) < 0)
		return avm_error_set(err, -errno,
				     "--disk: cannot use '%s': %s (create an image with: truncate "
				     "-s 1G %s && mkfs.ext4 %s)",
				     file, strerror(errno), file, file);
	/* Not a block device either: its size and times do not follow its content, so neither
	 * the snapshot checks nor the hash cache could tell that it changed. */
	if (!S_ISREG(st.st_mode))
		return avm_error_set(err, -EINVAL,
				     "--disk: '%s' is not a regular file (an image file: raw or "
				     "qcow2)",
				     file);
	if (access(real, R_OK) < 0)
		return avm_error_set(err, -errno, "--disk: cannot read '%s': %s", file,
				     strerror(errno));
	return add_disk(s, real, dir, ro, false, err);
}

/* spec.json's "image": {"name", "id"}, which must come with exactly one root disk. */
static int image_from_json(struct vm_spec *s, struct json_object *spec, struct avm_error *err)
{
	struct json_object *o, *name, *id;
	size_t roots = 0;

	for (size_t i = 0; i < s->n_disks; i++)
		roots += s->disks[i].root;
	if (!json_object_object_get_ex(spec, "image", &o))
		return roots ? avm_error_set(err, -EINVAL, "spec: a root disk but no \"image\"") : 0;
	if (!json_object_object_get_ex(o, "name", &name) ||
	    !json_object_is_type(name, json_type_string) ||
	    !json_object_object_get_ex(o, "id", &id) || !json_object_is_type(id, json_type_string))
		return avm_error_set(err, -EINVAL, "spec: \"image\" needs a name and an id");
	if (roots != 1)
		return avm_error_set(err, -EINVAL, "spec: an \"image\" but no root disk");
	free(s->image);
	free(s->image_id);
	s->image = strdup(json_object_get_string(name));
	s->image_id = strdup(json_object_get_string(id));
	if (!s->image || !s->image_id)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

int vm_spec_disks_from_json(struct vm_spec *s, struct json_object *spec, struct avm_error *err)
{
	struct json_object *a, *d, *v;

	if (!spec)
		return 0;
	if (!json_object_object_get_ex(spec, "disks", &a))
		return image_from_json(s, spec, err);
	if (!json_object_is_type(a, json_type_array))
		return avm_error_set(err, -EINVAL, "spec: \"disks\" is not an array");
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		const char *file, *dir;
		int r;

		d = json_object_array_get_idx(a, i);
		if (!json_object_is_type(d, json_type_object) ||
		    !json_object_object_get_ex(d, "file", &v) ||
		    !json_object_is_type(v, json_type_string))
			return avm_error_set(err, -EINVAL, "spec: disk %zu has no \"file\"", i);
		file = json_object_get_string(v);
		if (!json_object_object_get_ex(d, "mount", &v) ||
		    !json_object_is_type(v, json_type_string))
			return avm_error_set(err, -EINVAL, "spec: disk %zu has no \"mount\"", i);
		dir = json_object_get_string(v);
		if (file[0] != '/')
			return avm_error_set(err, -EINVAL, "spec: disk %zu: file is not absolute", i);
		r = add_disk(s, file, dir,
			     json_object_object_get_ex(d, "readonly", &v) && json_object_get_boolean(v),
			     json_object_object_get_ex(d, "root", &v) && json_object_get_boolean(v),
			     err);
		if (r < 0)
			return r;
	}
	return image_from_json(s, spec, err);
}

int vm_spec_set_image(struct vm_spec *s, const char *name, struct avm_error *err)
{
	struct image_info *img = NULL;
	int r;

	if (s->image)
		return avm_error_set(err, -EINVAL, "a VM has one root image; --image given twice");
	r = image_resolve(name, &img, err);
	if (r < 0)
		return r;
	r = add_disk(s, img->rootfs, "/", false, true, err);
	if (r == 0 && (!(s->image = strdup(name)) || !(s->image_id = strdup(img->id))))
		r = avm_error_set(err, -ENOMEM, "out of memory");
	image_info_free(img);
	return r;
}

static int add_share(struct vm_spec *s, const char *flag, const char *host, const char *dir,
		     bool ro, struct avm_error *err)
{
	char real[PATH_MAX];
	struct vm_share *sh;
	struct stat st;

	if (s->n_shares >= VM_SPEC_MAX_SHARES)
		return avm_error_set(err, -E2BIG, "too many shares (at most %d; --workspace is 3)",
				     VM_SPEC_MAX_SHARES);
	if (!realpath(host, real) || stat(real, &st) < 0)
		return avm_error_set(err, -errno, "%s: cannot use '%s': %s", flag, host,
				     strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return avm_error_set(err, -ENOTDIR, "%s: '%s' is not a directory", flag, host);
	/*
	 * 9p's mapped-xattr model keeps the guest's owners, modes and special files in user.*
	 * attributes; without them every create in the guest would fail with EOPNOTSUPP.
	 */
	if (getxattr(real, "user.agentvm.probe", NULL, 0) < 0 &&
	    (errno == ENOTSUP || errno == EOPNOTSUPP))
		return avm_error_set(err, -ENOTSUP,
				     "%s: the file system of '%s' has no user extended attributes, "
				     "which the share needs; share a directory on ext4, xfs or "
				     "btrfs",
				     flag, host);
	if (!guest_dir_ok(dir))
		return avm_error_set(err, -EINVAL,
				     "%s: guest directory '%s' must be an absolute path of "
				     "[A-Za-z0-9._/-] without '.' or '..' (at most %d characters)",
				     flag, dir, VM_SPEC_MAX_GUEST_DIR);
	if (guest_dir_reserved(dir))
		return avm_error_set(err, -EINVAL,
				     "%s: '%s' is a system directory of the guest; share it "
				     "elsewhere, e.g. /workspace",
				     flag, dir);
	for (size_t i = 0; i < s->n_disks; i++)
		if (!strcmp(s->disks[i].guest_dir, dir))
			return avm_error_set(err, -EINVAL,
					     "%s: a disk is already mounted at %s; give each its own "
					     "directory",
					     flag, dir);
	for (size_t i = 0; i < s->n_shares; i++)
		if (!strcmp(s->shares[i].guest_dir, dir))
			return avm_error_set(err, -EINVAL,
					     "%s: two shares are mounted at %s; give each its own "
					     "directory",
					     flag, dir);
	sh = &s->shares[s->n_shares];
	sh->host_dir = strdup(real);
	sh->guest_dir = strdup(dir);
	sh->readonly = ro;
	if (!sh->host_dir || !sh->guest_dir) {
		free(sh->host_dir);
		free(sh->guest_dir);
		sh->host_dir = sh->guest_dir = NULL;
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	s->n_shares++;
	return 0;
}

int vm_spec_add_share(struct vm_spec *s, const char *value, struct avm_error *err)
{
	char host[PATH_MAX];
	size_t n = strlen(value);
	const char *split = NULL;
	bool ro = false;

	if (n >= sizeof(host))
		return avm_error_set(err, -ENAMETOOLONG, "--share: path too long");
	memcpy(host, value, n + 1);
	if (n > 3 && (!strcmp(host + n - 3, ":ro") || !strcmp(host + n - 3, ":rw"))) {
		ro = host[n - 1] == 'o';
		host[n -= 3] = '\0';
	}
	for (char *p = strstr(host, ":/"); p; p = strstr(p + 1, ":/"))
		split = p;
	if (!split || split == host)
		return avm_error_set(err, -EINVAL,
				     "--share '%s': use --share HOSTDIR:GUESTDIR[:ro], e.g. --share "
				     "./src:/src:ro",
				     value);
	host[split - host] = '\0';
	return add_share(s, "--share", host, split + 1, ro, err);
}

int vm_spec_set_workspace(struct vm_spec *s, const char *dir, struct avm_error *err)
{
	static const struct {
		const char *sub;
		bool ro;
	} parts[] = { { "input", true }, { "output", false }, { "work", false } };
	char path[PATH_MAX], guest[32];
	int r;

	if (strlen(dir) + sizeof("/output") >= sizeof(path))
		return avm_error_set(err, -ENAMETOOLONG, "--workspace: path too long");
	/* The product's layout is the point of the flag: make it rather than refuse. */
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return avm_error_set(err, -errno, "--workspace: cannot create '%s': %s", dir,
				     strerror(errno));
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, parts[i].sub);
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return avm_error_set(err, -errno, "--workspace: cannot create '%s': %s",
					     path, strerror(errno));
		snprintf(guest, sizeof(guest), "/workspace/%s", parts[i].sub);
		if ((r = add_share(s, "--workspace", path, guest, parts[i].ro, err)) < 0)
			return r;
	}
	return 0;
}

int vm_spec_add_allow(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return add_port(&s->allow, &s->n_allow, "--allow", value, err);
}

int vm_spec_add_host_allow(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return add_port(&s->host_allow, &s->n_host_allow, "--allow-host", value, err);
}

int vm_spec_set_dns(struct vm_spec *s, const char *value, struct avm_error *err)
{
	struct in_addr a;

	if (inet_pton(AF_INET, value, &a) != 1)
		return avm_error_set(err, -EINVAL, "--dns '%s' is not an IPv4 address", value);
	return vm_spec_set_path(&s->dns, "--dns", value, err);
}

int vm_spec_add_allow_cidr(struct vm_spec *s, const char *value, struct avm_error *err)
{
	struct nf_cidr c;
	struct avm_error nerr = { 0 };
	char norm[NF_CIDR_STRLEN];

	if (nf_cidr_parse(value, &c, &nerr) < 0)
		return avm_error_set(err, -EINVAL, "--allow-cidr: %s", nerr.msg);
	if (s->n_allow_cidr >= VM_SPEC_MAX_ALLOW)
		return avm_error_set(err, -E2BIG, "too many --allow-cidr values (at most %d)",
				     VM_SPEC_MAX_ALLOW);
	nf_cidr_string(&c, norm, sizeof(norm));
	if (strv_append(&s->allow_cidr, &s->n_allow_cidr, norm) < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

int vm_spec_add_allow_domain(struct vm_spec *s, const char *value, struct avm_error *err)
{
	struct avm_error nerr = { 0 };
	char norm[256];

	if (nf_domain_check(value, norm, sizeof(norm), &nerr) < 0)
		return avm_error_set(err, -EINVAL, "--allow-domain: %s", nerr.msg);
	if (s->n_allow_domain >= VM_SPEC_MAX_ALLOW)
		return avm_error_set(err, -E2BIG, "too many --allow-domain values (at most %d)",
				     VM_SPEC_MAX_ALLOW);
	if (strv_append(&s->allow_domain, &s->n_allow_domain, norm) < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

static int set_uint(unsigned *slot, const char *flag, const char *value, long max,
		    const char *what, struct avm_error *err)
{
	long v;

	if (parse_long(value, 1, max, &v) < 0)
		return avm_error_set(err, -EINVAL, "%s '%s' is not %s from 1 to %ld", flag, value,
				     what, max);
	*slot = (unsigned)v;
	return 0;
}

int vm_spec_set_domain_ttl(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return set_uint(&s->domain_ttl, "--domain-ttl", value, 86400, "a number of seconds", err);
}

int vm_spec_set_conn_limit(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return set_uint(&s->conn_limit, "--conn-limit", value, 1000000, "a number of connections",
			err);
}

int vm_spec_set_conn_rate(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return set_uint(&s->conn_rate, "--conn-rate", value, 100000,
			"a number of new connections per second", err);
}

int vm_spec_set_bandwidth(struct vm_spec *s, const char *value, struct avm_error *err)
{
	struct avm_error nerr = { 0 };
	uint64_t rate, burst;

	if (value && strcmp(value, VM_BANDWIDTH_UNLIMITED) &&
	    nf_rate_parse(value, &rate, &burst, &nerr) < 0)
		return avm_error_set(err, -EINVAL, "--bandwidth: %s (or unlimited)", nerr.msg);
	return vm_spec_set_path(&s->bandwidth, "--bandwidth", value, err);
}

const char *vm_spec_egress_flag(const struct vm_spec *s)
{
	return s->n_allow_cidr	   ? "--allow-cidr"
	       : s->n_allow_domain ? "--allow-domain"
	       : s->domain_ttl	   ? "--domain-ttl"
	       : s->conn_limit	   ? "--conn-limit"
	       : s->conn_rate	   ? "--conn-rate"
	       /* "unlimited" asks for nothing an isolated VM lacks */
	       : s->bandwidth && strcmp(s->bandwidth, VM_BANDWIDTH_UNLIMITED) ? "--bandwidth"
									: NULL;
}

int vm_spec_egress_from_json(struct vm_spec *s, struct json_object *net)
{
	struct json_object *v;
	char num[32];
	int r = 0;

	if (!net)
		return 0;
	if (json_object_object_get_ex(net, "allow_cidr", &v) && json_object_is_type(v, json_type_array))
		for (size_t i = 0; r == 0 && i < json_object_array_length(v); i++)
			r = vm_spec_add_allow_cidr(
				s, json_object_get_string(json_object_array_get_idx(v, i)), NULL);
	if (r == 0 && json_object_object_get_ex(net, "allow_domain", &v) &&
	    json_object_is_type(v, json_type_array))
		for (size_t i = 0; r == 0 && i < json_object_array_length(v); i++)
			r = vm_spec_add_allow_domain(
				s, json_object_get_string(json_object_array_get_idx(v, i)), NULL);
	static const struct {
		const char *key;
		int (*set)(struct vm_spec *, const char *, struct avm_error *);
	} nums[] = { { "domain_ttl", vm_spec_set_domain_ttl },
		     { "conn_limit", vm_spec_set_conn_limit },
		     { "conn_rate", vm_spec_set_conn_rate } };
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(nums); i++) {
		if (!json_object_object_get_ex(net, nums[i].key, &v) ||
		    !json_object_is_type(v, json_type_int))
			continue;
		snprintf(num, sizeof(num), "%lld", (long long)json_object_get_int64(v));
		r = nums[i].set(s, num, NULL);
	}
	if (r == 0 && json_object_object_get_ex(net, "bandwidth", &v) &&
	    json_object_is_type(v, json_type_string))
		r = vm_spec_set_bandwidth(s, json_object_get_string(v), NULL);
	return r;
}

int vm_spec_copy_egress(struct vm_spec *dst, const struct vm_spec *src)
{
	strv_free(dst->allow_cidr);
	strv_free(dst->allow_domain);
	free(dst->bandwidth);
	dst->allow_cidr = dst->allow_domain = NULL;
	dst->n_allow_cidr = dst->n_allow_domain = 0;
	dst->bandwidth = NULL;
	for (size_t i = 0; i < src->n_allow_cidr; i++)
		if (strv_append(&dst->allow_cidr, &dst->n_allow_cidr, src->allow_cidr[i]) < 0)
			return -ENOMEM;
	for (size_t i = 0; i < src->n_allow_domain; i++)
		if (strv_append(&dst->allow_domain, &dst->n_allow_domain, src->allow_domain[i]) < 0)
			return -ENOMEM;
	if (src->bandwidth && !(dst->bandwidth = strdup(src->bandwidth)))
		return -ENOMEM;
	dst->domain_ttl = src->domain_ttl;
	dst->conn_limit = src->conn_limit;
	dst->conn_rate = src->conn_rate;
	return 0;
}

int vm_spec_validate(const struct vm_spec *s, bool need_command, struct avm_error *err)
{
	/* The first filter flag given, for the message. */
	const char *filter = s->n_allow		? "--allow"
			     : s->n_host_allow	? "--allow-host"
			     : s->deny_all_egress ? "--deny-all-egress"
						  : vm_spec_egress_flag(s);

	if (s->net_mode == VM_NET_ISOLATED && (filter || s->dns))
		return avm_error_set(err, -EINVAL,
				     "%s needs a network; --network isolated has none",
				     filter ? filter : "--dns");
	if (s->net_mode == VM_NET_BRIDGE && filter)
		return avm_error_set(err, -EINVAL,
				     "%s filters nat-filtered VMs only; a bridged VM is not filtered",
				     filter);
	size_t slots = VM_VIRTIO_SLOTS - 2 - (s->net_mode != VM_NET_ISOLATED);
	if (s->n_shares && s->n_disks + s->n_shares > slots)
		return avm_error_set(err, -E2BIG,
				     "%zu disks and %zu shares do not fit: microvm has %d virtio "
				     "slots, so a VM takes at most %zu disks and shares together "
				     "(--workspace is 3 shares)%s",
				     s->n_disks, s->n_shares, VM_VIRTIO_SLOTS, slots,
				     s->net_mode != VM_NET_ISOLATED ? "; --network isolated frees one"
								     : "");
	if (s->n_disks > slots)
		return avm_error_set(err, -E2BIG,
				     "%zu disks do not fit: microvm has %d virtio slots, so a VM "
				     "takes at most %zu disks %s%s",
				     s->n_disks, VM_VIRTIO_SLOTS, slots,
				     s->image ? "(the root image is one) " : "",
				     s->net_mode != VM_NET_ISOLATED
					     ? "with a network (6 with --network isolated)"
					     : "without a network");
	if (need_command && (s->argc == 0 || !s->argv[0][0]))
		return avm_error_set(err, -EINVAL,
				     "no command given; put it after --, e.g. agentvm run -- uname -a");
	return 0;
}

static struct json_object *strv_to_json(char **v)
{
	struct json_object *a = json_object_new_array();

	for (char **p = v; p && *p; p++)
		json_object_array_add(a, json_object_new_string(*p));
	return a;
}

struct json_object *vm_spec_to_json(const struct vm_spec *s)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	if (s->name)
		json_object_object_add(o, "name", json_object_new_string(s->name));
	json_object_object_add(o, "profile", json_object_new_string(s->profile));
	json_object_object_add(o, "cpus", json_object_new_int((int)s->cpus));
	json_object_object_add(o, "memory_mib", json_object_new_int((int)s->memory_mib));
	json_object_object_add(o, "timeout_s", json_object_new_int((int)s->timeout_s));
	json_object_object_add(o, "accel", json_object_new_string(vm_accel_name(s->accel)));
	if (s->kernel)
		json_object_object_add(o, "kernel", json_object_new_string(s->kernel));
	if (s->initrd)
		json_object_object_add(o, "initrd", json_object_new_string(s->initrd));
	if (s->workdir)
		json_object_object_add(o, "workdir", json_object_new_string(s->workdir));
	json_object_object_add(o, "env", strv_to_json(s->env));
	json_object_object_add(o, "command", strv_to_json(s->argv));
	struct json_object *net = json_object_new_object();
	json_object_object_add(net, "mode", json_object_new_string(vm_net_mode_name(s->net_mode)));
	if (s->bridge)
		json_object_object_add(net, "bridge", json_object_new_string(s->bridge));
	json_object_object_add(net, "allow", strv_to_json(s->allow));
	json_object_object_add(net, "deny_all_egress", json_object_new_boolean(s->deny_all_egress));
	json_object_object_add(net, "host_allow", strv_to_json(s->host_allow));
	if (s->dns)
		json_object_object_add(net, "dns", json_object_new_string(s->dns));
	json_object_object_add(net, "allow_cidr", strv_to_json(s->allow_cidr));
	json_object_object_add(net, "allow_domain", strv_to_json(s->allow_domain));
	if (s->domain_ttl)
		json_object_object_add(net, "domain_ttl", json_object_new_int((int)s->domain_ttl));
	if (s->conn_limit)
		json_object_object_add(net, "conn_limit", json_object_new_int((int)s->conn_limit));
	if (s->conn_rate)
		json_object_object_add(net, "conn_rate", json_object_new_int((int)s->conn_rate));
	if (s->bandwidth)
		json_object_object_add(net, "bandwidth", json_object_new_string(s->bandwidth));
	json_object_object_add(o, "network", net);
	if (s->n_disks) {
		struct json_object *disks = json_object_new_array();
		for (size_t i = 0; i < s->n_disks; i++) {
			struct json_object *d = json_object_new_object();
			json_object_object_add(d, "file", json_object_new_string(s->disks[i].file));
			json_object_object_add(d, "mount",
					       json_object_new_string(s->disks[i].guest_dir));
			json_object_object_add(d, "readonly",
					       json_object_new_boolean(s->disks[i].readonly));
			if (s->disks[i].root)
				json_object_object_add(d, "root", json_object_new_boolean(true));
			json_object_array_add(disks, d);
		}
		json_object_object_add(o, "disks", disks);
	}
	if (s->n_shares) {
		struct json_object *shares = json_object_new_array();
		for (size_t i = 0; i < s->n_shares; i++) {
			struct json_object *d = json_object_new_object();
			json_object_object_add(d, "host",
					       json_object_new_string(s->shares[i].host_dir));
			json_object_object_add(d, "mount",
					       json_object_new_string(s->shares[i].guest_dir));
			json_object_object_add(d, "readonly",
					       json_object_new_boolean(s->shares[i].readonly));
			json_object_array_add(shares, d);
		}
		json_object_object_add(o, "shares", shares);
	}
	if (s->image) {
		struct json_object *img = json_object_new_object();
		json_object_object_add(img, "name", json_object_new_string(s->image));
		json_object_object_add(img, "id", json_object_new_string(s->image_id));
		json_object_object_add(o, "image", img);
	}
	return o;
}

/* --- spec.json in a VM's state dir: written at launch, read by save, reset and inspect --- */

int vm_spec_net_from_json(struct vm_spec *s, struct json_object *spec)
{
	struct json_object *net = NULL, *v;
	const char *mode = NULL;
	int r = 0;

	s->net_mode = VM_NET_NAT_FILTERED;
	if (!spec || !json_object_object_get_ex(spec, "network", &net))
		return 0;
	if (json_object_object_get_ex(net, "mode", &v))
		mode = json_object_get_string(v);
	if (mode && !strcmp(mode, "isolated")) {
		s->net_mode = VM_NET_ISOLATED;
		return 0;
	}
	if (mode && !strcmp(mode, "bridge") && json_object_object_get_ex(net, "bridge", &v)) {
		char buf[64];
		snprintf(buf, sizeof(buf), "bridge:%s", json_object_get_string(v));
		return vm_spec_set_network(s, buf, NULL);
	}
	if (json_object_object_get_ex(net, "allow", &v) && json_object_is_type(v, json_type_array))
		for (size_t i = 0; r == 0 && i < json_object_array_length(v); i++)
			r = vm_spec_add_allow(s, json_object_get_string(json_object_array_get_idx(v, i)),
					      NULL);
	if (r == 0 && json_object_object_get_ex(net, "host_allow", &v) &&
	    json_object_is_type(v, json_type_array))
		for (size_t i = 0; r == 0 && i < json_object_array_length(v); i++)
			r = vm_spec_add_host_allow(
				s, json_object_get_string(json_object_array_get_idx(v, i)), NULL);
	if (r == 0 && json_object_object_get_ex(net, "deny_all_egress", &v))
		s->deny_all_egress = json_object_get_boolean(v);
	if (r == 0 && json_object_object_get_ex(net, "dns", &v) &&
	    json_object_is_type(v, json_type_string))
		r = vm_spec_set_dns(s, json_object_get_string(v), NULL);
	if (r == 0)
		r = vm_spec_egress_from_json(s, net);
	return r;
}

int vm_spec_write(const char *dir, const struct vm_spec *spec, const char *name)
{
	char path[PATH_MAX];
	struct json_object *o = vm_spec_to_json(spec);
	const char *s;
	int r;

	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "name", json_object_new_string(name));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = statedir_file(path, sizeof(path), dir, VM_SPEC_FILE);
	if (r == 0)
		r = write_file_atomic(path, s, strlen(s));
	json_object_put(o);
	return r;
}

int vm_spec_read(const char *dir, struct json_object **out, struct avm_error *err)
{
	_cleanup_free_ char *buf = NULL;
	int r = statedir_read(dir, VM_SPEC_FILE, &buf, 1 << 20);

	*out = NULL;
	if (r < 0)
		return avm_error_setx(err, r, "cannot read %s/" VM_SPEC_FILE, dir);
	*out = json_tokener_parse(buf);
	if (!*out || !json_object_is_type(*out, json_type_object)) {
		json_object_put(*out);
		*out = NULL;
		return avm_error_set(err, -EBADMSG, "%s/" VM_SPEC_FILE " is not a JSON object", dir);
	}
	return 0;
}

void vm_spec_summary_from_json(struct json_object *spec, struct vm_spec_summary *out)
{
	struct json_object *v;

	out->profile = json_get_str(spec, "profile") ? json_get_str(spec, "profile") : "custom";
	out->kernel = json_get_str(spec, "kernel");
	out->initrd = json_get_str(spec, "initrd");
	out->cpus = json_object_object_get_ex(spec, "cpus", &v) ? (unsigned)json_object_get_int(v)
								: 0;
	out->memory_mib = json_object_object_get_ex(spec, "memory_mib", &v)
				  ? (unsigned)json_object_get_int(v)
				  : 0;
	out->n_shares = json_object_object_get_ex(spec, "shares", &v) &&
					json_object_is_type(v, json_type_array)
				? json_object_array_length(v)
				: 0;
}
