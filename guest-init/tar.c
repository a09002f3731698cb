/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ustar header field offsets and sizes. */
#define H_NAME 0
#define H_MODE 100
#define H_UID 108
#define H_GID 116
#define H_SIZE 124
#define H_MTIME 136
#define H_CHKSUM 148
#define H_TYPE 156
#define H_LINK 157
#define H_MAGIC 257
#define H_VERSION 263
#define H_PREFIX 345

void tar_reader_init(struct tar_reader *r, tar_read_fn fn, void *ctx)
{
	memset(r, 0, sizeof(*r));
	r->read = fn;
	r->ctx = ctx;
}

/* Exactly n bytes: 1, 0 at a clean end of stream before any byte, or -errno. */
static int read_full(struct tar_reader *r, void *buf, size_t n, const char **why)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = r->read(r->ctx, (uint8_t *)buf + got, n - got);
		if (k < 0) {
			*why = "reading the archive failed";
			return (int)k;
		}
		if (k == 0) {
			if (got == 0)
				return 0;
			*why = "the archive ends in the middle of a block";
			return -EPIPE;
		}
		got += (size_t)k;
	}
	return 1;
}

static int skip(struct tar_reader *r, uint64_t n, const char **why)
{
	uint8_t buf[4096];

	while (n > 0) {
		size_t k = n > sizeof(buf) ? sizeof(buf) : (size_t)n;
		int x = read_full(r, buf, k, why);
		if (x <= 0) {
			if (x == 0)
				*why = "the archive ends in the middle of an entry";
			return x ? x : -EPIPE;
		}
		n -= k;
	}
	return 0;
}

