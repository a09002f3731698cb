/* SPDX-License-Identifier: MIT */
/*
 * Protocol buffers wire format, the subset containerd's shim API needs: varints, length-
 * delimited fields (strings, bytes, nested messages, repeated elements), and skipping of fixed32/
 * fixed64 fields we do not read. Written from the wire-format spec, not generated: the shim reads
 * bytes from containerd and must never trust them, so the reader is bounded (a varint is at most
 * 10 bytes, a length never runs past its message) and every message has a size limit.
 */
#ifndef AGENTVM_SHIM_PB_H
#define AGENTVM_SHIM_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* No message the shim accepts or builds is larger (ttrpc's own limit is 4 MiB). */
#define PB_MAX_MESSAGE (4u * 1024u * 1024u)

enum pb_wire {
	PB_VARINT = 0,
	PB_FIXED64 = 1,
	PB_LEN = 2,
	PB_FIXED32 = 5,
};

/* A growable output buffer. */
struct pb_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	int error; /* first -errno seen (-ENOMEM, -EMSGSIZE); later puts are no-ops */
};

void pb_buf_release(struct pb_buf *b);
/* A field written with a zero/empty value is skipped, as proto3 does. */
void pb_put_varint(struct pb_buf *b, uint32_t field, uint64_t v);
void pb_put_bytes(struct pb_buf *b, uint32_t field, const void *p, size_t len);
void pb_put_str(struct pb_buf *b, uint32_t field, const char *s);
/* Always written, even when empty (a present but empty nested message matters). */
void pb_put_msg(struct pb_buf *b, uint32_t field, const struct pb_buf *msg);
/* google.protobuf.Timestamp {seconds = 1, nanos = 2} from CLOCK_REALTIME nanoseconds. */
void pb_put_timestamp(struct pb_buf *b, uint32_t field, int64_t realtime_ns);
/* google.protobuf.Any {type_url = 1, value = 2}. */
void pb_put_any(struct pb_buf *b, uint32_t field, const char *type_url, const struct pb_buf *value);

/* A reader over one message. */
struct pb_reader {
	const uint8_t *p;
	const uint8_t *end;
};

struct pb_field {
	uint32_t num;
	enum pb_wire wire;
	uint64_t v;        /* PB_VARINT, PB_FIXED32, PB_FIXED64 */
	const uint8_t *data; /* PB_LEN */
	size_t len;
};

void pb_reader_init(struct pb_reader *r, const void *p, size_t len);
/* 1 and *f for each field, 0 at the clean end, -EBADMSG on malformed bytes. */
int pb_next(struct pb_reader *r, struct pb_field *f);
/* A PB_LEN field as a NUL-terminated copy (malloc); -EBADMSG when it is no string (wrong wire
 * type or an embedded NUL), -ENOMEM. Replaces (and frees) *out: the last occurrence wins. */
int pb_field_str(const struct pb_field *f, char **out);
/* google.protobuf.Any: type_url (copied) and value (pointing into the field's bytes). */
int pb_field_any(const struct pb_field *f, char **type_url, const uint8_t **value, size_t *len);
/* google.protobuf.Timestamp to CLOCK_REALTIME nanoseconds. */
int pb_field_timestamp(const struct pb_field *f, int64_t *ns);

#endif
