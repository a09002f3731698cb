/* SPDX-License-Identifier: MIT */
/*
 * The image store (resolve by name, id and prefix; ambiguous, missing, half-built, damaged;
 * names replaced atomically; list and meta; rm and its users), recipes and their inputs hash,
 * the /etc/agentvm writer and the OCI config and user parsers.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "image/image.h"
#include "base/sha256.h"
#include "base/util.h"

/* Paths here are short (under /tmp); truncation cannot happen. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

static char root[256];

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	close(fd);
}

static char *slurp(const char *path)
{
	char *t = NULL;
	return read_file(path, &t, 1 << 20) >= 0 ? t : NULL;
}

/* A real image dir in the store: rootfs.ext4 with `content`, meta.json to match; its id. */
static void make_image(const char *content, char id[65])
{
	char dir[PATH_MAX], tmp[PATH_MAX], meta[512];

	snprintf(tmp, sizeof(tmp), "%s/x.tmp", root);
	put(tmp, content);
	assert_int_equal(sha256_file(tmp, id), 0);
	snprintf(dir, sizeof(dir), "%s/%s", image_store_dir(), id);
	assert_int_equal(mkdir_p(dir, 0755), 0);
	snprintf(meta, sizeof(meta),
		 "{\"name\":\"n\",\"id\":\"%s\",\"size\":%zu,\"recipe\":\"base\","
		 "\"inputs\":\"abc\",\"created\":\"2026-12-06T00:00:00Z\"}",
		 id, strlen(content));
	snprintf(tmp, sizeof(tmp), "%s/meta.json", dir);
	put(tmp, meta);
	snprintf(tmp, sizeof(tmp), "%s/rootfs.ext4", dir);
	put(tmp, content);
}

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/avm-test-image.XXXXXX");
	assert_non_null(mkdtemp(root));
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/cache", root);
	setenv("AGENTVM_CACHE_DIR", p, 1);
	snprintf(p, sizeof(p), "%s/state", root);
	setenv("AGENTVM_STATE_DIR", p, 1);
	snprintf(p, sizeof(p), "%s/snapshots", root);
	setenv("AGENTVM_SNAPSHOT_DIR", p, 1);
	assert_int_equal(mkdir_p(image_store_dir(), 0755), 0);
	return 0;
}

static int teardown(void **state)
{
	image_remove_tree(root);
	return 0;
}

static void test_resolve_name_id_prefix(void **state)
{
	char id[65];
	struct image_info *i = NULL;
	struct avm_error err = { 0 };

	make_image("hello", id);
	assert_int_equal(image_name_set("base", id, &err), 0);
	assert_int_equal(image_resolve("base", &i, &err), 0);
	assert_string_equal(i->id, id);
	assert_string_equal(i->name, "base");
	assert_int_equal(i->size, 5);
	assert_non_null(strstr(i->rootfs, id));
	assert_non_null(strstr(i->rootfs, "/rootfs.ext4"));
	image_info_free(i);

	assert_int_equal(image_resolve(id, &i, &err), 0);
	assert_string_equal(i->id, id);
	image_info_free(i);

	char prefix[13];
	snprintf(prefix, sizeof(prefix), "%.12s", id);
	assert_int_equal(image_resolve(prefix, &i, &err), 0);
	assert_string_equal(i->id, id);
	image_info_free(i);

	/* Fewer than 12 digits is a name, not a prefix. */
	snprintf(prefix, sizeof(prefix), "%.11s", id);
	assert_int_equal(image_resolve(prefix, &i, &err), -ENOENT);
	assert_null(i);
}

static void test_resolve_missing(void **state)
{
	struct image_info *i = NULL;
	struct avm_error err = { 0 };

	assert_int_equal(image_resolve("nosuch", &i, &err), -ENOENT);
	assert_null(i);
	assert_string_equal(err.msg, "image nosuch not found; build it with 'agentvm image build "
				     "nosuch' (see agentvm image ls)");
	assert_int_equal(image_resolve("", &i, &err), -EINVAL);
}

