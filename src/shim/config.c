/* SPDX-License-Identifier: MIT */
/* The shim's settings from containerd's config.toml (see config.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "config.h"
#include "pb.h"

int shim_runtime_options(const char *type, const uint8_t *val, size_t len, char **config_path,
			 char **why)
{
	size_t tl = type ? strlen(type) : 0, sl = strlen(SHIM_RUNTIME_OPTIONS);
	struct pb_reader r;
	struct pb_field f;
	int n;

	*config_path = NULL;
	/* The type URL may carry a prefix ("types.containerd.io/..."): match its end. */
	if (tl < sl || strcmp(type + tl - sl, SHIM_RUNTIME_OPTIONS) != 0 ||
	    (tl > sl && type[tl - sl - 1] != '/' && type[tl - sl - 1] != '.')) {
		*why = "the runtime's options are not runtimeoptions.v1.Options; in containerd's "
		       "config set only options.ConfigPath for agentvm";
		return -EINVAL;
	}
	pb_reader_init(&r, val, len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 2 && f.wire == PB_LEN) {
			free(*config_path);
			*config_path = NULL;
			n = pb_field_str(&f, config_path);
		}
		if (n < 0)
			break;
	}
	if (n < 0) {
		free(*config_path);
		*config_path = NULL;
		*why = "malformed runtime options";
		return n;
	}
	if (*config_path && !**config_path) {
		free(*config_path);
		*config_path = NULL;
	}
	return 0;
}

void shim_config_release(struct shim_config *c)
{
	free(c->profile);
	free(c->image);
	free(c->cpus);
	free(c->memory);
	free(c->network);
	struct shim_config_list *lists[] = { &c->allow, &c->allow_cidr, &c->allow_domain };
	for (size_t l = 0; l < 3; l++)
		for (size_t i = 0; i < lists[l]->n; i++)
			free(lists[l]->v[i]);
	*c = (struct shim_config){ 0 };
}

/* A string, or a whole number as its decimal text (cpus, memory). */
static int str_or_int(struct json_object *v, bool num_ok, char **out)
{
	char buf[32];

	free(*out);
	*out = NULL;
	if (json_object_is_type(v, json_type_string))
		*out = strdup(json_object_get_string(v));
	else if (num_ok && json_object_is_type(v, json_type_int)) {
		snprintf(buf, sizeof(buf), "%lld", (long long)json_object_get_int64(v));
		*out = strdup(buf);
	} else
		return -EINVAL;
	return *out ? 0 : -ENOMEM;
}

int shim_config_parse(const char *json, size_t len, struct shim_config *c, char **why)
{
	struct json_tokener *tok;
	struct json_object *o;
	int r = 0;

	*c = (struct shim_config){ 0 };
	if (len > SHIM_CONFIG_MAX_BYTES) {
		*why = "the agentvm shim config is larger than 64 KiB";
		return -E2BIG;
	}
	tok = json_tokener_new();
	if (!tok) {
		*why = "out of memory";
		return -ENOMEM;
	}
	o = json_tokener_parse_ex(tok, json, (int)len);
	size_t off = o ? (size_t)tok->char_offset : 0;
	while (off < len && json[off] && strchr(" \t\r\n", json[off]))
		off++; /* whitespace after the object is fine */
	if (!o || off != len || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		json_tokener_free(tok);
		*why = "the agentvm shim config is not one JSON object";
		return -EINVAL;
	}
	json_tokener_free(tok);
	json_object_object_foreach(o, key, v)
	{
		if (r < 0)
			break;
		if (!strcmp(key, "profile") || !strcmp(key, "network"))
			r = str_or_int(v, false, key[0] == 'p' ? &c->profile : &c->network);
		else if (!strcmp(key, "image") && json_object_is_type(v, json_type_string))
			r = str_or_int(v, false, &c->image);
		else if (!strcmp(key, "cpus") || !strcmp(key, "memory"))
			r = str_or_int(v, true, key[0] == 'c' ? &c->cpus : &c->memory);
		else if (!strcmp(key, "annotations") && json_object_is_type(v, json_type_boolean))
			c->no_annotations = !json_object_get_boolean(v);
		else if (!strcmp(key, "pool") && json_object_is_type(v, json_type_boolean))
			c->pool = json_object_get_boolean(v);
		else if ((!strcmp(key, "allow") || !strcmp(key, "allow_cidr") ||
			  !strcmp(key, "allow_domain")) &&
			 json_object_is_type(v, json_type_array)) {
			struct shim_config_list *l = key[5] == '\0' ? &c->allow
						     : key[6] == 'c' ? &c->allow_cidr
								     : &c->allow_domain;
			size_t n = json_object_array_length(v);
			for (size_t i = 0; r == 0 && i < n; i++) {
				if (l->n == SHIM_CONFIG_MAX_ALLOW) {
					r = -E2BIG;
					break;
				}
				r = str_or_int(json_object_array_get_idx(v, i), false, &l->v[l->n]);
				if (r == 0)
					l->n++;
			}
		} else {
			static char msg[256];
			snprintf(msg, sizeof(msg),
				 "agentvm shim config: unknown key or wrong type '%.40s'; known: "
				 "profile, cpus, memory, network, image, allow, allow_cidr, "
				 "allow_domain, annotations, pool",
				 key);
			*why = msg;
			json_object_put(o);
			shim_config_release(c);
			return -EINVAL;
		}
	}
	json_object_put(o);
	if (r < 0) {
		*why = r == -E2BIG ? "agentvm shim config: more than 32 rules in one allow list"
				   : "agentvm shim config: a value has the wrong type";
		shim_config_release(c);
	}
	return r;
}

int shim_config_load(const char *path, struct shim_config *c, char **why)
{
	static char msg[4200];
	char *buf = malloc(SHIM_CONFIG_MAX_BYTES + 1);
	size_t len = 0;
	ssize_t n = 0;
	int fd, r;

	*c = (struct shim_config){ 0 };
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (!buf || fd < 0) {
		r = buf ? -errno : -ENOMEM;
		snprintf(msg, sizeof(msg),
			 "cannot read the agentvm shim config %s (ConfigPath): %s", path,
			 strerror(-r));
		*why = msg;
		free(buf);
		if (fd >= 0)
			close(fd);
		return r;
	}
	while (len <= SHIM_CONFIG_MAX_BYTES &&
	       (n = read(fd, buf + len, SHIM_CONFIG_MAX_BYTES + 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	r = n < 0 ? -EIO : shim_config_parse(buf, len, c, why);
	if (n < 0)
		*why = "cannot read the agentvm shim config (ConfigPath)";
	free(buf);
	return r;
}
