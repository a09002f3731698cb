/* SPDX-License-Identifier: MIT */
/*
 * agent_conn's send queue stays bounded by what is pending, not by what was ever sent: a
 * sender that keeps the queue under a high-water mark (as vm_exec does with stdin) while the
 * peer reads slowly (never emptying the queue) must not grow it without end. Before the
 * compaction fix the queue's buffer grew by every byte sent (a 256 MiB `cp` held ~50 MB).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "vm/agent_conn.h"

static void test_queue_bounded_under_partial_writes(void **state)
{
	static uint8_t payload[32 * 1024], sink[16 * 1024];
	struct agent_conn c;
	int sp[2], small = 64 * 1024;
	uint64_t sent = 0;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(sp[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	assert_int_equal(agent_conn_init(&c, sp[0]), 0);
	while (sent < 64ull * 1024 * 1024) {
		if (agent_conn_pending(&c) < (1u << 20)) {
			assert_int_equal(agent_conn_send(&c, AVM_MSG_STDIN, 1, payload,
							 sizeof(payload)),
					 0);
			sent += sizeof(payload);
		}
		/* The peer reads less than was queued: the queue is never fully written. */
		assert_true(read(sp[1], sink, sizeof(sink)) > 0);
		agent_conn_flush(&c);
	}
	assert_true(agent_conn_pending(&c) > 0);
	/* At most ~2x the high-water mark, rounded up to a power of two (64 MiB before). */
	assert_true(c.out.cap <= 4u * 1024 * 1024);
	agent_conn_release(&c);
	close(sp[0]);
	close(sp[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queue_bounded_under_partial_writes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