/* An octal (or GNU base-256) number field; -1 when malformed. */
static int parse_num(const uint8_t *f, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		/* base-256, big-endian; the sign bit set with 0xff means negative: refused. */
		if (f[0] == 0xff)
			return -1;
		v = f[0] & 0x7f;
		for (i = 1; i < len; i++) {
			if (v > (UINT64_MAX >> 8))
				return -1;
			v = (v << 8) | f[i];
		}
		if (v > max)
			return -1;
		*out = v;
		return 0;
	}
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v > (UINT64_MAX >> 3))
			return -1;
		v = (v << 3) | (uint64_t)(f[i] - '0');
	}
	/* What follows the digits must be a terminator. */
	for (; i < len; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -1;
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static bool checksum_ok(const uint8_t *h)
{
	uint64_t want;
	uint32_t u = 0;
	int32_t s = 0;

	if (parse_num(h + H_CHKSUM, 8, 0xffffffff, &want) < 0)
		return false;
	for (int i = 0; i < TAR_BLOCK; i++) {
		uint8_t c = (i >= H_CHKSUM && i < H_CHKSUM + 8) ? ' ' : h[i];
		u += c;
		s += (int8_t)c;
	}
	return want == u || (int64_t)want == s;
}

static bool all_zero(const uint8_t *b)
{
	for (int i = 0; i < TAR_BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

/* A NUL-free string of at most TAR_PATH_MAX - 1 bytes into dst. */
static int set_str(char dst[TAR_PATH_MAX], const char *src, size_t len, const char **why)
{
	if (len >= TAR_PATH_MAX || memchr(src, '\0', len)) {
		*why = "a path in the archive is too long or holds a NUL byte";
		return -ENAMETOOLONG;
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
	return 0;
}

struct meta {
	bool has_path, has_link, has_size, has_mtime;
	char path[TAR_PATH_MAX], link[TAR_PATH_MAX];
	uint64_t size;
	int64_t mtime;
};

/* pax records "LEN key=value\n" into m. */
static int parse_pax(const char *p, size_t n, struct meta *m, const char **why)
{
	while (n > 0) {
		size_t len = 0, i = 0;
		const char *kv, *eq, *end;

		while (i < n && p[i] >= '0' && p[i] <= '9' && i < 8)
			len = len * 10 + (size_t)(p[i++] - '0');
		if (i == 0 || i >= n || p[i] != ' ' || len <= i + 1 || len > n || p[len - 1] != '\n') {
			*why = "a malformed pax record";
			return -EINVAL;
		}
		kv = p + i + 1;
		end = p + len - 1;
		eq = memchr(kv, '=', (size_t)(end - kv));
		if (!eq) {
			*why = "a pax record without '='";
			return -EINVAL;
		}
		size_t klen = (size_t)(eq - kv), vlen = (size_t)(end - eq - 1);
		const char *v = eq + 1;
		int r = 0;

		if (klen == 4 && !memcmp(kv, "path", 4)) {
			r = set_str(m->path, v, vlen, why);
			m->has_path = true;
		} else if (klen == 8 && !memcmp(kv, "linkpath", 8)) {
			r = set_str(m->link, v, vlen, why);
			m->has_link = true;
		} else if ((klen == 4 && !memcmp(kv, "size", 4)) ||
			   (klen == 5 && !memcmp(kv, "mtime", 5))) {
			uint64_t x = 0;
			size_t j = 0;
			bool neg = klen == 5 && vlen > 0 && v[0] == '-';

			j = neg;
			if (j >= vlen || v[j] < '0' || v[j] > '9')
				r = -EINVAL;
			for (; r == 0 && j < vlen && v[j] >= '0' && v[j] <= '9'; j++) {
				if (x > (uint64_t)INT64_MAX / 10)
					r = -EINVAL;
				x = x * 10 + (uint64_t)(v[j] - '0');
			}
			/* mtime may have a fraction: ignored. */
			if (r == 0 && j < vlen && !(klen == 5 && v[j] == '.'))
				r = -EINVAL;
			if (r == 0 && x > (uint64_t)INT64_MAX)
				r = -EINVAL;
			if (r < 0) {
				*why = "a pax size or mtime is not a number";
				return r;
			}
			if (klen == 4) {
				m->size = x;
				m->has_size = true;
			} else {
				m->mtime = neg ? -(int64_t)x : (int64_t)x;
				m->has_mtime = true;
			}
		}
		if (r < 0)
			return r;
		p += len;
		n -= len;
	}
	return 0;
}

/* The data of a metadata entry ('x', 'L', 'K'), bounded, NUL-terminated. */
static int read_meta(struct tar_reader *r, uint64_t size, char **out, const char **why)
{
	uint64_t padded = (size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
	char *buf;
	int x;

	if (size > TAR_META_MAX) {
		*why = "a pax or long-name record is too large";
		return -E2BIG;
	}
	buf = malloc((size_t)padded + 1);
	if (!buf) {
		*why = "out of memory";
		return -ENOMEM;
	}
	x = padded ? read_full(r, buf, (size_t)padded, why) : 1;
	if (x <= 0) {
		free(buf);
		if (x == 0)
			*why = "the archive ends in the middle of an entry";
		return x ? x : -EPIPE;
	}
	buf[size] = '\0';
	*out = buf;
	return 0;
}

int tar_next(struct tar_reader *r, struct tar_entry *e, const char **why)
{
	uint8_t h[TAR_BLOCK];
	struct meta m = { 0 };
	int x;

	if (r->end)
		return 0;
	if ((x = skip(r, r->left + r->pad, why)) < 0)
		return x;
	r->left = r->pad = 0;
	for (int metas = 0;; metas++) {
		uint64_t size, mode, mtime;
		char *data = NULL;

		if (metas > 16) {
			*why = "too many pax or long-name records in a row";
			return -EINVAL;
		}
		x = read_full(r, h, TAR_BLOCK, why);
		if (x < 0)
			return x;
		if (x == 0) {
			*why = "the archive ends without its end-of-archive blocks";
			return -EPIPE;
		}
		if (all_zero(h)) {
			/* One zero block then the end of the stream is accepted too. */
			x = read_full(r, h, TAR_BLOCK, why);
			if (x < 0)
				return x;
			r->end = true;
			return 0;
		}
		if (!checksum_ok(h)) {
			*why = "a header checksum does not match (not a tar archive, or damaged)";
			return -EINVAL;
		}
		if (parse_num(h + H_SIZE, 12, INT64_MAX, &size) < 0 ||
		    parse_num(h + H_MODE, 8, 07777777, &mode) < 0 ||
		    parse_num(h + H_MTIME, 12, INT64_MAX, &mtime) < 0) {
			*why = "a header number is malformed";
			return -EINVAL;
		}
		char t = (char)h[H_TYPE];
		if (t == 'x' || t == 'g' || t == 'L' || t == 'K') {
			if ((x = read_meta(r, size, &data, why)) < 0)
				return x;
			if (t == 'x')
				x = parse_pax(data, (size_t)size, &m, why);
			else if (t == 'L')
				x = set_str(m.path, data, strnlen(data, (size_t)size), why),
				m.has_path = x == 0;
			else if (t == 'K')
				x = set_str(m.link, data, strnlen(data, (size_t)size), why),
				m.has_link = x == 0;
			free(data);
			if (x < 0)
				return x;
			continue;
		}

		memset(e, 0, sizeof(*e));
		e->typeflag = t;
		switch (t) {
		case '0':
		case '\0':
		case '7':
			e->type = TAR_FILE;
			break;
		case '5':
			e->type = TAR_DIR;
			break;
		case '2':
			e->type = TAR_SYMLINK;
			break;
		case '1':
			e->type = TAR_HARDLINK;
			break;
		default:
			e->type = TAR_OTHER;
			break;
		}
		if (m.has_path) {
			memcpy(e->path, m.path, sizeof(e->path));
		} else {
			char name[256 + 1];
			size_t nl = strnlen((const char *)h + H_NAME, 100), pl = 0;

			/* POSIX ustar only: GNU tar keeps other fields where the prefix is. */
			if (!memcmp(h + H_MAGIC, "ustar\0", 6))
				pl = strnlen((const char *)h + H_PREFIX, 155);
			if (pl) {
				memcpy(name, h + H_PREFIX, pl);
				name[pl] = '/';
				pl++;
			}
			memcpy(name + pl, h + H_NAME, nl);
			name[pl + nl] = '\0';
			memcpy(e->path, name, pl + nl + 1);
		}
		if (m.has_link)
			memcpy(e->link, m.link, sizeof(e->link));
		else
			memcpy(e->link, h + H_LINK, strnlen((const char *)h + H_LINK, 100));
		e->mode = (uint32_t)(mode & 07777);
		e->size = m.has_size ? m.size : size;
		e->mtime = m.has_mtime ? m.mtime : (int64_t)mtime;
		if (!e->path[0]) {
			*why = "an entry without a name";
			return -EINVAL;
		}
		/* Data of entries that should have none (a dir, a link) is skipped, not parsed. */
		r->left = e->size;
		r->pad = (TAR_BLOCK - e->size % TAR_BLOCK) % TAR_BLOCK;
		if (e->type == TAR_HARDLINK || e->type == TAR_SYMLINK) {
			if (!e->link[0]) {
				*why = "a link without a target";
				return -EINVAL;
			}
		}
		return 1;
	}
}

ssize_t tar_read_data(struct tar_reader *r, void *buf, size_t n, const char **why)
{
	int x;

	if (r->left == 0)
		return 0;
	if (n > r->left)
		n = (size_t)r->left;
	/* Short reads are fine here; only the stream's end is an error. */
	ssize_t k = r->read(r->ctx, buf, n);
	if (k < 0) {
		*why = "reading the archive failed";
		return k;
	}
	if (k == 0) {
		*why = "the archive ends in the middle of a file";
		return -EPIPE;
	}
	r->left -= (uint64_t)k;
	if (r->left == 0 && r->pad) {
		if ((x = skip(r, r->pad, why)) < 0)
			return x;
		r->pad = 0;
	}
	return k;
}

int tar_path_split(const char *path, char buf[TAR_PATH_MAX], const char *comps[TAR_MAX_DEPTH])
{
	size_t len = strlen(path);
	int n = 0;

	if (len == 0 || len >= TAR_PATH_MAX || path[0] == '/')
		return -EINVAL;
	memcpy(buf, path, len + 1);
	for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..") || n >= TAR_MAX_DEPTH)
			return -EINVAL;
		comps[n++] = c;
	}
	return n > 0 ? n : -EINVAL;
}

static void put_octal(uint8_t *f, size_t len, uint64_t v)
{
	/* len - 1 digits and a NUL. */
	f[len - 1] = '\0';
	for (size_t i = len - 1; i-- > 0;) {
		f[i] = (uint8_t)('0' + (v & 7));
		v >>= 3;
	}
}

/* One pax record "LEN key=value\n" appended at p; returns its length. */
static size_t pax_record(char *p, const char *key, const char *val)
{
	size_t body = 1 + strlen(key) + 1 + strlen(val) + 1, len = body, digits;

	/* LEN counts its own digits. */
	for (;;) {
		digits = (size_t)snprintf(NULL, 0, "%zu", len);
		if (body + digits == len)
			break;
		len = body + digits;
	}
	return (size_t)sprintf(p, "%zu %s=%s\n", len, key, val);
}

static void finish_block(uint8_t *h)
{
	uint32_t sum = 0;

	memset(h + H_CHKSUM, ' ', 8);
	for (int i = 0; i < TAR_BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + H_CHKSUM, 8, "%06o", sum);
	h[H_CHKSUM + 7] = ' ';
}

static void ustar_block(uint8_t *h, const char *name, const char *link, uint32_t mode,
			uint64_t size, int64_t mtime, char type)
{
	memset(h, 0, TAR_BLOCK);
	strncpy((char *)h + H_NAME, name, 100);
	put_octal(h + H_MODE, 8, mode & 07777);
	put_octal(h + H_UID, 8, 0);
	put_octal(h + H_GID, 8, 0);
	put_octal(h + H_SIZE, 12, size);
	put_octal(h + H_MTIME, 12, mtime < 0 ? 0 : (uint64_t)mtime);
	h[H_TYPE] = (uint8_t)type;
	if (link)
		strncpy((char *)h + H_LINK, link, 100);
	memcpy(h + H_MAGIC, "ustar\0", 6);
	memcpy(h + H_VERSION, "00", 2);
	finish_block(h);
}

int tar_header_encode(const struct tar_entry *e, uint8_t *out)
{
	static const char types[] = { [TAR_FILE] = '0', [TAR_DIR] = '5', [TAR_SYMLINK] = '2',
				      [TAR_HARDLINK] = '1', [TAR_OTHER] = '0' };
	bool long_path = strlen(e->path) >= 100, long_link = strlen(e->link) >= 100;
	bool big = e->size > 077777777777ull;
	size_t off = 0;

	if (strlen(e->path) >= TAR_PATH_MAX || strlen(e->link) >= TAR_PATH_MAX)
		return -ENAMETOOLONG;
	if (long_path || long_link || big) {
		char *data = (char *)out + TAR_BLOCK, num[32];
		size_t dl = 0;

		if (long_path)
			dl += pax_record(data + dl, "path", e->path);
		if (long_link)
			dl += pax_record(data + dl, "linkpath", e->link);
		if (big) {
			snprintf(num, sizeof(num), "%llu", (unsigned long long)e->size);
			dl += pax_record(data + dl, "size", num);
		}
		size_t padded = (dl + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
		memset(data + dl, 0, padded - dl);
		ustar_block(out, "././@PaxHeader", NULL, 0644, dl, e->mtime, 'x');
		off = TAR_BLOCK + padded;
	}
	ustar_block(out + off, e->path, e->type == TAR_SYMLINK || e->type == TAR_HARDLINK ? e->link : NULL,
		    e->mode, big ? 0 : (e->type == TAR_FILE ? e->size : 0), e->mtime,
		    types[e->type]);
	return (int)(off + TAR_BLOCK);
}
