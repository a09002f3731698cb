/* SPDX-License-Identifier: MIT */
/*
 * Host end of the guest agent channel (guest-init/proto.h framing) over a stream fd. Output is
 * queued and written without blocking, so the host never deadlocks against a guest that is
 * itself blocked writing output to us; the caller polls for EPOLLOUT while agent_conn_pending().
 */
#ifndef AGENTVM_AGENT_CONN_H
#define AGENTVM_AGENT_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "guest-init/proto.h"
#include "base/error.h"

struct agent_conn {
	int fd; /* borrowed; set O_NONBLOCK by agent_conn_init */
	struct avm_decoder in;
	struct avm_buf out; /* encoded frames not yet written */
	size_t out_off;     /* bytes of out already written */
	bool eof;           /* the guest side closed */
};

int agent_conn_init(struct agent_conn *c, int fd);
void agent_conn_release(struct agent_conn *c);

/* Queue one frame and try to write it now. -EMSGSIZE for an oversize payload, -ENOMEM. */
int agent_conn_send(struct agent_conn *c, uint16_t type, uint32_t id, const void *payload,
		    uint32_t len);
/* Write what is queued without blocking. 0, or -errno (-EPIPE when the guest went away). */
int agent_conn_flush(struct agent_conn *c);
/* Bytes queued and not yet written. */
size_t agent_conn_pending(const struct agent_conn *c);

/*
 * Read what is available into the decoder. Returns bytes read (> 0), 0 when nothing was
 * available, or -EPIPE at EOF (c->eof is set), -errno on error.
 */
int agent_conn_read(struct agent_conn *c);

/* Next decoded frame: see avm_decoder_next(). */
int agent_conn_next(struct agent_conn *c, struct avm_frame_hdr *hdr, const uint8_t **payload,
		    const char **why);

#endif
