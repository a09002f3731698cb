/* SPDX-License-Identifier: MIT */
/* OCI runtime process specs (config.json's "process", Exec's spec): untrusted JSON, parsed here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "shim.h"
#include "shim_vm.h"
#include "base/strv.h"

void shim_proc_release(struct shim_proc *p)
{
	strv_free(p->argv);
	strv_free(p->env);
	free(p->cwd);
	*p = (struct shim_proc){ 0 };
}

static char **json_strv(struct json_object *a)
{
	size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
	char **v = calloc(n + 1, sizeof(char *));

	for (size_t i = 0; v && i < n; i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		if (!json_object_is_type(e, json_type_string) ||
		    !(v[i] = strdup(json_object_get_string(e)))) {
			strv_free(v);
			return NULL;
		}
	}
	return v;
}

int shim_oci_process(const char *json, size_t len, struct shim_proc *p, char **why)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o, *v, *u;
	int r = -EINVAL;

	*p = (struct shim_proc){ 0 };
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, json, (int)len);
	json_tokener_free(tok);
	if (!o || !json_object_is_type(o, json_type_object)) {
		*why = "the process spec is not a JSON object";
		goto out;
	}
	if (!json_object_object_get_ex(o, "args", &v) || !(p->argv = json_strv(v)) ||
	    !p->argv[0]) {
		*why = "the process spec has no args (a list of strings)";
		goto out;
	}
	if (json_object_object_get_ex(o, "env", &v) && !(p->env = json_strv(v))) {
		*why = "the process spec's env is not a list of strings";
		goto out;
	}
	if (json_object_object_get_ex(o, "cwd", &v)) {
		const char *c = json_object_get_string(v);
		if (!json_object_is_type(v, json_type_string) || c[0] != '/') {
			*why = "the process spec's cwd is not an absolute path";
			goto out;
		}
		p->cwd = strdup(c);
	}
	if (json_object_object_get_ex(o, "user", &u)) {
		if (json_object_object_get_ex(u, "uid", &v))
			p->uid = (uint32_t)json_object_get_int64(v);
		if (json_object_object_get_ex(u, "gid", &v))
			p->gid = (uint32_t)json_object_get_int64(v);
	}
	r = 0;
out:
	json_object_put(o);
	if (r < 0)
		shim_proc_release(p);
	return r;
}


/* An OCI string list, or NULL (an empty list) for v NULL. */
static struct json_object *strv_json(char *const *v)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; a && v && v[i]; i++)
		if (json_object_array_add(a, json_object_new_string(v[i])) < 0) {
			json_object_put(a);
			return NULL;
		}
	return a;
}

struct json_object *shim_proc_json(const struct shim_proc *p)
{
	struct json_object *o = json_object_new_object(), *user = json_object_new_object();
	struct json_object *args = strv_json(p->argv), *env = p->env ? strv_json(p->env) : NULL;

	if (!o || !user || !args || (p->env && !env)) {
		json_object_put(o);
		json_object_put(user);
		json_object_put(args);
		json_object_put(env);
		return NULL;
	}
	json_object_object_add(o, "args", args);
	if (env)
		json_object_object_add(o, "env", env);
	if (p->cwd)
		json_object_object_add(o, "cwd", json_object_new_string(p->cwd));
	json_object_object_add(user, "uid", json_object_new_int64(p->uid));
	json_object_object_add(user, "gid", json_object_new_int64(p->gid));
	json_object_object_add(o, "user", user);
	return o;
}
