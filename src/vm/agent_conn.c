/* SPDX-License-Identifier: MIT */
#include "vm/agent_conn.h"

#include <string.h>
#include <unistd.h>

#include "base/util.h"

int agent_conn_init(struct agent_conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	avm_decoder_init(&c->in);
	return fd_set_nonblock(fd, true);
}

void agent_conn_release(struct agent_conn *c)
{
	avm_decoder_release(&c->in);
	avm_buf_release(&c->out);
	c->fd = -1;
}

size_t agent_conn_pending(const struct agent_conn *c)
{
	return c->out.len - c->out_off;
}

int agent_conn_flush(struct agent_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		c->out_off += (size_t)n;
	}
	c->out.len = c->out_off = 0;
	return 0;
}

int agent_conn_send(struct agent_conn *c, uint16_t type, uint32_t id, const void *payload,
		    uint32_t len)
{
	uint8_t hdr[AVM_PROTO_HDR_SIZE];
	int r = avm_frame_encode_hdr(hdr, type, 0, id, payload, len);

	if (r < 0)
		return r;
	/*
	 * Reclaim the written prefix before growing the queue. A peer that reads steadily but
	 * never lets the queue empty (a long stdin or cp stream) would otherwise grow it by
	 * every byte ever sent: move the unwritten rest to the front once the prefix is half.
	 */
	if (c->out_off > 0 && c->out_off == c->out.len) {
		c->out.len = c->out_off = 0;
	} else if (c->out_off > 0 && c->out_off >= c->out.len / 2) {
		memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
		c->out.len -= c->out_off;
		c->out_off = 0;
	}
	r = avm_buf_put(&c->out, hdr, sizeof(hdr));
	if (r == 0)
		r = avm_buf_put(&c->out, payload, len);
	if (r < 0)
		return r;
	return agent_conn_flush(c);
}

int agent_conn_read(struct agent_conn *c)
{
	uint8_t buf[64 * 1024];
	ssize_t n;

	do
		n = read(c->fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		c->eof = true;
		return -EPIPE;
	}
	int r = avm_decoder_feed(&c->in, buf, (size_t)n);
	return r < 0 ? r : (int)n;
}

int agent_conn_next(struct agent_conn *c, struct avm_frame_hdr *hdr, const uint8_t **payload,
		    const char **why)
{
	return avm_decoder_next(&c->in, hdr, payload, why);
}
