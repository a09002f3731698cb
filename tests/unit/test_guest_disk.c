/* SPDX-License-Identifier: MIT */
/* Guest workspace disks: the agentvm.disk cmdline words and the mount points they may name. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "guest-init/diskcfg.h"
#include "guest-init/netcfg.h"

static void expect_disk(const struct disk_cfg *c, size_t i, const char *serial, const char *dir,
			bool ro)
{
	assert_true(i < c->n);
	assert_string_equal(c->disk[i].serial, serial);
	assert_string_equal(c->disk[i].dir, dir);
	assert_int_equal(c->disk[i].readonly, ro);
}

static void test_contract(void **state)
{
	/* What the host passes, among the kernel's own words and the other agentvm.* keys. */
	const char *line = "console=hvc0 quiet rdinit=/init agentvm.debug=1 agentvm.ip=10.213.0.2/30 "
			   "agentvm.gw=10.213.0.1 agentvm.disk=avm-disk0:/workspace:rw\t"
			   "agentvm.hostname=vm-1 agentvm.disk=avm-disk1:/data:ro "
			   "agentvm.disks=whatever agentvm.future=x virtio_mmio.device=512@0xfeb00e00:12\n";
	struct disk_cfg c;
	struct net_cfg net;
	const char *why = NULL;

	assert_int_equal(diskcfg_parse_cmdline(line, &c, &why), 0);
	assert_null(why);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.rejected, 0);
	expect_disk(&c, 0, "avm-disk0", "/workspace", false);
	expect_disk(&c, 1, "avm-disk1", "/data", true);

	/* The disk words do not disturb the network keys' parser. */
	assert_int_equal(netcfg_parse_cmdline(line, &net, &why), 0);
	assert_true(net.has_addr && net.has_gw);
	assert_string_equal(net.hostname, "vm-1");
}

