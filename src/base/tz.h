/* SPDX-License-Identifier: MIT */
/*
 * Local time of one zone without touching the process's TZ: a bounded reader of the system's
 * tz database files (TZif, RFC 8536, version 2 or later) and of the POSIX TZ rule in their
 * footer. The audit log's timestamps are New York time whatever the host's zone, and a library
 * must not setenv("TZ") under its callers (not thread-safe, and it changes their localtime()).
 * The bytes of a TZif file are treated as untrusted: every count is bounded, every read checked
 * (tests/fuzz/fuzz_tz.c).
 */
#ifndef AGENTVM_TZ_H
#define AGENTVM_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tz;

#define TZ_MAX_FILE (256u << 10)
#define TZ_MAX_TRANSITIONS 4096
#define TZ_MAX_TYPES 256

/* The US Eastern rule since 2007: what tz_new_york() uses when the database file is missing. */
#define TZ_NEW_YORK_RULE "EST5EDT,M3.2.0,M11.1.0"

/* Parse a TZif file's bytes. 0 with *out (tz_free) or -EINVAL for anything malformed. */
int tz_parse_tzif(const uint8_t *buf, size_t len, struct tz **out);
/* Parse a POSIX TZ rule such as TZ_NEW_YORK_RULE (only Mm.w.d dates). 0 or -EINVAL. */
int tz_parse_posix(const char *rule, struct tz **out);
/* Read and parse a TZif file (at most TZ_MAX_FILE bytes). 0 or -errno. */
int tz_load(const char *path, struct tz **out);
void tz_free(struct tz *tz);

/*
 * America/New_York, loaded once per process from $AGENTVM_ZONEINFO (default
 * /usr/share/zoneinfo)/America/New_York, else built from TZ_NEW_YORK_RULE. Never NULL; owned by
 * this module. Not thread-safe on the first call (agentvm's processes are single-threaded).
 */
const struct tz *tz_new_york(void);

/* The zone's offset from UTC in seconds at UTC time t; *is_dst (may be NULL) set. */
int32_t tz_offset(const struct tz *tz, int64_t t, bool *is_dst);

/*
 * RFC 3339 with milliseconds and the zone's offset at that instant, e.g.
 * "2026-07-15T08:00:00.123-04:00". ms: milliseconds since the epoch. buf: at least 30 bytes.
 */
void tz_format_rfc3339(const struct tz *tz, int64_t ms, char *buf, size_t len);

#endif