static void test_resolve_ambiguous_prefix(void **state)
{
	char a[65], b[65], prefix[64];
	struct image_info *i = NULL;
	struct avm_error err = { 0 };
	int n;

	/* Find two contents whose ids share the first hex digit, then fake a shared 12-prefix:
	 * a dir named with a's first 12 digits and b's rest is enough for the prefix scan. */
	make_image("one", a);
	make_image("two", b);
	char fake[65], dir[PATH_MAX];
	memcpy(fake, a, 12);
	memcpy(fake + 12, b + 12, 53);
	snprintf(dir, sizeof(dir), "%s/%s", image_store_dir(), fake);
	assert_int_equal(mkdir_p(dir, 0755), 0);
	n = snprintf(prefix, sizeof(prefix), "%.12s", a);
	assert_int_equal(n, 12);
	assert_int_equal(image_resolve(prefix, &i, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "matches 2 images; give more digits"));
	/* One more digit that only a has resolves. */
	snprintf(prefix, sizeof(prefix), "%.*s", a[12] == b[12] ? 64 : 13, a);
	assert_int_equal(image_resolve(prefix, &i, &err), 0);
	assert_string_equal(i->id, a);
	image_info_free(i);
}

static void test_half_built(void **state)
{
	char dir[PATH_MAX];
	struct image_info *i = NULL;
	struct avm_error err = { 0 };

	snprintf(dir, sizeof(dir), "%s/.build-half-Ab12Cd", image_store_dir());
	assert_int_equal(mkdir_p(dir, 0755), 0);
	snprintf(dir, sizeof(dir), "%s/.build-half-Ab12Cd/tree/etc", image_store_dir());
	assert_int_equal(mkdir_p(dir, 0755), 0);
	assert_int_equal(image_resolve("half", &i, &err), -EIO);
	assert_non_null(strstr(err.msg, "image half is half-built"));
	assert_non_null(strstr(err.msg, "agentvm image rm half"));

	/* While a builder holds the work dir's lock, it is being built, not half-built. */
	snprintf(dir, sizeof(dir), "%s/.build-half-Ab12Cd", image_store_dir());
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(image_clean_stale_builds("half"), 0);
	/* flock is per open file: a second open in this process sees the lock as another's */
	assert_int_equal(image_resolve("half", &i, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "being built"));
	close(fd);

	/* A name that is a prefix of it ("hal") is not confused with it. */
	assert_int_equal(image_resolve("hal", &i, &err), -ENOENT);

	/* rm cleans the leftovers; then the name is simply missing. */
	assert_int_equal(image_remove("half", false, NULL, &err), 0);
	assert_int_not_equal(access(dir, F_OK), 0);
	assert_int_equal(image_resolve("half", &i, &err), -ENOENT);
}

static void test_damaged(void **state)
{
	char id[65], path[PATH_MAX];
	struct image_info *i = NULL;
	struct avm_error err = { 0 };

	make_image("damaged soon", id);
	assert_int_equal(image_name_set("dmg", id, &err), 0);
	/* Size differs from meta's */
	snprintf(path, sizeof(path), "%s/%s/rootfs.ext4", image_store_dir(), id);
	put(path, "damaged soon!");
	assert_int_equal(image_resolve("dmg", &i, &err), -EIO);
	assert_non_null(strstr(err.msg, "image dmg is damaged (rootfs.ext4's size differs"));
	assert_non_null(strstr(err.msg, "agentvm image rm --force dmg"));
	/* Same size, other bytes: only a re-hash (inspect --verify) sees it. */
	put(path, "DAMAGED SOON");
	assert_int_equal(image_resolve("dmg", &i, &err), 0);
	assert_int_equal(image_verify(i, &err), -EIO);
	assert_non_null(strstr(err.msg, "hashes to"));
	image_info_free(i);
	/* No rootfs at all. */
	unlink(path);
	assert_int_equal(image_resolve("dmg", &i, &err), -EIO);
	assert_non_null(strstr(err.msg, "rootfs.ext4 is missing"));
	/* meta.json of another id. */
	put(path, "damaged soon");
	snprintf(path, sizeof(path), "%s/%s/meta.json", image_store_dir(), id);
	put(path, "{\"id\":\"0000\",\"size\":12}");
	assert_int_equal(image_resolve("dmg", &i, &err), -EIO);
	assert_non_null(strstr(err.msg, "meta.json names another id"));
	put(path, "not json");
	assert_int_equal(image_resolve("dmg", &i, &err), -EIO);
	/* A names entry that holds no id. */
	snprintf(path, sizeof(path), "%s/names/bad", image_store_dir());
	put(path, "garbage\n");
	assert_int_equal(image_resolve("bad", &i, &err), -EIO);
	assert_non_null(strstr(err.msg, "holds no id"));
}

