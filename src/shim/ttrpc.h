/* SPDX-License-Identifier: MIT */
/*
 * A ttrpc server (containerd's small RPC protocol over a unix socket), single-threaded on epoll.
 * Each frame: a 10-byte header (big-endian u32 payload length, u32 stream id, u8 type, u8
 * flags), then the payload (at most TTRPC_MAX_PAYLOAD). A request frame (type 1) carries
 * Request {service = 1, method = 2, payload = 3, timeout_nano = 4, metadata = 5}; the answer on
 * the same stream id is a response frame (type 2) with Response {status = 1 (google.rpc.Status
 * {code = 1, message = 2}), payload = 2}. Calls may be answered later (Wait) and out of order.
 */
#ifndef AGENTVM_SHIM_TTRPC_H
#define AGENTVM_SHIM_TTRPC_H

#include <stddef.h>
#include <stdint.h>

#include "pb.h"

#define TTRPC_HDR_SIZE 10
#define TTRPC_MAX_PAYLOAD (4u * 1024u * 1024u)
#define TTRPC_TYPE_REQUEST 1
#define TTRPC_TYPE_RESPONSE 2
#define TTRPC_MAX_CONNS 16

/* gRPC status codes the shim answers with. */
enum ttrpc_code {
	TTRPC_OK = 0,
	TTRPC_INVALID_ARGUMENT = 3,
	TTRPC_NOT_FOUND = 5,
	TTRPC_ALREADY_EXISTS = 6,
	TTRPC_FAILED_PRECONDITION = 9,
	TTRPC_UNIMPLEMENTED = 12,
	TTRPC_INTERNAL = 13,
	TTRPC_UNAVAILABLE = 14,
};

struct ttrpc_frame {
	uint32_t len;
	uint32_t stream;
	uint8_t type;
	uint8_t flags;
	const uint8_t *payload;
};

/* One frame at the start of buf: 1 (*f, *used), 0 need more bytes, -EMSGSIZE too long. */
int ttrpc_frame_parse(const uint8_t *buf, size_t len, struct ttrpc_frame *f, size_t *used);

struct ttrpc_request {
	char *service;
	char *method;
	const uint8_t *payload; /* into the frame */
	size_t len;
};
int ttrpc_request_decode(const uint8_t *p, size_t len, struct ttrpc_request *req);
void ttrpc_request_release(struct ttrpc_request *req);
/* A whole response frame (header included) into out. */
int ttrpc_response_encode(struct pb_buf *out, uint32_t stream, int code, const char *msg,
			  const struct pb_buf *payload);
/* A whole request frame (for tests and clients). */
int ttrpc_request_encode(struct pb_buf *out, uint32_t stream, const char *service,
			 const char *method, const struct pb_buf *payload);

/* Names a call so it can be answered later; the connection may be gone by then. */
struct ttrpc_call {
	unsigned conn_gen;
	uint32_t stream;
};

struct ttrpc_server;
typedef void (*ttrpc_handler)(void *ctx, struct ttrpc_call call, const struct ttrpc_request *req);
typedef void (*ttrpc_fd_cb)(void *ctx, int fd, uint32_t events);

/* Listen on a new unix socket at path (removed first). */
int ttrpc_server_new(const char *path, ttrpc_handler h, void *ctx, struct ttrpc_server **out);
/* Take over an already listening socket fd. */
int ttrpc_server_from_fd(int fd, ttrpc_handler h, void *ctx, struct ttrpc_server **out);
void ttrpc_server_free(struct ttrpc_server *s);
/* Watch another fd in the same loop (EPOLLIN); cb runs on its events. */
int ttrpc_server_watch(struct ttrpc_server *s, int fd, ttrpc_fd_cb cb, void *ctx);
void ttrpc_server_unwatch(struct ttrpc_server *s, int fd);
/* Answer a call; a call whose connection closed is dropped. */
void ttrpc_reply(struct ttrpc_server *s, struct ttrpc_call call, int code, const char *msg,
		 const struct pb_buf *payload);
/* Run until ttrpc_server_stop(); 0, or -errno when epoll fails. */
int ttrpc_server_run(struct ttrpc_server *s);
void ttrpc_server_stop(struct ttrpc_server *s);

#endif
