/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "port.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define PORTS_DIR "/sys/class/virtio-ports"
/* Receive stash bound: enough to keep a chatty host moving while we wait to write. */
#define STASH_MAX (1024u * 1024u)
#define READ_MAX (64u * 1024u)

static int port_fd = -1;
/* A second epoll set holding only the port (edge-triggered), used while a send waits. */
static int wait_ep = -1;
static uint8_t txbuf[AVM_PROTO_HDR_SIZE + AVM_PROTO_MAX_PAYLOAD];
static struct avm_buf stash;
static struct {
	char vport[NAME_MAX + 1];
	int scans;
	uint64_t us;
} stats;
static int (*hook_timeout_ms)(void);
static void (*hook_on_wake)(void);

/* Read a sysfs attribute into buf (NUL-terminated, trailing newline dropped). */
static int read_attr(const char *dir, const char *name, char *buf, size_t size)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	/* No snprintf before READY: under TCG its first call costs ~1 ms of code translation. */
	if (strlen(dir) + strlen(name) + sizeof(PORTS_DIR) + 2 > sizeof(path))
		return -ENAMETOOLONG;
	stpcpy(stpcpy(stpcpy(stpcpy(path, PORTS_DIR "/"), dir), "/"), name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	return 0;
}

static bool port_name_is(const char *vport)
{
	char name[128];

	/* The name attribute appears only once the host has told the guest the name. */
	return read_attr(vport, "name", name, sizeof(name)) == 0 &&
	       strcmp(name, AVM_AGENT_PORT_NAME) == 0;
}

/* Find the port in sysfs; on success *dev is the vportNpM name. */
static int find_port(char *dev, size_t size)
{
	struct dirent *de;
	DIR *d;
	int r = -ENOENT;

	/*
	 * Fast path: with the console as port 0, the agent is port 1 of the first device. One
	 * sysfs lookup instead of a directory scan: sysfs is slow to walk under TCG.
	 */
	if (port_name_is("vport0p1")) {
		strcpy(dev, "vport0p1");
		return 0;
	}
	d = opendir(PORTS_DIR);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "vport", 5) != 0)
			continue;
		if (strlen(de->d_name) < size && port_name_is(de->d_name)) {
			strcpy(dev, de->d_name);
			r = 0;
			break;
		}
	}
	closedir(d);
	return r;
}

static int open_dev(const char *vport)
{
	char path[PATH_MAX], devno[32];
	unsigned int maj, min;
	int fd;

	stpcpy(stpcpy(path, "/dev/"), vport); /* vport is at most NAME_MAX */
	fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd >= 0 || errno != ENOENT)
		return fd < 0 ? -errno : fd;
	/* No devtmpfs node (a /dev that is not devtmpfs): make one from sysfs. */
	if (read_attr(vport, "dev", devno, sizeof(devno)) < 0 ||
	    sscanf(devno, "%u:%u", &maj, &min) != 2)
		return -ENOENT;
	if (mknod(path, S_IFCHR | 0600, makedev(maj, min)) < 0 && errno != EEXIST)
		return -errno;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	return fd < 0 ? -errno : fd;
}

/* Kernel uevents announce new ports and their names; we wake on them instead of sleeping. */
static int uevent_socket(void)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	int fd;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int port_open(void)
{
	uint64_t t0 = mono_ns(), last_log = t0;
	char vport[NAME_MAX + 1], junk[2048];
	int nl = -1, fd, r, scans = 0;
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN | EPOLLET };

	for (;;) {
		scans++;
		r = find_port(vport, sizeof(vport));
		if (r == 0) {
			fd = open_dev(vport);
			if (fd >= 0)
				break;
			r = fd;
		}
		/*
		 * Not there yet: the port and its name arrive asynchronously through the
		 * virtio-serial control queue. Subscribe before the next scan so no event
		 * is missed; the poll timeout only covers a kernel that sends no uevent.
		 */
		if (nl < 0)
			nl = uevent_socket();
		if (nl >= 0) {
			struct pollfd p = { .fd = nl, .events = POLLIN };
			if (poll(&p, 1, 20) > 0)
				while (recv(nl, junk, sizeof(junk), 0) > 0)
					;
		} else {
			usleep(2000);
		}
		if (mono_ns() - last_log > 10 * NSEC_PER_SEC) {
			last_log = mono_ns();
			log_msg("still looking for port %s (%s)", AVM_AGENT_PORT_NAME, strerror(-r));
		}
	}
	if (nl >= 0)
		close(nl);
	/* Logged later by port_log_stats(): the debug flag needs /proc, mounted after READY. */
	strcpy(stats.vport, vport);
	stats.scans = scans;
	stats.us = (mono_ns() - t0) / 1000;

	ev.data.fd = fd;
	wait_ep = epoll_create1(EPOLL_CLOEXEC);
	if (wait_ep < 0 || epoll_ctl(wait_ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		log_msg("port wait epoll: %m"); /* sends then spin on EAGAIN; still correct */
	port_fd = fd;
	return fd;
}

void port_log_stats(void)
{
	log_debug("port /dev/%s open after %d scan(s), %llu us", stats.vport, stats.scans,
		  (unsigned long long)stats.us);
}

void port_set_wait_hook(int wake_fd, int (*timeout_ms)(void), void (*on_wake)(void))
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = wake_fd };

	hook_timeout_ms = timeout_ms;
	hook_on_wake = on_wake;
	if (wake_fd >= 0 && wait_ep >= 0 && epoll_ctl(wait_ep, EPOLL_CTL_ADD, wake_fd, &ev) < 0)
		log_msg("port wait epoll: %m");
}