static void test_name_set_atomic(void **state)
{
	char a[65], b[65], path[PATH_MAX];
	struct avm_error err = { 0 };
	struct stat st1, st2;

	make_image("first", a);
	make_image("second", b);
	assert_int_equal(image_name_set("n1", a, &err), 0);
	snprintf(path, sizeof(path), "%s/names/n1", image_store_dir());
	assert_int_equal(stat(path, &st1), 0);
	assert_int_equal(image_name_set("n1", b, &err), 0);
	assert_int_equal(stat(path, &st2), 0);
	/* Replaced by rename (a new inode), never rewritten in place. */
	assert_int_not_equal(st1.st_ino, st2.st_ino);
	char *t = slurp(path);
	assert_non_null(t);
	assert_int_equal(strlen(t), 65);
	assert_memory_equal(t, b, 64);
	free(t);
	/* Nothing else in names/: no temp file left. */
	struct image_entry *e = NULL;
	size_t n = 0;
	assert_int_equal(image_list(&e, &n, &err), 0);
	/* n1 -> b, and a is unnamed */
	assert_int_equal(n, 2);
	assert_string_equal(e[0].name, "n1");
	assert_string_equal(e[0].id, b);
	assert_null(e[1].name);
	assert_string_equal(e[1].id, a);
	image_list_free(e, n);
}

static void test_list_meta(void **state)
{
	char a[65];
	struct avm_error err = { 0 };
	struct image_entry *e = NULL;
	struct json_object *v;
	size_t n = 0;

	assert_int_equal(image_list(&e, &n, &err), 0);
	assert_int_equal(n, 0);
	image_list_free(e, n);
	make_image("listed", a);
	assert_int_equal(image_name_set("x1", a, &err), 0);
	assert_int_equal(image_name_set("x2", a, &err), 0);
	assert_int_equal(image_list(&e, &n, &err), 0);
	assert_int_equal(n, 2); /* two names, one image: no unnamed row */
	assert_null(e[0].problem);
	assert_non_null(e[0].meta);
	assert_true(json_object_object_get_ex(e[0].meta, "recipe", &v));
	assert_string_equal(json_object_get_string(v), "base");
	assert_true(json_object_object_get_ex(e[1].meta, "size", &v));
	assert_int_equal(json_object_get_int(v), 6);
	image_list_free(e, n);

	struct image_info *i = NULL;
	struct json_object *m = NULL;
	assert_int_equal(image_resolve("x2", &i, &err), 0);
	assert_int_equal(image_meta_read(i, &m, &err), 0);
	assert_true(json_object_object_get_ex(m, "inputs", &v));
	assert_string_equal(json_object_get_string(v), "abc");
	json_object_put(m);
	image_info_free(i);
}

static void test_remove(void **state)
{
	char a[65], path[PATH_MAX], vm[PATH_MAX];
	struct avm_error err = { 0 };
	char *removed = NULL;
	struct image_info *i = NULL;

	make_image("to remove", a);
	assert_int_equal(image_name_set("r1", a, &err), 0);
	assert_int_equal(image_name_set("r2", a, &err), 0);
	/* A VM whose spec names the image keeps it. */
	snprintf(vm, sizeof(vm), "%s/state/vm1", root);
	assert_int_equal(mkdir_p(vm, 0700), 0);
	snprintf(path, sizeof(path), "%s/spec.json", vm);
	char spec[256];
	snprintf(spec, sizeof(spec), "{\"cpus\":1,\"image\":{\"name\":\"r1\",\"id\":\"%s\"}}", a);
	put(path, spec);
	assert_int_equal(image_remove("r1", false, &removed, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "in use by vm vm1"));
	assert_non_null(strstr(err.msg, "--force"));
	/* An id that still has names is removed by name only. */
	assert_int_equal(image_remove(a, true, &removed, &err), -EBUSY);
	/* r1 goes; r2 still points at the image: its files stay. */
	assert_int_equal(image_remove("r1", true, &removed, &err), 0);
	assert_null(removed);
	assert_int_equal(image_resolve("r2", &i, &err), 0);
	image_info_free(i);
	unlink(path);
	assert_int_equal(image_remove("r2", false, &removed, &err), 0);
	assert_non_null(removed);
	assert_string_equal(removed, a);
	free(removed);
	snprintf(path, sizeof(path), "%s/%s", image_store_dir(), a);
	assert_int_not_equal(access(path, F_OK), 0);
	assert_int_equal(image_remove("r2", false, &removed, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "not found"));
}

