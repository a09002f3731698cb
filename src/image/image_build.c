/* SPDX-License-Identifier: MIT */
/*
 * Building and importing images (image.h): recipes, their inputs hash, and the build itself,
 * which runs images/build-rootfs.sh in a work dir (images/.build-NAME-XXXXXX) and moves the
 * result under its id only when it is whole, so no final name ever points at half an image.
 */
#include "image/image.h"

#include <ctype.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/sha256.h"
#include "base/util.h"

#ifndef AVM_DATADIR
#define AVM_DATADIR "/usr/local/share/agentvm"
#endif

#define RECIPE_MAX_DEPTH 8
#define RECIPE_MAX_BYTES (1 << 20)
/* SOURCE_DATE_EPOCH of every build (2024-01-01): file and file system times, so that the same
 * recipe and package versions give the same bytes. */
#define IMAGE_EPOCH 1704067200L
#define INPUTS_VERSION "agentvm-image-inputs 1"

void image_recipe_release(struct image_recipe *r)
{
	free(r->recipe);
	free(r->suite);
	free(r->workdir);
	free(r->user);
	strv_release(&r->packages);
	strv_release(&r->npm);
	strv_release(&r->runs);
	strv_release(&r->warms);
	strv_release(&r->env);
	strv_release(&r->files);
	strv_release(&r->ca_certs);
	memset(r, 0, sizeof(*r));
}

