/* SPDX-License-Identifier: MIT */
/* Agent protocol: CRC, framing, the streaming decoder's resync, TLVs, EXIT payloads. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "guest-init/proto.h"

static size_t make_frame(uint8_t *out, uint16_t type, uint32_t id, const void *p, uint32_t len)
{
	assert_int_equal(avm_frame_encode_hdr(out, type, 0, id, p, len), 0);
	memcpy(out + AVM_PROTO_HDR_SIZE, p, len);
	return AVM_PROTO_HDR_SIZE + len;
}

static void test_crc32_known_vector(void **state)
{
	/* The standard check value of CRC-32/ISO-HDLC. */
	assert_int_equal(avm_crc32(0, "123456789", 9), 0xcbf43926u);
	/* Chaining equals one pass. */
	uint32_t c = avm_crc32(avm_crc32(0, "1234", 4), "56789", 5);
	assert_int_equal(c, 0xcbf43926u);
}

static void test_roundtrip_one_frame(void **state)
{
	struct avm_decoder d;
	uint8_t buf[128];
	size_t n = make_frame(buf, AVM_MSG_STDOUT, 42, "hello", 5);
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;

	avm_decoder_init(&d);
	assert_int_equal(avm_decoder_feed(&d, buf, n), 0);
	assert_int_equal(avm_decoder_next(&d, &h, &p, &why), AVM_DECODE_FRAME);
	assert_int_equal(h.type, AVM_MSG_STDOUT);
	assert_int_equal(h.id, 42);
	assert_int_equal(h.len, 5);
	assert_memory_equal(p, "hello", 5);
	assert_int_equal(avm_decoder_next(&d, &h, &p, &why), AVM_DECODE_NEED_MORE);
	avm_decoder_release(&d);
}

static void test_byte_by_byte(void **state)
{
	struct avm_decoder d;
	uint8_t buf[256];
	size_t n = make_frame(buf, AVM_MSG_PING, 7, "abc", 3);
	n += make_frame(buf + n, AVM_MSG_PONG, 8, "", 0);
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int frames = 0;

	avm_decoder_init(&d);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(avm_decoder_feed(&d, buf + i, 1), 0);
		int r;
		while ((r = avm_decoder_next(&d, &h, &p, &why)) == AVM_DECODE_FRAME)
			frames++;
		assert_int_equal(r, AVM_DECODE_NEED_MORE);
	}
	assert_int_equal(frames, 2);
	assert_int_equal(d.bad_frames, 0);
	avm_decoder_release(&d);
}

/* Feed everything, collect good frame ids and the count of bad reports. */
static int decode_all(const uint8_t *buf, size_t n, uint32_t *ids, int max_ids, int *bad)
{
	struct avm_decoder d;
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int good = 0, r;

	*bad = 0;
	avm_decoder_init(&d);
	assert_int_equal(avm_decoder_feed(&d, buf, n), 0);
	while ((r = avm_decoder_next(&d, &h, &p, &why)) != AVM_DECODE_NEED_MORE) {
		if (r == AVM_DECODE_FRAME) {
			if (good < max_ids)
				ids[good] = h.id;
			good++;
		} else {
			assert_non_null(why);
			(*bad)++;
		}
	}
	avm_decoder_release(&d);
	return good;
}

static void test_bad_crc_then_recovery(void **state)
{
	uint8_t buf[256];
	uint32_t ids[4];
	int bad;
	size_t a = make_frame(buf, AVM_MSG_STDOUT, 1, "payload", 7);
	buf[AVM_PROTO_HDR_SIZE + 2] ^= 0x40; /* corrupt the payload */
	size_t b = make_frame(buf + a, AVM_MSG_STDOUT, 2, "ok", 2);

	assert_int_equal(decode_all(buf, a + b, ids, 4, &bad), 1);
	assert_int_equal(ids[0], 2);
	assert_true(bad >= 1);
}

static void test_garbage_prefix_then_recovery(void **state)
{
	uint8_t buf[256];
	uint32_t ids[4];
	int bad;
	memcpy(buf, "xxAVgarbage\nAVM", 15); /* includes a partial magic to trip the scanner */
	size_t n = 15 + make_frame(buf + 15, AVM_MSG_PING, 9, "", 0);

	assert_int_equal(decode_all(buf, n, ids, 4, &bad), 1);
	assert_int_equal(ids[0], 9);
	assert_true(bad >= 1);
}

static void test_oversize_length_rejected(void **state)
{
	uint8_t buf[64];
	uint32_t ids[4];
	int bad;
	size_t a = make_frame(buf, AVM_MSG_STDIN, 3, "", 0);
	avm_put_le32(buf + 16, AVM_PROTO_MAX_PAYLOAD + 1); /* length beyond the hard limit */
	size_t b = make_frame(buf + a, AVM_MSG_STDIN, 4, "z", 1);

	assert_int_equal(decode_all(buf, a + b, ids, 4, &bad), 1);
	assert_int_equal(ids[0], 4);
	assert_true(bad >= 1);
	assert_int_equal(avm_frame_encode_hdr(buf, AVM_MSG_STDIN, 0, 1, NULL,
					      AVM_PROTO_MAX_PAYLOAD + 1),
			 -EMSGSIZE);
}

