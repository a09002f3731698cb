/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the guest side of the agent protocol. Bytes from the host go through the
 * streaming decoder, and every decoded EXEC payload through exec_req_parse() (the guest's TLV
 * parser for argv, env, cwd, timeout, uid/gid). Invariants: no crash, no leak, and a parsed
 * request always has a non-empty, NULL-terminated argv of NUL-free strings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/exec.h"
#include "guest-init/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const uint8_t *p, size_t len)
{
	struct exec_req req;
	const char *why = NULL;

	memset(&req, 0, sizeof(req));
	if (exec_req_parse(p, len, &req, &why) < 0) {
		if (!why)
			abort(); /* every refusal must say why: it becomes the ERROR frame's text */
		return;
	}
	if (!req.argv || !req.argv[0] || !req.argv[0][0])
		abort();
	for (char **a = req.argv; *a; a++)
		(void)strlen(*a);
	for (char **e = req.envp; e && *e; e++)
		if (!strchr(*e, '='))
			abort();
	exec_req_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct avm_decoder d;
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int r;

	/* The raw bytes as an EXEC payload: the parser sees every shape, not just framed ones. */
	check_request(data, size);

	avm_decoder_init(&d);
	if (avm_decoder_feed(&d, data, size) < 0)
		abort();
	while ((r = avm_decoder_next(&d, &h, &p, &why)) != AVM_DECODE_NEED_MORE)
		if (r == AVM_DECODE_FRAME && h.type == AVM_MSG_EXEC)
			check_request(p, h.len);
	avm_decoder_release(&d);
	return 0;
}
