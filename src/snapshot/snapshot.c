/* SPDX-License-Identifier: MIT */
#include "vm/disk.h"
#include "snapshot/snapshot.h"

#include <ctype.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm/host.h"
#include "base/sha256.h"
#include "state/statedir.h"
#include "base/tz.h"
#include "base/util.h"

void snap_meta_release(struct snap_meta *m)
{
	if (!m)
		return;
	free(m->name);
	free(m->description);
	free(m->created);
	free(m->source_vm);
	free(m->profile);
	free(m->kernel.path);
	free(m->initrd.path);
	free(m->qemu.path);
	for (size_t i = 0; i < m->n_disks; i++)
		free(m->disks[i].path);
	json_object_put(m->spec);
	memset(m, 0, sizeof(*m));
}

int snap_validate_name(const char *name, struct avm_error *err)
{
	if (name_is_valid(name, SNAP_MAX_NAME))
		return 0;
	return avm_error_set(err, -EINVAL,
			     "invalid snapshot name '%s': use 1-%d letters, digits, '_', '.' or "
			     "'-', starting with a letter or digit",
			     name, SNAP_MAX_NAME);
}

int snap_tmp_pattern(char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "%s/.%s.tmp-XXXXXX", paths_snapshot_root(), name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

bool snap_is_tmp_name(const char *entry)
{
	return entry[0] == '.' && strstr(entry, ".tmp-");
}

int snap_path(char *buf, size_t len, const char *name, const char *file)
{
	int n = file ? snprintf(buf, len, "%s/%s/%s", paths_snapshot_root(), name, file)
		     : snprintf(buf, len, "%s/%s", paths_snapshot_root(), name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

void snap_time_ny(time_t t, char *buf, size_t len)
{
	char full[40];

	/* The product's timestamps are New York time with the offset, whatever the host's zone;
	 * read from the tz database by tz.c, not by setenv("TZ") under the caller. */
	tz_format_rfc3339(tz_new_york(), (int64_t)t * 1000, full, sizeof(full));
	snprintf(buf, len, "%.19s%s", full, full + 23); /* without the ".000" */
}

static struct json_object *input_json(const struct file_input *in)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "path", json_object_new_string(in->path ? in->path : ""));
	json_object_object_add(o, "sha256", json_object_new_string(in->sha256));
	json_object_object_add(o, "size", json_object_new_int64(in->size));
	json_object_object_add(o, "mtime_ns", json_object_new_int64(in->mtime_ns));
	return o;
}

char *snap_meta_to_string(const struct snap_meta *m)
{
	struct json_object *o = json_object_new_object(), *in = json_object_new_object();
	char *s;

	json_object_object_add(o, "format", json_object_new_int(SNAP_FORMAT));
	json_object_object_add(o, "name", json_object_new_string(m->name));
	json_object_object_add(o, "description",
			       json_object_new_string(m->description ? m->description : ""));
	json_object_object_add(o, "created", json_object_new_string(m->created));
	json_object_object_add(o, "source_vm",
			       json_object_new_string(m->source_vm ? m->source_vm : ""));
	json_object_object_add(o, "accel", json_object_new_string(m->accel));
	json_object_object_add(o, "network", json_object_new_boolean(m->network));
	json_object_object_add(o, "cpus", json_object_new_int((int)m->cpus));
	json_object_object_add(o, "memory_mib", json_object_new_int((int)m->memory_mib));
	json_object_object_add(o, "profile", json_object_new_string(m->profile ? m->profile : ""));
	json_object_object_add(o, "state_size", json_object_new_int64(m->state_size));
	json_object_object_add(o, "save_ms", json_object_new_int64(m->save_ms));
	json_object_object_add(
		o, "disk",
		json_object_new_string(
			m->n_disks ? "the root file system is the initramfs in guest RAM (in the RAM "
				     "state); workspace disks: disk<N>.qcow2, copies of the VM's "
				     "overlays backed by inputs.disk<N>"
				   : "none: the root file system is the initramfs in guest RAM, so "
				     "the RAM state holds it"));
	json_object_object_add(in, "kernel", input_json(&m->kernel));
	for (size_t i = 0; i < m->n_disks; i++) {
		char k[32];
		snprintf(k, sizeof(k), "disk%zu", i);
		json_object_object_add(in, k, input_json(&m->disks[i]));
	}
	json_object_object_add(in, "initrd", input_json(&m->initrd));
	struct json_object *q = input_json(&m->qemu);
	json_object_object_add(q, "version", json_object_new_string(m->qemu_version));
	json_object_object_add(in, "qemu", q);
	json_object_object_add(o, "inputs", in);
	if (m->spec)
		json_object_object_add(o, "spec", json_object_get(m->spec));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

/* Typed getters that fail with the field's name. */
static int get(struct json_object *o, const char *k, json_type t, struct json_object **v,
	       struct avm_error *err)
{
	if (!json_object_object_get_ex(o, k, v) || !json_object_is_type(*v, t))
		return avm_error_set(err, -EBADMSG, "meta.json: \"%s\" is missing or not a%s %s", k,
				     t == json_type_int || t == json_type_object ? "n" : "",
				     json_type_to_name(t));
	return 0;
}

static int get_str(struct json_object *o, const char *k, char **out, struct avm_error *err)
{
	struct json_object *v;
	int r = get(o, k, json_type_string, &v, err);

	if (r < 0)
		return r;
	free(*out);
	*out = strdup(json_object_get_string(v));
	return *out ? 0 : avm_error_set(err, -ENOMEM, "out of memory");
}

static int get_i64(struct json_object *o, const char *k, int64_t min, int64_t max, int64_t *out,
		   struct avm_error *err)
{
	struct json_object *v;
	int r = get(o, k, json_type_int, &v, err);

	if (r < 0)
		return r;
	*out = json_object_get_int64(v);
	if (*out < min || *out > max)
		return avm_error_set(err, -EBADMSG, "meta.json: \"%s\" is out of range", k);
	return 0;
}

static int parse_input(struct json_object *inputs, const char *k, struct file_input *in,
		       struct avm_error *err)
{
	struct json_object *o, *v;
	_cleanup_free_ char *sha = NULL;
	int r;

	if ((r = get(inputs, k, json_type_object, &o, err)) < 0 ||
	    (r = get_str(o, "path", &in->path, err)) < 0 ||
	    (r = get_str(o, "sha256", &sha, err)) < 0 ||
	    (r = get_i64(o, "size", 0, INT64_MAX, &in->size, err)) < 0 ||
	    (r = get_i64(o, "mtime_ns", INT64_MIN, INT64_MAX, &in->mtime_ns, err)) < 0) {
		avm_error_wrap(err, "inputs.%s", k);
		return r; /* not wrap's value: err may be NULL */
	}
	if (in->path[0] != '/')
		return avm_error_set(err, -EBADMSG, "meta.json: inputs.%s.path must be absolute", k);
	if (!file_input_hex_ok(sha))
		return avm_error_set(err, -EBADMSG,
				     "meta.json: inputs.%s.sha256 is not 64 lowercase hex digits", k);
	memcpy(in->sha256, sha, 65);
	(void)v;
	return 0;
}

int snap_meta_parse(const char *text, struct snap_meta *m, struct avm_error *err)
{
	struct json_object *o = json_tokener_parse(text), *v, *inputs, *q;
	_cleanup_free_ char *accel = NULL, *ver = NULL;
	int64_t i;
	int r;

	memset(m, 0, sizeof(*m));
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return avm_error_set(err, -EBADMSG, "meta.json is not a JSON object");
	}
	if ((r = get_i64(o, "format", 0, INT32_MAX, &i, err)) < 0)
		goto out;
	if (i != SNAP_FORMAT) {
		r = avm_error_set(err, -EPROTO,
				  "meta.json has format %lld; this agentvm reads format %d",
				  (long long)i, SNAP_FORMAT);
		goto out;
	}
	if ((r = get_str(o, "name", &m->name, err)) < 0 ||
	    (r = snap_validate_name(m->name, err)) < 0 ||
	    (r = get_str(o, "description", &m->description, err)) < 0 ||
	    (r = get_str(o, "created", &m->created, err)) < 0 ||
	    (r = get_str(o, "source_vm", &m->source_vm, err)) < 0 ||
	    (r = get_str(o, "accel", &accel, err)) < 0 ||
	    (r = get_str(o, "profile", &m->profile, err)) < 0)
		goto out;
	if (strcmp(accel, "kvm") != 0 && strcmp(accel, "tcg") != 0) {
		r = avm_error_set(err, -EBADMSG, "meta.json: accel '%s' is neither kvm nor tcg",
				  accel);
		goto out;
	}
	snprintf(m->accel, sizeof(m->accel), "%s", accel);
	if ((r = get(o, "network", json_type_boolean, &v, err)) < 0)
		goto out;
	m->network = json_object_get_boolean(v);
	if ((r = get_i64(o, "cpus", 1, VM_SPEC_MAX_CPUS, &i, err)) < 0)
		goto out;
	m->cpus = (unsigned)i;
	if ((r = get_i64(o, "memory_mib", VM_SPEC_MIN_MEMORY_MIB, VM_SPEC_MAX_MEMORY_MIB, &i,
			 err)) < 0)
		goto out;
	m->memory_mib = (unsigned)i;
	if ((r = get_i64(o, "state_size", 1, INT64_MAX, &m->state_size, err)) < 0 ||
	    (r = get_i64(o, "save_ms", 0, INT64_MAX, &m->save_ms, err)) < 0)
		goto out;
	if ((r = get(o, "inputs", json_type_object, &inputs, err)) < 0 ||
	    (r = parse_input(inputs, "kernel", &m->kernel, err)) < 0 ||
	    (r = parse_input(inputs, "initrd", &m->initrd, err)) < 0 ||
	    (r = parse_input(inputs, "qemu", &m->qemu, err)) < 0)
		goto out;
	json_object_object_get_ex(inputs, "qemu", &q);
	if ((r = get_str(q, "version", &ver, err)) < 0)
		goto out;
	if (!ver[0] || strlen(ver) >= sizeof(m->qemu_version)) {
		r = avm_error_set(err, -EBADMSG, "meta.json: inputs.qemu.version is not a version");
		goto out;
	}
	snprintf(m->qemu_version, sizeof(m->qemu_version), "%s", ver);
	if (json_object_object_get_ex(o, "spec", &v) && json_object_is_type(v, json_type_object))
		m->spec = json_object_get(v);
	/* One input per disk of the spec: a restore needs each user image unchanged. */
	if (m->spec && json_object_object_get_ex(m->spec, "disks", &v)) {
		if (!json_object_is_type(v, json_type_array) ||
		    json_object_array_length(v) > VM_SPEC_MAX_DISKS) {
			r = avm_error_set(err, -EBADMSG, "meta.json: spec.disks is not a list of "
							 "at most %d disks",
					  VM_SPEC_MAX_DISKS);
			goto out;
		}
		for (size_t d = 0; d < json_object_array_length(v); d++) {
			char k[32];
			snprintf(k, sizeof(k), "disk%zu", d);
			if ((r = parse_input(inputs, k, &m->disks[d], err)) < 0)
				goto out;
			m->n_disks = d + 1;
		}
	}
	r = 0;
out:
	json_object_put(o);
	if (r < 0)
		snap_meta_release(m);
	return r;
}

int snap_load(const char *name, struct snap_meta *m, struct avm_error *err)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	struct stat st;
	int r = snap_validate_name(name, err);

	if (r < 0)
		return r;
	if (snap_path(path, sizeof(path), name, NULL) < 0)
		return avm_error_set(err, -ENAMETOOLONG, "snapshot path too long");
	if (stat(path, &st) < 0)
		return avm_error_set(err, -ENOENT,
				     "no snapshot named '%s' in %s (see 'agentvm snapshot ls')", name,
				     paths_snapshot_root());
	snap_path(path, sizeof(path), name, SNAP_META_FILE);
	r = read_file(path, &text, 1 << 20);
	if (r < 0)
		return avm_error_setx(err, r, "snapshot '%s' is damaged: cannot read %s", name, path);
	r = snap_meta_parse(text, m, err);
	if (r < 0) {
		avm_error_wrap(err, "snapshot '%s' is damaged", name);
		return r; /* not wrap's value: err may be NULL (restore_check_flags) */
	}
	if (strcmp(m->name, name) != 0) {
		r = avm_error_set(err, -EBADMSG,
				  "snapshot '%s' is damaged: its meta.json names '%s'", name, m->name);
		snap_meta_release(m);
		return r;
	}
	snap_path(path, sizeof(path), name, SNAP_STATE_FILE);
	if (stat(path, &st) < 0 || st.st_size != m->state_size) {
		r = avm_error_set(err, -EBADMSG,
				  "snapshot '%s' is damaged: %s is %s (expected %lld bytes); "
				  "remove it with 'agentvm snapshot rm %s'",
				  name, path, errno == ENOENT ? "missing" : "truncated or changed",
				  (long long)m->state_size, name);
		snap_meta_release(m);
		return r;
	}
	for (size_t i = 0; i < m->n_disks; i++) {
		char dir[PATH_MAX];
		snap_path(dir, sizeof(dir), name, NULL);
		disk_overlay_path(path, sizeof(path), dir, i);
		if (access(path, R_OK) < 0) {
			r = avm_error_set(err, -EBADMSG,
					  "snapshot '%s' is damaged: %s is missing; remove it with "
					  "'agentvm snapshot rm %s'",
					  name, path, name);
			snap_meta_release(m);
			return r;
		}
	}
	return 0;
}

