/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: what the metrics read that another party wrote. anomalies.json (written by
 * the anomaly detector, in a state dir), /proc/meminfo as the guest agent parses it, and the
 * host /proc texts. Invariants: no crash or overread (the buffer is not NUL-terminated for the
 * length-taking parsers), never more rules than asked for, every rule name within bounds and
 * of the allowed characters (they become Prometheus label values).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obs/metrics.h"
#include "report/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct metrics_anomaly a[4];
	struct avm_guest_stats gs;
	uint64_t x, y;
	char *s;
	size_t n = metrics_anomalies_parse((const char *)data, size, a, 4);

	if (n > 4)
		abort();
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(a[i].rule);
		if (l == 0 || l > 63 || strspn(a[i].rule, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != l)
			abort();
	}
	if (avm_meminfo_parse((const char *)data, size, &gs) == 0 &&
	    (gs.mem_total == 0 || gs.mem_available > gs.mem_total))
		abort();
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	(void)stats_parse_proc_stat(s, &x);
	(void)stats_parse_smaps_rollup(s, &x, &y);
	free(s);
	return 0;
}
