/* SPDX-License-Identifier: MIT */
#include "base/tz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

/* A POSIX rule date Mm.w.d/time: day d (0 = Sunday) of week w (5 = last) of month m. */
struct rule_date {
	int month, week, wday;
	int32_t secs; /* local time of day of the change */
};

struct posix_rule {
	bool valid;
	bool has_dst;
	int32_t std_off, dst_off; /* seconds east of UTC */
	struct rule_date start, end;
};

struct tz {
	uint32_t n_trans;
	int64_t *trans;    /* UTC times, ascending */
	uint8_t *trans_type;
	uint32_t n_types;
	int32_t type_off[TZ_MAX_TYPES];
	bool type_dst[TZ_MAX_TYPES];
	struct posix_rule rule; /* for times after the last transition */
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

void tz_free(struct tz *tz)
{
	if (!tz)
		return;
	free(tz->trans);
	free(tz->trans_type);
	free(tz);
}

/* --- POSIX TZ rules ------------------------------------------------------------------------- */

static const char *parse_name(const char *s)
{
	const char *p = s;

	if (*p == '<') {
		while (*++p && *p != '>')
			if (p - s > 16)
				return NULL;
		return *p == '>' && p - s >= 4 ? p + 1 : NULL;
	}
	while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
		p++;
	return p - s >= 3 && p - s <= 16 ? p : NULL;
}

static const char *parse_num(const char *s, int min, int max, int *out)
{
	int v = 0, n = 0;

	while (*s >= '0' && *s <= '9' && n < 4) {
		v = v * 10 + (*s++ - '0');
		n++;
	}
	if (n == 0 || v < min || v > max)
		return NULL;
	*out = v;
	return s;
}

/* [+-]hh[:mm[:ss]] with hours up to max_h; seconds in *out (sign as written). */
static const char *parse_hms(const char *s, int max_h, int32_t *out)
{
	int sign = 1, h, m = 0, sec = 0;

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	if (!(s = parse_num(s, 0, max_h, &h)))
		return NULL;
	if (*s == ':' && !(s = parse_num(s + 1, 0, 59, &m)))
		return NULL;
	if (s && *s == ':' && !(s = parse_num(s + 1, 0, 59, &sec)))
		return NULL;
	*out = sign * (h * 3600 + m * 60 + sec);
	return s;
}

static const char *parse_date(const char *s, struct rule_date *d)
{
	if (*s++ != 'M')
		return NULL; /* Jn and n dates: not used by any zone agentvm reads */
	if (!(s = parse_num(s, 1, 12, &d->month)) || *s++ != '.')
		return NULL;
	if (!(s = parse_num(s, 1, 5, &d->week)) || *s++ != '.')
		return NULL;
	if (!(s = parse_num(s, 0, 6, &d->wday)))
		return NULL;
	d->secs = 7200;
	if (*s == '/')
		s = parse_hms(s + 1, 167, &d->secs);
	return s;
}

static int parse_rule(const char *s, struct posix_rule *r)
{
	int32_t off;

	memset(r, 0, sizeof(*r));
	if (!(s = parse_name(s)) || !(s = parse_hms(s, 24, &off)))
		return -EINVAL;
	r->std_off = -off; /* POSIX offsets are west of UTC */
	if (*s) {
		if (!(s = parse_name(s)))
			return -EINVAL;
		r->has_dst = true;
		r->dst_off = r->std_off + 3600;
		if (*s && *s != ',') {
			if (!(s = parse_hms(s, 24, &off)))
				return -EINVAL;
			r->dst_off = -off;
		}
		if (*s != ',' || !(s = parse_date(s + 1, &r->start)) || *s != ',' ||
		    !(s = parse_date(s + 1, &r->end)))
			return -EINVAL;
	}
	if (*s)
		return -EINVAL;
	r->valid = true;
	return 0;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int64_t year_of(int64_t t)
{
	int64_t z = (t >= 0 ? t : t - 86399) / 86400 + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	return yoe + era * 400 + (mp >= 10);
}

static bool leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Local seconds since the epoch (no offset applied) of a rule date in year y. */
static int64_t rule_local(const struct rule_date *d, int64_t y)
{
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int64_t first = days_from_civil(y, d->month, 1);
	int wd1 = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
	int day = 1 + (d->wday - wd1 + 7) % 7 + (d->week - 1) * 7;
	int len = mdays[d->month - 1] + (d->month == 2 && leap(y));

	while (day > len)
		day -= 7;
	return (days_from_civil(y, d->month, day)) * 86400 + d->secs;
}

static int32_t rule_offset(const struct posix_rule *r, int64_t t, bool *is_dst)
{
	*is_dst = false;
	if (!r->has_dst)
		return r->std_off;
	int64_t y = year_of(t + r->std_off);
	int64_t start = rule_local(&r->start, y) - r->std_off;
	int64_t end = rule_local(&r->end, y) - r->dst_off;
	bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
	*is_dst = dst;
	return dst ? r->dst_off : r->std_off;
}

int tz_parse_posix(const char *rule, struct tz **out)
{
	struct tz *tz = calloc(1, sizeof(*tz));

	if (!tz)
		return -ENOMEM;
	if (parse_rule(rule, &tz->rule) < 0) {
		free(tz);
		return -EINVAL;
	}
	*out = tz;
	return 0;
}

/* --- TZif ----------------------------------------------------------------------------------- */

struct tzif_hdr {
	uint32_t isut, isstd, leap, time, type, chars;
};

static int read_hdr(const uint8_t *p, size_t len, struct tzif_hdr *h)
{
	if (len < 44 || memcmp(p, "TZif", 4) != 0)
		return -EINVAL;
	h->isut = be32(p + 20);
	h->isstd = be32(p + 24);
	h->leap = be32(p + 28);
	h->time = be32(p + 32);
	h->type = be32(p + 36);
	h->chars = be32(p + 40);
	if (h->time > TZ_MAX_TRANSITIONS || h->type == 0 || h->type > TZ_MAX_TYPES ||
	    h->chars > 1024 || h->leap > 1024 || (h->isut && h->isut != h->type) ||
	    (h->isstd && h->isstd != h->type))
		return -EINVAL;
	return 0;
}

/* Size of a data block after its header, with time_size-byte times. */
static size_t block_size(const struct tzif_hdr *h, size_t time_size)
{
	return (size_t)h->time * (time_size + 1) + (size_t)h->type * 6 + h->chars +
	       (size_t)h->leap * (time_size + 4) + h->isstd + h->isut;
}

int tz_parse_tzif(const uint8_t *buf, size_t len, struct tz **out)
{
	struct tzif_hdr h;
	size_t off;

	if (read_hdr(buf, len, &h) < 0 || buf[4] < '2')
		return -EINVAL; /* version 1 files have no 64-bit data and no footer */
	off = 44 + block_size(&h, 4);
	if (off > len || read_hdr(buf + off, len - off, &h) < 0)
		return -EINVAL;
	off += 44;
	if (block_size(&h, 8) > len - off)
		return -EINVAL;

	struct tz *tz = calloc(1, sizeof(*tz));
	if (!tz)
		return -ENOMEM;
	tz->n_trans = h.time;
	tz->n_types = h.type;
	tz->trans = calloc(h.time ? h.time : 1, sizeof(*tz->trans));
	tz->trans_type = calloc(h.time ? h.time : 1, 1);
	if (!tz->trans || !tz->trans_type) {
		tz_free(tz);
		return -ENOMEM;
	}
	const uint8_t *p = buf + off;
	for (uint32_t i = 0; i < h.time; i++, p += 8) {
		tz->trans[i] = be64(p);
		if (i && tz->trans[i] <= tz->trans[i - 1])
			goto bad;
	}
	for (uint32_t i = 0; i < h.time; i++, p++) {
		if (*p >= h.type)
			goto bad;
		tz->trans_type[i] = *p;
	}
	for (uint32_t i = 0; i < h.type; i++, p += 6) {
		int32_t o = (int32_t)be32(p);
		if (o < -25 * 3600 || o > 26 * 3600 || p[4] > 1 || p[5] >= h.chars + (h.chars == 0))
			goto bad;
		tz->type_off[i] = o;
		tz->type_dst[i] = p[4];
	}
	off += block_size(&h, 8);
	/* The footer: "\n<POSIX rule>\n", possibly empty. */
	if (off < len) {
		char rule[64];
		const uint8_t *nl;
		size_t n;

		if (buf[off] != '\n' || !(nl = memchr(buf + off + 1, '\n', len - off - 1)))
			goto bad;
		n = (size_t)(nl - (buf + off + 1));
		if (n >= sizeof(rule) || memchr(buf + off + 1, 0, n))
			goto bad;
		memcpy(rule, buf + off + 1, n);
		rule[n] = 0;
		if (n && parse_rule(rule, &tz->rule) < 0)
			goto bad;
	}
	*out = tz;
	return 0;
bad:
	tz_free(tz);
	return -EINVAL;
}

int tz_load(const char *path, struct tz **out)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;

	if (fd < 0)
		return -errno;
	buf = malloc(TZ_MAX_FILE);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fd, buf + len, TZ_MAX_FILE - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == TZ_MAX_FILE)
			return -EFBIG;
	}
	return tz_parse_tzif(buf, len, out);
}

