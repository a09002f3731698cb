/* SPDX-License-Identifier: MIT */
/* The pod's saved state: its bounded reader and its parser (see podstate.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "podstate.h"
#include "shim.h"

bool shim_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 76 || id[0] == '.')
		return false;
	return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

int shim_read_private(const char *path, size_t max, char **buf, size_t *len, const char **why)
{
	struct stat st;
	size_t n = 0;
	char *b;
	int fd, r = 0;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		*why = r == -ELOOP ? "it is a symbolic link" : "it cannot be opened";
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		*why = "it cannot be examined";
	} else if (!S_ISREG(st.st_mode)) {
		r = -EPERM;
		*why = "it is not a regular file";
	} else if (st.st_uid != geteuid()) {
		r = -EPERM;
		*why = "it belongs to another user";
	} else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		r = -EPERM;
		*why = "it is writable by group or others";
	} else if ((uint64_t)st.st_size > max) {
		r = -EFBIG;
		*why = "it is larger than a pod's state can be";
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	/* As large as fstat said, plus one byte: a file that grew since is refused too. */
	size_t cap = (size_t)st.st_size + 1;
	if (!(b = malloc(cap + 1))) {
		close(fd);
		*why = "out of memory";
		return -ENOMEM;
	}
	while (n < cap) {
		ssize_t k = read(fd, b + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			*why = "it cannot be read";
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	if (r == 0 && n == cap) {
		r = -EAGAIN;
		*why = "it changed while it was read";
	}
	if (r < 0) {
		free(b);
		return r;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

/* A string member: NULL when absent; *bad when present but not a string of at most max bytes. */
static const char *get_str(struct json_object *o, const char *key, size_t max, bool *bad)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	if (!json_object_is_type(v, json_type_string) ||
	    (size_t)json_object_get_string_len(v) > max ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
		*bad = true;
		return NULL;
	}
	return json_object_get_string(v);
}

/* An integer member within [lo, hi] (absent: 0 when 0 is in range); *bad otherwise. */
static int64_t get_int(struct json_object *o, const char *key, int64_t lo, int64_t hi, bool *bad)
{
	struct json_object *v;
	int64_t x;

	if (!json_object_object_get_ex(o, key, &v)) {
		*bad |= lo > 0 || hi < 0;
		return 0;
	}
	if (!json_object_is_type(v, json_type_int)) {
		*bad = true;
		return 0;
	}
	errno = 0;
	x = json_object_get_int64(v);
	if (errno || x < lo || x > hi) {
		*bad = true;
		return 0;
	}
	return x;
}

static bool get_bool(struct json_object *o, const char *key, bool *bad)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return false;
	if (!json_object_is_type(v, json_type_boolean)) {
		*bad = true;
		return false;
	}
	return json_object_get_boolean(v);
}

/* An absolute path of at most SHIM_PATH_MAX - 1 bytes. */
static bool path_ok(const char *p)
{
	return p && p[0] == '/' && strlen(p) < SHIM_PATH_MAX;
}

/* "ctr-" and 16 lowercase hex digits (shim_vm_name). */
static bool vm_name_ok(const char *vm)
{
	return vm && strlen(vm) == 20 && !strncmp(vm, "ctr-", 4) &&
	       strspn(vm + 4, "0123456789abcdef") == 16;
}

static int parse_ctr(struct json_object *j, struct pod_state *s, const char **why)
{
	struct pod_state_ctr *c = &s->ctrs[s->n_ctrs];
	bool bad = !json_object_is_type(j, json_type_object);
	int64_t i = bad ? 0 : get_int(j, "i", 0, SHIM_MAX_CTRS - 1, &bad);
	const char *id = bad ? NULL : get_str(j, "id", 76, &bad);
	const char *bundle = bad ? NULL : get_str(j, "bundle", SHIM_PATH_MAX, &bad);
	const char *rootfs = bad ? NULL : get_str(j, "rootfs", SHIM_PATH_MAX, &bad);
	bool mounted = !bad && get_bool(j, "mounted", &bad);
	bool attached = !bad && get_bool(j, "attached", &bad);

	if (bad || !id || !shim_id_ok(id) || !path_ok(bundle) || !path_ok(rootfs)) {
		*why = "a container entry is malformed";
		return -EINVAL;
	}
	for (size_t k = 0; k < s->n_ctrs; k++)
		if (s->ctrs[k].i == i || !strcmp(s->ctrs[k].id, id)) {
			*why = "two containers share a slot or an id";
			return -EINVAL;
		}
	*c = (struct pod_state_ctr){ .i = (int)i, .mounted = mounted, .attached = attached };
	s->n_ctrs++; /* released with the rest, whatever follows */
	if (!(c->id = strdup(id)) || !(c->bundle = strdup(bundle)) || !(c->rootfs = strdup(rootfs))) {
		*why = "out of memory";
		return -ENOMEM;
	}
	return 0;
}

static int parse_proc(struct json_object *j, struct pod_state *s, const char **why)
{
	static const char *const keys[] = { "stdin", "stdout", "stderr" };
	struct pod_state_proc *p = &s->procs[s->n_procs];
	bool bad = !json_object_is_type(j, json_type_object), known = false;
	int64_t c = bad ? 0 : get_int(j, "c", 0, SHIM_MAX_CTRS - 1, &bad);
	const char *exec_id = bad ? NULL : get_str(j, "exec_id", 76, &bad);
	struct json_object *spec;

	for (size_t k = 0; k < s->n_ctrs; k++)
		known |= s->ctrs[k].i == c;
	if (bad || !known || (exec_id && !shim_id_ok(exec_id))) {
		*why = "a process entry is malformed or of no container";
		return -EINVAL;
	}
	*p = (struct pod_state_proc){ .c = (int)c };
	s->n_procs++;
	p->pid = (pid_t)get_int(j, "pid", 0, 0x7fffffff, &bad);
	p->start = (uint64_t)get_int(j, "start", 0, INT64_MAX, &bad);
	p->status = (enum shim_status)get_int(j, "status", ST_CREATED, ST_STOPPED, &bad);
	p->exit_status = (uint32_t)get_int(j, "exit_status", 0, 255, &bad);
	p->exited_ns = get_int(j, "exited_ns", 0, INT64_MAX, &bad);
	for (int k = 0; k < 3 && !bad; k++) {
		const char *v = get_str(j, keys[k], SHIM_PATH_MAX, &bad);
		if (v && *v && !(p->stdio[k] = strdup(v))) {
			*why = "out of memory";
			return -ENOMEM;
		}
	}
	/* A running process has a helper to track (its start time may be 0: a helper that ended
	 * at once, seen as ended); an exec added but not started, its spec. */
	if (!bad && p->status == ST_RUNNING && p->pid <= 0)
		bad = true;
	if (!bad && json_object_object_get_ex(j, "spec", &spec)) {
		const char *js = json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN);
		char *swhy = NULL;
		bad = !exec_id || p->status != ST_CREATED ||
		      !json_object_is_type(spec, json_type_object) ||
		      shim_oci_process(js, strlen(js), &p->spec, &swhy) < 0;
		p->has_spec = !bad;
	}
	if (!bad && exec_id && p->status == ST_CREATED && !p->has_spec)
		bad = true;
	if (bad) {
		*why = "a process entry is malformed";
		return -EINVAL;
	}
	if (exec_id && !(p->exec_id = strdup(exec_id))) {
		*why = "out of memory";
		return -ENOMEM;
	}
	return 0;
}