static void test_prune(void **state)
{
	char a[65], b[65], path[PATH_MAX];
	struct avm_error err = { 0 };

	make_image("named", a);
	make_image("unnamed", b);
	assert_int_equal(image_name_set("p", a, &err), 0);
	assert_int_equal(image_prune(a), 0); /* a name points at it */
	snprintf(path, sizeof(path), "%s/%s", image_store_dir(), a);
	assert_int_equal(access(path, F_OK), 0);
	/* A snapshot's meta.json (its spec) names b: kept. */
	char snap[PATH_MAX], spec[256];
	snprintf(snap, sizeof(snap), "%s/snapshots/s1", root);
	assert_int_equal(mkdir_p(snap, 0700), 0);
	snprintf(snap, sizeof(snap), "%s/snapshots/s1/meta.json", root);
	snprintf(spec, sizeof(spec), "{\"name\":\"s1\",\"spec\":{\"image\":{\"id\":\"%s\"}}}", b);
	put(snap, spec);
	assert_int_equal(image_prune(b), 0);
	unlink(snap);
	assert_int_equal(image_prune(b), 1);
	snprintf(path, sizeof(path), "%s/%s", image_store_dir(), b);
	assert_int_not_equal(access(path, F_OK), 0);
	assert_int_equal(image_prune("not-an-id"), 0);
}

