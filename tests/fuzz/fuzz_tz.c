/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: tz.c's TZif reader and POSIX rule parser (the audit log's time zone comes
 * from a file on disk). Invariants: no crash, no read out of bounds; an accepted zone gives an
 * offset within +-26 h and a well-formed RFC 3339 string for any instant, including the
 * transitions it holds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const struct tz *tz, const uint8_t *data, size_t size)
{
	int64_t times[] = { 0, -1, 1784116800, 4102444800LL, INT64_MAX, INT64_MIN, -2208988800LL };
	char buf[64];

	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		int32_t off = tz_offset(tz, times[i], NULL);
		if (off < -26 * 3600 || off > 26 * 3600)
			abort();
	}
	for (size_t i = 0; i + 8 <= size && i < 512; i += 8) {
		int64_t t;
		memcpy(&t, data + i, 8);
		t %= (int64_t)1 << 40;
		tz_format_rfc3339(tz, t * 1000, buf, sizeof(buf));
		size_t n = strlen(buf);
		if (n < 29 || (buf[n - 6] != '+' && buf[n - 6] != '-') || buf[n - 3] != ':')
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tz *tz;

	if (tz_parse_tzif(data, size, &tz) == 0) {
		exercise(tz, data, size);
		tz_free(tz);
	}
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	if (tz_parse_posix(s, &tz) == 0) {
		exercise(tz, data, size);
		tz_free(tz);
	}
	free(s);
	return 0;
}
