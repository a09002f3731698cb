/* SPDX-License-Identifier: MIT */
/*
 * Boot templates: the shape key (every input changes it, a TCG template never answers for a
 * KVM launch), the template cmdline (no per-run word), and the cache's housekeeping (rm, gc by
 * age, the LRU size bound, leftovers of killed builds) on fake templates.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vm/boot_cache.h"
#include "vm/qemu_argv.h"
#include "base/util.h"

static void base_shape(struct boot_shape *sh)
{
	memset(sh, 0, sizeof(*sh));
	snprintf(sh->agentvm, sizeof(sh->agentvm), "build %064d", 1);
	memset(sh->qemu, 'a', 64);
	memset(sh->kernel, 'b', 64);
	memset(sh->initrd, 'c', 64);
	sh->accel = "tcg";
	sh->tsc_khz = 2000000;
	sh->cpus = 1;
	sh->memory_mib = 512;
	sh->share_uid = -1;
}

static void key_of(const struct boot_shape *sh, char key[BOOT_CACHE_KEY_LEN + 1])
{
	char text[2048];

	assert_int_equal(boot_cache_shape_text(sh, text, sizeof(text), key), 0);
}

static void test_key_covers_every_input(void **state)
{
	struct boot_shape sh;
	char k0[BOOT_CACHE_KEY_LEN + 1], k[BOOT_CACHE_KEY_LEN + 1], again[BOOT_CACHE_KEY_LEN + 1];

	(void)state;
	base_shape(&sh);
	key_of(&sh, k0);
	assert_int_equal(strlen(k0), BOOT_CACHE_KEY_LEN);
	key_of(&sh, again);
	assert_string_equal(k0, again);
	for (int field = 0; field < 13; field++) {
		base_shape(&sh);
		switch (field) {
		case 0: sh.accel = "kvm"; sh.tsc_khz = 0; break; /* a TCG template is not a KVM one */
		case 1: sh.cpus = 2; break;
		case 2: sh.memory_mib = 2048; break;
		case 3: sh.nic = true; break;
		case 4: snprintf(sh.disks, sizeof(sh.disks), "work-rw"); break;
		case 5: snprintf(sh.disks, sizeof(sh.disks), "root-rw"); break;
		case 6: sh.qemu[0] = 'z'; break;
		case 7: sh.kernel[0] = 'z'; break;
		case 8: sh.initrd[0] = 'z'; break;
		case 9: sh.agentvm[10] = '9'; break;
		case 10: sh.guest_debug = true; break;
		case 11: snprintf(sh.shares, sizeof(sh.shares), "rw"); break;
		case 12: sh.share_uid = 1000; break; /* the user a jailed QEMU runs as */
		}
		key_of(&sh, k);
		if (!strcmp(k, k0))
			fail_msg("field %d does not change the key", field);
	}
	/* Kinds matter, not just the count. */
	base_shape(&sh);
	snprintf(sh.disks, sizeof(sh.disks), "work-ro");
	key_of(&sh, k);
	snprintf(sh.disks, sizeof(sh.disks), "work-rw");
	key_of(&sh, again);
	assert_string_not_equal(k, again);
}

/* The shares' line: count, ro/rw and the container root's security model, and the owner. */
static void test_shape_text_of_shares(void **state)
{
	static const char *const kinds[] = { "rw", "ro", "rw-root", "rw,rw", "ro,rw,rw" };
	char keys[5][BOOT_CACHE_KEY_LEN + 1], text[2048];
	struct boot_shape sh;

	(void)state;
	base_shape(&sh);
	snprintf(sh.shares, sizeof(sh.shares), "ro,rw,rw");
	sh.share_uid = 1000;
	assert_int_equal(boot_cache_shape_text(&sh, text, sizeof(text), keys[0]), 0);
	assert_non_null(strstr(text, "\ndisks \nshares ro,rw,rw\nshare_uid 1000\ndebug 0\n"));
	/* Without shares: an empty line and no owner. */
	base_shape(&sh);
	assert_int_equal(boot_cache_shape_text(&sh, text, sizeof(text), keys[0]), 0);
	assert_non_null(strstr(text, "\nshares \nshare_uid -1\n"));
	for (size_t i = 0; i < 5; i++) {
		base_shape(&sh);
		snprintf(sh.shares, sizeof(sh.shares), "%s", kinds[i]);
		key_of(&sh, keys[i]);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(keys[i], keys[j]))
				fail_msg("shares %s and %s have one key", kinds[i], kinds[j]);
	}
}