static void test_names(void **state)
{
	struct avm_error err = { 0 };

	assert_int_equal(image_validate_name("agent", &err), 0);
	assert_int_equal(image_validate_name("my-image_1.0", &err), 0);
	assert_int_equal(image_validate_name("../x", &err), -EINVAL);
	assert_int_equal(image_validate_name(".hidden", &err), -EINVAL);
	assert_int_equal(image_validate_name("a/b", &err), -EINVAL);
	assert_int_equal(
		image_validate_name("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				    &err),
		-EINVAL);
	assert_non_null(strstr(err.msg, "image id"));
}

static void test_sizes(void **state)
{
	uint64_t m;

	assert_int_equal(image_parse_size("512M", &m), 0);
	assert_int_equal(m, 512);
	assert_int_equal(image_parse_size("2G", &m), 0);
	assert_int_equal(m, 2048);
	assert_int_equal(image_parse_size("1536", &m), 0);
	assert_int_equal(m, 1536);
	assert_int_equal(image_parse_size("0", &m), -EINVAL);
	assert_int_equal(image_parse_size("12T", &m), -EINVAL);
	assert_int_equal(image_parse_size("-1G", &m), -EINVAL);
	assert_int_equal(image_parse_size("", &m), -EINVAL);
}

static void test_recipe_parse(void **state)
{
	char dir[512], path[PATH_MAX], text[PATH_MAX * 2];
	struct image_recipe r = { 0 };
	struct avm_error err = { 0 };

	snprintf(dir, sizeof(dir), "%s/recipes", root);
	assert_int_equal(mkdir_p(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/parent", dir);
	put(path, "# the parent\nsuite bookworm\npackages a, b c\nenv HOME=/root\nenv LANG=C\n"
		  "workdir /root\nuser 0:0\n");
	snprintf(path, sizeof(path), "%s/data.txt", dir);
	put(path, "data");
	snprintf(path, sizeof(path), "%s/child", dir);
	put(path, "from ./parent\npackages c d\nnpm @scope/x lodash@4\nfile data.txt:/opt/data\n"
		  "run echo hi > /x\nwarm HOME=/root tool --version\nenv LANG=C.UTF-8\nsize 2G\n");
	/* A path recipe: relative "from" and "file" are relative to the recipe's dir. */
	assert_int_equal(chdir(dir), 0);
	assert_int_equal(image_recipe_load(&r, path, &err), 0);
	assert_string_equal(r.suite, "bookworm");
	assert_int_equal(r.packages.n, 4); /* a b c d: c once */
	assert_string_equal(r.packages.v[3], "d");
	assert_int_equal(r.npm.n, 2);
	assert_string_equal(r.npm.v[0], "@scope/x");
	assert_int_equal(r.files.n, 1);
	snprintf(text, sizeof(text), "%s/data.txt\t/opt/data", dir);
	assert_string_equal(r.files.v[0], text);
	assert_int_equal(r.runs.n, 1);
	assert_string_equal(r.runs.v[0], "echo hi > /x");
	assert_int_equal(r.warms.n, 1);
	assert_string_equal(r.warms.v[0], "HOME=/root tool --version");
	assert_int_equal(r.env.n, 2);
	assert_string_equal(r.env.v[1], "LANG=C.UTF-8"); /* the child's replaces the parent's */
	assert_string_equal(r.workdir, "/root");
	assert_int_equal(r.size_mib, 2048);

	/* The inputs hash: stable, blind to package order, sensitive to file contents. */
	char h1[65], h2[65], h3[65];
	assert_int_equal(image_recipe_inputs(&r, NULL, h1, &err), 0);
	assert_int_equal(image_recipe_inputs(&r, NULL, h2, &err), 0);
	assert_string_equal(h1, h2);
	char *t = r.packages.v[0];
	r.packages.v[0] = r.packages.v[3];
	r.packages.v[3] = t;
	assert_int_equal(image_recipe_inputs(&r, NULL, h2, &err), 0);
	assert_string_equal(h1, h2);
	/* A warm-up command is an input: another one is another image. */
	free(r.warms.v[0]);
	r.warms.v[0] = strdup("true");
	assert_int_equal(image_recipe_inputs(&r, NULL, h2, &err), 0);
	assert_string_not_equal(h1, h2);
	free(r.warms.v[0]);
	r.warms.v[0] = strdup("HOME=/root tool --version");
	snprintf(path, sizeof(path), "%s/data.txt", dir);
	put(path, "DATA");
	assert_int_equal(image_recipe_inputs(&r, NULL, h3, &err), 0);
	assert_string_not_equal(h1, h3);
	image_recipe_release(&r);

	/* Errors name the line. */
	assert_int_equal(image_recipe_parse(&r, "frobnicate x\n", dir, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 1: unknown key 'frobnicate'"));
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "\npackages\n", dir, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 2"));
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "packages ok bad;rm\n", dir, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 1: bad package name 'bad;rm'"));
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "\n\nnpm ok-pkg ../evil\n", dir, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "line 3: bad npm package '../evil'"));
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "file nosuch:/x\n", dir, 0, &err), -ENOENT);
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "file data.txt:relative\n", dir, 0, &err), -EINVAL);
	image_recipe_release(&r);
	/* DST never climbs out of the tree. */
	assert_int_equal(image_recipe_parse(&r, "file data.txt:/../../etc/x\n", dir, 0, &err),
			 -EINVAL);
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "file data.txt:/a/..\n", dir, 0, &err), -EINVAL);
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "file data.txt:/a/..b\n", dir, 0, &err), 0);
	image_recipe_release(&r);
	assert_int_equal(image_recipe_parse(&r, "ca-cert data.txt\n", dir, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "PEM"));
	image_recipe_release(&r);
	/* A recipe that includes itself stops. */
	snprintf(path, sizeof(path), "%s/loop", dir);
	put(path, "from ./loop\n");
	assert_int_equal(image_recipe_load(&r, path, &err), -ELOOP);
	image_recipe_release(&r);
}