int shim_pod_state_parse(const char *buf, size_t len, struct pod_state *out, const char **why)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = NULL, *cs, *ps;
	const char *vm, *netns;
	bool bad = false;
	int r = -EINVAL;

	*out = (struct pod_state){ 0 };
	*why = "it is not a JSON object";
	if (!tok)
		return -ENOMEM;
	if (len <= SHIM_POD_STATE_MAX_BYTES)
		o = json_tokener_parse_ex(tok, buf, (int)len);
	if (o && json_tokener_get_parse_end(tok) != len)
		*why = "it has bytes after the JSON object";
	else if (o && json_object_is_type(o, json_type_object))
		*why = NULL;
	json_tokener_free(tok);
	if (*why)
		goto out;
	vm = get_str(o, "vm", 23, &bad);
	netns = get_str(o, "netns", SHIM_PATH_MAX - 1, &bad);
	out->paused = get_bool(o, "paused", &bad);
	if (bad || !vm_name_ok(vm) || (netns && *netns && !path_ok(netns))) {
		*why = "its vm, netns or paused is malformed";
		goto out;
	}
	snprintf(out->vm, sizeof(out->vm), "%s", vm);
	snprintf(out->netns, sizeof(out->netns), "%s", netns ? netns : "");
	if (!json_object_object_get_ex(o, "ctrs", &cs) || !json_object_is_type(cs, json_type_array) ||
	    json_object_array_length(cs) > SHIM_MAX_CTRS ||
	    !json_object_object_get_ex(o, "procs", &ps) || !json_object_is_type(ps, json_type_array) ||
	    json_object_array_length(ps) > SHIM_MAX_PROCS) {
		*why = "its ctrs or procs are not lists within bounds";
		goto out;
	}
	r = 0;
	for (size_t i = 0; r == 0 && i < json_object_array_length(cs); i++)
		r = parse_ctr(json_object_array_get_idx(cs, i), out, why);
	for (size_t i = 0; r == 0 && i < json_object_array_length(ps); i++)
		r = parse_proc(json_object_array_get_idx(ps, i), out, why);
	/* At most one init per container, and exec ids unique within it. */
	for (size_t i = 0; r == 0 && i < out->n_procs; i++)
		for (size_t k = i + 1; r == 0 && k < out->n_procs; k++) {
			const struct pod_state_proc *a = &out->procs[i], *b = &out->procs[k];
			if (a->c == b->c && (a->exec_id == NULL) == (b->exec_id == NULL) &&
			    (!a->exec_id || !strcmp(a->exec_id, b->exec_id))) {
				*why = "two processes of a container share an id";
				r = -EINVAL;
			}
		}
out:
	json_object_put(o);
	return r;
}

void shim_pod_state_release(struct pod_state *s)
{
	for (size_t i = 0; i < s->n_ctrs; i++) {
		free(s->ctrs[i].id);
		free(s->ctrs[i].bundle);
		free(s->ctrs[i].rootfs);
	}
	for (size_t i = 0; i < s->n_procs; i++) {
		free(s->procs[i].exec_id);
		for (int k = 0; k < 3; k++)
			free(s->procs[i].stdio[k]);
		shim_proc_release(&s->procs[i].spec);
	}
	s->n_ctrs = s->n_procs = 0;
}