int port_read(void)
{
	uint8_t buf[READ_MAX];
	size_t room = STASH_MAX > stash.len ? STASH_MAX - stash.len : 0;
	ssize_t n;

	if (room == 0)
		return -ENOBUFS;
	do
		n = read(port_fd, buf, room < sizeof(buf) ? room : sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n > 0 && avm_buf_put(&stash, buf, (size_t)n) < 0)
		return -ENOMEM;
	return (int)n;
}

const uint8_t *port_stash(size_t *len)
{
	*len = stash.len;
	return stash.data;
}

void port_stash_clear(void)
{
	stash.len = 0;
	/* Give back a buffer that grew during a burst. */
	if (stash.cap > 2 * READ_MAX)
		avm_buf_release(&stash);
}

/*
 * The port is full (the host is slow to read) or the host side is not connected yet. Sleep
 * until the port's wait queue wakes (buffer consumed, host connected, data in), keeping
 * timeouts and reaping alive (the hook) and taking in what the host sends meanwhile.
 */
static void wait_writable(void)
{
	struct epoll_event evs[2];
	int timeout = hook_timeout_ms ? hook_timeout_ms() : -1;
	bool port_in = false, wake = false;
	int n;

	if (wait_ep < 0) {
		usleep(1000);
		return;
	}
	n = epoll_wait(wait_ep, evs, 2, timeout);
	if (n == 0)
		wake = true;
	for (int i = 0; i < n; i++) {
		if (evs[i].data.fd == port_fd)
			port_in |= (evs[i].events & EPOLLIN) != 0;
		else
			wake = true;
	}
	if (wake && hook_on_wake)
		hook_on_wake();
	if (port_in)
		while (port_read() > 0)
			;
}

static int write_all(const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(port_fd, p, len);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			wait_writable();
		} else if (n < 0 && errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

int port_send_tx(uint16_t type, uint32_t id, uint32_t len)
{
	int r;

	if (port_fd < 0)
		return -ENOTCONN;
	r = avm_frame_encode_hdr(txbuf, type, 0, id, txbuf + AVM_PROTO_HDR_SIZE, len);
	if (r == 0)
		r = write_all(txbuf, AVM_PROTO_HDR_SIZE + (size_t)len);
	if (r < 0)
		log_msg("send %s id %u: %s", avm_msg_type_name(type), id, strerror(-r));
	return r;
}

uint8_t *port_tx_payload(void)
{
	return txbuf + AVM_PROTO_HDR_SIZE;
}

int port_send(uint16_t type, uint32_t id, const void *payload, uint32_t len)
{
	if (len > AVM_PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (len && payload != txbuf + AVM_PROTO_HDR_SIZE)
		memcpy(txbuf + AVM_PROTO_HDR_SIZE, payload, len);
	return port_send_tx(type, id, len);
}

int port_send_error(uint32_t id, int err, const char *fmt, ...)
{
	uint8_t *p = port_tx_payload();
	va_list ap;
	int n;

	avm_put_le32(p, (uint32_t)err);
	va_start(ap, fmt);
	n = vsnprintf((char *)p + 4, 1024, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > 1023)
		n = 1023;
	log_debug("ERROR id %u: %.*s (%s)", id, n, (char *)p + 4, strerror(err));
	return port_send_tx(AVM_MSG_ERROR, id, 4 + (uint32_t)n);
}
