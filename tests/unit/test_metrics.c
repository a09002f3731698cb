/* SPDX-License-Identifier: MIT */
/*
 * Metrics: histogram buckets, the counters files (round trip, retire into the host-wide sums),
 * the anomalies.json reader (fixture file as the audit side writes it), the /proc parsers, the
 * guest STATS payload, and the whole exposition of a fixture state root checked by promtool.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "obs/metrics.h"
#include "report/metrics_render.h"
#include "report/stats.h"
#include "base/util.h"
#include "state/vmstate.h"

static char root[64];

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/avm-test-metrics.XXXXXX");
	if (!mkdtemp(root))
		return -1;
	chmod(root, 0700);
	setenv("AGENTVM_STATE_DIR", root, 1);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	return system(cmd);
}

static void put(const char *dir, const char *file, const char *text)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	assert_int_equal(write_file_atomic(path, text, strlen(text)), 0);
}

static void test_hist_buckets(void **state)
{
	struct metrics_hist h = { 0 };

	metrics_hist_add(&h, 0.003);
	metrics_hist_add(&h, 0.005); /* le is inclusive */
	metrics_hist_add(&h, 0.0051);
	metrics_hist_add(&h, 1000);
	assert_int_equal(h.count, 4);
	assert_int_equal(h.bucket[0], 2);
	assert_int_equal(h.bucket[1], 1);
	assert_int_equal(h.bucket[METRICS_NBOUNDS], 1);
	assert_true(h.sum > 1000.013 && h.sum < 1000.014);
}

static void test_exec_class(void **state)
{
	struct avm_exit_info i = { .kind = AVM_EXIT_CODE, .code = 0 };

	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_OK);
	i.code = 3;
	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_NONZERO);
	i.kind = AVM_EXIT_SIGNAL;
	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_SIGNAL);
	i.kind = AVM_EXIT_TIMEOUT;
	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_TIMEOUT);
	i.kind = AVM_EXIT_OOM;
	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_OOM);
	i.kind = AVM_EXIT_START_FAILED;
	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_START_FAILED);
	i.kind = 99; /* a guest that sends nonsense */
	assert_int_equal(metrics_exec_class_of(&i), METRICS_EXEC_ERROR);
}

