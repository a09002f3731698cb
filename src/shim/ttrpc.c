/* SPDX-License-Identifier: MIT */
/* ttrpc framing and a single-threaded server (see ttrpc.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ttrpc.h"

/* A peer that does not read its answers is dropped rather than grow our memory without end. */
#define TTRPC_MAX_OUT (16u * 1024u * 1024u)
#define TTRPC_MAX_WATCH 64

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

int ttrpc_frame_parse(const uint8_t *buf, size_t len, struct ttrpc_frame *f, size_t *used)
{
	if (len < TTRPC_HDR_SIZE)
		return 0;
	f->len = get_be32(buf);
	f->stream = get_be32(buf + 4);
	f->type = buf[8];
	f->flags = buf[9];
	if (f->len > TTRPC_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (len - TTRPC_HDR_SIZE < f->len)
		return 0;
	f->payload = buf + TTRPC_HDR_SIZE;
	*used = TTRPC_HDR_SIZE + f->len;
	return 1;
}

void ttrpc_request_release(struct ttrpc_request *req)
{
	free(req->service);
	free(req->method);
	*req = (struct ttrpc_request){ 0 };
}

int ttrpc_request_decode(const uint8_t *p, size_t len, struct ttrpc_request *req)
{
	struct pb_reader r;
	struct pb_field f;
	int n;

	*req = (struct ttrpc_request){ 0 };
	pb_reader_init(&r, p, len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 1)
			n = pb_field_str(&f, &req->service);
		else if (f.num == 2)
			n = pb_field_str(&f, &req->method);
		else if (f.num == 3 && f.wire == PB_LEN) {
			req->payload = f.data;
			req->len = f.len;
		}
		if (n < 0)
			break;
	}
	if (n == 0 && (!req->service || !req->method))
		n = -EBADMSG;
	if (n < 0)
		ttrpc_request_release(req);
	return n < 0 ? n : 0;
}

static int frame_wrap(struct pb_buf *out, uint32_t stream, uint8_t type, const struct pb_buf *msg)
{
	uint8_t hdr[TTRPC_HDR_SIZE];

	if (msg->error)
		return msg->error;
	if (msg->len > TTRPC_MAX_PAYLOAD)
		return -EMSGSIZE;
	put_be32(hdr, (uint32_t)msg->len);
	put_be32(hdr + 4, stream);
	hdr[8] = type;
	hdr[9] = 0;
	size_t need = out->len + sizeof(hdr) + msg->len;
	if (need > out->cap) {
		uint8_t *d = realloc(out->data, need);
		if (!d)
			return -ENOMEM;
		out->data = d;
		out->cap = need;
	}
	memcpy(out->data + out->len, hdr, sizeof(hdr));
	if (msg->len)
		memcpy(out->data + out->len + sizeof(hdr), msg->data, msg->len);
	out->len = need;
	return 0;
}

int ttrpc_response_encode(struct pb_buf *out, uint32_t stream, int code, const char *msg,
			  const struct pb_buf *payload)
{
	struct pb_buf st = { 0 }, resp = { 0 };
	int r;

	pb_put_varint(&st, 1, (uint64_t)code);
	pb_put_str(&st, 2, msg);
	if (code != TTRPC_OK)
		pb_put_msg(&resp, 1, &st);
	if (payload)
		pb_put_msg(&resp, 2, payload);
	r = frame_wrap(out, stream, TTRPC_TYPE_RESPONSE, &resp);
	pb_buf_release(&st);
	pb_buf_release(&resp);
	return r;
}

int ttrpc_request_encode(struct pb_buf *out, uint32_t stream, const char *service,
			 const char *method, const struct pb_buf *payload)
{
	struct pb_buf req = { 0 };
	int r;

	pb_put_str(&req, 1, service);
	pb_put_str(&req, 2, method);
	if (payload)
		pb_put_msg(&req, 3, payload);
	r = frame_wrap(out, stream, TTRPC_TYPE_REQUEST, &req);
	pb_buf_release(&req);
	return r;
}

/* --- the server ---------------------------------------------------------------------------- */

struct conn {
	int fd; /* -1: free slot */
	unsigned gen;
	uint8_t *in;
	size_t in_len;
	struct pb_buf out;
	size_t out_off;
};

struct watch {
	int fd;
	ttrpc_fd_cb cb;
	void *ctx;
};

struct ttrpc_server {
	int epfd;
	int lfd;
	bool stop;
	unsigned next_gen;
	ttrpc_handler handler;
	void *ctx;
	struct conn conns[TTRPC_MAX_CONNS];
	struct watch watches[TTRPC_MAX_WATCH];
};

/* epoll data: 0 = the listener, 1..TTRPC_MAX_CONNS = conns, then watches by fd + offset. */
#define TAG_WATCH (1ull << 32)

