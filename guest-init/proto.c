/* SPDX-License-Identifier: MIT */
/* agentvm guest agent protocol: framing, CRC32, streaming decoder, TLVs. See proto.h. */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
	crc_table_ready = 1;
}

uint32_t avm_crc32(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!crc_table_ready)
		crc_table_init();
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void hdr_write(uint8_t *out, const struct avm_frame_hdr *h)
{
	avm_put_le32(out, h->magic);
	avm_put_le16(out + 4, h->version);
	avm_put_le16(out + 6, h->type);
	avm_put_le32(out + 8, h->flags);
	avm_put_le32(out + 12, h->id);
	avm_put_le32(out + 16, h->len);
	avm_put_le32(out + 20, h->crc);
}

static void hdr_read(const uint8_t *in, struct avm_frame_hdr *h)
{
	h->magic = avm_get_le32(in);
	h->version = avm_get_le16(in + 4);
	h->type = avm_get_le16(in + 6);
	h->flags = avm_get_le32(in + 8);
	h->id = avm_get_le32(in + 12);
	h->len = avm_get_le32(in + 16);
	h->crc = avm_get_le32(in + 20);
}

static uint32_t frame_crc(const uint8_t hdr_bytes[AVM_PROTO_HDR_SIZE], const void *payload,
			  uint32_t len)
{
	uint8_t tmp[AVM_PROTO_HDR_SIZE];

	memcpy(tmp, hdr_bytes, sizeof(tmp));
	memset(tmp + 20, 0, 4);
	return avm_crc32(avm_crc32(0, tmp, sizeof(tmp)), payload, len);
}