static void test_defaults_render(void **state)
{
	struct image_defaults d = { 0 };
	struct avm_error err = { 0 };
	char *env = NULL, *exec = NULL;

	strv_add(&d.env, "PATH=/usr/bin:/bin");
	strv_add(&d.env, "EMPTY=");
	strv_add(&d.env, "WITH_EQ=a=b c");
	d.workdir = strdup("/work dir");
	d.user = strdup("1000:100");
	assert_int_equal(image_defaults_render(&d, &env, &exec, &err), 0);
	assert_string_equal(env, "PATH=/usr/bin:/bin\nEMPTY=\nWITH_EQ=a=b c\n");
	assert_string_equal(exec, "workdir=/work dir\nuser=1000:100\n");
	free(env);
	free(exec);

	const char *bad_env[] = { "NOEQ", "=x", "1A=x", "A-B=x", "A=line\nB=2" };
	for (size_t k = 0; k < sizeof(bad_env) / sizeof(bad_env[0]); k++) {
		struct image_defaults b = { 0 };
		strv_add(&b.env, bad_env[k]);
		assert_int_equal(image_defaults_render(&b, &env, &exec, &err), -EINVAL);
		assert_null(env);
		image_defaults_release(&b);
	}
	free(d.workdir);
	d.workdir = strdup("relative");
	assert_int_equal(image_defaults_render(&d, &env, &exec, &err), -EINVAL);
	free(d.workdir);
	d.workdir = NULL;
	const char *bad_user[] = { "root", "1000", "1000:", ":1", "1:2:3", "4294967295:0", "-1:0" };
	for (size_t k = 0; k < sizeof(bad_user) / sizeof(bad_user[0]); k++) {
		free(d.user);
		d.user = strdup(bad_user[k]);
		assert_int_equal(image_defaults_render(&d, &env, &exec, &err), -EINVAL);
	}
	free(d.user);
	d.user = NULL;
	/* No workdir and no user: an empty exec file. */
	assert_int_equal(image_defaults_render(&d, &env, &exec, &err), 0);
	assert_string_equal(exec, "");
	free(env);
	free(exec);
	/* Over 64 KiB: refused (guest-init reads at most that). */
	char *big = malloc(70000);
	memset(big, 'x', 69999);
	memcpy(big, "BIG=", 4);
	big[69999] = '\0';
	strv_add(&d.env, big);
	free(big);
	assert_int_equal(image_defaults_render(&d, &env, &exec, &err), -E2BIG);
	image_defaults_release(&d);
}

static void test_defaults_write(void **state)
{
	char tree[PATH_MAX], outside[PATH_MAX], path[PATH_MAX];
	struct image_defaults d = { 0 };
	struct avm_error err = { 0 };

	strv_add(&d.env, "A=1");
	d.workdir = strdup("/");
	d.user = strdup("0:0");
	/* No /etc at all (a scratch image): made. */
	snprintf(tree, sizeof(tree), "%s/tree1", root);
	assert_int_equal(mkdir_p(tree, 0755), 0);
	assert_int_equal(image_defaults_write(tree, &d, &err), 0);
	snprintf(path, sizeof(path), "%s/etc/agentvm/env", tree);
	char *t = slurp(path);
	assert_string_equal(t, "A=1\n");
	free(t);
	snprintf(path, sizeof(path), "%s/etc/agentvm/exec", tree);
	t = slurp(path);
	assert_string_equal(t, "workdir=/\nuser=0:0\n");
	free(t);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);

	/* /etc a symlink to an absolute path: resolved inside the tree, never the host's. */
	snprintf(tree, sizeof(tree), "%s/tree2", root);
	snprintf(outside, sizeof(outside), "%s/outside", root);
	assert_int_equal(mkdir_p(outside, 0755), 0);
	assert_int_equal(mkdir_p(tree, 0755), 0);
	snprintf(path, sizeof(path), "%s/etc", tree);
	assert_int_equal(symlink(outside, path), 0);
	/* outside is an absolute host path: inside the tree it names tree/<outside>. */
	char inner[PATH_MAX];
	snprintf(inner, sizeof(inner), "%s%s", tree, outside);
	assert_int_equal(mkdir_p(inner, 0755), 0);
	assert_int_equal(image_defaults_write(tree, &d, &err), 0);
	snprintf(path, sizeof(path), "%s/agentvm/env", outside);
	assert_int_not_equal(access(path, F_OK), 0);
	snprintf(path, sizeof(path), "%s/agentvm/env", inner);
	assert_int_equal(access(path, F_OK), 0);
	/* /etc/agentvm itself a symlink: refused. */
	snprintf(tree, sizeof(tree), "%s/tree3", root);
	snprintf(path, sizeof(path), "%s/etc", tree);
	assert_int_equal(mkdir_p(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/etc/agentvm", tree);
	assert_int_equal(symlink(outside, path), 0);
	assert_true(image_defaults_write(tree, &d, &err) < 0);
	image_defaults_release(&d);
}

static void test_oci_config(void **state)
{
	struct oci_config c;
	struct avm_error err = { 0 };
	const char *full = "{\"architecture\":\"amd64\",\"config\":{\"Env\":[\"PATH=/bin\","
			   "\"X=1\"],\"WorkingDir\":\"/app\",\"User\":\"app:staff\","
			   "\"Cmd\":[\"sh\"]},\"rootfs\":{}}";

	assert_int_equal(oci_config_parse(full, strlen(full), &c, &err), 0);
	assert_int_equal(c.env.n, 2);
	assert_string_equal(c.env.v[1], "X=1");
	assert_string_equal(c.workdir, "/app");
	assert_string_equal(c.user, "app:staff");
	oci_config_release(&c);

	const char *none = "{\"config\":{\"Env\":null,\"User\":\"\"}}";
	assert_int_equal(oci_config_parse(none, strlen(none), &c, &err), 0);
	assert_int_equal(c.env.n, 0);
	assert_null(c.workdir);
	assert_null(c.user);
	oci_config_release(&c);
	assert_int_equal(oci_config_parse("{}", 2, &c, &err), 0);
	oci_config_release(&c);

	const char *bad[] = { "", "[]", "not json", "{\"config\":3}", "{\"config\":{\"Env\":\"x\"}}",
			      "{\"config\":{\"Env\":[1]}}", "{\"config\":{\"User\":5}}",
			      "{\"config\":{\"Env\":[\"A\\u0000B=1\"]}}" };
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		assert_int_equal(oci_config_parse(bad[k], strlen(bad[k]), &c, &err), -EINVAL);
		assert_int_equal(c.env.n, 0);
	}
}

