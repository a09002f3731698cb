// SPDX-License-Identifier: MIT
/*
 * test_nf_pool.c - address leases: arithmetic, distinctness (also across processes), exhaustion,
 * release + reuse, gc, and bad pool strings. Runs in a private temporary directory; no root.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "netfilter/nf.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/avmt-pool.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *ip(struct in_addr a)
{
	static char buf[4][INET_ADDRSTRLEN];
	static int i;

	i = (i + 1) % 4;
	return inet_ntop(AF_INET, &a, buf[i], sizeof(buf[i]));
}

static struct nf_pool *pool_new(const char *cidr)
{
	struct avm_error e = { 0 };
	struct nf_pool *p = NULL;

	assert_int_equal(nf_pool_new(cidr, dir, &p, &e), 0);
	assert_non_null(p);
	return p;
}

static void test_default_pool_arithmetic(void **state)
{
	struct nf_pool *p = pool_new(NULL);
	struct avm_error e = { 0 };
	struct nf_lease l;

	assert_int_equal(nf_pool_size(p), 16384);
	assert_int_equal(nf_pool_addr(p, 0, &l, &e), 0);
	assert_string_equal(ip(l.network), "10.213.0.0");
	assert_string_equal(ip(l.host), "10.213.0.1");
	assert_string_equal(ip(l.guest), "10.213.0.2");
	assert_int_equal(l.prefixlen, 30);
	assert_int_equal(nf_pool_addr(p, 65, &l, &e), 65);
	assert_string_equal(ip(l.network), "10.213.1.4");
	assert_string_equal(ip(l.host), "10.213.1.5");
	assert_string_equal(ip(l.guest), "10.213.1.6");
	assert_int_equal(nf_pool_addr(p, 16383, &l, &e), 16383);
	assert_string_equal(ip(l.guest), "10.213.255.254");
	assert_int_equal(nf_pool_addr(p, 16384, &l, &e), -ERANGE);
	nf_pool_free(p);
}

static void test_alloc_distinct_and_owner(void **state)
{
	struct nf_pool *p = pool_new("10.213.0.0/22"); /* 256 /30s */
	struct avm_error e = { 0 };
	static uint8_t seen[256];
	struct nf_lease l, *v;
	char owner[32];
	int n;

	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 200; i++) {
		snprintf(owner, sizeof(owner), "vm-%d", i);
		int k = nf_pool_alloc(p, owner, &l, &e);
		assert_true(k >= 0 && k < 256);
		assert_int_equal(seen[k], 0);
		seen[k] = 1;
		assert_string_equal(l.owner, owner);
	}
	n = nf_pool_list(p, &v, &e);
	assert_int_equal(n, 200);
	for (int i = 1; i < n; i++)
		assert_true(v[i - 1].index < v[i].index);
	free(v);
	assert_true(nf_pool_find(p, "vm-123", &l, &e) >= 0);
	assert_string_equal(l.owner, "vm-123");
	assert_int_equal(nf_pool_find(p, "nope", &l, &e), -ENOENT);
	nf_pool_free(p);
}

/* Many processes allocating at once never share a /30. */
static void test_alloc_concurrent_processes(void **state)
{
	enum { PROCS = 8, EACH = 16 };
	struct nf_pool *p = pool_new("10.213.0.0/24"); /* 64 /30s, 128 requests: half fail */
	struct avm_error e = { 0 };
	struct nf_lease *v;
	pid_t pids[PROCS];
	int n, st;

	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct nf_lease l;
			char owner[32];

			for (int j = 0; j < EACH; j++) {
				snprintf(owner, sizeof(owner), "p%d-%d", i, j);
				int r = nf_pool_alloc(p, owner, &l, NULL);
				if (r < 0 && r != -ENOSPC)
					_exit(1);
			}
			_exit(0);
		}
	}
	for (int i = 0; i < PROCS; i++) {
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	n = nf_pool_list(p, &v, &e);
	assert_int_equal(n, 64); /* full, and list() is sorted: distinct iff strictly increasing */
	for (int i = 1; i < n; i++)
		assert_true(v[i - 1].index < v[i].index);
	for (int i = 0; i < n; i++)
		assert_true(v[i].owner[0] == 'p');
	free(v);
	nf_pool_free(p);
}