static void test_template_cmdline_has_no_run_words(void **state)
{
	struct qemu_disk d[2] = { { .overlay = "/s/disk0.qcow2", .guest_dir = "/", .root = true },
				  { .overlay = "/s/disk1.qcow2", .guest_dir = "/workspace" } };
	struct qemu_share sh[1] = { { .host_dir = "/home/u/ws", .guest_dir = "/data" } };
	struct qemu_config c = { .accel = VM_ACCEL_TCG, .tsc_khz = 1000,
				 .extra_cmdline = "agentvm.ip=10.0.0.2/30 agentvm.hostname=secret",
				 .disks = d, .n_disks = 2, .shares = sh, .n_shares = 1 };
	char *cold, *tpl, *words;

	(void)state;
	cold = qemu_kernel_cmdline(&c);
	c.template_boot = true;
	tpl = qemu_kernel_cmdline(&c);
	words = qemu_guest_boot_words(&c);
	assert_non_null(strstr(cold, "agentvm.hostname=secret"));
	assert_non_null(strstr(cold, "agentvm.root=avm-disk0"));
	assert_null(strstr(cold, "agentvm.template"));
	assert_non_null(strstr(tpl, "agentvm.template=1"));
	assert_null(strstr(tpl, "secret"));
	assert_null(strstr(tpl, "agentvm.ip"));
	assert_null(strstr(tpl, "agentvm.root"));
	assert_null(strstr(tpl, "agentvm.disk"));
	assert_null(strstr(tpl, "agentvm.share")); /* a template's guest mounts no share */
	assert_non_null(strstr(tpl, "tsc_early_khz=1000")); /* the shape's part stays */
	assert_string_equal(words,
			    " agentvm.root=avm-disk0 agentvm.disk=avm-disk1:/workspace:rw"
			    " agentvm.share=avm-share0:/data:rw");
	free(cold);
	free(tpl);
	free(words);
}

static char cache_root[64];

/* A fake template: meta.json is not checked by ls/rm/gc beyond being listed. */
static void fake(const char *key, size_t bytes, time_t used)
{
	char dir[PATH_MAX - 16], p[PATH_MAX];
	struct timespec ts[2] = { { .tv_sec = used }, { .tv_sec = used } };
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/%s", boot_cache_dir(), key);
	assert_int_equal(mkdir_p(dir, 0700), 0);
	snprintf(p, sizeof(p), "%s/mem", dir);
	f = fopen(p, "w");
	for (size_t i = 0; i < bytes; i++)
		fputc('x', f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/lock", dir);
	fclose(fopen(p, "w"));
	snprintf(p, sizeof(p), "%s/used", dir);
	fclose(fopen(p, "w"));
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static bool exists(const char *key)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/%s", boot_cache_dir(), key);
	return access(p, F_OK) == 0;
}

static void test_rm_gc_and_lru(void **state)
{
	struct avm_error err = { 0 };
	struct boot_cache_entry *v;
	unsigned removed;
	size_t n;
	time_t now = time(NULL);
	char tmp[PATH_MAX];

	(void)state;
	snprintf(cache_root, sizeof(cache_root), "/tmp/avm-bc-unit.XXXXXX");
	assert_non_null(mkdtemp(cache_root));
	setenv("AGENTVM_CACHE_DIR", cache_root, 1);
	unsetenv("AGENTVM_BOOT_CACHE_MAX_MB");
	unsetenv("AGENTVM_BOOT_CACHE_MAX_AGE_DAYS");

	fake("00000000000000aa", 4096, now - 30 * 86400); /* unused for 30 days */
	fake("00000000000000bb", 4096, now - 60);
	snprintf(tmp, sizeof(tmp), "%s/.tmp-00000000000000cc-12345678", boot_cache_dir());
	assert_int_equal(mkdir(tmp, 0700), 0);
	struct timespec old[2] = { { .tv_sec = now - 7200 }, { .tv_sec = now - 7200 } };
	assert_int_equal(utimensat(AT_FDCWD, tmp, old, 0), 0);

	assert_int_equal(boot_cache_list(&v, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].key, "00000000000000bb"); /* most recently used first */
	assert_non_null(strstr(v[0].summary, "damaged")); /* no meta.json */
	free(v);

	assert_int_equal(boot_cache_gc(&removed, &err), 0);
	assert_int_equal(removed, 1);
	assert_false(exists("00000000000000aa"));
	assert_true(exists("00000000000000bb"));
	assert_int_equal(access(tmp, F_OK), -1); /* a killed build's leftover */

	/* The size bound: 1 MiB holds one of two 700 KB templates; the older one goes. */
	fake("00000000000000dd", 700 * 1024, now - 10);
	fake("00000000000000ee", 700 * 1024, now - 5);
	setenv("AGENTVM_BOOT_CACHE_MAX_MB", "1", 1);
	assert_int_equal(boot_cache_gc(&removed, &err), 0);
	assert_false(exists("00000000000000bb"));
	assert_false(exists("00000000000000dd"));
	assert_true(exists("00000000000000ee"));
	unsetenv("AGENTVM_BOOT_CACHE_MAX_MB");

	assert_int_equal(boot_cache_remove("nothex", &err), -EINVAL);
	assert_int_equal(boot_cache_remove("00000000000000ff", &err), -ENOENT);
	assert_int_equal(boot_cache_remove("00000000000000ee", &err), 0);
	assert_false(exists("00000000000000ee"));
	assert_int_equal(boot_cache_list(&v, &n, &err), 0);
	assert_int_equal(n, 0);
	free(v);

	setenv("AGENTVM_BOOT_CACHE", "0", 1);
	assert_false(boot_cache_enabled());
	unsetenv("AGENTVM_BOOT_CACHE");
	assert_true(boot_cache_enabled());
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", cache_root);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_covers_every_input),
		cmocka_unit_test(test_shape_text_of_shares),
		cmocka_unit_test(test_template_cmdline_has_no_run_words),
		cmocka_unit_test(test_rm_gc_and_lru),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