const struct tz *tz_new_york(void)
{
	static struct tz *ny;
	char path[512];
	const char *dir = getenv("AGENTVM_ZONEINFO");

	if (ny)
		return ny;
	snprintf(path, sizeof(path), "%s/America/New_York", dir && *dir ? dir : "/usr/share/zoneinfo");
	if (tz_load(path, &ny) < 0 && tz_parse_posix(TZ_NEW_YORK_RULE, &ny) < 0) {
		/* Out of memory at start-up: a zone of UTC rather than no timestamp at all. */
		static struct tz utc = { .n_types = 1, .rule = { .valid = true } };
		return &utc;
	}
	return ny;
}

int32_t tz_offset(const struct tz *tz, int64_t t, bool *is_dst)
{
	bool dst = false;
	int32_t off;

	/* Far outside any real timestamp: keep the calendar arithmetic clear of overflow. */
	if (t > ((int64_t)1 << 40) || t < -((int64_t)1 << 40))
		t = t > 0 ? (int64_t)1 << 40 : -((int64_t)1 << 40);
	if (tz->n_trans && (t < tz->trans[tz->n_trans - 1] || !tz->rule.valid)) {
		/* RFC 8536: before the first transition, type 0; else the last one at or before t. */
		uint32_t type = 0;
		if (t >= tz->trans[0]) {
			uint32_t lo = 0, hi = tz->n_trans; /* trans[lo] <= t < trans[hi] */
			while (hi - lo > 1) {
				uint32_t mid = lo + (hi - lo) / 2;
				if (tz->trans[mid] <= t)
					lo = mid;
				else
					hi = mid;
			}
			type = tz->trans_type[lo];
		}
		off = tz->type_off[type];
		dst = tz->type_dst[type];
	} else if (tz->rule.valid) {
		off = rule_offset(&tz->rule, t, &dst);
	} else {
		off = tz->type_off[0];
		dst = tz->type_dst[0];
	}
	if (is_dst)
		*is_dst = dst;
	return off;
}

void tz_format_rfc3339(const struct tz *tz, int64_t ms, char *buf, size_t len)
{
	int64_t t = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
	int32_t off = tz_offset(tz, t, NULL);
	time_t local = (time_t)(t + off);
	struct tm tm;
	int a = off < 0 ? -off : off;

	gmtime_r(&local, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(ms - t * 1000), off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}
