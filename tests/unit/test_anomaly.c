/* SPDX-License-Identifier: MIT */
/* anomaly.c: the config parser and each rule, the own-history and fleet z-scores. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vm/anomaly.h"

#define MIN 60000ull

static int parse(const char *t, struct anomaly_conf *c, struct avm_error *e)
{
	anomaly_conf_defaults(c);
	return anomaly_conf_parse(t, strlen(t), c, e);
}

static void test_conf(void **state)
{
	struct anomaly_conf c;
	struct avm_error e = { 0 };

	assert_int_equal(parse("# comment\n\n  scan_ports = 5  # five\nzscore=2.5\naction = pause\n"
			       "drops_per_min = 0",
			       &c, &e),
			 0);
	assert_int_equal(c.scan_ports, 5);
	assert_true(c.zscore == 2.5);
	assert_int_equal(c.action, ANOMALY_ACTION_PAUSE);
	assert_int_equal(c.drops_per_min, 0);
	assert_int_equal(c.scan_hosts, 32); /* untouched: the default */
	static const struct {
		const char *text, *msg;
	} bad[] = {
		{ "scan_ports = 5\nbogus = 1\n", "line 2: unknown key" },
		{ "scan_ports\n", "line 1: expected 'key = value'" },
		{ "scan_ports = \n", "line 1: missing value" },
		{ "scan_ports = -1\n", "line 1: expected a whole number" },
		{ "scan_ports = 70000\n", "line 1: not a whole number in range" },
		{ "scan_ports = 5x\n", "line 1: not a whole number in range" },
		{ "cpu_pinned_pct = 101\n", "line 1: not a whole number in range" },
		{ "zscore = nan\n", "line 1: zscore is a number" },
		{ "action = kill\n", "line 1: action is 'none' or 'pause'" },
		{ "scan_ports = 5\r\n", "line 1: control characters" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i].text, &c, &e) != -EINVAL || !strstr(e.msg, bad[i].msg))
			fail_msg("'%s': got '%s'", bad[i].text, e.msg);
	}
	setenv("AGENTVM_ANOMALY_CONF", "/nonexistent/anomaly.conf", 1);
	assert_int_equal(anomaly_conf_load(&c, &e), 0); /* absent: defaults */
	assert_int_equal(c.scan_ports, 16);
}

static size_t take(struct anomaly_vm *a, enum anomaly_rule want)
{
	struct anomaly_alert al[ANOMALY_MAX_ALERTS];
	size_t n = anomaly_take(a, al, ANOMALY_MAX_ALERTS), hits = 0;

	for (size_t i = 0; i < n; i++)
		hits += al[i].rule == want;
	return hits;
}

static void test_scan(void **state)
{
	struct anomaly_conf c;
	struct anomaly_vm a;
	uint64_t t = 1000;

	anomaly_conf_defaults(&c);
	anomaly_vm_init(&a, &c, t);
	/* Normal traffic: a few ports on a few hosts, many times. */
	for (int i = 0; i < 200; i++)
		anomaly_note_conn(&a, 0x0b007101 + (i % 3), (uint16_t)(i % 2 ? 443 : 80), 6, false, t);
	assert_int_equal(take(&a, AR_SCAN_PORTS), 0);
	/* One host, ports 1..40, mostly dropped: one alert at the 16th distinct port. */
	for (int p = 1; p <= 40; p++)
		anomaly_note_conn(&a, 0x0b007101, (uint16_t)p, 6, p != 22, t + (uint64_t)p);
	assert_int_equal(take(&a, AR_SCAN_PORTS), 1);
	/* Next window: the same scan is within the cooldown: no second alert. */
	for (int p = 1; p <= 40; p++)
		anomaly_note_conn(&a, 0x0b007101, (uint16_t)p, 6, true, t + MIN + (uint64_t)p);
	assert_int_equal(take(&a, AR_SCAN_PORTS), 0);
	/* After the cooldown it alerts again. */
	t += c.cooldown_s * 1000 + 2 * MIN;
	for (int p = 1; p <= 40; p++)
		anomaly_note_conn(&a, 0x0b007101, (uint16_t)p, 6, true, t);
	assert_int_equal(take(&a, AR_SCAN_PORTS), 1);
	/* Hosts: 32 distinct addresses on one port. */
	t += c.cooldown_s * 1000 + 2 * MIN;
	for (uint32_t h = 0; h < 40; h++)
		anomaly_note_conn(&a, 0x0b007100 + h, 443, 6, false, t);
	assert_int_equal(take(&a, AR_SCAN_HOSTS), 1);
}

