/* SPDX-License-Identifier: MIT */
/*
 * tz.c: New York time from the tz database without setenv("TZ") in the library. Fixed epochs
 * in EST and in EDT, the DST edges, and agreement with glibc's own reading of the same database
 * (here, in the test, TZ may be set process-wide) over 1970..2037 and, for the POSIX rule alone,
 * up to 2100.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/tz.h"

#define NY_FILE "/usr/share/zoneinfo/America/New_York"

static void fmt(const struct tz *tz, int64_t ms, char *buf)
{
	tz_format_rfc3339(tz, ms, buf, 40);
}

static void check_fixed(const struct tz *tz)
{
	char b[40];

	/* 2026-01-15T12:00:00Z: winter, EST. */
	fmt(tz, 1768478400123LL, b);
	assert_string_equal(b, "2026-01-15T07:00:00.123-05:00");
	/* 2026-07-15T12:00:00Z: summer, EDT. */
	fmt(tz, 1784116800000LL, b);
	assert_string_equal(b, "2026-07-15T08:00:00.000-04:00");
	/* 2026-03-08 02:00 EST is when clocks go forward: 06:59:59Z is still EST. */
	fmt(tz, (1772953200LL - 1) * 1000, b);
	assert_string_equal(b, "2026-03-08T01:59:59.000-05:00");
	fmt(tz, 1772953200LL * 1000, b);
	assert_string_equal(b, "2026-03-08T03:00:00.000-04:00");
	/* 2026-11-01 02:00 EDT: back to EST at 06:00Z. */
	fmt(tz, (1793512800LL - 1) * 1000, b);
	assert_string_equal(b, "2026-11-01T01:59:59.000-04:00");
	fmt(tz, 1793512800LL * 1000, b);
	assert_string_equal(b, "2026-11-01T01:00:00.000-05:00");
	/* Before the epoch, milliseconds still count forward within the second. */
	fmt(tz, -1, b);
	assert_string_equal(b, "1969-12-31T18:59:59.999-05:00");
}

static void test_file_fixed_epochs(void **state)
{
	struct tz *tz;

	assert_int_equal(tz_load(NY_FILE, &tz), 0);
	check_fixed(tz);
	tz_free(tz);
}

static void test_rule_fixed_epochs(void **state)
{
	struct tz *tz;

	assert_int_equal(tz_parse_posix(TZ_NEW_YORK_RULE, &tz), 0);
	check_fixed(tz);
	tz_free(tz);
}

/* Every 6 hours (and around each glibc-seen change) from from to to: same offset as glibc. */
static void agree_with_glibc(const struct tz *tz, int64_t from, int64_t to)
{
	setenv("TZ", "America/New_York", 1);
	tzset();
	long prev = 0;
	for (int64_t t = from; t < to; t += 6 * 3600) {
		struct tm tm;
		time_t tt = (time_t)t;
		localtime_r(&tt, &tm);
		bool dst;
		int32_t off = tz_offset(tz, t, &dst);
		if (off != tm.tm_gmtoff || dst != (tm.tm_isdst > 0))
			fail_msg("at %lld: ours %d/%d, glibc %ld/%d", (long long)t, off, dst,
				 tm.tm_gmtoff, tm.tm_isdst);
		if (t != from && tm.tm_gmtoff != prev) {
			/* A change in the last 6 h: find it to the second and compare both sides. */
			int64_t lo = t - 6 * 3600, hi = t;
			while (hi - lo > 1) {
				int64_t mid = lo + (hi - lo) / 2;
				tt = (time_t)mid;
				localtime_r(&tt, &tm);
				if (tm.tm_gmtoff == prev)
					lo = mid;
				else
					hi = mid;
			}
			assert_int_equal(tz_offset(tz, lo, NULL), prev);
			tt = (time_t)hi;
			localtime_r(&tt, &tm);
			assert_int_equal(tz_offset(tz, hi, NULL), tm.tm_gmtoff);
		}
		tt = (time_t)t;
		localtime_r(&tt, &tm);
		prev = tm.tm_gmtoff;
	}
	unsetenv("TZ");
	tzset();
}

static void test_file_agrees_with_glibc(void **state)
{
	struct tz *tz;

	assert_int_equal(tz_load(NY_FILE, &tz), 0);
	agree_with_glibc(tz, 0, 2145916800LL); /* 1970 .. 2038 */
	tz_free(tz);
}

static void test_rule_agrees_with_glibc_after_2007(void **state)
{
	struct tz *tz;

	assert_int_equal(tz_parse_posix(TZ_NEW_YORK_RULE, &tz), 0);
	agree_with_glibc(tz, 1199145600LL, 4102444800LL); /* 2008 .. 2100 */
	tz_free(tz);
}

static void test_bad_input(void **state)
{
	static const char *const rules[] = { "", "E5", "EST", "EST5EDT,M3.2.0", "EST5EDT,J60,M11.1.0",
					     "EST5EDT,M13.2.0,M11.1.0", "EST5EDT,M3.6.0,M11.1.0",
					     "EST5EDT,M3.2.7,M11.1.0", "EST5EDT,M3.2.0,M11.1.0x",
					     "EST99" };
	struct tz *tz = NULL;
	uint8_t junk[64] = "TZif2";

	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
		if (tz_parse_posix(rules[i], &tz) != -EINVAL)
			fail_msg("accepted '%s'", rules[i]);
	assert_int_equal(tz_parse_tzif(junk, sizeof(junk), &tz), -EINVAL);
	assert_int_equal(tz_parse_tzif(junk, 3, &tz), -EINVAL);
	assert_int_equal(tz_load("/nonexistent/zone", &tz), -ENOENT);
	/* Half-hour zones and a rule without DST parse too. */
	assert_int_equal(tz_parse_posix("<+0530>-5:30", &tz), 0);
	assert_int_equal(tz_offset(tz, 0, NULL), 5 * 3600 + 1800);
	tz_free(tz);
}

/* The module's own New York: the file when present, and never NULL. */
static void test_new_york(void **state)
{
	char b[40];

	setenv("AGENTVM_ZONEINFO", "/nonexistent", 1);
	fmt(tz_new_york(), 1784116800000LL, b);
	assert_string_equal(b, "2026-07-15T08:00:00.000-04:00");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_fixed_epochs),
		cmocka_unit_test(test_rule_fixed_epochs),
		cmocka_unit_test(test_file_agrees_with_glibc),
		cmocka_unit_test(test_rule_agrees_with_glibc_after_2007),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_new_york),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