static bool file_is_regular(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int image_find_datadir(char **out, struct avm_error *err)
{
	const char *env = getenv("AGENTVM_RECIPES");
	char exe[PATH_MAX], cand[PATH_MAX + 64];
	ssize_t n;

	if (env && *env) {
		snprintf(cand, sizeof(cand), "%s/build-rootfs.sh", env);
		if (!file_is_regular(cand))
			return avm_error_set(err, -ENOENT,
					     "AGENTVM_RECIPES=%s holds no build-rootfs.sh; point it "
					     "at the repo's images/ dir or unset it",
					     env);
		snprintf(cand, sizeof(cand), "%s", env);
		goto found;
	}
	/* Next to the binary (build/agentvm -> images/), installed (share/agentvm), DATADIR. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		const char *rel[] = { "/../images", "/../share/agentvm", "/images" };
		for (size_t i = 0; i < ARRAY_SIZE(rel); i++) {
			snprintf(cand, sizeof(cand), "%s%s/build-rootfs.sh", exe, rel[i]);
			if (file_is_regular(cand)) {
				snprintf(cand, sizeof(cand), "%s%s", exe, rel[i]);
				goto found;
			}
		}
	}
	snprintf(cand, sizeof(cand), "%s/build-rootfs.sh", AVM_DATADIR);
	if (file_is_regular(cand)) {
		snprintf(cand, sizeof(cand), "%s", AVM_DATADIR);
		goto found;
	}
	return avm_error_set(err, -ENOENT,
			     "no image builder found (build-rootfs.sh in $AGENTVM_RECIPES, the "
			     "repo's images/ or %s); run 'make install' or set AGENTVM_RECIPES",
			     AVM_DATADIR);
found:
	*out = realpath(cand, NULL);
	return *out ? 0 : avm_error_setx(err, -errno, "cannot resolve %s", cand);
}

int image_parse_size(const char *s, uint64_t *mib)
{
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || v == 0)
		return -EINVAL;
	if (!strcasecmp(end, "G") || !strcasecmp(end, "GiB") || !strcasecmp(end, "GB"))
		v *= 1024;
	else if (*end && strcasecmp(end, "M") && strcasecmp(end, "MiB") && strcasecmp(end, "MB"))
		return -EINVAL;
	if (v > (16ULL << 20)) /* 16 TiB */
		return -ERANGE;
	*mib = v;
	return 0;
}

static char *path_in(const char *base_dir, const char *p)
{
	char *out;

	if (p[0] == '/' || !base_dir)
		return realpath(p, NULL) ?: strdup(p);
	if (asprintf(&out, "%s/%s", base_dir, p) < 0)
		return NULL;
	char *real = realpath(out, NULL);
	if (real) {
		free(out);
		return real;
	}
	return out;
}

/* Split a list of words separated by spaces or commas into sv. */
static void add_words(struct strv *sv, const char *s)
{
	const char *p = s;

	while (*p) {
		size_t n = strcspn(p, " \t,");
		if (n)
			strv_addf(sv, "%.*s", (int)n, p);
		p += n;
		p += strspn(p, " \t,");
	}
}

static bool has_word(const struct strv *sv, const char *w)
{
	for (size_t i = 0; i < sv->n; i++)
		if (!strcmp(sv->v[i], w))
			return true;
	return false;
}

static bool package_name_ok(const char *p)
{
	/* Debian package names, optionally with =version or /release. */
	if (!isalnum((unsigned char)p[0]))
		return false;
	for (; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("+-.=:~/_", *p))
			return false;
	return true;
}

static bool npm_name_ok(const char *p)
{
	if (!*p || *p == '-' || *p == '.')
		return false;
	for (; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("@/._-~^<>=*", *p))
			return false;
	return true;
}

/* "SRC:DST" (DST absolute) -> "SRC<TAB>DST" with SRC resolved against base_dir. */
static int add_file(struct image_recipe *r, const char *spec, const char *base_dir,
		    struct avm_error *err)
{
	const char *colon = strrchr(spec, ':');

	/* DST is joined to the tree's path on the host: no ".." may climb out of it. */
	if (!colon || colon == spec || colon[1] != '/' || strchr(spec, '\t') ||
	    strchr(spec, '\n') || strstr(colon, "/../") ||
	    (strlen(colon) >= 4 && !strcmp(colon + strlen(colon) - 3, "/..")))
		return avm_error_set(err, -EINVAL,
				     "bad file '%s': use SRC:DST with DST an absolute path in the "
				     "image (no '..')",
				     spec);
	_cleanup_free_ char *src = strndup(spec, colon - spec);
	_cleanup_free_ char *abs = src ? path_in(base_dir, src) : NULL;
	if (!abs)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (!file_is_regular(abs))
		return avm_error_set(err, -ENOENT, "file %s (from '%s') is not a regular file",
				     abs, spec);
	strv_addf(&r->files, "%s\t%s", abs, colon + 1);
	return 0;
}

static int add_ca(struct image_recipe *r, const char *p, const char *base_dir,
		  struct avm_error *err)
{
	_cleanup_free_ char *abs = path_in(base_dir, p);
	_cleanup_free_ char *text = NULL;

	if (!abs)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (read_file(abs, &text, 1 << 20) < 0 || !strstr(text, "-----BEGIN CERTIFICATE-----"))
		return avm_error_set(err, -EINVAL,
				     "CA certificate %s is not a readable PEM file (-----BEGIN "
				     "CERTIFICATE-----)",
				     abs);
	if (!has_word(&r->ca_certs, abs))
		strv_add(&r->ca_certs, abs);
	return 0;
}

static int recipe_file(const char *from, char **path, struct avm_error *err)
{
	_cleanup_free_ char *dd = NULL;
	int r;

	if (strchr(from, '/') || access(from, F_OK) == 0) {
		if (!file_is_regular(from))
			return avm_error_set(err, -ENOENT, "recipe file %s not found", from);
		*path = realpath(from, NULL);
		return *path ? 0 : -errno;
	}
	if ((r = image_find_datadir(&dd, err)) < 0)
		return r;
	if (!name_is_valid(from, 63) || asprintf(path, "%s/recipes/%s", dd, from) < 0 ||
	    !file_is_regular(*path)) {
		if (name_is_valid(from, 63))
			free(*path);
		*path = NULL;
		return avm_error_set(err, -ENOENT,
				     "recipe '%s' not found: give a file or a built-in recipe (%s/"
				     "recipes: base, agent)",
				     from, dd);
	}
	return 0;
}

/* The words of val into list (once each), every one checked by ok(): a recipe's packages, npm. */
static int add_names(struct strv *list, const char *val, bool (*ok)(const char *),
		     const char *what, int lineno, struct avm_error *err)
{
	struct strv w = { 0 };
	int rc = 0;

	add_words(&w, val);
	for (size_t i = 0; i < w.n && rc == 0; i++) {
		if (!ok(w.v[i]))
			rc = avm_error_set(err, -EINVAL, "recipe line %d: bad %s '%s'", lineno, what,
					   w.v[i]);
		else if (!has_word(list, w.v[i]))
			strv_add(list, w.v[i]);
	}
	strv_release(&w);
	return rc;
}

static int recipe_load_depth(struct image_recipe *r, const char *from, int depth,
			     struct avm_error *err)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	int n;

	if (depth > RECIPE_MAX_DEPTH)
		return avm_error_set(err, -ELOOP, "recipe '%s': 'from' nests more than %d deep",
				     from, RECIPE_MAX_DEPTH);
	if ((n = recipe_file(from, &path, err)) < 0)
		return n;
	if ((n = read_file(path, &text, RECIPE_MAX_BYTES)) < 0)
		return avm_error_setx(err, n, "cannot read recipe %s", path);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	return image_recipe_parse(r, text, path, depth, err);
}

int image_recipe_parse(struct image_recipe *r, const char *text, const char *base_dir, int depth,
		       struct avm_error *err)
{
	const char *p = text;
	int lineno = 0, rc;