static void test_count_rules(void **state)
{
	struct anomaly_conf c;
	struct anomaly_vm a;

	anomaly_conf_defaults(&c);
	c.cooldown_s = 0;
	anomaly_vm_init(&a, &c, 0);
	for (int i = 0; i < 59; i++)
		anomaly_note_conn(&a, 1, 80, 6, true, 10);
	assert_int_equal(take(&a, AR_DROPS), 0);
	anomaly_note_conn(&a, 1, 80, 6, true, 10);
	assert_int_equal(take(&a, AR_DROPS), 1);
	for (int i = 0; i < 120; i++)
		anomaly_note_conn(&a, 2, 53, 17, false, 20);
	assert_int_equal(take(&a, AR_DNS), 1);
	for (int i = 0; i < 9; i++)
		anomaly_note_exec(&a, true, 30);
	anomaly_note_exec(&a, false, 30);
	assert_int_equal(take(&a, AR_FAILED_EXECS), 0);
	anomaly_note_exec(&a, true, 30);
	assert_int_equal(take(&a, AR_FAILED_EXECS), 1);
	anomaly_note_egress(&a, c.egress_bytes_per_min, 40);
	assert_int_equal(take(&a, AR_EGRESS), 1);
	anomaly_note_usage(&a, 0.1, 0.5, 50);
	assert_int_equal(take(&a, AR_MEMORY), 0);
	anomaly_note_usage(&a, 0.1, 0.97, 50);
	assert_int_equal(take(&a, AR_MEMORY), 1);
	/* A rule set to 0 is off. */
	c.drops_per_min = 0;
	anomaly_vm_init(&a, &c, 0);
	for (int i = 0; i < 1000; i++)
		anomaly_note_conn(&a, 1, 80, 6, true, 10);
	assert_int_equal(take(&a, AR_DROPS), 0);
}

static void test_cpu_pinned(void **state)
{
	struct anomaly_conf c;
	struct anomaly_vm a;
	uint64_t t = 0;

	anomaly_conf_defaults(&c);
	anomaly_vm_init(&a, &c, 0);
	/* 4 busy minutes, one idle, then 5 busy: only the second run alerts, at its end. */
	for (int m = 0; m < 10; m++) {
		for (int s = 0; s < 60; s++, t += 1000)
			anomaly_note_usage(&a, m == 4 ? 0.2 : 0.99, 0.1, t);
		if (m < 9)
			assert_int_equal(take(&a, AR_CPU), 0);
	}
	anomaly_tick(&a, t);
	assert_int_equal(take(&a, AR_CPU), 1);
}

static void test_zscore_own_history(void **state)
{
	struct anomaly_conf c;
	struct anomaly_vm a;
	uint64_t t = 0;

	anomaly_conf_defaults(&c);
	c.scan_ports = c.scan_hosts = 0;
	anomaly_vm_init(&a, &c, 0);
	/* 12 ordinary windows of 25..35 connections: no alert. */
	for (int w = 0; w < 12; w++, t += MIN) {
		for (int i = 0; i < 25 + (w % 3) * 5; i++)
			anomaly_note_conn(&a, 1, 443, 6, false, t + 1);
		anomaly_tick(&a, t + MIN);
		assert_int_equal(take(&a, AR_Z_CONNS), 0);
	}
	/* Then 200 in one window. */
	for (int i = 0; i < 200; i++)
		anomaly_note_conn(&a, 1, 443, 6, false, t + 1);
	anomaly_tick(&a, t + MIN);
	assert_int_equal(take(&a, AR_Z_CONNS), 1);
	/* Too little history: silent. */
	anomaly_vm_init(&a, &c, 0);
	for (int i = 0; i < 200; i++)
		anomaly_note_conn(&a, 1, 443, 6, false, 1);
	anomaly_tick(&a, MIN);
	assert_int_equal(take(&a, AR_Z_CONNS), 0);
}

static void test_fleet(void **state)
{
	struct anomaly_conf c;
	struct anomaly_vm a;
	uint64_t others[5][AS_COUNT] = { { 30, 0, 1000 }, { 25, 1, 2000 }, { 35, 0, 1500 },
					 { 28, 2, 900 },   { 31, 0, 1200 } };

	anomaly_conf_defaults(&c);
	c.scan_ports = c.scan_hosts = 0;
	anomaly_vm_init(&a, &c, 0);
	for (int i = 0; i < 32; i++)
		anomaly_note_conn(&a, 1, 443, 6, false, 1);
	anomaly_tick(&a, MIN);
	anomaly_fleet(&a, others, 5, MIN);
	assert_int_equal(take(&a, AR_FLEET_CONNS), 0);
	for (int i = 0; i < 300; i++)
		anomaly_note_conn(&a, 1, 443, 6, false, MIN + 1);
	anomaly_tick(&a, 2 * MIN);
	anomaly_fleet(&a, others, 2, 2 * MIN); /* too few others: silent */
	assert_int_equal(take(&a, AR_FLEET_CONNS), 0);
	anomaly_fleet(&a, others, 5, 2 * MIN);
	assert_int_equal(take(&a, AR_FLEET_CONNS), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conf),	  cmocka_unit_test(test_scan),
		cmocka_unit_test(test_count_rules), cmocka_unit_test(test_cpu_pinned),
		cmocka_unit_test(test_zscore_own_history), cmocka_unit_test(test_fleet),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