static void test_counters_round_trip(void **state)
{
	char dir[128], path[192];
	struct metrics_counters c;

	snprintf(dir, sizeof(dir), "%s/vm1", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/metrics.json", dir);
	/* No file yet: zeros. */
	assert_int_equal(metrics_counters_read(path, &c), 0);
	assert_int_equal(metrics_exec_count(&c), 0);
	metrics_record_ready(dir, false, 1500000);
	metrics_record_ready(dir, true, 200000);
	metrics_record_exec(dir, METRICS_EXEC_OK, 20000);
	metrics_record_exec(dir, METRICS_EXEC_NONZERO, 30000);
	metrics_record_exec(dir, METRICS_EXEC_TIMEOUT, 40000);
	assert_int_equal(metrics_counters_read(path, &c), 0);
	assert_int_equal(c.boot.count, 1);
	assert_int_equal(c.boot.bucket[8], 1); /* 1.5 s: le 2.5 */
	assert_int_equal(c.restore.count, 1);
	assert_int_equal(c.exec.count, 3);
	assert_int_equal(c.results[METRICS_EXEC_OK], 1);
	assert_int_equal(c.results[METRICS_EXEC_NONZERO], 1);
	assert_int_equal(c.results[METRICS_EXEC_TIMEOUT], 1);
	assert_int_equal(metrics_exec_count(&c), 3);
	assert_true(c.exec.sum > 0.0899 && c.exec.sum < 0.0901);
	/* A damaged file reads as zeros, with an error. */
	put(dir, "metrics.json", "{\"exec_seconds\": [");
	assert_int_equal(metrics_counters_read(path, &c), -EBADMSG);
	assert_int_equal(c.exec.count, 0);
	/* Negative or wrong-typed numbers are not taken. */
	put(dir, "metrics.json",
	    "{\"exec_seconds\":{\"count\":-5,\"sum\":\"x\",\"buckets\":[1,-2]},"
	    "\"exec_results\":{\"ok\":-1,\"nonzero\":7}}");
	assert_int_equal(metrics_counters_read(path, &c), 0);
	assert_int_equal(c.exec.count, 0);
	assert_int_equal(c.exec.bucket[0], 1);
	assert_int_equal(c.exec.bucket[1], 0);
	assert_int_equal(c.results[METRICS_EXEC_OK], 0);
	assert_int_equal(c.results[METRICS_EXEC_NONZERO], 7);
}

static void test_retire(void **state)
{
	char a[128], b[128], gone[128], path[192];
	struct metrics_counters c;

	snprintf(a, sizeof(a), "%s/vm-a", root);
	snprintf(b, sizeof(b), "%s/vm-b", root);
	snprintf(gone, sizeof(gone), "%s/.metrics/gone.json", root);
	assert_int_equal(mkdir(a, 0700), 0);
	assert_int_equal(mkdir(b, 0700), 0);
	metrics_record_exec(a, METRICS_EXEC_OK, 1000);
	metrics_record_exec(a, METRICS_EXEC_SIGNAL, 1000);
	metrics_record_exec(b, METRICS_EXEC_OK, 1000);
	metrics_record_ready(b, false, 3000000);
	metrics_retire(a);
	metrics_retire(b);
	metrics_retire(b); /* twice (its file is gone): counted once */
	assert_int_equal(metrics_counters_read(gone, &c), 0);
	assert_int_equal(c.results[METRICS_EXEC_OK], 2);
	assert_int_equal(c.results[METRICS_EXEC_SIGNAL], 1);
	assert_int_equal(c.boot.count, 1);
	assert_int_equal(c.exec.count, 3);
	snprintf(path, sizeof(path), "%s/metrics.json", a);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_anomalies_fixture(void **state)
{
	struct metrics_anomaly a[METRICS_MAX_RULES];
	const char *fix = "{\"rules\": {\"port_scan\": 3, \"dns_rate\": 1, \"Bad Name\": 5, "
			  "\"neg\": -1, \"str\": \"7\", \"x{y}\": 2}}";
	size_t n = metrics_anomalies_parse(fix, strlen(fix), a, METRICS_MAX_RULES);

	assert_int_equal(n, 2);
	assert_string_equal(a[0].rule, "port_scan");
	assert_int_equal(a[0].count, 3);
	assert_string_equal(a[1].rule, "dns_rate");
	assert_int_equal(a[1].count, 1);
	/* Not JSON, no "rules", rules not an object: nothing. */
	assert_int_equal(metrics_anomalies_parse("{\"rules\":", 9, a, METRICS_MAX_RULES), 0);
	assert_int_equal(metrics_anomalies_parse("[]", 2, a, METRICS_MAX_RULES), 0);
	assert_int_equal(metrics_anomalies_parse("{\"rules\":[1]}", 13, a, METRICS_MAX_RULES), 0);
	/* Bounded: never more than asked for. */
	assert_int_equal(metrics_anomalies_parse(fix, strlen(fix), a, 1), 1);
}

static void test_proc_parsers(void **state)
{
	uint64_t t, rss, pss;
	const char *stat = "4242 (qemu (x) y) S 1 2 3 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 "
			   "12345 1000 200\n";
	const char *smaps = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:    204800 kB\n"
			    "Pss:    102400 kB\nPss_Anon: 1 kB\nShared_Clean: 0 kB\n";

	assert_int_equal(stats_parse_proc_stat(stat, &t), 0);
	assert_int_equal(t, 300);
	assert_int_equal(stats_parse_proc_stat("4242 (qemu", &t), -EBADMSG);
	assert_int_equal(stats_parse_smaps_rollup(smaps, &rss, &pss), 0);
	assert_int_equal(rss, 204800ull * 1024);
	assert_int_equal(pss, 102400ull * 1024);
	assert_int_equal(stats_parse_smaps_rollup("Rss: 1 kB\n", &rss, &pss), -EBADMSG);
}

static void test_guest_stats(void **state)
{
	const char *mi = "MemTotal:         496432 kB\nMemFree:          400000 kB\n"
			 "MemAvailable:     450000 kB\nBuffers: 1 kB\n";
	struct avm_guest_stats s, d;
	struct avm_buf b = { 0 };

	assert_int_equal(avm_meminfo_parse(mi, strlen(mi), &s), 0);
	assert_int_equal(s.mem_total, 496432ull * 1024);
	assert_int_equal(s.mem_available, 450000ull * 1024);
	assert_int_equal(avm_meminfo_parse("MemFree: 1 kB\n", 14, &s), -EBADMSG);
	assert_int_equal(avm_meminfo_parse(mi, strlen(mi), &s), 0);
	assert_int_equal(avm_guest_stats_encode(&b, &s), 0);
	assert_int_equal(avm_guest_stats_decode(b.data, b.len, &d), 0);
	assert_int_equal(d.mem_total, s.mem_total);
	assert_int_equal(d.mem_available, s.mem_available);
	/* Truncated, or claiming more available than total: refused. */
	assert_int_equal(avm_guest_stats_decode(b.data, b.len - 1, &d), -EBADMSG);
	avm_buf_release(&b);
	s.mem_available = s.mem_total + 1;
	assert_int_equal(avm_guest_stats_encode(&b, &s), 0);
	assert_int_equal(avm_guest_stats_decode(b.data, b.len, &d), -EBADMSG);
	avm_buf_release(&b);
	assert_int_equal(avm_guest_stats_decode(NULL, 0, &d), -EBADMSG);
}

/* A stopped VM with counters and anomalies: the exposition has them and promtool agrees. */
static void test_render_promtool(void **state)
{
	char dir[128], out[192], cmd[512];
	struct vm_state st = { .state = VMS_STOPPED, .accel = "tcg", .created_ms = 1 };
	struct metrics_pool pool = { .present = true, .ready = 2, .acquired = 1, .waiting = 3,
				     .refill_failures = 4 };
	_cleanup_free_ char *text = NULL;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/box1", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(vmstate_reserve(dir), 0);
	assert_int_equal(vmstate_write(dir, &st), 0);
	metrics_record_ready(dir, false, 2000000);
	metrics_record_exec(dir, METRICS_EXEC_OK, 15000);
	metrics_record_exec(dir, METRICS_EXEC_START_FAILED, 1000);
	put(dir, "anomalies.json", "{\"rules\": {\"port_scan\": 2, \"drop_rate\": 5}}");
	snprintf(out, sizeof(out), "%s/out.prom", root);
	f = fopen(out, "we");
	assert_non_null(f);
	assert_int_equal(metrics_render(f, &pool, NULL), 0);
	fclose(f);
	assert_true(read_file(out, &text, 1 << 20) >= 0);
	assert_non_null(strstr(text, "agentvm_vms{state=\"stopped\"} 1\n"));
	assert_non_null(strstr(text, "agentvm_exec_results_total{result=\"ok\"} 1\n"));
	assert_non_null(strstr(text, "agentvm_exec_results_total{result=\"start_failed\"} 1\n"));
	assert_non_null(strstr(text, "agentvm_exec_duration_seconds_count 2\n"));
	assert_non_null(strstr(text, "agentvm_boot_duration_seconds_bucket{le=\"2.5\"} 1\n"));
	assert_non_null(strstr(text, "agentvm_boot_duration_seconds_bucket{le=\"1\"} 0\n"));
	assert_non_null(strstr(text, "agentvm_vm_execs_total{vm=\"box1\"} 2\n"));
	assert_non_null(strstr(text, "agentvm_anomalies_total{vm=\"box1\",rule=\"port_scan\"} 2\n"));
	assert_non_null(strstr(text, "agentvm_anomalies_total{vm=\"box1\",rule=\"drop_rate\"} 5\n"));
	assert_non_null(strstr(text, "agentvm_pool_vms{state=\"acquired\"} 1\n"));
	assert_non_null(strstr(text, "agentvm_pool_refill_failures_total 4\n"));
	/* A stopped VM has no process: no CPU or memory series for it. */
	assert_null(strstr(text, "agentvm_vm_cpu_seconds_total{vm=\"box1\"}"));
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", out);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_buckets),
		cmocka_unit_test(test_exec_class),
		cmocka_unit_test_setup_teardown(test_counters_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retire, setup, teardown),
		cmocka_unit_test(test_anomalies_fixture),
		cmocka_unit_test(test_proc_parsers),
		cmocka_unit_test(test_guest_stats),
		cmocka_unit_test_setup_teardown(test_render_promtool, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