int avm_frame_encode_hdr(uint8_t out[AVM_PROTO_HDR_SIZE], uint16_t type, uint32_t flags,
			 uint32_t id, const void *payload, uint32_t len)
{
	struct avm_frame_hdr h = {
		.magic = AVM_PROTO_MAGIC,
		.version = AVM_PROTO_VERSION,
		.type = type,
		.flags = flags,
		.id = id,
		.len = len,
		.crc = 0,
	};

	if (len > AVM_PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	hdr_write(out, &h);
	avm_put_le32(out + 20, frame_crc(out, payload, len));
	return 0;
}

void avm_decoder_init(struct avm_decoder *d)
{
	memset(d, 0, sizeof(*d));
}

void avm_decoder_release(struct avm_decoder *d)
{
	free(d->buf);
	memset(d, 0, sizeof(*d));
}

int avm_decoder_feed(struct avm_decoder *d, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	/* Compact before growing: consumed bytes at the front are dead. */
	if (d->off > 0) {
		memmove(d->buf, d->buf + d->off, d->len - d->off);
		d->len -= d->off;
		d->off = 0;
	}
	if (d->len + len > d->cap) {
		size_t cap = d->cap ? d->cap : 4096;
		while (cap < d->len + len)
			cap *= 2;
		uint8_t *nb = realloc(d->buf, cap);
		if (!nb)
			return -ENOMEM;
		d->buf = nb;
		d->cap = cap;
	}
	memcpy(d->buf + d->len, data, len);
	d->len += len;
	return 0;
}

/* Skip at least one byte, then up to the next possible magic, so a corrupt frame costs little. */
static void resync(struct avm_decoder *d)
{
	static const uint8_t magic[4] = { 'A', 'V', 'M', '1' };
	size_t i = d->off + 1;

	for (; i < d->len; i++) {
		size_t n = d->len - i < 4 ? d->len - i : 4;
		if (memcmp(d->buf + i, magic, n) == 0)
			break;
	}
	d->off = i;
	d->bad_frames++;
}

int avm_decoder_next(struct avm_decoder *d, struct avm_frame_hdr *hdr, const uint8_t **payload,
		     const char **why)
{
	size_t avail = d->len - d->off;
	/* An empty decoder has no buffer yet: NULL + 0 is undefined behaviour (UBSan). */
	const uint8_t *p = d->buf ? d->buf + d->off : NULL;

	*why = NULL;
	*payload = NULL;
	if (avail < AVM_PROTO_HDR_SIZE) {
		/* A partial header that cannot become a magic is garbage: drop it now. */
		static const uint8_t magic[4] = { 'A', 'V', 'M', '1' };
		size_t n = avail < 4 ? avail : 4;
		if (avail > 0 && memcmp(p, magic, n) != 0) {
			memset(hdr, 0, sizeof(*hdr));
			resync(d);
			*why = "bad magic";
			return AVM_DECODE_BAD;
		}
		return AVM_DECODE_NEED_MORE;
	}
	hdr_read(p, hdr);
	if (hdr->magic != AVM_PROTO_MAGIC) {
		resync(d);
		*why = "bad magic";
		return AVM_DECODE_BAD;
	}
	if (hdr->version != AVM_PROTO_VERSION) {
		resync(d);
		*why = "unsupported protocol version";
		return AVM_DECODE_BAD;
	}
	if (hdr->len > AVM_PROTO_MAX_PAYLOAD) {
		resync(d);
		*why = "payload too large";
		return AVM_DECODE_BAD;
	}
	if (avail < AVM_PROTO_HDR_SIZE + (size_t)hdr->len)
		return AVM_DECODE_NEED_MORE;
	if (frame_crc(p, p + AVM_PROTO_HDR_SIZE, hdr->len) != hdr->crc) {
		/* The length may be the corrupt field, so do not trust it to skip the frame. */
		resync(d);
		*why = "bad checksum";
		return AVM_DECODE_BAD;
	}
	if (hdr->type == 0 || hdr->type > AVM_MSG_TYPE_MAX) {
		d->off += AVM_PROTO_HDR_SIZE + hdr->len;
		d->bad_frames++;
		*why = "unknown message type";
		return AVM_DECODE_BAD;
	}
	*payload = p + AVM_PROTO_HDR_SIZE;
	d->off += AVM_PROTO_HDR_SIZE + hdr->len;
	if (d->off == d->len)
		d->off = d->len = 0; /* the payload pointer stays valid: nothing is moved until feed */
	return AVM_DECODE_FRAME;
}

void avm_buf_release(struct avm_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

int avm_buf_put(struct avm_buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + len)
			cap *= 2;
		uint8_t *nd = realloc(b->data, cap);
		if (!nd)
			return -ENOMEM;
		b->data = nd;
		b->cap = cap;
	}
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

int avm_tlv_put(struct avm_buf *b, uint16_t tag, const void *val, uint32_t len)
{
	uint8_t h[6];
	int r;

	if ((uint64_t)b->len + 6 + len > AVM_PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	avm_put_le16(h, tag);
	avm_put_le32(h + 2, len);
	r = avm_buf_put(b, h, sizeof(h));
	if (r < 0)
		return r;
	return avm_buf_put(b, val, len);
}

int avm_tlv_put_str(struct avm_buf *b, uint16_t tag, const char *s)
{
	return avm_tlv_put(b, tag, s, (uint32_t)strlen(s));
}

int avm_tlv_put_u32(struct avm_buf *b, uint16_t tag, uint32_t v)
{
	uint8_t x[4];

	avm_put_le32(x, v);
	return avm_tlv_put(b, tag, x, sizeof(x));
}

int avm_tlv_put_u64(struct avm_buf *b, uint16_t tag, uint64_t v)
{
	uint8_t x[8];

	avm_put_le64(x, v);
	return avm_tlv_put(b, tag, x, sizeof(x));
}

void avm_tlv_iter_init(struct avm_tlv_iter *it, const uint8_t *payload, size_t len)
{
	it->p = payload;
	it->left = len;
}

int avm_tlv_next(struct avm_tlv_iter *it, uint16_t *tag, const uint8_t **val, uint32_t *len)
{
	uint32_t l;

	if (it->left == 0)
		return 0;
	if (it->left < 6)
		return -EBADMSG;
	l = avm_get_le32(it->p + 2);
	if (l > it->left - 6)
		return -EBADMSG;
	*tag = avm_get_le16(it->p);
	*len = l;
	*val = it->p + 6;
	it->p += 6 + (size_t)l;
	it->left -= 6 + (size_t)l;
	return 1;
}

int avm_tlv_u32(const uint8_t *val, uint32_t len, uint32_t *out)
{
	if (len != 4)
		return -EBADMSG;
	*out = avm_get_le32(val);
	return 0;
}

int avm_tlv_u64(const uint8_t *val, uint32_t len, uint64_t *out)
{
	if (len != 8)
		return -EBADMSG;
	*out = avm_get_le64(val);
	return 0;
}

void avm_exit_info_encode(const struct avm_exit_info *in, uint8_t out[AVM_EXIT_INFO_SIZE])
{
	avm_put_le32(out, in->kind);
	avm_put_le32(out + 4, (uint32_t)in->code);
	avm_put_le64(out + 8, in->duration_us);
	avm_put_le64(out + 16, in->utime_us);
	avm_put_le64(out + 24, in->stime_us);
	avm_put_le64(out + 32, in->maxrss_kb);
	avm_put_le64(out + 40, in->reserved);
}

int avm_exit_info_decode(const uint8_t *p, size_t len, struct avm_exit_info *out)
{
	if (len != AVM_EXIT_INFO_SIZE)
		return -EBADMSG;
	out->kind = avm_get_le32(p);
	out->code = (int32_t)avm_get_le32(p + 4);
	out->duration_us = avm_get_le64(p + 8);
	out->utime_us = avm_get_le64(p + 16);
	out->stime_us = avm_get_le64(p + 24);
	out->maxrss_kb = avm_get_le64(p + 32);
	out->reserved = avm_get_le64(p + 40);
	if (out->kind > AVM_EXIT_OOM)
		return -EBADMSG;
	return 0;
}

const char *avm_msg_type_name(uint16_t type)
{
	static const char *const names[] = {
		[AVM_MSG_READY] = "READY",	 [AVM_MSG_EXEC] = "EXEC",
		[AVM_MSG_STDIN] = "STDIN",	 [AVM_MSG_STDOUT] = "STDOUT",
		[AVM_MSG_STDERR] = "STDERR",	 [AVM_MSG_SIGNAL] = "SIGNAL",
		[AVM_MSG_EXIT] = "EXIT",	 [AVM_MSG_PING] = "PING",
		[AVM_MSG_PONG] = "PONG",	 [AVM_MSG_ERROR] = "ERROR",
		[AVM_MSG_POWEROFF] = "POWEROFF", [AVM_MSG_SYNC] = "SYNC",
		[AVM_MSG_SYNC_DONE] = "SYNC_DONE", [AVM_MSG_STATS] = "STATS",
		[AVM_MSG_STATS_REPLY] = "STATS_REPLY",
	};

	if (type == 0 || type > AVM_MSG_TYPE_MAX)
		return "UNKNOWN";
	return names[type];
}

int avm_guest_stats_encode(struct avm_buf *b, const struct avm_guest_stats *s)
{
	if (avm_tlv_put_u64(b, AVM_TAG_MEM_TOTAL, s->mem_total) < 0 ||
	    avm_tlv_put_u64(b, AVM_TAG_MEM_AVAILABLE, s->mem_available) < 0)
		return -ENOMEM;
	return 0;
}

int avm_guest_stats_decode(const uint8_t *p, size_t len, struct avm_guest_stats *out)
{
	struct avm_tlv_iter it;
	const uint8_t *val;
	uint32_t vlen;
	uint16_t tag;
	int r, have = 0;

	out->mem_total = out->mem_available = 0;
	avm_tlv_iter_init(&it, p, len);
	while ((r = avm_tlv_next(&it, &tag, &val, &vlen)) == 1) {
		if (tag == AVM_TAG_MEM_TOTAL) {
			if (avm_tlv_u64(val, vlen, &out->mem_total) < 0)
				return -EBADMSG;
			have = 1;
		} else if (tag == AVM_TAG_MEM_AVAILABLE) {
			if (avm_tlv_u64(val, vlen, &out->mem_available) < 0)
				return -EBADMSG;
		}
	}
	if (r < 0 || !have || out->mem_available > out->mem_total)
		return -EBADMSG;
	return 0;
}

/* The number after "Key:" at the start of a line, in kB, as bytes; 0 when absent or absurd. */
static uint64_t meminfo_field(const char *text, size_t len, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = 0; i + klen < len; i++) {
		if ((i > 0 && text[i - 1] != '\n') || memcmp(text + i, key, klen) != 0)
			continue;
		uint64_t v = 0;
		size_t j = i + klen;
		while (j < len && text[j] == ' ')
			j++;
		for (; j < len && text[j] >= '0' && text[j] <= '9'; j++) {
			if (v > (UINT64_MAX / 1024 - 9) / 10)
				return 0;
			v = v * 10 + (uint64_t)(text[j] - '0');
		}
		return v * 1024;
	}
	return 0;
}

int avm_meminfo_parse(const char *text, size_t len, struct avm_guest_stats *out)
{
	out->mem_total = meminfo_field(text, len, "MemTotal:");
	out->mem_available = meminfo_field(text, len, "MemAvailable:");
	if (out->mem_available > out->mem_total)
		out->mem_available = out->mem_total;
	return out->mem_total ? 0 : -EBADMSG;
}
