/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: what `image import` reads from an OCI image it did not make, the config
 * JSON and the image's /etc/passwd and /etc/group. The bytes: config, then passwd and group
 * after 0x00 separators. Invariants: no crash or leak; a parsed config renders into
 * /etc/agentvm text that is either refused with a message or is valid (KEY=VALUE lines, no NUL,
 * under 64 KiB); a resolved user is numeric "UID:GID" with both below 2^32 - 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_user(const char *u)
{
	char *end;
	unsigned long long uid = strtoull(u, &end, 10);

	if (end == u || *end != ':')
		abort();
	const char *g = end + 1;
	unsigned long long gid = strtoull(g, &end, 10);
	if (end == g || *end || uid >= 0xffffffffULL || gid >= 0xffffffffULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	struct oci_config c;
	struct avm_error err = { 0 };

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	size_t cfg_len = strlen(buf);
	const char *passwd = cfg_len < size ? buf + cfg_len + 1 : NULL;
	const char *group = passwd && passwd + strlen(passwd) < buf + size ?
				    passwd + strlen(passwd) + 1 :
				    NULL;

	if (oci_config_parse(buf, cfg_len, &c, &err) == 0) {
		struct image_defaults d = { 0 };
		char user[64], home[256];
		for (size_t i = 0; i < c.env.n; i++)
			strv_add(&d.env, c.env.v[i]);
		if (c.workdir)
			d.workdir = strdup(c.workdir);
		if (oci_resolve_user_text(passwd, group, c.user, user, sizeof(user), home,
					  sizeof(home), &err) == 0) {
			check_user(user);
			if (home[0] && home[0] != '/')
				abort();
			d.user = strdup(user);
		} else if (!err.msg[0]) {
			abort();
		}
		char *env = NULL, *exec = NULL;
		err.msg[0] = '\0';
		if (image_defaults_render(&d, &env, &exec, &err) == 0) {
			if (strlen(env) >= IMAGE_DEFAULTS_MAX || strlen(exec) >= IMAGE_DEFAULTS_MAX)
				abort();
			for (char *l = env; *l; l = strchr(l, '\n') + 1)
				if (!strchr(l, '\n') || !strchr(l, '=') || strchr(l, '=') > strchr(l, '\n'))
					abort();
		} else if (!err.msg[0] || env || exec) {
			abort();
		}
		free(env);
		free(exec);
		image_defaults_release(&d);
		oci_config_release(&c);
	} else if (!err.msg[0] || c.env.n || c.workdir || c.user) {
		abort();
	}
	free(buf);
	return 0;
}
