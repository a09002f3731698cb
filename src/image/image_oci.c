/* SPDX-License-Identifier: MIT */
/*
 * The defaults inside an image (/etc/agentvm/env and /etc/agentvm/exec, read by guest-init)
 * and what an OCI image's config contributes to them. The config and the image's /etc/passwd
 * and /etc/group come from whoever made the image: parsed defensively, fuzzed
 * (tests/fuzz/fuzz_oci_config.c).
 */
#include "image/image.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"

void image_defaults_release(struct image_defaults *d)
{
	strv_release(&d->env);
	free(d->workdir);
	free(d->user);
	d->workdir = d->user = NULL;
}

void oci_config_release(struct oci_config *c)
{
	strv_release(&c->env);
	free(c->workdir);
	free(c->user);
	c->workdir = c->user = NULL;
}

static bool env_key_ok(const char *s, size_t n)
{
	if (n == 0 || !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

/* "UID:GID", both decimal below 2^32 - 1. */
static bool numeric_user_ok(const char *s)
{
	unsigned long u, g;
	char *end;

	if (!s[0] || s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	u = strtoul(s, &end, 10);
	if (errno || *end != ':' || u >= 0xffffffffUL || end[1] < '0' || end[1] > '9')
		return false;
	g = strtoul(end + 1, &end, 10);
	return !errno && !*end && g < 0xffffffffUL;
}

int image_defaults_render(const struct image_defaults *d, char **env_text, char **exec_text,
			  struct avm_error *err)
{
	_cleanup_free_ char *env = NULL, *exec = NULL;
	size_t elen = 0, xlen = 0;
	FILE *f;

	*env_text = *exec_text = NULL;
	if (!(f = open_memstream(&env, &elen)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < d->env.n; i++) {
		const char *kv = d->env.v[i], *eq = strchr(kv, '=');
		if (!eq || !env_key_ok(kv, eq - kv) || strchr(kv, '\n')) {
			fclose(f);
			return avm_error_set(err, -EINVAL,
					     "bad environment entry '%.80s': use KEY=VALUE, KEY of "
					     "letters, digits and '_', no newline",
					     kv);
		}
		fprintf(f, "%s\n", kv);
	}
	if (fclose(f) != 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (!(f = open_memstream(&exec, &xlen)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (d->workdir) {
		if (d->workdir[0] != '/' || strchr(d->workdir, '\n') ||
		    strlen(d->workdir) >= PATH_MAX) {
			fclose(f);
			return avm_error_set(err, -EINVAL,
					     "bad working directory '%.80s': it must be an absolute "
					     "path on one line",
					     d->workdir);
		}
		fprintf(f, "workdir=%s\n", d->workdir);
	}
	if (d->user) {
		if (!numeric_user_ok(d->user)) {
			fclose(f);
			return avm_error_set(err, -EINVAL,
					     "bad user '%.80s': the image's defaults take a numeric "
					     "UID:GID",
					     d->user);
		}
		fprintf(f, "user=%s\n", d->user);
	}
	if (fclose(f) != 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (elen >= IMAGE_DEFAULTS_MAX || xlen >= IMAGE_DEFAULTS_MAX)
		return avm_error_set(err, -E2BIG,
				     "the image's environment is %zu bytes; guest-init reads at "
				     "most %d",
				     elen, IMAGE_DEFAULTS_MAX - 1);
	*env_text = TAKE_PTR(env);
	*exec_text = TAKE_PTR(exec);
	return 0;
}

/*
 * openat2 with RESOLVE_IN_ROOT: an image's "/etc" may be a symlink to anywhere; it resolves
 * inside the tree as it would in the guest, never to the host's /etc.
 */
static int open_in_root(int rootfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));

	return fd < 0 ? -errno : fd;
}

static int write_in_root(int etcfd, const char *name, const char *text)
{
	char tmp[64];
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	unlinkat(etcfd, tmp, 0);
	fd = openat(etcfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if ((r = write_all(fd, text, strlen(text))) == 0 && fchmod(fd, 0644) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(etcfd, tmp, etcfd, name) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(etcfd, tmp, 0);
	return r;
}

int image_defaults_write(const char *root, const struct image_defaults *d, struct avm_error *err)
{
	_cleanup_free_ char *env = NULL, *exec = NULL;
	_cleanup_close_ int rootfd = -1, etc = -1, avm = -1;
	int r;

	if ((r = image_defaults_render(d, &env, &exec, err)) < 0)
		return r;
	if ((rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return avm_error_setx(err, -errno, "cannot open %s", root);
	/* /etc may be missing in a scratch OCI image; each step stays inside the tree. */
	if ((etc = open_in_root(rootfd, "/etc", O_RDONLY | O_DIRECTORY, 0)) == -ENOENT) {
		if (mkdirat(rootfd, "etc", 0755) < 0)
			return avm_error_setx(err, -errno, "cannot create /etc in the image");
		etc = open_in_root(rootfd, "/etc", O_RDONLY | O_DIRECTORY, 0);
	}
	if (etc < 0)
		return avm_error_setx(err, etc, "cannot open the image's /etc");
	if (mkdirat(etc, "agentvm", 0755) < 0 && errno != EEXIST)
		return avm_error_setx(err, -errno, "cannot create /etc/agentvm in the image");
	if ((avm = openat(etc, "agentvm", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return avm_error_setx(err, -errno, "cannot open /etc/agentvm in the image");
	if ((r = write_in_root(avm, "env", env)) < 0 || (r = write_in_root(avm, "exec", exec)) < 0)
		return avm_error_setx(err, r, "cannot write /etc/agentvm in the image");
	return 0;
}

int oci_config_parse(const char *json, size_t len, struct oci_config *out, struct avm_error *err)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *root, *cfg, *v;
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (!tok)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (len > INT32_MAX)
		len = INT32_MAX;
	root = json_tokener_parse_ex(tok, json, (int)len);
	if (!root && json_tokener_get_error(tok) == json_tokener_continue)
		root = json_tokener_parse_ex(tok, "", -1); /* a bare number at the end */
	json_tokener_free(tok);
	if (!root || !json_object_is_type(root, json_type_object)) {
		r = avm_error_set(err, -EINVAL, "the image's config is not a JSON object");
		goto out;
	}
	/* The whole image config has it under "config"; a bare container config is accepted. */
	if (!json_object_object_get_ex(root, "config", &cfg))
		cfg = root;
	if (json_object_is_type(cfg, json_type_null))
		goto out;
	if (!json_object_is_type(cfg, json_type_object)) {
		r = avm_error_set(err, -EINVAL, "the image's config has a \"config\" that is not an "
						"object");
		goto out;
	}
	if (json_object_object_get_ex(cfg, "Env", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_array)) {
			r = avm_error_set(err, -EINVAL, "the image's config.Env is not an array");
			goto out;
		}
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			struct json_object *e = json_object_array_get_idx(v, i);
			const char *s = json_object_get_string(e);
			if (!json_object_is_type(e, json_type_string) ||
			    strlen(s) != (size_t)json_object_get_string_len(e)) {
				r = avm_error_set(err, -EINVAL,
						  "the image's config.Env[%zu] is not a string", i);
				goto out;
			}
			strv_add(&out->env, s);
		}
	}
	struct {
		const char *key;
		char **dst;
	} strs[] = { { "WorkingDir", &out->workdir }, { "User", &out->user } };
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
		if (!json_object_object_get_ex(cfg, strs[i].key, &v) ||
		    json_object_is_type(v, json_type_null))
			continue;
		const char *s = json_object_get_string(v);
		if (!json_object_is_type(v, json_type_string) ||
		    strlen(s) != (size_t)json_object_get_string_len(v)) {
			r = avm_error_set(err, -EINVAL, "the image's config.%s is not a string",
					  strs[i].key);
			goto out;
		}
		if (*s && !(*strs[i].dst = strdup(s)))
			out->env.failed = -ENOMEM;
	}
	if (out->env.failed)
		r = avm_error_set(err, -ENOMEM, "out of memory");
out:
	if (root)
		json_object_put(root);
	if (r < 0)
		oci_config_release(out);
	return r;
}

/* Field `field` (0-based) of line `line` of a colon-separated file into buf. */
static bool field(const char *line, size_t llen, int idx, char *buf, size_t len)
{
	const char *p = line, *end = line + llen;

	for (int i = 0; i < idx; i++) {
		const char *c = memchr(p, ':', end - p);
		if (!c)
			return false;
		p = c + 1;
	}
	const char *c = memchr(p, ':', end - p);
	size_t n = (c ? c : end) - p;
	if (n >= len)
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return true;
}

static bool is_number(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/*
 * Find the line of text whose field key_idx equals key (or, by_id, whose field 2 equals key)
 * and copy field want into buf. true when found.
 */
static bool lookup(const char *text, const char *key, int key_idx, int want, char *buf,
		   size_t len)
{
	const char *p = text;
	char f[256];

	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t llen = nl ? (size_t)(nl - p) : strlen(p);
		if (field(p, llen, key_idx, f, sizeof(f)) && !strcmp(f, key) &&
		    field(p, llen, want, buf, len))
			return true;
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

int oci_resolve_user_text(const char *passwd, const char *group, const char *user, char *buf,
			  size_t len, char *home, size_t home_len, struct avm_error *err)
{
	char u[256], g[256] = "", uid[32] = "", gid[32] = "";
	const char *colon;

	if (home_len)
		home[0] = '\0';
	if (!user || !*user)
		user = "0";
	if (strlen(user) >= sizeof(u) || strchr(user, '\n'))
		return avm_error_set(err, -EINVAL, "the image's User '%.60s' is not valid", user);
	colon = strchr(user, ':');
	snprintf(u, sizeof(u), "%.*s", colon ? (int)(colon - user) : (int)strlen(user), user);
	if (colon)
		snprintf(g, sizeof(g), "%s", colon + 1);
	if (!*u || strlen(u) > 255)
		return avm_error_set(err, -EINVAL, "the image's User '%.60s' is not valid", user);
	/* The user: a name in /etc/passwd, or a number (which need not be in it). */
	if (is_number(u)) {
		snprintf(uid, sizeof(uid), "%.20s", u);
		if (passwd)
			lookup(passwd, u, 2, 3, gid, sizeof(gid));
		if (passwd && home_len)
			lookup(passwd, u, 2, 5, home, home_len);
	} else {
		if (!passwd || !lookup(passwd, u, 0, 2, uid, sizeof(uid)) || !is_number(uid))
			return avm_error_set(err, -ENOENT,
					     "the image's User '%.60s' is not in its /etc/passwd",
					     u);
		lookup(passwd, u, 0, 3, gid, sizeof(gid));
		if (home_len)
			lookup(passwd, u, 0, 5, home, home_len);
	}
	/* The group: given, else the user's primary group, else the uid's number (as runc). */
	if (*g) {
		if (is_number(g))
			snprintf(gid, sizeof(gid), "%.20s", g);
		else if (!group || !lookup(group, g, 0, 2, gid, sizeof(gid)) || !is_number(gid))
			return avm_error_set(err, -ENOENT,
					     "the image's group '%.60s' is not in its /etc/group", g);
	}
	if (!is_number(gid))
		snprintf(gid, sizeof(gid), "0");
	unsigned long long un = strtoull(uid, NULL, 10), gn = strtoull(gid, NULL, 10);
	if (strlen(uid) > 10 || strlen(gid) > 10 || un >= 0xffffffffULL || gn >= 0xffffffffULL)
		return avm_error_set(err, -ERANGE, "the image's User '%.60s' is out of range", user);
	if (home_len && home[0] != '/')
		home[0] = '\0';
	if ((size_t)snprintf(buf, len, "%llu:%llu", un, gn) >= len)
		return avm_error_set(err, -ENAMETOOLONG, "user buffer too small");
	return 0;
}

static char *read_in_root(int rootfd, const char *path)
{
	int fd = open_in_root(rootfd, path, O_RDONLY, 0);
	char *text = NULL;
	struct stat st;

	if (fd < 0)
		return NULL;
	/* Regular files only (a FIFO would block), and at most 4 MiB. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < (4 << 20) &&
	    (text = malloc(st.st_size + 1))) {
		ssize_t n = read(fd, text, st.st_size);
		text[n > 0 ? n : 0] = '\0';
	}
	close(fd);
	return text;
}

int oci_resolve_user(const char *root, const char *user, char *buf, size_t len, char *home,
		     size_t home_len, struct avm_error *err)
{
	_cleanup_close_ int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *passwd = NULL, *group = NULL;

	if (rootfd < 0)
		return avm_error_setx(err, -errno, "cannot open %s", root);
	passwd = read_in_root(rootfd, "/etc/passwd");
	group = read_in_root(rootfd, "/etc/group");
	return oci_resolve_user_text(passwd, group, user, buf, len, home, home_len, err);
}
