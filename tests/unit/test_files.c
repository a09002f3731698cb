/* SPDX-License-Identifier: MIT */
/*
 * files_untar(): what a hostile guest may send to `agentvm cp` and what must come of it on the
 * host. Each archive is built with libarchive in memory, fed through a pipe, unpacked into a
 * fresh directory inside a scratch root; nothing may appear outside that directory.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "vm/files.h"

struct ent {
	const char *path;
	mode_t type; /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, ... */
	unsigned mode;
	const char *data; /* file content, or symlink target */
	const char *hardlink;
};

static char root[64], dest[128];

static int rm_one(const char *p, const struct stat *st, int f, struct FTW *w)
{
	(void)st;
	(void)f;
	(void)w;
	return remove(p);
}

static int setup(void **state)
{
	(void)state;
	strcpy(root, "/tmp/avm-test-files-XXXXXX");
	assert_non_null(mkdtemp(root));
	snprintf(dest, sizeof(dest), "%s/dest", root);
	assert_int_equal(mkdir(dest, 0755), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* Build the archive and unpack it; returns files_untar()'s result. */
static int untar(const struct ent *e, size_t n, struct avm_error *err)
{
	static char buf[1 << 20];
	size_t used = 0;
	struct archive *a = archive_write_new();
	int p[2], r, cwd = open(".", O_RDONLY | O_DIRECTORY);

	archive_write_set_format_pax_restricted(a);
	assert_int_equal(archive_write_open_memory(a, buf, sizeof(buf), &used), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		archive_entry_set_pathname(ae, e[i].path);
		archive_entry_set_filetype(ae, e[i].type);
		archive_entry_set_perm(ae, e[i].mode);
		archive_entry_set_uid(ae, 4242);
		archive_entry_set_gid(ae, 4242);
		if (e[i].hardlink)
			archive_entry_set_hardlink(ae, e[i].hardlink);
		if (e[i].type == AE_IFLNK)
			archive_entry_set_symlink(ae, e[i].data);
		if (e[i].type == AE_IFCHR)
			archive_entry_set_rdev(ae, makedev(1, 3));
		if (e[i].type == AE_IFREG && e[i].data)
			archive_entry_set_size(ae, (la_int64_t)strlen(e[i].data));
		assert_true(archive_write_header(a, ae) >= ARCHIVE_WARN);
		if (e[i].type == AE_IFREG && e[i].data)
			archive_write_data(a, e[i].data, strlen(e[i].data));
		archive_entry_free(ae);
	}
	archive_write_close(a);
	archive_write_free(a);

	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		for (size_t off = 0; off < used;) {
			ssize_t w = write(p[1], buf + off, used - off);
			if (w <= 0)
				_exit(0);
			off += (size_t)w;
		}
		_exit(0);
	}
	close(p[1]);
	r = files_untar(p[0], dest, "N", false, err);
	close(p[0]);
	waitpid(pid, NULL, 0);
	assert_int_equal(fchdir(cwd), 0);
	close(cwd);
	return r;
}

static bool exists(const char *rel)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	return lstat(p, &st) == 0;
}

static void test_good_tree(void **state)
{
	const struct ent e[] = {
		{ "N", AE_IFDIR, 0751, NULL, NULL },
		{ "N/a.txt", AE_IFREG, 0640, "hello", NULL },
		{ "N/link", AE_IFLNK, 0777, "/etc/passwd", NULL },
		{ "N/ro", AE_IFDIR, 0555, NULL, NULL },
		{ "N/ro/f", AE_IFREG, 0644, "x", NULL },
	};
	struct avm_error err = { 0 };
	struct stat st;
	char p[512], t[64];

	assert_int_equal(untar(e, 5, &err), 0);
	snprintf(p, sizeof(p), "%s/N/a.txt", dest);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_uid, getuid()); /* never the archive's 4242 */
	snprintf(p, sizeof(p), "%s/N/link", dest);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISLNK(st.st_mode)); /* kept as a link, not followed */
	assert_int_equal(readlink(p, t, sizeof(t)), 11);
	snprintf(p, sizeof(p), "%s/N/ro", dest);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0555); /* a read-only dir still took its file */
	assert_true(exists("dest/N/ro/f"));
	(void)state;
}

