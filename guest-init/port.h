/* SPDX-License-Identifier: MIT */
/*
 * The agent channel: the virtio-serial port named AVM_AGENT_PORT_NAME.
 *
 * The fd is nonblocking so the event loop can use it, but frames are written whole: a send
 * returns only when the frame is fully in the port (or the port failed), so frames never
 * interleave. While a send waits for the host, incoming bytes are stashed (bounded) so a host
 * that writes before it reads cannot deadlock against us, and a wait hook keeps command
 * timeouts firing.
 */
#ifndef AGENTVM_INIT_PORT_H
#define AGENTVM_INIT_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Largest data chunk such that header + chunk is exactly one 32 KiB virtio-serial write. */
#define PORT_DATA_CHUNK (AVM_PROTO_CHUNK - AVM_PROTO_HDR_SIZE)

/* Find the agent port (waiting for it to appear if needed) and open it. Returns the fd. */
int port_open(void);
/* Log (debug) how long finding the port took. */
void port_log_stats(void);

/*
 * The transmit buffer's payload area (AVM_PROTO_MAX_PAYLOAD bytes). Fill it and call
 * port_send_tx() to send without a copy. Valid until the next send.
 */
uint8_t *port_tx_payload(void);
int port_send_tx(uint16_t type, uint32_t id, uint32_t len);

/* Send one frame; payload may be NULL when len is 0. Returns 0 or -errno (logged). */
int port_send(uint16_t type, uint32_t id, const void *payload, uint32_t len);

/* Send an ERROR frame: u32 errno (positive) then the formatted message. */
int port_send_error(uint32_t id, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Read what the port has into the receive stash. Returns bytes read, 0 when the host side is
 * closed, -EAGAIN when nothing is there, -ENOBUFS when the stash is full.
 */
int port_read(void);
/* The stash: bytes received but not yet decoded. port_stash_clear() after consuming. */
const uint8_t *port_stash(size_t *len);
void port_stash_clear(void);

/*
 * While a send waits for the host: it also wakes when wake_fd is readable (or -1 for none) and
 * after timeout_ms() milliseconds (-1 = no limit), and then calls on_wake(), which must not
 * send frames (it runs in the middle of a send).
 */
void port_set_wait_hook(int wake_fd, int (*timeout_ms)(void), void (*on_wake)(void));

#endif