	while (p && *p) {
		const char *nl = strchr(p, '\n');
		_cleanup_free_ char *line = nl ? strndup(p, nl - p) : strdup(p);
		p = nl ? nl + 1 : NULL;
		lineno++;
		if (!line)
			return avm_error_set(err, -ENOMEM, "out of memory");
		char *s = line + strspn(line, " \t");
		size_t len = strlen(s);
		while (len && isspace((unsigned char)s[len - 1]))
			s[--len] = '\0';
		if (!*s || *s == '#')
			continue;
		char *key = s, *val = s + strcspn(s, " \t");
		if (*val)
			*val++ = '\0';
		val += strspn(val, " \t");
		if (!*val)
			return avm_error_set(err, -EINVAL, "recipe line %d: '%s' needs a value",
					     lineno, key);
		if (!strcmp(key, "from")) {
			if ((rc = recipe_load_depth(r, val, depth + 1, err)) < 0)
				return rc;
		} else if (!strcmp(key, "suite")) {
			free(r->suite);
			r->suite = strdup(val);
		} else if (!strcmp(key, "packages")) {
			if ((rc = add_names(&r->packages, val, package_name_ok, "package name",
					    lineno, err)) < 0)
				return rc;
		} else if (!strcmp(key, "npm")) {
			if ((rc = add_names(&r->npm, val, npm_name_ok, "npm package", lineno, err)) <
			    0)
				return rc;
		} else if (!strcmp(key, "run")) {
			strv_add(&r->runs, val);
		} else if (!strcmp(key, "warm")) {
			strv_add(&r->warms, val);
		} else if (!strcmp(key, "file")) {
			if ((rc = add_file(r, val, base_dir, err)) < 0)
				return rc;
		} else if (!strcmp(key, "ca-cert")) {
			if ((rc = add_ca(r, val, base_dir, err)) < 0)
				return rc;
		} else if (!strcmp(key, "env")) {
			const char *eq = strchr(val, '=');
			if (!eq || eq == val)
				return avm_error_set(err, -EINVAL,
						     "recipe line %d: env wants KEY=VALUE", lineno);
			/* A later KEY replaces an earlier one (a recipe over its "from"). */
			for (size_t i = 0; i < r->env.n; i++)
				if (!strncmp(r->env.v[i], val, eq - val + 1)) {
					free(r->env.v[i]);
					r->env.v[i] = strdup(val);
					goto next;
				}
			strv_add(&r->env, val);
		} else if (!strcmp(key, "workdir")) {
			free(r->workdir);
			r->workdir = strdup(val);
		} else if (!strcmp(key, "user")) {
			free(r->user);
			r->user = strdup(val);
		} else if (!strcmp(key, "size")) {
			if (image_parse_size(val, &r->size_mib) < 0)
				return avm_error_set(err, -EINVAL,
						     "recipe line %d: bad size '%s' (use e.g. 2G or "
						     "1536M)",
						     lineno, val);
		} else {
			return avm_error_set(err, -EINVAL,
					     "recipe line %d: unknown key '%s' (from, suite, "
					     "packages, npm, file, run, ca-cert, env, workdir, user, "
					     "size)",
					     lineno, key);
		}
next:;
	}
	if (r->packages.failed || r->npm.failed || r->runs.failed || r->warms.failed || r->env.failed ||
	    r->files.failed || r->ca_certs.failed)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

const char *image_default_recipe(const char *name)
{
	_cleanup_free_ char *dd = NULL, *p = NULL;

	if (image_find_datadir(&dd, NULL) == 0 && asprintf(&p, "%s/recipes/%s", dd, name) > 0 &&
	    access(p, F_OK) == 0)
		return name;
	return "base";
}

int image_recipe_load(struct image_recipe *r, const char *from, struct avm_error *err)
{
	int rc = recipe_load_depth(r, from, 0, err);

	if (rc == 0 && !r->recipe && !(r->recipe = strdup(from)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void hash_line(struct sha256 *s, const char *key, const char *val)
{
	sha256_update(s, key, strlen(key));
	sha256_update(s, " ", 1);
	sha256_update(s, val, strlen(val));
	sha256_update(s, "\n", 1);
}

int image_recipe_inputs(const struct image_recipe *r, const char *builder, char hex[65],
			struct avm_error *err)
{
	struct sha256 s;
	char fh[65], num[32];
	uint8_t d[32];
	int rc;

	sha256_init(&s);
	hash_line(&s, INPUTS_VERSION, "");
	hash_line(&s, "suite", r->suite ? r->suite : "bookworm");
	/* Package order does not matter to apt: sorted. npm, runs and files keep their order. */
	char **pk = r->packages.n ? calloc(r->packages.n, sizeof(char *)) : NULL;
	if (r->packages.n && !pk)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (pk) {
		memcpy(pk, r->packages.v, r->packages.n * sizeof(char *));
		qsort(pk, r->packages.n, sizeof(char *), cmp_str);
	}
	for (size_t i = 0; i < r->packages.n; i++)
		hash_line(&s, "package", pk[i]);
	free(pk);
	for (size_t i = 0; i < r->npm.n; i++)
		hash_line(&s, "npm", r->npm.v[i]);
	for (size_t i = 0; i < r->files.n; i++) {
		const char *tab = strchr(r->files.v[i], '\t');
		_cleanup_free_ char *src = strndup(r->files.v[i], tab - r->files.v[i]);
		if (!src)
			return avm_error_set(err, -ENOMEM, "out of memory");
		if ((rc = sha256_file(src, fh)) < 0)
			return avm_error_setx(err, rc, "cannot read %s", src);
		hash_line(&s, "file", tab + 1);
		hash_line(&s, "content", fh);
	}
	for (size_t i = 0; i < r->ca_certs.n; i++) {
		if ((rc = sha256_file(r->ca_certs.v[i], fh)) < 0)
			return avm_error_setx(err, rc, "cannot read %s", r->ca_certs.v[i]);
		hash_line(&s, "ca-cert", fh);
	}
	for (size_t i = 0; i < r->runs.n; i++)
		hash_line(&s, "run", r->runs.v[i]);
	for (size_t i = 0; i < r->warms.n; i++)
		hash_line(&s, "warm", r->warms.v[i]);
	for (size_t i = 0; i < r->env.n; i++)
		hash_line(&s, "env", r->env.v[i]);
	hash_line(&s, "workdir", r->workdir ? r->workdir : "");
	hash_line(&s, "user", r->user ? r->user : "");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)r->size_mib);
	hash_line(&s, "size", num);
	if (builder) {
		if ((rc = sha256_file(builder, fh)) < 0)
			return avm_error_setx(err, rc, "cannot read %s", builder);
		hash_line(&s, "builder", fh);
	}
	sha256_final(&s, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	return 0;
}

/* --- the build -------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

struct build {
	const char *name;
	char *dd;      /* datadir: build-rootfs.sh */
	char *script;
	char *work;    /* images/.build-NAME-XXXXXX */
	int work_fd;   /* flocked for the build's life: the next build knows it is alive */
	int lock_fd;   /* images/.locks/NAME */
	char *log;
	uint64_t t0;   /* now_ms() when the build was asked for: build_ms and the log line */
	struct sigaction old_int, old_term, old_hup;
};

static void build_release(struct build *b, bool keep_work)
{
	if (b->work && !keep_work)
		image_remove_tree(b->work);
	if (b->work_fd >= 0)
		close(b->work_fd);
	if (b->lock_fd >= 0)
		close(b->lock_fd);
	free(b->dd);
	free(b->script);
	free(b->work);
	free(b->log);
	sigaction(SIGINT, &b->old_int, NULL);
	sigaction(SIGTERM, &b->old_term, NULL);
	sigaction(SIGHUP, &b->old_hup, NULL);
}

/* Take NAME's build lock (waiting for another build of NAME), then make the work dir. */
static int build_begin(struct build *b, const char *name, struct avm_error *err)
{
	char path[PATH_MAX];
	struct sigaction sa = { .sa_handler = on_signal };
	int r;

	memset(b, 0, sizeof(*b));
	b->name = name;
	b->work_fd = b->lock_fd = -1;
	sigaction(SIGINT, NULL, &b->old_int);
	sigaction(SIGTERM, NULL, &b->old_term);
	sigaction(SIGHUP, NULL, &b->old_hup);
	/*
	 * The tree must hold root-owned files with their real modes for mkfs.ext4 -d to copy:
	 * mmdebstrap's root mode and umoci as root. (Unshare mode would leave the tree owned by
	 * subordinate ids on the host, which mkfs would copy as they are.)
	 */
	if (geteuid() != 0)
		return avm_error_set(err, -EPERM,
				     "building or importing an image needs root (the tree's owners "
				     "and modes must be real for mkfs.ext4 -d); run it as root, e.g. "
				     "'sudo make rootfs'");
	/* Ctrl-C reaches the builder too; we wait for it, then remove the work dir. */
	sigemptyset(&sa.sa_mask);
	interrupted = 0;
	sigaction(SIGINT, &sa, &b->old_int);
	sigaction(SIGTERM, &sa, &b->old_term);
	sigaction(SIGHUP, &sa, &b->old_hup);
	if ((r = image_find_datadir(&b->dd, err)) < 0)
		return r;
	if (asprintf(&b->script, "%s/build-rootfs.sh", b->dd) < 0) {
		b->script = NULL;
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	snprintf(path, sizeof(path), "%s/.locks", image_store_dir());
	if ((r = mkdir_p(path, 0755)) < 0)
		return avm_error_setx(err, r, "cannot create %s", path);
	snprintf(path, sizeof(path), "%s/.locks/%s", image_store_dir(), name);
	if ((b->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
		return avm_error_setx(err, -errno, "cannot open %s", path);
	if (flock(b->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		avm_log("image: waiting for another build of %s to finish\n", name);
		while (flock(b->lock_fd, LOCK_EX) < 0)
			if (errno != EINTR || interrupted)
				return avm_error_set(err, -EINTR, "interrupted while waiting");
	}
	image_clean_stale_builds(name);
	snprintf(path, sizeof(path), "%s/.build-%s-XXXXXX", image_store_dir(), name);
	if (!mkdtemp(path))
		return avm_error_setx(err, -errno, "cannot create a work dir in %s",
				      image_store_dir());
	if (!(b->work = strdup(path)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	if ((b->work_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    flock(b->work_fd, LOCK_EX) < 0)
		return avm_error_setx(err, -errno, "cannot lock %s", path);
	if (asprintf(&b->log, "%s/build.log", path) < 0) {
		b->log = NULL;
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	snprintf(path, sizeof(path), "%s/in/ca", b->work);
	if ((r = mkdir_p(path, 0755)) < 0)
		return avm_error_setx(err, r, "cannot create %s", path);
	return 0;
}

/*
 * How a build and an import start: no id yet, a valid NAME, its lock and work dir
 * (build_begin), the clock running since the call (waiting for another build counts). On
 * failure there is nothing to release.
 */
static int build_start(struct build *b, const char *name, char **id_out, struct avm_error *err)
{
	uint64_t t0 = now_ms();
	int r;

	if (id_out)
		*id_out = NULL;
	if ((r = image_validate_name(name, err)) < 0)
		return r;
	if ((r = build_begin(b, name, err)) < 0) {
		build_release(b, false);
		return r;
	}
	b->t0 = t0;
	return 0;
}

static int write_in(struct build *b, const char *file, const char *text)
{
	char path[PATH_MAX];
	int fd, r;

	snprintf(path, sizeof(path), "%s/in/%s", b->work, file);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return -errno;
	r = write_all(fd, text, strlen(text));
	close(fd);
	return r;
}

static int write_in_lines(struct build *b, const char *file, const struct strv *sv)
{
	_cleanup_free_ char *text = sv->n ? strv_join(sv->v, "\n") : strdup("");
	_cleanup_free_ char *nl = NULL;

	if (!text || asprintf(&nl, "%s\n", text) < 0)
		return -ENOMEM;
	return write_in(b, file, nl);
}

/* The last lines of the log (through avm_log), for a failure with no known cause. */
static void print_log_tail(const char *log, int lines)
{
	_cleanup_free_ char *text = NULL;
	int n = 0;

	if (read_file(log, &text, 64 << 20) < 0)
		return;
	char *p = text + strlen(text);
	while (p > text && n <= lines)
		if (*--p == '\n')
			n++;
	avm_log("%s%s", p == text ? "" : "...", p);
}

/* A word after `marker` in text (up to a quote, space or newline) into buf. */
static bool word_after(const char *text, const char *marker, char *buf, size_t len)
{
	const char *p = strstr(text, marker);

	if (!p)
		return false;
	p += strlen(marker);
	size_t n = strcspn(p, "' \n\"");
	if (!n || n >= len)
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return true;
}

/*
 * Turn the builder's failure into one line with the fix: a package apt does not know, an npm
 * package the registry does not have, a full disk, our own messages ("agentvm-error: ...").
 */
static int classify_failure(struct build *b, const char *step, const char *suite,
			    struct avm_error *err)
{
	_cleanup_free_ char *text = NULL;
	char w[256];

	read_file(b->log, &text, 64 << 20);
	if (!text)
		text = strdup("");
	if (!text)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (strstr(text, "No space left on device") || strstr(text, "Could not allocate block") ||
	    strstr(text, "ENOSPC"))
		return avm_error_set(err, -ENOSPC,
				     "the disk holding %s filled up during the build of %s; free "
				     "space there (or point AGENTVM_CACHE_DIR at a larger disk) "
				     "and build again",
				     image_store_dir(), b->name);
	if (word_after(text, "E: Unable to locate package ", w, sizeof(w)) ||
	    word_after(text, "E: Package '", w, sizeof(w)) ||
	    word_after(text, "E: Couldn't find any package by glob '", w, sizeof(w)) ||
	    word_after(text, "E: Couldn't find any package by regex '", w, sizeof(w)))
		return avm_error_set(err, -ENOENT,
				     "package %s not found in %s; fix its name in the recipe or "
				     "--packages (apt-cache search in a %s system finds names)",
				     w, suite, suite);
	if (word_after(text, "npm error 404 Not Found - GET ", w, sizeof(w)) ||
	    word_after(text, "npm ERR! 404 Not Found - GET ", w, sizeof(w))) {
		const char *pkg = strrchr(w, '/');
		/* Scoped names come URL-encoded: @scope%2fname */
		char *enc = strstr(w, "%2f");
		if (enc) {
			*enc = '/';
			memmove(enc + 1, enc + 3, strlen(enc + 3) + 1);
			pkg = strstr(w, "/@") ? strstr(w, "/@") : pkg;
		}
		return avm_error_set(err, -ENOENT,
				     "npm package %s not found in the registry; fix its name in "
				     "the recipe or --npm",
				     pkg ? pkg + 1 : w);
	}
	if (word_after(text, "npm error notarget No matching version found for ", w,
		       sizeof(w)))
		return avm_error_set(err, -ENOENT,
				     "npm has no version %s; fix the version in the recipe or --npm",
				     w);
	const char *own = strstr(text, "agentvm-error: ");
	if (own) {
		own += strlen("agentvm-error: ");
		return avm_error_set(err, -EINVAL, "%.*s", (int)strcspn(own, "\n"), own);
	}
	print_log_tail(b->log, 20);
	return avm_error_set(err, -EIO,
			     "building image %s failed at step '%s' (the builder's last lines are "
			     "above); fix the cause and build again",
			     b->name, step);
}

/*
 * In the forked builder: tie its whole process tree to our life. mmdebstrap, apt and their
 * helpers outlive a plain SIGKILL of us (they are not our children, and some leave our process
 * group): a killed `agentvm image build` went on writing into a work dir that `image rm` was
 * deleting. So the builder runs as PID 1 of a PID namespace of its own, which the kernel empties
 * when that PID 1 dies, and in a private mount namespace, so mmdebstrap's /proc, /sys and /dev
 * mounts in the tree vanish with it instead of staying on the host. The chain of death signals
 * (us -> this process -> the namespace's PID 1) makes a SIGKILL of us end it all. Without
 * privileges to unshare (never the case for a build, which needs root) it runs as before.
 */
static void builder_namespaces(pid_t parent)
{
	int status;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127); /* we died between fork and prctl */
	if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
		return;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		_exit(127);
	pid_t init = fork();
	if (init < 0)
		_exit(127);
	if (init == 0) {
		/* getppid() is 0 here (the parent is outside the namespace): nothing to check. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			_exit(127);
		return; /* the namespace's PID 1 goes on to exec the builder */
	}
	/* This process only waits: a stop signal to the group reaches mmdebstrap, which cleans
	 * up and fails, and the script exits after it. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	while (waitpid(init, &status, 0) < 0)
		if (errno != EINTR)
			_exit(127);
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

/* Run build-rootfs.sh STEP WORK [ARG]: its output into the log, its progress (fd 3) to ours. */
static int run_step(struct build *b, const char *step, const char *arg, const char *suite,
		    struct avm_error *err)
{
	int logfd = open(b->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	pid_t pid;
	int status;

	if (logfd < 0)
		return avm_error_setx(err, -errno, "cannot open %s", b->log);
	if (interrupted) { /* a signal before the fork has no waitpid to interrupt */
		close(logfd);
		return avm_error_set(err, -EINTR,
				     "build of %s interrupted; nothing was kept (run it again)",
				     b->name);
	}
	/* The library writes no stdio, but its caller may have: flush that before the fork, or
	   the child would write the caller's pending output a second time. */
	fflush(NULL);
	pid_t parent = getpid();
	pid = fork();
	if (pid < 0) {
		close(logfd);
		return avm_error_setx(err, -errno, "fork");
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(2, 3) < 0 || dup2(logfd, 1) < 0 ||
		    dup2(logfd, 2) < 0)
			_exit(127);
		/* A process group of its own: a stop signal to us reaches it once, from us. */
		setpgid(0, 0);
		builder_namespaces(parent);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		setenv("LC_ALL", "C.UTF-8", 1); /* apt's messages in English: we scan them */
		execl("/bin/sh", "sh", b->script, step, b->work, arg, (char *)NULL);
		_exit(127);
	}
	close(logfd);
	setpgid(pid, pid); /* both sides, so no signal can fall between fork and exec */
	bool forwarded = false;
	if (interrupted) { /* came between the check above and the fork */
		kill(-pid, SIGTERM);
		forwarded = true;
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = -1;
			break;
		}
		/* Ctrl-C or a kill: stop the builder (mmdebstrap unmounts and exits), then clean. */
		if (interrupted && !forwarded) {
			kill(-pid, SIGTERM);
			forwarded = true;
		}
	}
	if (interrupted)
		return avm_error_set(err, -EINTR,
				     "build of %s interrupted; nothing was kept (run it again)",
				     b->name);
	if (status == 0)
		return 0;
	return classify_failure(b, step, suite, err);
}

static char *now_rfc3339(void)
{
	char buf[32];
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return strdup(buf);
}

/* "name<TAB>version" lines of WORK/file into an object. */
static struct json_object *tsv_object(struct build *b, const char *file)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	struct json_object *o = json_object_new_object();

	snprintf(path, sizeof(path), "%s/%s", b->work, file);
	if (!o || read_file(path, &text, 16 << 20) < 0)
		return o;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *tab = strchr(line, '\t');
		if (!tab)
			continue;
		*tab = '\0';
		json_object_object_add(o, line, json_object_new_string(tab + 1));
	}
	return o;
}

static struct json_object *strv_array(const struct strv *sv)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; a && i < sv->n; i++)
		json_object_array_add(a, json_object_new_string(sv->v[i]));
	return a;
}

static void uuid_of(const char *hex, char out[37])
{
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

/*
 * Write the defaults, make the file system, hash it, write meta.json, and move it under its
 * id; then point NAME at it. meta holds what the caller knows (recipe, inputs, source, ...).
 */
static int finish(struct build *b, const struct image_defaults *defs, struct json_object *meta,
		  char **id_out, struct avm_error *err)
{
	char path[PATH_MAX], final[PATH_MAX], id[65], tree[PATH_MAX];
	struct stat st;
	int r;

	snprintf(tree, sizeof(tree), "%s/tree", b->work);
	if ((r = image_defaults_write(tree, defs, err)) < 0)
		return r;
	if ((r = run_step(b, "mkfs", NULL, "", err)) < 0)
		return r;
	snprintf(path, sizeof(path), "%s/rootfs.ext4", b->work);
	if (interrupted)
		return avm_error_set(err, -EINTR, "build of %s interrupted", b->name);
	avm_log("image: hashing rootfs.ext4\n");
	if ((r = sha256_file(path, id)) < 0 || chmod(path, 0444) < 0 || stat(path, &st) < 0)
		return avm_error_setx(err, r < 0 ? r : -errno, "cannot read %s", path);
	/* The tree is no longer needed: remove it before the rename (half the disk). */
	image_remove_tree(tree);

	json_object_object_add(meta, "id", json_object_new_string(id));
	json_object_object_add(meta, "size", json_object_new_int64(st.st_size));
	json_object_object_add(meta, "blocks", json_object_new_int64(st.st_blocks));
	json_object_object_add(meta, "allocated", json_object_new_int64(st.st_blocks * 512LL));
	_cleanup_free_ char *created = now_rfc3339();
	add_str(meta, "created", created);
	json_object_object_add(meta, "env", strv_array(&defs->env));
	add_str(meta, "workdir", defs->workdir);
	add_str(meta, "user", defs->user);
	json_object_object_add(meta, "build_ms", json_object_new_int64(now_ms() - b->t0));
	const char *text = json_object_to_json_string_ext(meta, JSON_C_TO_STRING_PRETTY |
									JSON_C_TO_STRING_NOSLASHESCAPE);
	snprintf(final, sizeof(final), "%s/out", b->work);
	if (mkdir(final, 0755) < 0)
		return avm_error_setx(err, -errno, "cannot create %s", final);
	snprintf(final, sizeof(final), "%s/out/meta.json", b->work);
	if ((r = write_file_atomic(final, text, strlen(text))) < 0)
		return avm_error_setx(err, r, "cannot write %s", final);
	snprintf(final, sizeof(final), "%s/out/rootfs.ext4", b->work);
	if (rename(path, final) < 0)
		return avm_error_setx(err, -errno, "cannot move %s", path);
	/* One rename makes the image appear whole; an image with this id already is the same. */
	snprintf(path, sizeof(path), "%s/out", b->work);
	snprintf(final, sizeof(final), "%s/%s", image_store_dir(), id);
	if (rename(path, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		return avm_error_setx(err, -errno, "cannot move the image to %s", final);
	/* The image NAME pointed at before goes too, unless a name or a VM still uses it. */
	struct image_info *old = NULL;
	image_resolve(b->name, &old, NULL);
	if ((r = image_name_set(b->name, id, err)) < 0) {
		image_info_free(old);
		return r;
	}
	if (old && strcmp(old->id, id) && image_prune(old->id))
		avm_log("image: removed %s's previous image %.12s\n", b->name, old->id);
	image_info_free(old);
	if (id_out && !(*id_out = strdup(id)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	avm_log("image: %s is %.12s (%.1f MiB, %.1f MiB allocated) in %.1f s\n", b->name,
		id, st.st_size / 1048576.0, st.st_blocks * 512 / 1048576.0,
		(now_ms() - b->t0) / 1000.0);
	return 0;
}

/* NAME's current image when its meta's inputs equal `inputs` (an up-to-date build). */
static bool up_to_date(const char *name, const char *inputs, char **id_out)
{
	struct image_info *i = NULL;
	struct json_object *meta = NULL, *v;
	bool same = false;

	if (image_resolve(name, &i, NULL) < 0)
		return false;
	if (image_meta_read(i, &meta, NULL) == 0 && json_object_object_get_ex(meta, "inputs", &v))
		same = !strcmp(json_object_get_string(v), inputs);
	if (same && id_out)
		*id_out = strdup(i->id);
	if (meta)
		json_object_put(meta);
	image_info_free(i);
	return same;
}

int image_build(const char *name, const struct image_recipe *rc, const struct image_build_opts *o,
		char **id_out, struct avm_error *err)
{
	struct build b;
	char inputs[65], uuid[37], buf[64];
	struct image_defaults defs = { 0 };
	struct json_object *meta = NULL;
	int r;

	if ((r = build_start(&b, name, id_out, err)) < 0)
		return r;
	if ((r = image_recipe_inputs(rc, b.script, inputs, err)) < 0)
		goto out;
	if (!o->force && up_to_date(name, inputs, id_out)) {
		avm_log("image: %s is up to date (%.12s)\n", name, *id_out ? *id_out : "");
		r = 0;
		goto out;
	}
	const char *suite = rc->suite ? rc->suite : "bookworm";
	uuid_of(inputs, uuid);
	snprintf(buf, sizeof(buf), "%ld\n", IMAGE_EPOCH);
	if ((r = write_in(&b, "epoch", buf)) < 0 || (r = write_in(&b, "uuid", uuid)) < 0 ||
	    (r = write_in(&b, "suite", suite)) < 0 || (r = write_in(&b, "clamp", "1\n")) < 0 ||
	    (r = write_in_lines(&b, "packages", &rc->packages)) < 0 ||
	    (r = write_in_lines(&b, "npm", &rc->npm)) < 0 ||
	    (r = write_in_lines(&b, "runs", &rc->runs)) < 0 ||
	    (r = write_in_lines(&b, "warms", &rc->warms)) < 0 ||
	    (r = write_in_lines(&b, "files", &rc->files)) < 0) {
		r = avm_error_setx(err, r, "cannot write the build's inputs in %s", b.work);
		goto out;
	}
	if (rc->size_mib) {
		snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)rc->size_mib);
		if ((r = write_in(&b, "size", buf)) < 0) {
			r = avm_error_setx(err, r, "cannot write the build's inputs");
			goto out;
		}
	}
	for (size_t i = 0; i < rc->ca_certs.n; i++) {
		char dst[PATH_MAX];
		_cleanup_free_ char *pem = NULL;
		snprintf(dst, sizeof(dst), "%s/in/ca/agentvm-%zu.crt", b.work, i);
		if ((r = read_file(rc->ca_certs.v[i], &pem, 1 << 20)) < 0 ||
		    (r = write_file_atomic(dst, pem, strlen(pem))) < 0) {
			r = avm_error_setx(err, r, "cannot copy %s", rc->ca_certs.v[i]);
			goto out;
		}
	}
	avm_log("image: building %s from %s (inputs %.12s)\n", name,
		rc->recipe ? rc->recipe : "flags", inputs);
	if ((r = run_step(&b, "tree", NULL, suite, err)) < 0)
		goto out;
	for (size_t i = 0; i < rc->env.n; i++)
		strv_add(&defs.env, rc->env.v[i]);
	defs.workdir = rc->workdir ? strdup(rc->workdir) : NULL;
	defs.user = rc->user ? strdup(rc->user) : NULL;
	if (!(meta = json_object_new_object())) {
		r = avm_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	add_str(meta, "name", name);
	add_str(meta, "recipe", rc->recipe);
	add_str(meta, "inputs", inputs);
	add_str(meta, "suite", suite);
	json_object_object_add(meta, "packages", tsv_object(&b, "packages.tsv"));
	json_object_object_add(meta, "npm", tsv_object(&b, "npm.tsv"));
	json_object_object_add(meta, "source", NULL);
	r = finish(&b, &defs, meta, id_out, err);
out:
	if (meta)
		json_object_put(meta);
	image_defaults_release(&defs);
	build_release(&b, false);
	return r;
}

/* Env entries: the config's, then PATH and HOME when it has none (what docker run does). */
static void import_env(const struct oci_config *c, const char *home, struct strv *env)
{
	bool has_path = false, has_home = false;

	for (size_t i = 0; i < c->env.n; i++) {
		const char *kv = c->env.v[i];
		has_path |= !strncmp(kv, "PATH=", 5);
		has_home |= !strncmp(kv, "HOME=", 5);
		strv_add(env, kv);
	}
	if (!has_path)
		strv_add(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	if (!has_home)
		strv_addf(env, "HOME=%s", home && *home ? home : "/");
}

int image_import(const char *name, const char *source, const struct image_build_opts *o,
		 char **id_out, struct avm_error *err)
{
	struct build b;
	char path[PATH_MAX], user[64], home[PATH_MAX], uuid[37], inputs[65], buf[64];
	_cleanup_free_ char *cfg_text = NULL;
	struct oci_config cfg = { 0 };
	struct image_defaults defs = { 0 };
	struct json_object *meta = NULL;
	int r;

	if ((r = build_start(&b, name, id_out, err)) < 0)
		return r;
	avm_log("image: importing %s as %s\n", source, name);
	if ((r = run_step(&b, "import", source, "", err)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/config.json", b.work);
	if ((r = read_file(path, &cfg_text, 4 << 20)) < 0) {
		r = avm_error_setx(err, r, "cannot read the image's config");
		goto out;
	}
	if ((r = oci_config_parse(cfg_text, strlen(cfg_text), &cfg, err)) < 0) {
		avm_error_wrap(err, "importing %s", source);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/tree", b.work);
	if ((r = oci_resolve_user(path, cfg.user, user, sizeof(user), home, sizeof(home), err)) <
	    0) {
		avm_error_wrap(err, "importing %s", source);
		goto out;
	}
	import_env(&cfg, home, &defs.env);
	defs.workdir = cfg.workdir ? strdup(cfg.workdir) : NULL;
	defs.user = strdup(user);
	/* The file system's UUID: from what was imported (the same image gives the same bytes). */
	{
		struct sha256 s;
		uint8_t d[32];
		sha256_init(&s);
		sha256_update(&s, cfg_text, strlen(cfg_text));
		sha256_update(&s, source, strlen(source));
		sha256_final(&s, d);
		for (int i = 0; i < 32; i++)
			snprintf(inputs + 2 * i, 3, "%02x", d[i]);
	}
	uuid_of(inputs, uuid);
	snprintf(buf, sizeof(buf), "%ld\n", IMAGE_EPOCH);
	if ((r = write_in(&b, "uuid", uuid)) < 0 || (r = write_in(&b, "epoch", buf)) < 0) {
		r = avm_error_setx(err, r, "cannot write the build's inputs");
		goto out;
	}
	if (!(meta = json_object_new_object())) {
		r = avm_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	add_str(meta, "name", name);
	add_str(meta, "recipe", NULL);
	add_str(meta, "inputs", inputs);
	json_object_object_add(meta, "packages", tsv_object(&b, "packages.tsv"));
	json_object_object_add(meta, "npm", json_object_new_object());
	add_str(meta, "source", source);
	add_str(meta, "oci_user", cfg.user);
	r = finish(&b, &defs, meta, id_out, err);
out:
	(void)o;
	if (meta)
		json_object_put(meta);
	oci_config_release(&cfg);
	image_defaults_release(&defs);
	build_release(&b, false);
	return r;
}
