/* SPDX-License-Identifier: MIT */
/* Snapshot meta.json: round trip, validation of every field, New York timestamps, SHA-256. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "vm/qemu_argv.h"
#include "base/sha256.h"
#include "snapshot/snapshot.h"

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static void fill(struct snap_meta *m)
{
	memset(m, 0, sizeof(*m));
	m->name = strdup("base");
	m->description = strdup("a \"quoted\" description");
	m->created = strdup("2026-11-29T06:05:41-05:00");
	m->source_vm = strdup("dev");
	snprintf(m->accel, sizeof(m->accel), "tcg");
	m->cpus = 2;
	m->memory_mib = 512;
	m->profile = strdup("light");
	m->state_size = 12345;
	m->save_ms = 99;
	struct file_input *ins[] = { &m->kernel, &m->initrd, &m->qemu };
	const char *paths[] = { "/k/vmlinux", "/k/initramfs.cpio", "/usr/bin/qemu" };
	for (int i = 0; i < 3; i++) {
		ins[i]->path = strdup(paths[i]);
		memset(ins[i]->sha256, 'a' + i, 64);
		ins[i]->size = 1000 + i;
		ins[i]->mtime_ns = 1700000000123456789LL + i;
	}
	snprintf(m->qemu_version, sizeof(m->qemu_version), "7.2.22");
	m->spec = json_tokener_parse("{\"cpus\":2,\"memory_mib\":512}");
}

static void test_round_trip(void **state)
{
	struct snap_meta m, back;
	struct avm_error err = { 0 };

	fill(&m);
	char *text = snap_meta_to_string(&m);
	assert_non_null(text);
	assert_int_equal(snap_meta_parse(text, &back, &err), 0);
	assert_string_equal(back.name, "base");
	assert_string_equal(back.description, "a \"quoted\" description");
	assert_string_equal(back.created, m.created);
	assert_string_equal(back.accel, "tcg");
	assert_false(back.network);
	assert_int_equal(back.cpus, 2);
	assert_int_equal(back.memory_mib, 512);
	assert_int_equal(back.state_size, 12345);
	assert_string_equal(back.kernel.path, "/k/vmlinux");
	assert_string_equal(back.initrd.sha256, m.initrd.sha256);
	assert_int_equal(back.qemu.mtime_ns, m.qemu.mtime_ns);
	assert_string_equal(back.qemu_version, "7.2.22");
	assert_non_null(back.spec);
	assert_non_null(strstr(text, "\"disk\""));
	free(text);
	snap_meta_release(&m);
	snap_meta_release(&back);
}

/* A snapshot with a workspace disk records the user's image as inputs.disk0 and reads it back. */
static void test_disk_inputs(void **state)
{
	struct snap_meta m, back;
	struct avm_error err = { 0 };

	fill(&m);
	json_object_put(m.spec);
	m.spec = json_tokener_parse("{\"cpus\":2,\"memory_mib\":512,\"disks\":[{\"file\":"
				    "\"/img/work.ext4\",\"mount\":\"/workspace\",\"readonly\":false}]}");
	m.disks[0].path = strdup("/img/work.ext4");
	memset(m.disks[0].sha256, 'd', 64);
	m.disks[0].size = 1 << 20;
	m.n_disks = 1;
	char *text = snap_meta_to_string(&m);
	assert_int_equal(snap_meta_parse(text, &back, &err), 0);
	assert_int_equal(back.n_disks, 1);
	assert_string_equal(back.disks[0].path, "/img/work.ext4");
	assert_int_equal(back.disks[0].size, 1 << 20);
	snap_meta_release(&back);

	/* The spec names a disk whose input is missing: damaged. */
	struct json_object *o = json_tokener_parse(text), *in;
	json_object_object_get_ex(o, "inputs", &in);
	json_object_object_del(in, "disk0");
	assert_int_not_equal(snap_meta_parse(json_object_to_json_string(o), &back, &err), 0);
	assert_non_null(strstr(err.msg, "inputs.disk0"));
	json_object_put(o);
	free(text);
	snap_meta_release(&m);
}

/* Serialise a good meta, apply one edit to the JSON, expect a parse error mentioning `needle`. */
static void expect_bad(void (*edit)(struct json_object *), const char *needle)
{
	struct snap_meta m, back;
	struct avm_error err = { 0 };

	fill(&m);
	char *text = snap_meta_to_string(&m);
	struct json_object *o = json_tokener_parse(text);
	edit(o);
	int r = snap_meta_parse(json_object_to_json_string(o), &back, &err);
	if (r == 0 || !strstr(err.msg, needle))
		fail_msg("expected an error with '%s', got %d '%s'", needle, r, err.msg);
	json_object_put(o);
	free(text);
	snap_meta_release(&m);
}

static struct json_object *inputs(struct json_object *o, const char *k)
{
	struct json_object *in, *v;
	json_object_object_get_ex(o, "inputs", &in);
	json_object_object_get_ex(in, k, &v);
	return v;
}