static void test_nothing(void **state)
{
	struct disk_cfg c;
	const char *why = NULL;

	assert_int_equal(diskcfg_parse_cmdline("", &c, &why), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(diskcfg_parse_cmdline(" \n\t ", &c, &why), 0);
	assert_int_equal(diskcfg_parse_cmdline("console=hvc0 agentvm.ip=10.0.0.2/24", &c, &why), 0);
	assert_int_equal(c.n, 0);
	assert_null(why);
}

static void test_all_eight(void **state)
{
	char line[4096] = "", word[64];
	struct disk_cfg c;
	const char *why = NULL;

	for (int i = 7; i >= 0; i--) {
		snprintf(word, sizeof(word), " agentvm.disk=avm-disk%d:/d%d/x-y_z.%d:%s", i, i, i,
			 i % 2 ? "ro" : "rw");
		strcat(line, word);
	}
	assert_int_equal(diskcfg_parse_cmdline(line, &c, &why), 0);
	assert_int_equal(c.n, 8);
	expect_disk(&c, 0, "avm-disk7", "/d7/x-y_z.7", true);
	expect_disk(&c, 7, "avm-disk0", "/d0/x-y_z.0", false);
}

/* The word is refused with a why containing why_part; the good word next to it still counts. */
static void expect_rejected(const char *bad_word, const char *why_part)
{
	char line[1024];
	struct disk_cfg c;
	const char *why = NULL;

	snprintf(line, sizeof(line), "agentvm.disk=avm-disk0:/workspace:rw %s console=hvc0",
		 bad_word);
	if (diskcfg_parse_cmdline(line, &c, &why) != -EINVAL)
		fail_msg("accepted \"%s\"", bad_word);
	assert_non_null(why);
	if (!strstr(why, why_part))
		fail_msg("\"%s\": why \"%s\" lacks \"%s\"", bad_word, why, why_part);
	assert_int_equal(c.rejected, 1);
	assert_int_equal(c.n, 1);
	expect_disk(&c, 0, "avm-disk0", "/workspace", false);
	/* bad names the refused word, so the log line can quote it */
	assert_int_equal(c.bad_len, (int)strlen(bad_word));
	assert_memory_equal(c.bad, bad_word, strlen(bad_word));
}

static void test_rejects(void **state)
{
	/* shape */
	expect_rejected("agentvm.disk", "needs a value");
	expect_rejected("agentvm.disk=", "must be avm-disk");
	expect_rejected("agentvm.disk=avm-disk1", "must be avm-disk");
	expect_rejected("agentvm.disk=avm-disk1:/data", "must be avm-disk");
	expect_rejected("agentvm.disk=avm-disk1:/data:rw:x", "mode");
	/* serial */
	expect_rejected("agentvm.disk=avm-disk8:/data:rw", "serial");
	expect_rejected("agentvm.disk=avm-disk:/data:rw", "serial");
	expect_rejected("agentvm.disk=avm-disk10:/data:rw", "serial");
	expect_rejected("agentvm.disk=AVM-DISK1:/data:rw", "serial");
	expect_rejected("agentvm.disk=vda:/data:rw", "serial");
	expect_rejected("agentvm.disk=:/data:rw", "serial");
	/* mode */
	expect_rejected("agentvm.disk=avm-disk1:/data:", "mode");
	expect_rejected("agentvm.disk=avm-disk1:/data:RW", "mode");
	expect_rejected("agentvm.disk=avm-disk1:/data:rwx", "mode");
	expect_rejected("agentvm.disk=avm-disk1:/data:r", "mode");
	/* directory */
	expect_rejected("agentvm.disk=avm-disk1:/:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1::rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:data:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/data/:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1://data:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/a//b:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/a/../etc:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/..:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/a/.:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/a,b:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/proc:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/sys/x:rw", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/dev:ro", "directory");
	expect_rejected("agentvm.disk=avm-disk1:/dev/shm:ro", "directory");
	/* A space ends the word (the kernel does not unquote for init): "b:rw" is another word. */
	expect_rejected("agentvm.disk=avm-disk1:/a", "must be avm-disk");
	/* repeats: the later word loses */
	expect_rejected("agentvm.disk=avm-disk0:/data:rw", "serial given twice");
	expect_rejected("agentvm.disk=avm-disk1:/workspace:ro", "directory given twice");
}

static void test_dir_rules(void **state)
{
	static const char *const good[] = {
		"/w", "/workspace", "/a/b/c", "/.hidden", "/a/...", "/a..b", "/x-1_2.3/Y",
		"/procx", "/system", "/devel", "/tmp", "/run/data", "/proc.d", "/home/user/src",
	};
	static const char *const bad[] = {
		"", "/", "//", "a", "./a", "/a/", "/a//b", "/.", "/..", "/a/..", "/a/./b",
		"/a:b", "/a\\b", "/a\nb", "/é", "/proc", "/proc/x", "/sys", "/dev", "/dev/x",
	};
	char longdir[DISKCFG_DIR_MAX + 2];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (!diskcfg_dir_ok(good[i], strlen(good[i])))
			fail_msg("refused \"%s\"", good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (diskcfg_dir_ok(bad[i], strlen(bad[i])))
			fail_msg("accepted \"%s\"", bad[i]);
	}
	/* Length-delimited: what follows len is not looked at. */
	assert_true(diskcfg_dir_ok("/data:rw", 5));
	assert_false(diskcfg_dir_ok("/data\0", 6));

	/* 255 is the limit, inclusive. */
	memset(longdir, 'a', sizeof(longdir));
	longdir[0] = '/';
	for (size_t i = 100; i < sizeof(longdir); i += 100)
		longdir[i] = '/';
	assert_true(diskcfg_dir_ok(longdir, DISKCFG_DIR_MAX));
	assert_false(diskcfg_dir_ok(longdir, DISKCFG_DIR_MAX + 1));

	char line[400];
	struct disk_cfg c;
	const char *why = NULL;

	snprintf(line, sizeof(line), "agentvm.disk=avm-disk3:%.*s:ro", DISKCFG_DIR_MAX, longdir);
	assert_int_equal(diskcfg_parse_cmdline(line, &c, &why), 0);
	assert_int_equal(strlen(c.disk[0].dir), DISKCFG_DIR_MAX);
	snprintf(line, sizeof(line), "agentvm.disk=avm-disk3:%.*s:ro", DISKCFG_DIR_MAX + 1,
		 longdir);
	assert_int_equal(diskcfg_parse_cmdline(line, &c, &why), -EINVAL);
	assert_int_equal(c.n, 0);
}

static void test_many_bad(void **state)
{
	struct disk_cfg c;
	const char *why = NULL;

	/* Every bad word is counted; why and bad name the first; good words on both sides apply. */
	assert_int_equal(diskcfg_parse_cmdline("agentvm.disk=avm-disk9:/a:rw "
					       "agentvm.disk=avm-disk2:/b:rw "
					       "agentvm.disk=avm-disk3:/c:xx "
					       "agentvm.disk=avm-disk2:/d:ro "
					       "agentvm.disk=avm-disk4:/e:ro",
					       &c, &why),
			 -EINVAL);
	assert_int_equal(c.rejected, 3);
	assert_non_null(strstr(why, "serial"));
	assert_int_equal(c.bad_len, (int)strlen("agentvm.disk=avm-disk9:/a:rw"));
	assert_int_equal(c.n, 2);
	expect_disk(&c, 0, "avm-disk2", "/b", false);
	expect_disk(&c, 1, "avm-disk4", "/e", true);

	/* Only refused words count: a good parse after a bad one is clean again. */
	assert_int_equal(diskcfg_parse_cmdline("agentvm.disk=avm-disk0:/w:rw", &c, &why), 0);
	assert_int_equal(c.rejected, 0);
	assert_int_equal(c.n, 1);
}

static void test_nested(void **state)
{
	struct disk_cfg c;
	const char *why = NULL;

	/* A disk inside another's directory is allowed (disk.c mounts the parent first). */
	assert_int_equal(diskcfg_parse_cmdline("agentvm.disk=avm-disk5:/w/cache:rw "
					       "agentvm.disk=avm-disk6:/w:rw",
					       &c, &why),
			 0);
	assert_int_equal(c.n, 2);
	expect_disk(&c, 0, "avm-disk5", "/w/cache", false);
}

static void test_root(void **state)
{
	struct disk_cfg c;
	const char *why = NULL;

	/* The root image is not a workspace disk: it is recorded apart and never mounted as one. */
	assert_int_equal(diskcfg_parse_cmdline("agentvm.disk=avm-disk0:/workspace:rw "
					       "agentvm.root=avm-disk1",
					       &c, &why),
			 0);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.root, "avm-disk1");
	expect_disk(&c, 0, "avm-disk0", "/workspace", false);

	assert_int_equal(diskcfg_parse_cmdline("console=hvc0", &c, &why), 0);
	assert_string_equal(c.root, "");
	assert_int_equal(diskcfg_parse_cmdline("agentvm.rootx=avm-disk1", &c, &why), 0);
	assert_string_equal(c.root, "");

	/* Bad serials, a second root word, and a root that is also a workspace disk. */
	assert_int_equal(diskcfg_parse_cmdline("agentvm.root=avm-disk8", &c, &why), -EINVAL);
	assert_string_equal(c.root, "");
	assert_int_equal(diskcfg_parse_cmdline("agentvm.root=", &c, &why), 0);
	assert_int_equal(diskcfg_parse_cmdline("agentvm.root=/dev/vda", &c, &why), -EINVAL);
	assert_int_equal(diskcfg_parse_cmdline("agentvm.root=avm-disk1 agentvm.root=avm-disk2", &c,
					       &why),
			 -EINVAL);
	assert_string_equal(c.root, "avm-disk1");
	assert_int_equal(c.rejected, 1);
	assert_int_equal(diskcfg_parse_cmdline("agentvm.root=avm-disk1 "
					       "agentvm.disk=avm-disk1:/w:rw",
					       &c, &why),
			 -EINVAL);
	assert_int_equal(c.n, 0);
	assert_string_equal(c.root, "avm-disk1");
	assert_int_equal(diskcfg_parse_cmdline("agentvm.disk=avm-disk1:/w:rw "
					       "agentvm.root=avm-disk1",
					       &c, &why),
			 -EINVAL);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.root, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_contract),  cmocka_unit_test(test_nothing),
		cmocka_unit_test(test_all_eight), cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_dir_rules), cmocka_unit_test(test_many_bad),
		cmocka_unit_test(test_nested),    cmocka_unit_test(test_root),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
