/* SPDX-License-Identifier: MIT */
/* EXEC request parsing: the only place that trusts nothing about an EXEC payload. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "exec.h"
#include "imagecfg.h"
#include "proto.h"
#include "sys.h"
#include "tarcmd.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The guest default environment; EXEC's ENV entries override or extend it. */
static const char *const default_env[] = {
	"PATH=" SYS_DEFAULT_PATH,
	"HOME=", /* filled in: /root for root, / for anyone else */
	"TERM=xterm",
	"LANG=C.UTF-8",
};

struct counts {
	size_t argc, envc, bytes;
	const uint8_t *cwd, *root;
	uint32_t cwd_len, root_len;
	bool has_root, has_cwd, has_timeout, has_uid, has_gid, has_stdin, has_builtin;
};

static bool env_key_eq(const char *a, const char *b)
{
	/* Both are "KEY=..." strings; compare up to and including the '='. */
	while (*a && *a == *b && *a != '=') {
		a++;
		b++;
	}
	return *a == '=' && *b == '=';
}

static int once(bool *seen, const char **why, const char *msg)
{
	if (*seen) {
		*why = msg;
		return -EINVAL;
	}
	*seen = true;
	return 0;
}

/* First pass: validate every record and size the allocation. */
static int scan(const uint8_t *p, size_t len, struct exec_req *req, struct counts *c,
		const char **why)
{
	struct avm_tlv_iter it;
	const uint8_t *val;
	uint32_t vlen, v;
	uint16_t tag;
	int r;

	avm_tlv_iter_init(&it, p, len);
	while ((r = avm_tlv_next(&it, &tag, &val, &vlen)) > 0) {
		switch (tag) {
		case AVM_TAG_ARG:
			if (++c->argc > AVM_PROTO_MAX_ARGS) {
				*why = "too many arguments";
				return -E2BIG;
			}
			if (!mem_nul_free(val, vlen)) {
				*why = "argument contains a NUL byte";
				return -EINVAL;
			}
			if (c->argc == 1 && vlen == 0) {
				*why = "empty command name";
				return -EINVAL;
			}
			c->bytes += (size_t)vlen + 1;
			break;
		case AVM_TAG_ENV: {
			const uint8_t *eq = memchr(val, '=', vlen);
			if (++c->envc > AVM_PROTO_MAX_ENV) {
				*why = "too many environment variables";
				return -E2BIG;
			}
			if (!mem_nul_free(val, vlen) || !eq || eq == val) {
				*why = "environment entry is not KEY=VALUE";
				return -EINVAL;
			}
			c->bytes += (size_t)vlen + 1;
			break;
		}
		case AVM_TAG_CWD:
			if ((r = once(&c->has_cwd, why, "duplicate cwd")) < 0)
				return r;
			if (vlen == 0 || !mem_nul_free(val, vlen)) {
				*why = "bad working directory";
				return -EINVAL;
			}
			c->cwd = val;
			c->cwd_len = vlen;
			break;
		case AVM_TAG_ROOT:
			if ((r = once(&c->has_root, why, "duplicate root")) < 0)
				return r;
			if (vlen < 2 || val[0] != '/' || !mem_nul_free(val, vlen)) {
				*why = "root must be an absolute directory";
				return -EINVAL;
			}
			c->root = val;
			c->root_len = vlen;
			break;
		case AVM_TAG_BUILTIN:
			if ((r = once(&c->has_builtin, why, "duplicate builtin flag")) < 0)
				return r;
			if (avm_tlv_u32(val, vlen, &v) < 0 || v != 1) {
				*why = "builtin flag must be the u32 1";
				return -EINVAL;
			}
			req->builtin = true;
			break;
		case AVM_TAG_TIMEOUT_MS:
		case AVM_TAG_UID:
		case AVM_TAG_GID:
		case AVM_TAG_STDIN:
			if (avm_tlv_u32(val, vlen, &v) < 0) {
				*why = "integer field is not 4 bytes";
				return -EINVAL;
			}
			if (tag == AVM_TAG_TIMEOUT_MS) {
				if ((r = once(&c->has_timeout, why, "duplicate timeout")) < 0)
					return r;
				req->timeout_ms = v;
			} else if (tag == AVM_TAG_UID) {
				if ((r = once(&c->has_uid, why, "duplicate uid")) < 0)
					return r;
				req->uid = v;
			} else if (tag == AVM_TAG_GID) {
				if ((r = once(&c->has_gid, why, "duplicate gid")) < 0)
					return r;
				req->gid = v;
			} else {
				if ((r = once(&c->has_stdin, why, "duplicate stdin mode")) < 0)
					return r;
				if (v > 1) {
					*why = "stdin mode must be 0 or 1";
					return -EINVAL;
				}
				req->stdin_pipe = v == 1;
			}
			if ((tag == AVM_TAG_UID || tag == AVM_TAG_GID) && v == (uint32_t)-1) {
				*why = "uid/gid -1 is not an id";
				return -EINVAL;
			}
			break;
		default:
			/* Unknown tags come from newer hosts (pty, rlimits, ...): ignore them. */
			break;
		}
	}
	if (r < 0) {
		*why = "truncated TLV record";
		return -EBADMSG;
	}
	if (c->argc == 0) {
		*why = "no command given";
		return -EINVAL;
	}
	return 0;
}