static void e_format(struct json_object *o) { json_object_object_add(o, "format", json_object_new_int(2)); }
static void e_noname(struct json_object *o) { json_object_object_del(o, "name"); }
static void e_badname(struct json_object *o) { json_object_object_add(o, "name", json_object_new_string("../x")); }
static void e_accel(struct json_object *o) { json_object_object_add(o, "accel", json_object_new_string("hvf")); }
static void e_cpus(struct json_object *o) { json_object_object_add(o, "cpus", json_object_new_int(0)); }
static void e_mem(struct json_object *o) { json_object_object_add(o, "memory_mib", json_object_new_string("512")); }
static void e_size(struct json_object *o) { json_object_object_add(o, "state_size", json_object_new_int(0)); }
static void e_net(struct json_object *o) { json_object_object_add(o, "network", json_object_new_string("yes")); }
static void e_noinputs(struct json_object *o) { json_object_object_del(o, "inputs"); }
static void e_sha(struct json_object *o) { json_object_object_add(inputs(o, "kernel"), "sha256", json_object_new_string("xyz")); }
static void e_shaupper(struct json_object *o)
{
	json_object_object_add(inputs(o, "initrd"), "sha256", json_object_new_string(HEX_A));
	json_object_object_add(inputs(o, "initrd"), "sha256",
			       json_object_new_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
}
static void e_relpath(struct json_object *o) { json_object_object_add(inputs(o, "qemu"), "path", json_object_new_string("qemu")); }
static void e_nover(struct json_object *o) { json_object_object_del(inputs(o, "qemu"), "version"); }

static void test_validation(void **state)
{
	expect_bad(e_format, "format 2");
	expect_bad(e_noname, "\"name\" is missing");
	expect_bad(e_badname, "invalid snapshot name");
	expect_bad(e_accel, "neither kvm nor tcg");
	expect_bad(e_cpus, "\"cpus\" is out of range");
	expect_bad(e_mem, "\"memory_mib\" is missing or not an int");
	expect_bad(e_size, "\"state_size\" is out of range");
	expect_bad(e_net, "\"network\"");
	expect_bad(e_noinputs, "\"inputs\"");
	expect_bad(e_sha, "inputs.kernel.sha256");
	expect_bad(e_shaupper, "inputs.initrd.sha256");
	expect_bad(e_relpath, "inputs.qemu.path must be absolute");
	expect_bad(e_nover, "\"version\"");
}

static void test_not_json(void **state)
{
	struct snap_meta m;
	struct avm_error err = { 0 };

	assert_int_equal(snap_meta_parse("{", &m, &err), -EBADMSG);
	assert_int_equal(snap_meta_parse("[1]", &m, &err), -EBADMSG);
	assert_int_equal(snap_meta_parse("", &m, &err), -EBADMSG);
}

/*
 * A truncated meta.json read without an error struct (restore's early flag check) is a failure,
 * not a success with an empty meta: that NULL path crashed restore with SIGSEGV.
 */
static void test_truncated_meta_no_err(void **state)
{
	char root[] = "/tmp/avm-unit-snapt.XXXXXX", path[PATH_MAX + 32];
	struct snap_meta m;
	struct avm_error err = { 0 };
	FILE *f;

	assert_non_null(mkdtemp(root));
	setenv("AGENTVM_SNAPSHOT_DIR", root, 1);
	snprintf(path, sizeof(path), "%s/t1", root);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/t1/meta.json", root);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"format\":1,", f);
	fclose(f);
	assert_true(snap_load("t1", &m, NULL) < 0);
	assert_int_equal(snap_load("t1", &m, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "damaged"));
	unlink(path);
	snprintf(path, sizeof(path), "%s/t1", root);
	rmdir(path);
	rmdir(root);
	unsetenv("AGENTVM_SNAPSHOT_DIR");
}

static void test_new_york_time(void **state)
{
	char buf[64];

	setenv("TZ", "UTC", 1);
	snap_time_ny(1795950000, buf, sizeof(buf)); /* 2026-11-29 11:00:00 UTC: EST */
	assert_string_equal(buf, "2026-11-29T06:00:00-05:00");
	snap_time_ny(1783000000, buf, sizeof(buf)); /* 2026-07-02 13:46:40 UTC: EDT */
	assert_string_equal(buf, "2026-07-02T09:46:40-04:00");
	assert_string_equal(getenv("TZ"), "UTC"); /* the caller's zone is left alone */
}

