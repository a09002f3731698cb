/* SPDX-License-Identifier: MIT */
/*
 * The containerd shim's parsers of bytes from containerd: ttrpc frames in a stream, the Request
 * in each, every protobuf field of its payload walked (nested messages too, depth-bounded, as
 * strings, Anys and Timestamps), an Any's value as an OCI process spec (Exec's JSON) and as the
 * runtime's options (Create's), and the whole input as the runtime's JSON config file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shim/config.h"
#include "shim/pb.h"
#include "shim/shim.h"
#include "shim/shim_vm.h"
#include "shim/ttrpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const uint8_t *p, size_t len, int depth)
{
	struct pb_reader r;
	struct pb_field f;

	pb_reader_init(&r, p, len);
	while (pb_next(&r, &f) > 0) {
		char *s = NULL, *type = NULL;
		const uint8_t *val;
		size_t vlen;
		int64_t ns;

		if (f.wire != PB_LEN)
			continue;
		pb_field_str(&f, &s);
		pb_field_timestamp(&f, &ns);
		if (pb_field_any(&f, &type, &val, &vlen) == 0 && val) {
			struct shim_proc proc;
			char *why;
			char *path = NULL;
			if (shim_oci_process((const char *)val, vlen, &proc, &why) == 0)
				shim_proc_release(&proc);
			shim_runtime_options(type, val, vlen, &path, &why);
			free(path);
		}
		free(s);
		free(type);
		if (depth < 8)
			walk(f.data, f.len, depth + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, used;
	struct ttrpc_frame f;

	while (ttrpc_frame_parse(data + off, size - off, &f, &used) == 1) {
		struct ttrpc_request req;
		off += used;
		if (ttrpc_request_decode(f.payload, f.len, &req) == 0) {
			walk(req.payload, req.len, 0);
			ttrpc_request_release(&req);
		}
	}
	/* The whole input as one message too: the parser must hold on any bytes. */
	walk(data, size, 0);
	struct shim_config c;
	char *why;
	if (shim_config_parse((const char *)data, size, &c, &why) == 0)
		shim_config_release(&c);
	return 0;
}