int exec_req_parse(const uint8_t *p, size_t len, struct exec_req *req, const char **why)
{
	struct counts c = { 0 };
	struct avm_tlv_iter it;
	const uint8_t *val;
	uint32_t vlen;
	uint16_t tag;
	size_t na = 0, ne = 0, nptr, ndef = imagecfg.n_env + ARRAY_SIZE(default_env);
	const char *home;
	char *s;
	int r;

	memset(req, 0, sizeof(*req));
	r = scan(p, len, req, &c, why);
	if (r < 0)
		return r;

	/*
	 * Without an explicit gid the group follows the uid: leaving gid 0 to an unprivileged
	 * user would hand it root's group.
	 */
	if (c.has_uid || c.has_gid) {
		req->set_ids = true;
		if (!c.has_uid)
			req->uid = 0;
		if (!c.has_gid)
			req->gid = req->uid;
	} else if (imagecfg.has_user) {
		/* The image's user (an OCI config's User) when the request names none. */
		req->set_ids = true;
		req->uid = imagecfg.uid;
		req->gid = imagecfg.gid;
	}
	home = req->uid == 0 ? "/root" : "/";

	/* [spare] argv... NULL | envp... defaults... NULL | strings */
	nptr = 1 + c.argc + 1 + c.envc + ndef + 1;
	c.bytes += c.root_len + 1 + c.cwd_len + 1 + strlen("HOME=") + strlen(home) + 1;
	req->mem = calloc(1, nptr * sizeof(char *) + c.bytes);
	if (!req->mem) {
		*why = "out of memory";
		return -ENOMEM;
	}
	req->argv = (char **)req->mem + 1;
	req->envp = req->argv + c.argc + 1;
	s = (char *)(req->envp + c.envc + ndef + 1);

	avm_tlv_iter_init(&it, p, len);
	while (avm_tlv_next(&it, &tag, &val, &vlen) > 0) {
		if (tag != AVM_TAG_ARG && tag != AVM_TAG_ENV)
			continue;
		memcpy(s, val, vlen);
		s[vlen] = '\0';
		if (tag == AVM_TAG_ARG)
			req->argv[na++] = s;
		else
			req->envp[ne++] = s;
		s += vlen + 1;
	}
	req->argv[na] = NULL;
	if (req->builtin && !tarcmd_is_builtin(req->argv[0])) {
		*why = "unknown builtin";
		exec_req_free(req);
		return -EINVAL;
	}

	if (c.has_root) {
		memcpy(s, c.root, c.root_len);
		s[c.root_len] = '\0';
		req->root = s;
		s += c.root_len + 1;
	}
	if (c.has_cwd) {
		memcpy(s, c.cwd, c.cwd_len);
		s[c.cwd_len] = '\0';
		req->cwd = s;
		s += c.cwd_len + 1;
	} else {
		req->cwd = imagecfg.workdir[0] ? imagecfg.workdir : home;
	}

	/*
	 * Defaults the request did not override go after the request's own entries: the image's
	 * first, then the agent's own for keys neither of them has.
	 */
	for (size_t i = 0; i < ndef; i++) {
		bool image = i < imagecfg.n_env;
		const char *d = image ? imagecfg.env[i] : default_env[i - imagecfg.n_env];
		bool overridden = false;

		for (size_t j = 0; j < c.envc && !overridden; j++)
			overridden = env_key_eq(d, req->envp[j]);
		for (size_t j = 0; !image && j < imagecfg.n_env && !overridden; j++)
			overridden = env_key_eq(d, imagecfg.env[j]);
		if (overridden)
			continue;
		if (strcmp(d, "HOME=") == 0) {
			strcpy(s, "HOME=");
			strcat(s, home);
			d = s;
			s += strlen(s) + 1;
		}
		req->envp[ne++] = (char *)d;
	}
	req->envp[ne] = NULL;

	/* PATH search follows the command's PATH, not PID 1's (execvpe would use ours). */
	req->path = SYS_DEFAULT_PATH;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(req->envp[i], "PATH=", 5) == 0) {
			req->path = req->envp[i] + 5;
			break;
		}
	return 0;
}

void exec_req_free(struct exec_req *req)
{
	free(req->mem);
	memset(req, 0, sizeof(*req));
}
