/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the anomaly config parser (src/vm/anomaly.c; the file is an operator's, but a
 * typo must give a line number, never a crash). Invariants: no crash; a rejected text leaves a
 * one-line message that names a line; an accepted config is within the documented bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vm/anomaly.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct anomaly_conf c;
	struct avm_error err = { 0 };

	anomaly_conf_defaults(&c);
	if (anomaly_conf_parse((const char *)data, size, &c, &err) < 0) {
		if (!err.msg[0] || strchr(err.msg, '\n'))
			abort();
		if (size <= ANOMALY_CONF_MAX && strncmp(err.msg, "line ", 5) != 0)
			abort();
		return 0;
	}
	if (c.cpu_pinned_pct > 100 || c.memory_pct > 100 || c.scan_ports > 65536 ||
	    c.scan_hosts > ANOMALY_MAX_HOSTS || !(c.zscore >= 0 && c.zscore <= 1000) ||
	    (c.action != ANOMALY_ACTION_NONE && c.action != ANOMALY_ACTION_PAUSE))
		abort();
	return 0;
}
