/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agent.h"
#include "exec.h"
#include "port.h"
#include "proto.h"
#include "sys.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>

/* Reads per pump: enough to batch a burst, small enough to keep command output flowing. */
#define PUMP_READS 16

static struct avm_decoder dec;
/* Frames were left in the decoder because a stdin queue was full. */
static bool undrained;

void agent_ready(void)
{
	struct avm_buf b = { 0 };
	uint64_t t = boottime_ns();

	if (avm_tlv_put_str(&b, AVM_TAG_VERSION, "agentvm-init " AGENTVM_INIT_VERSION) < 0 ||
	    avm_tlv_put_u64(&b, AVM_TAG_BOOT_NS, t) < 0) {
		log_msg("READY: out of memory");
		avm_buf_release(&b);
		return;
	}
	port_send(AVM_MSG_READY, 0, b.data, (uint32_t)b.len);
	avm_buf_release(&b);
	log_debug("READY at %llu.%06llu s since boot", (unsigned long long)(t / NSEC_PER_SEC),
		  (unsigned long long)(t % NSEC_PER_SEC / 1000));
}

/*
 * STATS: the guest's memory from /proc/meminfo. One bounded read on the stack (the file is ~1.5
 * KiB; the fields asked for are at its top), so a flood of STATS costs no memory.
 */
static void stats_reply(uint32_t id)
{
	char text[4096];
	struct avm_guest_stats st;
	struct avm_buf b = { 0 };
	ssize_t n = -1;
	int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, text, sizeof(text));
		close(fd);
	}
	if (n <= 0 || avm_meminfo_parse(text, (size_t)n, &st) < 0) {
		port_send_error(id, EIO, "STATS: cannot read /proc/meminfo");
		return;
	}
	if (avm_guest_stats_encode(&b, &st) < 0)
		port_send_error(id, ENOMEM, "STATS: out of memory");
	else
		port_send(AVM_MSG_STATS_REPLY, id, b.data, (uint32_t)b.len);
	avm_buf_release(&b);
}

static void dispatch(const struct avm_frame_hdr *h, const uint8_t *p)
{
	const char *why = NULL;
	int r;

	switch (h->type) {
	case AVM_MSG_EXEC:
		exec_start(h->id, p, h->len);
		break;
	case AVM_MSG_STDIN:
		exec_stdin(h->id, p, h->len);
		break;
	case AVM_MSG_SIGNAL:
		exec_signal(h->id, p, h->len);
		break;
	case AVM_MSG_PING:
		port_send(AVM_MSG_PONG, h->id, p, h->len);
		break;
	case AVM_MSG_STATS:
		stats_reply(h->id);
		break;
	case AVM_MSG_SYNC:
		r = sync_apply(p, h->len, &why);
		if (r < 0)
			port_send_error(h->id, -r, "SYNC: %s", why ? why : strerror(-r));
		else
			port_send(AVM_MSG_SYNC_DONE, h->id, NULL, 0);
		break;
	case AVM_MSG_POWEROFF:
		sys_poweroff();
		port_send_error(h->id, EIO, "power-off failed");
		break;
	case AVM_MSG_ERROR:
		/* Never answer an ERROR with an ERROR: two confused peers would loop forever. */
		log_debug("host sent ERROR id %u", h->id);
		break;
	default:
		port_send_error(h->id, EPROTO, "unexpected %s frame from the host",
				avm_msg_type_name(h->type));
		break;
	}
}

/* Decode and act on everything complete in the decoder. */
static void drain_decoder(void)
{
	struct avm_frame_hdr h;
	const uint8_t *p;
	const char *why;
	int r;

	undrained = false;
	while ((r = avm_decoder_next(&dec, &h, &p, &why)) != AVM_DECODE_NEED_MORE) {
		if (r == AVM_DECODE_BAD) {
			port_send_error(h.id, EBADMSG, "bad frame: %s", why ? why : "unknown");
			continue;
		}
		dispatch(&h, p);
		/* Frames of a command whose stdin is full wait here, still undecoded. */
		if (exec_stdin_backlogged()) {
			undrained = true;
			break;
		}
	}
}

static void feed_stash(void)
{
	size_t len;
	const uint8_t *s = port_stash(&len);

	if (len == 0)
		return;
	if (avm_decoder_feed(&dec, s, len) < 0)
		log_msg("decoder: out of memory, %zu bytes dropped", len);
	port_stash_clear();
}

void agent_pump(bool *readable)
{
	for (int i = 0; i < PUMP_READS && !exec_stdin_backlogged(); i++) {
		size_t held;

		/* Bytes stashed while a send was waiting come first: they are older. */
		port_stash(&held);
		if (held == 0 && *readable) {
			int n = port_read();
			if (n == -EAGAIN || n == 0) {
				*readable = false; /* the edge-triggered event will tell us */
			} else if (n < 0 && n != -ENOBUFS) {
				log_msg("port read: %s", strerror(-n));
				*readable = false;
			}
		}
		port_stash(&held);
		if (held == 0) {
			/* Nothing new: still act on frames left behind by a backlog. */
			drain_decoder();
			break;
		}
		feed_stash();
		drain_decoder();
	}
}

bool agent_has_work(bool readable)
{
	size_t held;

	if (exec_stdin_backlogged())
		return false;
	port_stash(&held);
	return readable || held > 0 || undrained;
}
