/* SPDX-License-Identifier: MIT */
/* guest-init/tar.c: the guest's tar reader and header writer, and its path rules. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guest-init/tar.h"

struct mem {
	const uint8_t *p;
	size_t len, off;
};

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
	struct mem *m = ctx;
	size_t k = m->len - m->off < n ? m->len - m->off : n;

	memcpy(buf, m->p + m->off, k);
	m->off += k;
	return (ssize_t)k;
}

static uint8_t arc[64 * 1024];

/* Append one entry (header + data + padding) at *len. */
static void add(size_t *len, enum tar_type t, const char *path, const char *link,
		const char *data)
{
	struct tar_entry e = { .type = t, .mode = 0640, .mtime = 1700000000 };
	int n;

	snprintf(e.path, sizeof(e.path), "%s", path);
	snprintf(e.link, sizeof(e.link), "%s", link ? link : "");
	e.size = data ? strlen(data) : 0;
	n = tar_header_encode(&e, arc + *len);
	assert_true(n > 0 && n % TAR_BLOCK == 0);
	*len += (size_t)n;
	if (data) {
		memcpy(arc + *len, data, e.size);
		*len += (e.size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
	}
}

static void test_roundtrip(void **state)
{
	char longname[300], got[16];
	size_t len = 0;
	struct tar_entry e;
	struct tar_reader r;
	const char *why;

	memset(arc, 0, sizeof(arc));
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = 'N';
	longname[1] = '/';
	longname[sizeof(longname) - 1] = '\0';
	add(&len, TAR_DIR, "N", NULL, NULL);
	add(&len, TAR_FILE, "N/f", NULL, "hello world");
	add(&len, TAR_FILE, longname, NULL, "x");
	add(&len, TAR_SYMLINK, "N/l", "/etc/passwd", NULL);
	len += 2 * TAR_BLOCK;

	struct mem m = { arc, len, 0 };
	tar_reader_init(&r, mem_read, &m);
	assert_int_equal(tar_next(&r, &e, &why), 1);
	assert_int_equal(e.type, TAR_DIR);
	assert_string_equal(e.path, "N");
	assert_int_equal(tar_next(&r, &e, &why), 1);
	assert_int_equal(e.type, TAR_FILE);
	assert_int_equal(e.size, 11);
	assert_int_equal(e.mode, 0640);
	assert_int_equal(e.mtime, 1700000000);
	assert_int_equal(tar_read_data(&r, got, 5, &why), 5);
	assert_memory_equal(got, "hello", 5);
	/* The rest of the data is skipped by the next tar_next(). */
	assert_int_equal(tar_next(&r, &e, &why), 1);
	assert_string_equal(e.path, longname); /* from the pax record */
	assert_int_equal(tar_next(&r, &e, &why), 1);
	assert_int_equal(e.type, TAR_SYMLINK);
	assert_string_equal(e.link, "/etc/passwd");
	assert_int_equal(tar_next(&r, &e, &why), 0);
	(void)state;
}

static void test_bad_checksum(void **state)
{
	size_t len = 0;
	struct tar_entry e;
	struct tar_reader r;
	const char *why = NULL;

	memset(arc, 0, sizeof(arc));
	add(&len, TAR_FILE, "N/f", NULL, "data");
	arc[0] ^= 1;
	struct mem m = { arc, len + 1024, 0 };
	tar_reader_init(&r, mem_read, &m);
	assert_int_equal(tar_next(&r, &e, &why), -EINVAL);
	assert_non_null(strstr(why, "checksum"));
	(void)state;
}

static void test_truncated(void **state)
{
	size_t len = 0;
	struct tar_entry e;
	struct tar_reader r;
	const char *why = NULL;
	char buf[64];

	memset(arc, 0, sizeof(arc));
	add(&len, TAR_FILE, "N/f", NULL, "0123456789");
	/* The stream stops after 4 data bytes: an error, never a complete short file. */
	struct mem m = { arc, TAR_BLOCK + 4, 0 };
	tar_reader_init(&r, mem_read, &m);
	assert_int_equal(tar_next(&r, &e, &why), 1);
	assert_int_equal(tar_read_data(&r, buf, sizeof(buf), &why), 4);
	assert_true(tar_read_data(&r, buf, sizeof(buf), &why) < 0);
	(void)state;
}

static void test_no_end_blocks(void **state)
{
	struct tar_entry e;
	struct tar_reader r;
	const char *why = NULL;
	struct mem m = { arc, 0, 0 };

	tar_reader_init(&r, mem_read, &m);
	assert_true(tar_next(&r, &e, &why) < 0);
	(void)state;
}

static void test_huge_pax_refused(void **state)
{
	size_t len = 0;
	struct tar_entry e = { .type = TAR_FILE, .mode = 0644 };
	struct tar_reader r;
	const char *why = NULL;

	/* An 'x' header claiming a 1 GiB record must be refused, not allocated. */
	memset(arc, 0, sizeof(arc));
	snprintf(e.path, sizeof(e.path), "N/f");
	e.size = 1u << 30;
	len = (size_t)tar_header_encode(&e, arc);
	arc[156] = 'x';
	/* Recompute the checksum for the changed type. */
	memset(arc + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < TAR_BLOCK; i++)
		sum += arc[i];
	snprintf((char *)arc + 148, 8, "%06o", sum);
	arc[155] = ' ';
	struct mem m = { arc, len + 1024, 0 };
	tar_reader_init(&r, mem_read, &m);
	assert_int_equal(tar_next(&r, &e, &why), -E2BIG);
	(void)state;
}

static void test_path_split(void **state)
{
	char buf[TAR_PATH_MAX];
	const char *c[TAR_MAX_DEPTH];

	assert_int_equal(tar_path_split("a/b/c", buf, c), 3);
	assert_string_equal(c[2], "c");
	assert_int_equal(tar_path_split("./a//./b/", buf, c), 2);
	assert_int_equal(tar_path_split("a/../b", buf, c), -EINVAL);
	assert_int_equal(tar_path_split("..", buf, c), -EINVAL);
	assert_int_equal(tar_path_split("/etc/passwd", buf, c), -EINVAL);
	assert_int_equal(tar_path_split("./.", buf, c), -EINVAL);
	assert_int_equal(tar_path_split("", buf, c), -EINVAL);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_bad_checksum),
		cmocka_unit_test(test_truncated),   cmocka_unit_test(test_no_end_blocks),
		cmocka_unit_test(test_huge_pax_refused), cmocka_unit_test(test_path_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
