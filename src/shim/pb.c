/* SPDX-License-Identifier: MIT */
/* Protocol buffers wire format (see pb.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pb.h"

void pb_buf_release(struct pb_buf *b)
{
	free(b->data);
	*b = (struct pb_buf){ 0 };
}

static void put_raw(struct pb_buf *b, const void *p, size_t len)
{
	if (b->error)
		return;
	if (len > PB_MAX_MESSAGE - b->len) {
		b->error = -EMSGSIZE;
		return;
	}
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + len)
			cap *= 2;
		uint8_t *n = realloc(b->data, cap);
		if (!n) {
			b->error = -ENOMEM;
			return;
		}
		b->data = n;
		b->cap = cap;
	}
	if (len)
		memcpy(b->data + b->len, p, len);
	b->len += len;
}

static void put_uvarint(struct pb_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		tmp[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			tmp[n] |= 0x80;
		n++;
	} while (v);
	put_raw(b, tmp, n);
}

static void put_key(struct pb_buf *b, uint32_t field, enum pb_wire w)
{
	put_uvarint(b, ((uint64_t)field << 3) | (uint64_t)w);
}

void pb_put_varint(struct pb_buf *b, uint32_t field, uint64_t v)
{
	if (!v)
		return;
	put_key(b, field, PB_VARINT);
	put_uvarint(b, v);
}

static void put_len(struct pb_buf *b, uint32_t field, const void *p, size_t len)
{
	put_key(b, field, PB_LEN);
	put_uvarint(b, len);
	put_raw(b, p, len);
}

void pb_put_bytes(struct pb_buf *b, uint32_t field, const void *p, size_t len)
{
	if (len)
		put_len(b, field, p, len);
}

void pb_put_str(struct pb_buf *b, uint32_t field, const char *s)
{
	if (s)
		pb_put_bytes(b, field, s, strlen(s));
}

void pb_put_msg(struct pb_buf *b, uint32_t field, const struct pb_buf *msg)
{
	if (msg->error) {
		if (!b->error)
			b->error = msg->error;
		return;
	}
	put_len(b, field, msg->data, msg->len);
}

void pb_put_timestamp(struct pb_buf *b, uint32_t field, int64_t realtime_ns)
{
	struct pb_buf t = { 0 };

	if (realtime_ns < 0)
		realtime_ns = 0;
	pb_put_varint(&t, 1, (uint64_t)(realtime_ns / 1000000000));
	pb_put_varint(&t, 2, (uint64_t)(realtime_ns % 1000000000));
	pb_put_msg(b, field, &t);
	pb_buf_release(&t);
}

void pb_put_any(struct pb_buf *b, uint32_t field, const char *type_url, const struct pb_buf *value)
{
	struct pb_buf a = { 0 };

	pb_put_str(&a, 1, type_url);
	if (value->error)
		a.error = value->error;
	pb_put_bytes(&a, 2, value->data, value->len);
	pb_put_msg(b, field, &a);
	pb_buf_release(&a);
}

void pb_reader_init(struct pb_reader *r, const void *p, size_t len)
{
	r->p = p;
	/* An absent field (NULL, 0): pointer arithmetic on NULL is undefined even for 0. */
	r->end = p ? r->p + len : r->p;
}

static int get_uvarint(struct pb_reader *r, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned i = 0; i < 10; i++) {
		if (r->p >= r->end)
			return -EBADMSG;
		uint8_t c = *r->p++;
		/* The 10th byte may only carry the top bit of 64. */
		if (i == 9 && c > 1)
			return -EBADMSG;
		x |= (uint64_t)(c & 0x7f) << (7 * i);
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -EBADMSG;
}

int pb_next(struct pb_reader *r, struct pb_field *f)
{
	uint64_t key, v;

	if (r->p >= r->end)
		return 0;
	if (get_uvarint(r, &key) < 0 || key >> 3 == 0 || key >> 3 > 0x1fffffff)
		return -EBADMSG;
	*f = (struct pb_field){ .num = (uint32_t)(key >> 3), .wire = (enum pb_wire)(key & 7) };
	switch (f->wire) {
	case PB_VARINT:
		return get_uvarint(r, &f->v) < 0 ? -EBADMSG : 1;
	case PB_FIXED64:
	case PB_FIXED32: {
		size_t n = f->wire == PB_FIXED64 ? 8 : 4;
		if ((size_t)(r->end - r->p) < n)
			return -EBADMSG;
		for (size_t i = 0; i < n; i++)
			f->v |= (uint64_t)r->p[i] << (8 * i);
		r->p += n;
		return 1;
	}
	case PB_LEN:
		if (get_uvarint(r, &v) < 0 || v > (uint64_t)(r->end - r->p))
			return -EBADMSG;
		f->data = r->p;
		f->len = (size_t)v;
		r->p += v;
		return 1;
	default: /* groups (3, 4) are deprecated and never used by containerd */
		return -EBADMSG;
	}
}

int pb_field_str(const struct pb_field *f, char **out)
{
	if (f->wire != PB_LEN || memchr(f->data, '\0', f->len))
		return -EBADMSG;
	char *s = strndup((const char *)f->data, f->len);
	if (!s)
		return -ENOMEM;
	free(*out);
	*out = s;
	return 0;
}

int pb_field_any(const struct pb_field *f, char **type_url, const uint8_t **value, size_t *len)
{
	struct pb_reader r;
	struct pb_field g;
	int n;

	if (f->wire != PB_LEN)
		return -EBADMSG;
	*value = NULL;
	*len = 0;
	pb_reader_init(&r, f->data, f->len);
	while ((n = pb_next(&r, &g)) > 0) {
		if (g.num == 1 && (n = pb_field_str(&g, type_url)) < 0)
			return n;
		if (g.num == 2) {
			if (g.wire != PB_LEN)
				return -EBADMSG;
			*value = g.data;
			*len = g.len;
		}
	}
	return n;
}

int pb_field_timestamp(const struct pb_field *f, int64_t *ns)
{
	struct pb_reader r;
	struct pb_field g;
	int64_t s = 0, nanos = 0;
	int n;

	if (f->wire != PB_LEN)
		return -EBADMSG;
	pb_reader_init(&r, f->data, f->len);
	while ((n = pb_next(&r, &g)) > 0) {
		if (g.wire != PB_VARINT)
			return -EBADMSG;
		if (g.num == 1)
			s = (int64_t)g.v;
		else if (g.num == 2)
			nanos = (int64_t)g.v;
	}
	if (n < 0 || s < 0 || s > INT64_MAX / 1000000000 - 1 || nanos < 0 || nanos >= 1000000000)
		return -EBADMSG;
	*ns = s * 1000000000 + nanos;
	return 0;
}