static void test_sha256(void **state)
{
	struct sha256 s;
	uint8_t d[32];
	char hex[65];
	static const char *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

	sha256_init(&s);
	sha256_update(&s, "abc", 3);
	sha256_final(&s, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	assert_string_equal(hex, abc);
	/* Two blocks, fed in odd pieces. */
	const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	sha256_init(&s);
	for (size_t i = 0; i < strlen(m2); i += 7)
		sha256_update(&s, m2 + i, strlen(m2) - i < 7 ? strlen(m2) - i : 7);
	sha256_final(&s, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* Count the entries of the hash cache. */
static int cache_entries(const char *root)
{
	char cmd[PATH_MAX + 64];
	int n = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ls %s/hashes 2>/dev/null | wc -l", root);
	p = popen(cmd, "r");
	if (p && fscanf(p, "%d", &n) != 1)
		n = -1;
	if (p)
		pclose(p);
	return n;
}

static void write_at(const char *file, const char *text, time_t mtime)
{
	FILE *f = fopen(file, "w");
	struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };

	fputs(text, f);
	fclose(f);
	assert_int_equal(utimensat(AT_FDCWD, file, ts, 0), 0);
}

/*
 * Recorded hashes are cached by file identity (device, inode, size, mtime, ctime) once the file
 * has settled; a change is never a hit, even with the old mtime put back (ctime moves).
 */
static void test_input_hash_cache(void **state)
{
	char root[] = "/tmp/avm-unit-snap.XXXXXX", file[PATH_MAX], cmd[PATH_MAX + 16];
	struct file_input a = { 0 }, b = { 0 }, c = { 0 };
	struct avm_error err = { 0 };
	time_t old = time(NULL) - 3600;

	assert_non_null(mkdtemp(root));
	setenv("AGENTVM_CACHE_DIR", root, 1);
	snprintf(file, sizeof(file), "%s/img", root);
	/* Just written (ctime is now): hashed, not cached. */
	write_at(file, "abc", old);
	assert_int_equal(file_input_record(&a, file, &err), 0);
	assert_string_equal(a.sha256,
			    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(cache_entries(root), 0);
	/* A changed file with its old mtime put back hashes anew (a hit needs a settled ctime,
	 * which a unit test cannot wait for; test_disk.sh checks that saves fill the cache). */
	write_at(file, "abd", old);
	assert_int_equal(file_input_record(&b, file, &err), 0);
	assert_string_not_equal(b.sha256, a.sha256);
	assert_int_equal(file_input_record(&c, file, &err), 0);
	assert_string_equal(c.sha256, b.sha256);
	free(a.path);
	free(b.path);
	free(c.path);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
	unsetenv("AGENTVM_CACHE_DIR");
}

static void test_names(void **state)
{
	assert_int_equal(snap_validate_name("base-1.2_x", NULL), 0);
	assert_int_equal(snap_validate_name("", NULL), -EINVAL);
	assert_int_equal(snap_validate_name(".hidden", NULL), -EINVAL);
	assert_int_equal(snap_validate_name("a/b", NULL), -EINVAL);
}

static int argv_has(char **v, const char *a, const char *b)
{
	for (; v[0] && v[1]; v++)
		if (!strcmp(v[0], a) && (!b || !strcmp(v[1], b)))
			return 1;
	return 0;
}

/* A restore's QEMU: the same device set plus -incoming defer; CoW clones map RAM from a file
 * under the machine's default RAM id, so streams of ordinary VMs load into the template. */
static void test_restore_argv(void **state)
{
	struct qemu_config c = {
		.qemu = "/usr/bin/qemu-system-x86_64", .kernel = "/k", .initrd = "/i",
		.accel = VM_ACCEL_TCG, .cpus = 1, .memory_mib = 512, .qmp_fd = 3, .agent_fd = 4,
		.console_fd = 7,
	};
	struct strv a = { 0 };

	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_false(argv_has(a.v, "-incoming", NULL));
	assert_false(argv_has(a.v, "-object", "memory-backend-file,id=microvm.ram,size=512M,"
					     "mem-path=/s/cow-mem,share=off"));
	strv_release(&a);

	c.incoming = 1;
	c.mem_path = "/s/cow-mem";
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_true(argv_has(a.v, "-incoming", "defer"));
	assert_true(argv_has(a.v, "-object", "memory-backend-file,id=microvm.ram,size=512M,"
					    "mem-path=/s/cow-mem,share=off"));
	assert_true(argv_has(a.v, "-M", "memory-backend=microvm.ram"));
	assert_true(argv_has(a.v, "-S", NULL));
	strv_release(&a);

	c.mem_share = 1;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_true(argv_has(a.v, "-object", "memory-backend-file,id=microvm.ram,size=512M,"
					    "mem-path=/s/cow-mem,share=on"));
	strv_release(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_validation),
		cmocka_unit_test(test_not_json),     cmocka_unit_test(test_new_york_time),
		cmocka_unit_test(test_sha256),       cmocka_unit_test(test_names),
		cmocka_unit_test(test_restore_argv), cmocka_unit_test(test_disk_inputs),
		cmocka_unit_test(test_input_hash_cache), cmocka_unit_test(test_truncated_meta_no_err),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
