/* SPDX-License-Identifier: MIT */
/* guest-init/sharecfg.c: the agentvm.share words of the kernel cmdline. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "guest-init/sharecfg.h"

static void test_parse(void **state)
{
	struct share_cfg c;
	const char *why = NULL;

	assert_int_equal(sharecfg_parse_cmdline("quiet agentvm.share=avm-share0:/workspace/input:ro "
						"agentvm.share=avm-share1:/workspace/output:rw x=y",
						&c, &why),
			 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.share[0].tag, "avm-share0");
	assert_string_equal(c.share[0].dir, "/workspace/input");
	assert_true(c.share[0].readonly);
	assert_false(c.share[1].readonly);
	(void)state;
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		"agentvm.share=avm-share9:/a:rw",  "agentvm.share=avm-share0:/a:rx",
		"agentvm.share=avm-share0:/proc:rw", "agentvm.share=avm-share0:/a/../b:rw",
		"agentvm.share=avm-share0:a:rw",   "agentvm.share=avm-share0:/:rw",
		"agentvm.share=disk0:/a:rw",	   "agentvm.share=",
	};
	struct share_cfg c;
	const char *why;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		assert_int_equal(sharecfg_parse_cmdline(bad[i], &c, &why), -EINVAL);
		assert_non_null(why);
		assert_int_equal(c.n, 0);
	}
	/* A repeated tag or directory: the later word loses, the first still applies. */
	assert_int_equal(sharecfg_parse_cmdline("agentvm.share=avm-share0:/a:rw "
						"agentvm.share=avm-share0:/b:rw "
						"agentvm.share=avm-share1:/a:rw",
						&c, &why),
			 -EINVAL);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.rejected, 2);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