static void test_oci_user(void **state)
{
	const char *passwd = "root:x:0:0:root:/root:/bin/sh\n"
			     "app:x:1000:1001:App:/home/app:/bin/sh\n"
			     "weird:x:notanumber:1:::\n";
	const char *group = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";
	char buf[64], home[256];
	struct avm_error err = { 0 };

	assert_int_equal(oci_resolve_user_text(passwd, group, "", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 0);
	assert_string_equal(buf, "0:0");
	assert_string_equal(home, "/root");
	assert_int_equal(oci_resolve_user_text(passwd, group, "app", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 0);
	assert_string_equal(buf, "1000:1001");
	assert_string_equal(home, "/home/app");
	assert_int_equal(oci_resolve_user_text(passwd, group, "app:staff", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 0);
	assert_string_equal(buf, "1000:50");
	assert_int_equal(oci_resolve_user_text(passwd, group, "1000", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 0);
	assert_string_equal(buf, "1000:1001");
	/* A uid the image does not know: its group is 0, as runc does. */
	assert_int_equal(oci_resolve_user_text(passwd, group, "4242", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 0);
	assert_string_equal(buf, "4242:0");
	assert_string_equal(home, "");
	assert_int_equal(oci_resolve_user_text(NULL, NULL, "7:8", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 0);
	assert_string_equal(buf, "7:8");
	assert_int_equal(oci_resolve_user_text(passwd, group, "nobody", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 -ENOENT);
	assert_non_null(strstr(err.msg, "not in its /etc/passwd"));
	assert_int_equal(oci_resolve_user_text(passwd, group, "app:nogroup", buf, sizeof(buf),
					       home, sizeof(home), &err),
			 -ENOENT);
	assert_int_equal(oci_resolve_user_text(passwd, group, "weird", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 -ENOENT);
	assert_int_equal(oci_resolve_user_text(passwd, group, "99999999999", buf, sizeof(buf),
					       home, sizeof(home), &err),
			 -ERANGE);
	assert_int_equal(oci_resolve_user_text(passwd, group, ":5", buf, sizeof(buf), home,
					       sizeof(home), &err),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_resolve_name_id_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_ambiguous_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_built, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_set_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_meta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test_setup_teardown(test_recipe_parse, setup, teardown),
		cmocka_unit_test(test_defaults_render),
		cmocka_unit_test_setup_teardown(test_defaults_write, setup, teardown),
		cmocka_unit_test(test_oci_config),
		cmocka_unit_test(test_oci_user),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
