/* SPDX-License-Identifier: MIT */
/*
 * Just enough rtnetlink for PID 1 (the static guest has no libnl): build a request, send it,
 * and insist on the kernel's answer. Every request asks for an ACK, so a refused change is
 * always seen, with the kernel's own words when it gives some (extended ACK).
 */
#ifndef AGENTVM_INIT_NL_H
#define AGENTVM_INIT_NL_H

#include <linux/netlink.h>
#include <stddef.h>
#include <stdint.h>

/* Our requests are one header and a few small attributes. */
#define NL_MSG_MAX 256

struct nl {
	int fd;
	uint32_t seq;
	char ext[128]; /* the kernel's extended-ACK text of the last failure, or "" */
};

struct nl_msg {
	union {
		struct nlmsghdr h;
		char buf[NL_MSG_MAX];
	};
};

/* Open a CLOEXEC NETLINK_ROUTE socket into nl. 0 or -errno. nl_close() takes any nl it filled. */
int nl_open(struct nl *nl);
void nl_close(struct nl *nl);

/*
 * Start message m of the given type and flags (NLM_F_REQUEST, and NLM_F_ACK or NLM_F_DUMP, are
 * added when it is sent) and return its zeroed family header of hdr_len bytes (ifinfomsg, ifaddrmsg, rtmsg).
 */
void *nl_msg_init(struct nl_msg *m, uint16_t type, uint16_t flags, size_t hdr_len);

/* Append one attribute. 0, or -EMSGSIZE when it does not fit (a bug: requests are fixed). */
int nl_attr(struct nl_msg *m, uint16_t type, const void *data, size_t len);

/* Send m and wait for its ACK. 0, or the kernel's -errno (nl->ext says more when it can). */
int nl_request(struct nl *nl, struct nl_msg *m);

/*
 * Send m as a dump (NLM_F_DUMP) and call fn for every answer until the kernel says done.
 * fn returns 0 to go on or -errno to stop; the dump is still read to its end, so the socket
 * stays usable. 0, the kernel's -errno, or fn's.
 */
typedef int (*nl_dump_fn)(const struct nlmsghdr *h, void *arg);
int nl_dump(struct nl *nl, struct nl_msg *m, nl_dump_fn fn, void *arg);

#endif