int snap_input_check(const struct file_input *in, const char *path, const char *what,
		     const char *snap, struct avm_error *err)
{
	struct stat st;
	char hex[65];
	int r;

	if (stat(path, &st) < 0)
		return avm_error_setx(err, -errno,
				      "snapshot '%s' needs the %s %s, which is gone", snap, what,
				      path);
	if (st.st_size == in->size &&
	    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == in->mtime_ns)
		return 0;
	/* Touched or rebuilt: the content decides. */
	r = sha256_file(path, hex);
	if (r < 0)
		return avm_error_setx(err, r, "cannot read %s", path);
	if (strcmp(hex, in->sha256) != 0)
		return avm_error_set(err, -ESTALE,
				     "snapshot '%s' was taken with another %s (%s changed since); "
				     "take a new snapshot",
				     snap, what, path);
	return 0;
}

struct vm_spec *snap_spec_new(const struct snap_meta *m)
{
	struct vm_spec *s = vm_spec_new();

	if (!s)
		return NULL;
	s->cpus = m->cpus;
	s->memory_mib = m->memory_mib;
	free(s->profile);
	s->profile = strdup(m->profile && m->profile[0] ? m->profile : "custom");
	s->accel = !strcmp(m->accel, "kvm") ? VM_ACCEL_KVM : VM_ACCEL_TCG;
	s->kernel = strdup(m->kernel.path);
	s->initrd = strdup(m->initrd.path);
	/*
	 * A clone has a NIC exactly when its snapshot had one (no hotplug on microvm: the device
	 * set must match), with the source VM's network policy from its spec.
	 */
	s->net_mode = VM_NET_ISOLATED;
	if (m->network && vm_spec_net_from_json(s, m->spec) < 0) {
		vm_spec_free(s);
		return NULL;
	}
	if (vm_spec_disks_from_json(s, m->spec, NULL) < 0 || s->n_disks != m->n_disks ||
	    !s->profile || !s->kernel || !s->initrd) {
		vm_spec_free(s);
		return NULL;
	}
	return s;
}

int snap_record_disks(struct snap_meta *m, const struct vm_spec *spec, struct avm_error *err)
{
	int r;

	for (size_t i = 0; i < spec->n_disks; i++) {
		if ((r = file_input_record(&m->disks[i], spec->disks[i].file, err)) < 0)
			return r;
		m->n_disks = i + 1;
	}
	return 0;
}

int snap_record_inputs(struct snap_meta *m, const char *kernel, const char *initrd,
		       struct avm_error *err)
{
	_cleanup_free_ char *qemu = NULL, *k = NULL, *i = NULL;
	int r;

	if ((r = host_find_qemu(&qemu, err)) < 0 ||
	    (r = host_guest_images(kernel, initrd, &k, &i, err)) < 0)
		return r;
	if ((r = file_input_record(&m->kernel, k, err)) < 0 ||
	    (r = file_input_record(&m->initrd, i, err)) < 0 ||
	    (r = file_input_record(&m->qemu, qemu, err)) < 0)
		return r;
	return 0;
}