static int ep_add(int epfd, int fd, uint32_t ev, uint64_t tag)
{
	struct epoll_event e = { .events = ev, .data.u64 = tag };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

int ttrpc_server_from_fd(int fd, ttrpc_handler h, void *ctx, struct ttrpc_server **out)
{
	struct ttrpc_server *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->lfd = fd;
	s->handler = h;
	s->ctx = ctx;
	for (int i = 0; i < TTRPC_MAX_CONNS; i++)
		s->conns[i].fd = -1;
	for (int i = 0; i < TTRPC_MAX_WATCH; i++)
		s->watches[i].fd = -1;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0 || (r = ep_add(s->epfd, fd, EPOLLIN, 0)) < 0) {
		r = -errno;
		if (s->epfd >= 0)
			close(s->epfd);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

int ttrpc_server_new(const char *path, ttrpc_handler h, void *ctx, struct ttrpc_server **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = ttrpc_server_from_fd(fd, h, ctx, out);
	if (r < 0)
		close(fd);
	return r;
}

static void conn_close(struct ttrpc_server *s, struct conn *c)
{
	if (c->fd < 0)
		return;
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in);
	pb_buf_release(&c->out);
	*c = (struct conn){ .fd = -1 };
}

void ttrpc_server_free(struct ttrpc_server *s)
{
	if (!s)
		return;
	for (int i = 0; i < TTRPC_MAX_CONNS; i++)
		conn_close(s, &s->conns[i]);
	close(s->lfd);
	close(s->epfd);
	free(s);
}

int ttrpc_server_watch(struct ttrpc_server *s, int fd, ttrpc_fd_cb cb, void *ctx)
{
	for (int i = 0; i < TTRPC_MAX_WATCH; i++) {
		if (s->watches[i].fd >= 0)
			continue;
		int r = ep_add(s->epfd, fd, EPOLLIN, TAG_WATCH | (uint64_t)i);
		if (r < 0)
			return r;
		s->watches[i] = (struct watch){ .fd = fd, .cb = cb, .ctx = ctx };
		return 0;
	}
	return -ENOSPC;
}

void ttrpc_server_unwatch(struct ttrpc_server *s, int fd)
{
	for (int i = 0; i < TTRPC_MAX_WATCH; i++) {
		if (s->watches[i].fd == fd) {
			epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
			s->watches[i].fd = -1;
		}
	}
}

static void conn_update_events(struct ttrpc_server *s, struct conn *c, int idx)
{
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = (uint64_t)idx + 1 };

	if (c->out.len > c->out_off)
		e.events |= EPOLLOUT;
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Write what the socket takes now; -errno drops the connection. */
static int conn_flush(struct ttrpc_server *s, struct conn *c, int idx)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
				 MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return -EPIPE;
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len) {
		c->out.len = 0;
		c->out_off = 0;
	}
	conn_update_events(s, c, idx);
	return 0;
}

void ttrpc_reply(struct ttrpc_server *s, struct ttrpc_call call, int code, const char *msg,
		 const struct pb_buf *payload)
{
	for (int i = 0; i < TTRPC_MAX_CONNS; i++) {
		struct conn *c = &s->conns[i];
		if (c->fd < 0 || c->gen != call.conn_gen)
			continue;
		if (c->out.len - c->out_off > TTRPC_MAX_OUT ||
		    ttrpc_response_encode(&c->out, call.stream, code, msg, payload) < 0 ||
		    conn_flush(s, c, i) < 0)
			conn_close(s, c);
		return;
	}
}

static void on_accept(struct ttrpc_server *s)
{
	int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (int i = 0; i < TTRPC_MAX_CONNS; i++) {
		if (s->conns[i].fd >= 0)
			continue;
		s->conns[i] = (struct conn){ .fd = fd, .gen = ++s->next_gen };
		if (ep_add(s->epfd, fd, EPOLLIN, (uint64_t)i + 1) < 0)
			break;
		return;
	}
	close(fd);
}

/* Handle every whole frame buffered; -errno when the peer must be dropped. */
static int conn_dispatch(struct ttrpc_server *s, struct conn *c)
{
	size_t off = 0;

	for (;;) {
		struct ttrpc_frame f;
		struct ttrpc_request req;
		size_t used;
		int r = ttrpc_frame_parse(c->in + off, c->in_len - off, &f, &used);

		if (r < 0)
			return r;
		if (r == 0)
			break;
		off += used;
		if (f.type != TTRPC_TYPE_REQUEST)
			continue; /* nothing else is sent to a server; ignore it */
		unsigned gen = c->gen;
		struct ttrpc_call call = { .conn_gen = gen, .stream = f.stream };
		if (ttrpc_request_decode(f.payload, f.len, &req) < 0) {
			ttrpc_reply(s, call, TTRPC_INVALID_ARGUMENT, "malformed ttrpc request", NULL);
		} else {
			s->handler(s->ctx, call, &req);
			ttrpc_request_release(&req);
		}
		if (c->fd < 0 || c->gen != gen)
			return -EPIPE; /* the reply dropped it */
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	return 0;
}

static void on_conn(struct ttrpc_server *s, int idx, uint32_t events)
{
	struct conn *c = &s->conns[idx];

	if (events & EPOLLOUT && conn_flush(s, c, idx) < 0) {
		conn_close(s, c);
		return;
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (!c->in) {
		c->in = malloc(TTRPC_HDR_SIZE + TTRPC_MAX_PAYLOAD);
		if (!c->in) {
			conn_close(s, c);
			return;
		}
	}
	ssize_t n = recv(c->fd, c->in + c->in_len, TTRPC_HDR_SIZE + TTRPC_MAX_PAYLOAD - c->in_len,
			 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(s, c);
		return;
	}
	c->in_len += (size_t)n;
	if (conn_dispatch(s, c) < 0 && c->fd >= 0)
		conn_close(s, c);
}

int ttrpc_server_run(struct ttrpc_server *s)
{
	struct epoll_event ev[16];

	while (!s->stop) {
		int n = epoll_wait(s->epfd, ev, 16, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		for (int i = 0; i < n && !s->stop; i++) {
			uint64_t tag = ev[i].data.u64;
			if (tag == 0) {
				on_accept(s);
			} else if (tag & TAG_WATCH) {
				struct watch *w = &s->watches[tag & 0xffff];
				if (w->fd >= 0)
					w->cb(w->ctx, w->fd, ev[i].events);
			} else if (s->conns[tag - 1].fd >= 0) {
				on_conn(s, (int)tag - 1, ev[i].events);
			}
		}
	}
	return 0;
}

void ttrpc_server_stop(struct ttrpc_server *s)
{
	s->stop = true;
}