static void test_exhaustion_release_reuse(void **state)
{
	struct nf_pool *p = pool_new("192.168.77.16/28"); /* 4 /30s */
	struct avm_error e = { 0 };
	struct nf_lease l;

	assert_int_equal(nf_pool_size(p), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(nf_pool_alloc(p, "vm", &l, &e), i);
	assert_string_equal(ip(l.guest), "192.168.77.30");
	assert_int_equal(nf_pool_alloc(p, "vm5", &l, &e), -ENOSPC);
	assert_int_equal(e.code, -ENOSPC);
	assert_non_null(strstr(e.msg, "exhausted"));
	assert_int_equal(nf_pool_release(p, 2, &e), 0);
	assert_int_equal(nf_pool_release(p, 2, &e), -ENOENT);
	assert_int_equal(nf_pool_release(p, 9, &e), -ERANGE);
	assert_int_equal(nf_pool_alloc(p, "again", &l, &e), 2);
	assert_string_equal(ip(l.host), "192.168.77.25");
	nf_pool_free(p);
}

static bool alive_even(const char *owner, void *ud)
{
	(*(int *)ud)++;
	return (atoi(owner + 2) % 2) == 0;
}

static void test_gc(void **state)
{
	struct nf_pool *p = pool_new("10.213.0.0/26");
	struct avm_error e = { 0 };
	struct nf_lease l, *v;
	char owner[16], path[128];
	int calls = 0, n;
	FILE *f;

	for (int i = 0; i < 10; i++) {
		snprintf(owner, sizeof(owner), "vm%d", i);
		assert_int_equal(nf_pool_alloc(p, owner, &l, &e), i);
	}
	/* A temp file left by an allocator that died: a reaped child's pid. */
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	snprintf(path, sizeof(path), "%s/.tmp.%d.0", dir, (int)dead);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);

	assert_int_equal(nf_pool_gc(p, alive_even, &calls, &e), 5);
	assert_int_equal(calls, 10);
	assert_int_equal(access(path, F_OK), -1);
	n = nf_pool_list(p, &v, &e);
	assert_int_equal(n, 5);
	for (int i = 0; i < n; i++)
		assert_int_equal(atoi(v[i].owner + 2) % 2, 0);
	free(v);
	nf_pool_free(p);
}

static void test_foreign_files_ignored(void **state)
{
	struct nf_pool *p = pool_new("10.213.0.0/29");
	struct avm_error e = { 0 };
	struct nf_lease l, *v;
	char path[128];
	FILE *f;

	/* Leases of another pool in the same directory, junk, misaligned addresses. */
	const char *names[] = { "10.99.0.0", "junk", "10.213.0.1", "10.213.0.8" };
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		f = fopen(path, "w");
		assert_non_null(f);
		fputs("other\n", f);
		fclose(f);
	}
	assert_int_equal(nf_pool_list(p, &v, &e), 0);
	assert_null(v);
	assert_int_equal(nf_pool_alloc(p, "a", &l, &e), 0);
	assert_int_equal(nf_pool_alloc(p, "b", &l, &e), 1);
	assert_int_equal(nf_pool_alloc(p, "c", &l, &e), -ENOSPC);
	nf_pool_free(p);
}

static void test_bad_pool_strings(void **state)
{
	const char *bad[] = { "", "10.213.0.0", "10.213.0.0/", "10.213.0.0/31", "10.213.0.0/32",
			      "10.213.0.0/7", "10.213.0.1/16", "10.213.0.0/16x", "10.213.0/16",
			      "300.1.1.1/16", "10.213.0.0/-4", "10.213.0.0/+16", "::1/64",
			      "10.213.0.0/99999999999999999999" };
	struct avm_error e = { 0 };
	struct nf_pool *p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&e, 0, sizeof(e));
		p = (struct nf_pool *)1;
		assert_int_equal(nf_pool_new(bad[i], dir, &p, &e), -EINVAL);
		assert_null(p);
		assert_int_equal(e.code, -EINVAL);
		assert_non_null(strstr(e.msg, "pool"));
		assert_null(strchr(e.msg, '\n'));
	}
	assert_int_equal(nf_pool_new("10.213.0.0/30", dir, &p, &e), 0);
	assert_int_equal(nf_pool_size(p), 1);
	nf_pool_free(p);
	assert_int_equal(nf_pool_new(NULL, NULL, &p, &e), -EINVAL);
	assert_int_equal(nf_pool_new(NULL, "/nonexistent-avmt/x", &p, &e), -ENOENT);
	nf_pool_free(NULL);
}

static void test_bad_owner(void **state)
{
	struct nf_pool *p = pool_new(NULL);
	struct avm_error e = { 0 };
	struct nf_lease l;
	char longname[80];

	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(nf_pool_alloc(p, "", &l, &e), -EINVAL);
	assert_int_equal(nf_pool_alloc(p, ".hidden", &l, &e), -EINVAL);
	assert_int_equal(nf_pool_alloc(p, "a b", &l, &e), -EINVAL);
	assert_int_equal(nf_pool_alloc(p, "a\"b", &l, &e), -EINVAL);
	assert_int_equal(nf_pool_alloc(p, longname, &l, &e), -EINVAL);
	assert_int_equal(nf_pool_alloc(p, "ok-name_1.2", &l, &e), 0);
	nf_pool_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_default_pool_arithmetic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_distinct_and_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_concurrent_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exhaustion_release_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_files_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_pool_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_owner, setup, teardown),
	};

	return cmocka_run_group_tests_name("nf_pool", tests, NULL, NULL);
}