static void test_dotdot_refused(void **state)
{
	const struct ent e[] = { { "N/../../escaped", AE_IFREG, 0644, "x", NULL } };
	struct avm_error err = { 0 };

	assert_true(untar(e, 1, &err) < 0);
	assert_false(exists("escaped"));
	(void)state;
}

static void test_absolute_refused(void **state)
{
	char path[128];
	struct ent e[] = { { path, AE_IFREG, 0644, "x", NULL } };
	struct avm_error err = { 0 };

	snprintf(path, sizeof(path), "%s/abs-escaped", root);
	assert_true(untar(e, 1, &err) < 0);
	assert_false(exists("abs-escaped"));
	(void)state;
}

static void test_other_top_refused(void **state)
{
	const struct ent e[] = { { "N", AE_IFDIR, 0755, NULL, NULL },
				 { "M/x", AE_IFREG, 0644, "x", NULL } };
	struct avm_error err = { 0 };

	assert_true(untar(e, 2, &err) < 0);
	assert_false(exists("dest/M"));
	(void)state;
}

static void test_write_through_symlink_refused(void **state)
{
	char target[128];
	struct ent e[] = { { "N", AE_IFDIR, 0755, NULL, NULL },
			   { "N/l", AE_IFLNK, 0777, target, NULL },
			   { "N/l/planted", AE_IFREG, 0644, "x", NULL } };
	struct avm_error err = { 0 };

	snprintf(target, sizeof(target), "%s", root);
	assert_true(untar(e, 3, &err) < 0);
	assert_false(exists("planted"));
	(void)state;
}

static void test_symlink_then_file_same_name(void **state)
{
	/* A symlink, then a file of the same name: the file must not be written through it. */
	char target[128];
	struct ent e[] = { { "N", AE_IFDIR, 0755, NULL, NULL },
			   { "N/f", AE_IFLNK, 0777, target, NULL },
			   { "N/f", AE_IFREG, 0644, "pwned", NULL } };
	struct avm_error err = { 0 };

	snprintf(target, sizeof(target), "%s/victim", root);
	struct stat st;
	char p[512];
	int r = untar(e, 3, &err);

	/* Refused, or the link replaced by the file: never the target written. */
	assert_false(exists("victim"));
	snprintf(p, sizeof(p), "%s/N/f", dest);
	if (r == 0) {
		assert_int_equal(lstat(p, &st), 0);
		assert_true(S_ISREG(st.st_mode));
	}
	(void)state;
}

static void test_suid_device_hardlink_dropped(void **state)
{
	const struct ent e[] = { { "N", AE_IFDIR, 0755, NULL, NULL },
				 { "N/suid", AE_IFREG, 06755, "x", NULL },
				 { "N/null", AE_IFCHR, 0666, NULL, NULL },
				 { "N/hl", AE_IFREG, 0644, NULL, "/etc/passwd" },
				 { "N/hl2", AE_IFREG, 0644, NULL, "N/suid" } };
	struct avm_error err = { 0 };
	struct stat st;
	char p[512];

	assert_int_equal(untar(e, 5, &err), 0);
	snprintf(p, sizeof(p), "%s/N/suid", dest);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_false(exists("dest/N/null"));
	assert_false(exists("dest/N/hl"));
	assert_false(exists("dest/N/hl2"));
	(void)state;
}

static void test_garbage_refused(void **state)
{
	int p[2];
	struct avm_error err = { 0 };
	int cwd = open(".", O_RDONLY | O_DIRECTORY);

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "this is not a tar archive at all", 32), 32);
	close(p[1]);
	assert_true(files_untar(p[0], dest, "N", false, &err) < 0);
	close(p[0]);
	assert_int_equal(fchdir(cwd), 0);
	close(cwd);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good_tree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dotdot_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absolute_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_top_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_through_symlink_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_then_file_same_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suid_device_hardlink_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
