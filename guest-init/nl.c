/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

/*
 * One reply buffer for PID 1 (single-threaded). 32 KiB is the most the kernel puts in one dump
 * message; a smaller buffer would only make it fall back to smaller ones, but MSG_TRUNC is
 * still checked so a cut answer is an error and never silently half-read.
 */
static union {
	struct nlmsghdr h;
	char buf[32768];
} rx;

int nl_open(struct nl *nl)
{
	/* The kernel answers rtnetlink synchronously; the timeout only guards against a lost ACK. */
	struct timeval tv = { .tv_sec = 2 };
	int one = 1;

	memset(nl, 0, sizeof(*nl));
	nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl->fd < 0)
		return -errno;
	(void)setsockopt(nl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* Best effort: the kernel's reason in words, and errors without a copy of our request. */
	(void)setsockopt(nl->fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	(void)setsockopt(nl->fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	return 0;
}

void nl_close(struct nl *nl)
{
	if (nl->fd >= 0)
		close(nl->fd);
	nl->fd = -1;
}

void *nl_msg_init(struct nl_msg *m, uint16_t type, uint16_t flags, size_t hdr_len)
{
	memset(m, 0, sizeof(*m));
	m->h.nlmsg_len = (uint32_t)NLMSG_LENGTH(hdr_len);
	m->h.nlmsg_type = type;
	m->h.nlmsg_flags = flags;
	return NLMSG_DATA(&m->h);
}

int nl_attr(struct nl_msg *m, uint16_t type, const void *data, size_t len)
{
	size_t off = NLMSG_ALIGN(m->h.nlmsg_len);
	struct nlattr *a = (struct nlattr *)(m->buf + off);

	if (off + NLA_ALIGN(NLA_HDRLEN + len) > sizeof(m->buf))
		return -EMSGSIZE;
	a->nla_type = type;
	a->nla_len = (uint16_t)(NLA_HDRLEN + len);
	memcpy((char *)a + NLA_HDRLEN, data, len);
	m->h.nlmsg_len = (uint32_t)(off + NLA_ALIGN(a->nla_len));
	return 0;
}

/* Copy NLMSGERR_ATTR_MSG, if the kernel sent one, into nl->ext. */
static void ext_ack(struct nl *nl, const struct nlmsghdr *h)
{
	const struct nlmsgerr *e = NLMSG_DATA(h);
	size_t off = NLMSG_HDRLEN + sizeof(*e);
	const struct nlattr *a;

	if (!(h->nlmsg_flags & NLM_F_ACK_TLVS))
		return;
	/* Without NETLINK_CAP_ACK the whole request is echoed before the TLVs. */
	if (!(h->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - NLMSG_HDRLEN;
	while (off + NLA_HDRLEN <= h->nlmsg_len) {
		a = (const struct nlattr *)((const char *)h + off);
		if (a->nla_len < NLA_HDRLEN || off + a->nla_len > h->nlmsg_len)
			return;
		if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
			int n = (int)(a->nla_len - NLA_HDRLEN);

			snprintf(nl->ext, sizeof(nl->ext), "%.*s", n, (const char *)a + NLA_HDRLEN);
			/* the kernel's string ends in NUL and sometimes a newline: keep neither */
			nl->ext[strcspn(nl->ext, "\n")] = '\0';
			return;
		}
		off += NLA_ALIGN(a->nla_len);
	}
}

static int send_msg(struct nl *nl, struct nl_msg *m, uint16_t flags)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };

	m->h.nlmsg_flags |= NLM_F_REQUEST | flags;
	m->h.nlmsg_seq = ++nl->seq;
	nl->ext[0] = '\0';
	if (sendto(nl->fd, m, m->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	return 0;
}

/*
 * Read answers to request seq until its ACK/error (or NLMSG_DONE for a dump). Messages of
 * other sequence numbers (a late answer to an earlier, timed-out request) are skipped.
 */
static int recv_answers(struct nl *nl, uint32_t seq, nl_dump_fn fn, void *arg)
{
	int r = 0;

	for (;;) {
		struct sockaddr_nl from;
		struct iovec iov = { rx.buf, sizeof(rx.buf) };
		struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof(from),
				     .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n = recvmsg(nl->fd, &mh, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if (mh.msg_flags & MSG_TRUNC)
			return -EMSGSIZE;
		if (from.nl_pid != 0)
			continue; /* not from the kernel */
		for (struct nlmsghdr *h = &rx.h; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_DONE) {
				/* A dump that failed half-way says so here. */
				if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)) &&
				    *(const int *)NLMSG_DATA(h) < 0)
					return *(const int *)NLMSG_DATA(h);
				return r;
			}
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EBADMSG;
				if (e->error == 0)
					return r; /* the ACK */
				ext_ack(nl, h);
				return e->error;
			}
			if (fn && r == 0)
				r = fn(h, arg);
		}
	}
}

int nl_request(struct nl *nl, struct nl_msg *m)
{
	int r = send_msg(nl, m, NLM_F_ACK);

	return r < 0 ? r : recv_answers(nl, nl->seq, NULL, NULL);
}

int nl_dump(struct nl *nl, struct nl_msg *m, nl_dump_fn fn, void *arg)
{
	/* No NLM_F_ACK: a dump ends in NLMSG_DONE, and a refused one in NLMSG_ERROR anyway. */
	int r = send_msg(nl, m, NLM_F_DUMP);

	return r < 0 ? r : recv_answers(nl, nl->seq, fn, arg);
}