static void test_bad_version_and_type(void **state)
{
	uint8_t buf[128];
	uint32_t ids[4];
	int bad;
	size_t a = make_frame(buf, 99, 5, "", 0); /* unknown type, valid CRC */
	size_t b = make_frame(buf + a, AVM_MSG_PING, 6, "", 0);
	avm_put_le16(buf + a + 4, 2); /* version 2: unsupported (CRC now also wrong) */
	size_t c = make_frame(buf + a + b, AVM_MSG_PING, 7, "", 0);

	assert_int_equal(decode_all(buf, a + b + c, ids, 4, &bad), 1);
	assert_int_equal(ids[0], 7);
	assert_int_equal(bad >= 2, 1);
}

static void test_tlv_roundtrip_and_truncation(void **state)
{
	struct avm_buf b = { 0 };
	struct avm_tlv_iter it;
	uint16_t tag;
	const uint8_t *val;
	uint32_t len, u32;
	uint64_t u64;

	assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_ARG, "echo"), 0);
	assert_int_equal(avm_tlv_put_u32(&b, AVM_TAG_TIMEOUT_MS, 1234), 0);
	assert_int_equal(avm_tlv_put_u64(&b, AVM_TAG_TIME_NS, 1ull << 40), 0);
	avm_tlv_iter_init(&it, b.data, b.len);
	assert_int_equal(avm_tlv_next(&it, &tag, &val, &len), 1);
	assert_int_equal(tag, AVM_TAG_ARG);
	assert_int_equal(len, 4);
	assert_memory_equal(val, "echo", 4);
	assert_int_equal(avm_tlv_next(&it, &tag, &val, &len), 1);
	assert_int_equal(avm_tlv_u32(val, len, &u32), 0);
	assert_int_equal(u32, 1234);
	assert_int_equal(avm_tlv_u64(val, len, &u64), -EBADMSG); /* wrong width */
	assert_int_equal(avm_tlv_next(&it, &tag, &val, &len), 1);
	assert_int_equal(avm_tlv_u64(val, len, &u64), 0);
	assert_true(u64 == (1ull << 40));
	assert_int_equal(avm_tlv_next(&it, &tag, &val, &len), 0);

	/* A record claiming more bytes than remain is an error, never an overread. */
	avm_tlv_iter_init(&it, b.data, 7);
	assert_int_equal(avm_tlv_next(&it, &tag, &val, &len), -EBADMSG);
	avm_tlv_iter_init(&it, b.data, 3);
	assert_int_equal(avm_tlv_next(&it, &tag, &val, &len), -EBADMSG);
	avm_buf_release(&b);
}

static void test_exit_info_roundtrip(void **state)
{
	struct avm_exit_info in = { .kind = AVM_EXIT_SIGNAL, .code = 9, .duration_us = 123456,
				    .utime_us = 1, .stime_us = 2, .maxrss_kb = 3000 };
	struct avm_exit_info out;
	uint8_t wire[AVM_EXIT_INFO_SIZE];

	avm_exit_info_encode(&in, wire);
	assert_int_equal(avm_exit_info_decode(wire, sizeof(wire), &out), 0);
	assert_int_equal(out.kind, AVM_EXIT_SIGNAL);
	assert_int_equal(out.code, 9);
	assert_true(out.duration_us == 123456 && out.maxrss_kb == 3000);
	assert_int_equal(avm_exit_info_decode(wire, sizeof(wire) - 1, &out), -EBADMSG);
	avm_put_le32(wire, 77); /* unknown kind */
	assert_int_equal(avm_exit_info_decode(wire, sizeof(wire), &out), -EBADMSG);
}

static void test_big_payload_split(void **state)
{
	static uint8_t payload[AVM_PROTO_MAX_PAYLOAD];
	static uint8_t buf[AVM_PROTO_MAX_PAYLOAD + AVM_PROTO_HDR_SIZE];
	struct avm_decoder d;
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	size_t n = make_frame(buf, AVM_MSG_STDOUT, 1, payload, sizeof(payload));
	avm_decoder_init(&d);
	for (size_t off = 0; off < n; off += 1000) {
		size_t k = n - off < 1000 ? n - off : 1000;
		assert_int_equal(avm_decoder_feed(&d, buf + off, k), 0);
		if (off + k < n)
			assert_int_equal(avm_decoder_next(&d, &h, &p, &why), AVM_DECODE_NEED_MORE);
	}
	assert_int_equal(avm_decoder_next(&d, &h, &p, &why), AVM_DECODE_FRAME);
	assert_memory_equal(p, payload, sizeof(payload));
	avm_decoder_release(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32_known_vector),
		cmocka_unit_test(test_roundtrip_one_frame),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_bad_crc_then_recovery),
		cmocka_unit_test(test_garbage_prefix_then_recovery),
		cmocka_unit_test(test_oversize_length_rejected),
		cmocka_unit_test(test_bad_version_and_type),
		cmocka_unit_test(test_tlv_roundtrip_and_truncation),
		cmocka_unit_test(test_exit_info_roundtrip),
		cmocka_unit_test(test_big_payload_split),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
