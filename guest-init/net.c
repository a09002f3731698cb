/* SPDX-License-Identifier: MIT */
/*
 * Applying a net_cfg: the order of the rtnetlink steps is the point of this file. An address
 * and a route need the link up to become usable routes; a MAC changes cleanly only while the
 * link is down; and bouncing the link is also what empties the neighbour cache, which must
 * forget the gateway's old MAC after a restore.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "net.h"
#include "nl.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESOLV_CONF "/etc/resolv.conf"

/* The last failure in words, for the log and for SYNC's ERROR frame (PID 1 is one thread). */
static char err_msg[256];

static int fail(struct nl *nl, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct nl *nl, int r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(err_msg))
		return r;
	if (nl && nl->ext[0])
		snprintf(err_msg + n, sizeof(err_msg) - (size_t)n, ": %s (%s)", strerror(-r), nl->ext);
	else
		snprintf(err_msg + n, sizeof(err_msg) - (size_t)n, ": %s", strerror(-r));
	return r;
}

struct links {
	int lo, eth;
	char name[IFNAMSIZ];
};

/* The first attribute of an rtnetlink message whose family header is hdr_len bytes. */
static struct rtattr *rta_first(const struct nlmsghdr *h, size_t hdr_len, int *left)
{
	*left = (int)(h->nlmsg_len - NLMSG_LENGTH(hdr_len));
	return (struct rtattr *)((char *)NLMSG_DATA(h) + NLMSG_ALIGN(hdr_len));
}

static int link_cb(const struct nlmsghdr *h, void *arg)
{
	const struct ifinfomsg *ifi = NLMSG_DATA(h);
	struct links *l = arg;
	struct rtattr *a;
	int left;

	if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)))
		return 0;
	if (ifi->ifi_flags & IFF_LOOPBACK) {
		l->lo = ifi->ifi_index;
		return 0;
	}
	/* The lowest index wins: the first NIC the kernel found, as "eth0" means by convention. */
	if (ifi->ifi_type != ARPHRD_ETHER || (l->eth > 0 && l->eth < ifi->ifi_index))
		return 0;
	l->eth = ifi->ifi_index;
	snprintf(l->name, sizeof(l->name), "if%d", ifi->ifi_index);
	for (a = rta_first(h, sizeof(*ifi), &left); RTA_OK(a, left); a = RTA_NEXT(a, left))
		if (a->rta_type == IFLA_IFNAME && RTA_PAYLOAD(a) > 0)
			snprintf(l->name, sizeof(l->name), "%.*s", (int)RTA_PAYLOAD(a),
				 (const char *)RTA_DATA(a));
	return 0;
}

static int links_find(struct nl *nl, struct links *l)
{
	struct nl_msg m;
	struct ifinfomsg *ifi = nl_msg_init(&m, RTM_GETLINK, 0, sizeof(*ifi));
	int r;

	memset(l, 0, sizeof(*l));
	ifi->ifi_family = AF_UNSPEC;
	r = nl_dump(nl, &m, link_cb, l);
	return r < 0 ? fail(nl, r, "listing links") : 0;
}

static int link_set(struct nl *nl, int ifindex, const char *name, bool up)
{
	struct nl_msg m;
	struct ifinfomsg *ifi = nl_msg_init(&m, RTM_NEWLINK, 0, sizeof(*ifi));
	int r;

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	ifi->ifi_change = IFF_UP;
	ifi->ifi_flags = up ? IFF_UP : 0;
	r = nl_request(nl, &m);
	return r < 0 ? fail(nl, r, "%s: setting the link %s", name, up ? "up" : "down") : 0;
}

static int link_set_mac(struct nl *nl, int ifindex, const char *name, const uint8_t *mac)
{
	struct nl_msg m;
	struct ifinfomsg *ifi = nl_msg_init(&m, RTM_NEWLINK, 0, sizeof(*ifi));
	int r;

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	r = nl_attr(&m, IFLA_ADDRESS, mac, NETCFG_MAC_LEN);
	if (r == 0)
		r = nl_request(nl, &m);
	return r < 0 ? fail(nl, r, "%s: setting MAC %02x:%02x:%02x:%02x:%02x:%02x", name, mac[0],
			    mac[1], mac[2], mac[3], mac[4], mac[5])
		     : 0;
}

/* RTM_NEWADDR or RTM_DELADDR of addr/prefix on ifindex. */
static int addr_msg(struct nl *nl, uint16_t type, int ifindex, struct in_addr addr, uint8_t prefix)
{
	uint16_t flags = type == RTM_NEWADDR ? NLM_F_CREATE | NLM_F_REPLACE : 0;
	struct nl_msg m;
	struct ifaddrmsg *ifa = nl_msg_init(&m, type, flags, sizeof(*ifa));
	int r;

	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = prefix;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (uint32_t)ifindex;
	r = nl_attr(&m, IFA_LOCAL, &addr, sizeof(addr));
	if (r == 0 && type == RTM_NEWADDR)
		r = nl_attr(&m, IFA_ADDRESS, &addr, sizeof(addr));
	/* What `ip addr add A/P brd +` sets; /31 and /32 have no broadcast address. */
	if (r == 0 && type == RTM_NEWADDR && prefix < 31) {
		struct in_addr brd = { addr.s_addr | htonl(~0u >> prefix) };

		r = nl_attr(&m, IFA_BROADCAST, &brd, sizeof(brd));
	}
	return r == 0 ? nl_request(nl, &m) : r;
}

static int addr_add(struct nl *nl, int ifindex, const char *name, struct in_addr addr,
		    uint8_t prefix)
{
	char a[INET_ADDRSTRLEN];
	int r = addr_msg(nl, RTM_NEWADDR, ifindex, addr, prefix);

	return r < 0 ? fail(nl, r, "%s: adding address %s/%u", name,
			    inet_ntop(AF_INET, &addr, a, sizeof(a)), prefix)
		     : 0;
}

#define FLUSH_BATCH 8

struct addrs {
	int ifindex;
	unsigned n;
	struct in_addr a[FLUSH_BATCH];
	uint8_t prefix[FLUSH_BATCH];
};

static int addr_cb(const struct nlmsghdr *h, void *arg)
{
	const struct ifaddrmsg *ifa = NLMSG_DATA(h);
	struct addrs *s = arg;
	struct rtattr *a;
	int left;

	if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifa)) ||
	    ifa->ifa_family != AF_INET || (int)ifa->ifa_index != s->ifindex || s->n == FLUSH_BATCH)
		return 0;
	for (a = rta_first(h, sizeof(*ifa), &left); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		if (a->rta_type == IFA_LOCAL && RTA_PAYLOAD(a) == sizeof(struct in_addr)) {
			memcpy(&s->a[s->n], RTA_DATA(a), sizeof(struct in_addr));
			s->prefix[s->n++] = ifa->ifa_prefixlen;
			break;
		}
	}
	return 0;
}

/* Remove every IPv4 address of ifindex (a dump cannot be interleaved with requests: batches). */
static int addr_flush(struct nl *nl, int ifindex, const char *name)
{
	for (int round = 0; round < 64; round++) {
		struct addrs s = { .ifindex = ifindex };
		struct nl_msg m;
		struct ifaddrmsg *ifa = nl_msg_init(&m, RTM_GETADDR, 0, sizeof(*ifa));
		int r;

		ifa->ifa_family = AF_INET;
		r = nl_dump(nl, &m, addr_cb, &s);
		if (r < 0)
			return fail(nl, r, "%s: listing addresses", name);
		for (unsigned i = 0; i < s.n; i++) {
			char a[INET_ADDRSTRLEN];

			r = addr_msg(nl, RTM_DELADDR, ifindex, s.a[i], s.prefix[i]);
			/* Deleting a primary address takes its secondaries with it. */
			if (r < 0 && r != -EADDRNOTAVAIL)
				return fail(nl, r, "%s: removing address %s/%u", name,
					    inet_ntop(AF_INET, &s.a[i], a, sizeof(a)), s.prefix[i]);
		}
		if (s.n < FLUSH_BATCH)
			return 0;
	}
	return fail(nl, -EBUSY, "%s: addresses keep coming back", name);
}

struct gw_find {
	int ifindex;
	bool found;
	struct in_addr gw;
};

static int route_cb(const struct nlmsghdr *h, void *arg)
{
	const struct rtmsg *rt = NLMSG_DATA(h);
	struct gw_find *g = arg;
	struct in_addr gw = { 0 };
	bool has_gw = false;
	int oif = 0;
	uint32_t table;
	struct rtattr *a;
	int left;

	if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(*rt)) ||
	    rt->rtm_family != AF_INET || rt->rtm_dst_len != 0 || rt->rtm_type != RTN_UNICAST)
		return 0;
	table = rt->rtm_table;
	for (a = rta_first(h, sizeof(*rt), &left); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) == sizeof(uint32_t))
			memcpy(&table, RTA_DATA(a), sizeof(table));
		else if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) == sizeof(int))
			memcpy(&oif, RTA_DATA(a), sizeof(oif));
		else if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD(a) == sizeof(gw)) {
			memcpy(&gw, RTA_DATA(a), sizeof(gw));
			has_gw = true;
		}
	}
	if (table == RT_TABLE_MAIN && oif == g->ifindex && has_gw && !g->found) {
		g->found = true;
		g->gw = gw;
	}
	return 0;
}

/* The gateway of ifindex's IPv4 default route in the main table, if there is one. */
static int route_default_find(struct nl *nl, int ifindex, const char *name, struct gw_find *g)
{
	struct nl_msg m;
	struct rtmsg *rt = nl_msg_init(&m, RTM_GETROUTE, 0, sizeof(*rt));
	int r;

	memset(g, 0, sizeof(*g));
	g->ifindex = ifindex;
	rt->rtm_family = AF_INET;
	r = nl_dump(nl, &m, route_cb, g);
	return r < 0 ? fail(nl, r, "%s: listing routes", name) : 0;
}

static int route_default_add(struct nl *nl, int ifindex, const char *name, struct in_addr gw)
{
	struct nl_msg m;
	struct rtmsg *rt = nl_msg_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, sizeof(*rt));
	uint32_t oif = (uint32_t)ifindex;
	char a[INET_ADDRSTRLEN];
	int r;

	rt->rtm_family = AF_INET;
	rt->rtm_table = RT_TABLE_MAIN;
	rt->rtm_protocol = RTPROT_BOOT;
	rt->rtm_scope = RT_SCOPE_UNIVERSE;
	rt->rtm_type = RTN_UNICAST;
	r = nl_attr(&m, RTA_GATEWAY, &gw, sizeof(gw));
	if (r == 0)
		r = nl_attr(&m, RTA_OIF, &oif, sizeof(oif));
	if (r == 0)
		r = nl_request(nl, &m);
	return r < 0 ? fail(nl, r, "%s: adding default route via %s", name,
			    inet_ntop(AF_INET, &gw, a, sizeof(a)))
		     : 0;
}

static bool fresh;
/* The links net_setup() found at boot (a template's clone reuses them while fresh). */
static struct links boot_links;
static bool boot_links_ok;

void net_set_fresh(bool on)
{
	fresh = on;
}

/* The links: those of the boot while fresh, else asked of the kernel (an RTM_GETLINK dump). */
static int links_get(struct nl *nl, struct links *l)
{
	int r;

	if (fresh && boot_links_ok) {
		*l = boot_links;
		return 0;
	}
	r = links_find(nl, l);
	if (r == 0 && !boot_links_ok) {
		boot_links = *l;
		boot_links_ok = true;
	}
	return r;
}

/*
 * Rewrite path in place (net_set_fresh()): a restored clone's SYNC then skips making a new
 * inode and renaming it, kernel paths that under TCG every clone translates afresh (~800
 * translation blocks, bench/warm_tbs.sh). 0, or -errno to fall back to etc_write()'s way: a
 * symlink or a directory fails the open, a missing /etc too. The old length is read, not asked
 * of fstat() or lseek(): the read path is the one execve() takes anyway, the others would be
 * ~400 blocks more. A hard-linked /etc/hosts would see the new text under its other name too.
 */
static int etc_rewrite(const char *path, const char *text, size_t n)
{
	char old[4096];
	ssize_t w, len;
	int fd, r;

	/* Made here when missing (a template's clone has no resolv.conf): no reader either. */
	fd = open(path, O_RDWR | O_CREAT | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	len = read(fd, old, sizeof(old));
	if (len < 0 || (size_t)len == sizeof(old)) {
		close(fd);
		return len < 0 ? -errno : -EFBIG;
	}
	w = pwrite(fd, text, n, 0);
	r = w < 0 ? -errno : (size_t)w != n ? -EIO : 0;
	/* The old text was longer: cut its tail. */
	if (r == 0 && (size_t)len > n && ftruncate(fd, (off_t)n) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* Written next to it and renamed over it, so a reader never sees half a file. */
static int etc_write(const char *path, const char *text)
{
	char tmp[64];
	size_t n = strlen(text);
	int fd, r = 0;
	ssize_t w;

	if (fresh && etc_rewrite(path, text, n) == 0)
		return 0;

	snprintf(tmp, sizeof(tmp), "%s.agentvm", path);
	if (mkdir("/etc", 0755) < 0 && errno != EEXIST)
		return fail(NULL, -errno, "creating /etc");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return fail(NULL, -errno, "creating %s", tmp);
	w = write(fd, text, n);
	if (w < 0 || (size_t)w != n)
		r = w < 0 ? -errno : -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return fail(NULL, r, "writing %s", path);
	}
	return 0;
}

static int resolv_write(struct in_addr dns)
{
	char line[64], a[INET_ADDRSTRLEN];

	snprintf(line, sizeof(line), "nameserver %s\n", inet_ntop(AF_INET, &dns, a, sizeof(a)));
	return etc_write(RESOLV_CONF, line);
}

int net_set_hostname(const char *name, size_t len)
{
	char hosts[160];

	if (len == 0 || len > 64)
		return -EINVAL;
	if (sethostname(name, len) < 0)
		return fail(NULL, -errno, "sethostname");
	/* So the name resolves, as tools like sudo and git expect of their own host. */
	snprintf(hosts, sizeof(hosts),
		 "127.0.0.1\tlocalhost\n127.0.1.1\t%.*s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		 (int)len, name);
	return etc_write("/etc/hosts", hosts);
}

/*
 * IPv6 stays on lo (::1, AF_INET6 sockets: node tries ::1 for "localhost") and off on eth0: the
 * host's filter drops all IPv6 at the tap, so addresses and router solicitations there would
 * only make programs wait for routes that never come.
 */
static void eth_ipv6_off(const char *name)
{
	char path[96];
	int fd;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1", 1) != 1)
		log_msg("network: %s: %m; IPv6 stays on (the host drops it anyway)", path);
	if (fd >= 0)
		close(fd);
}

void net_setup(const struct net_cfg *cfg)
{
	struct links l;
	struct nl nl;
	int r;

	if (cfg->hostname[0])
		net_set_hostname(cfg->hostname, strlen(cfg->hostname));
	r = nl_open(&nl);
	if (r < 0) {
		log_msg("network: netlink socket: %s", strerror(-r));
		return;
	}
	if (links_get(&nl, &l) < 0) {
		log_msg("network: %s", err_msg);
		goto out;
	}
	/* Without lo up, even 127.0.0.1 is unreachable: many programs need it, network or not. */
	if (l.lo <= 0)
		log_msg("network: no loopback link");
	else if (link_set(&nl, l.lo, "lo", true) < 0)
		log_msg("network: %s", err_msg);
	if (l.eth <= 0) {
		if (netcfg_has_net(cfg))
			log_msg("network: agentvm.ip/gw/dns given but the VM has no ethernet link");
		goto out;
	}
	eth_ipv6_off(l.name);
	/* Each step needs the one before: stop at the first failure, keep what worked. */
	if (link_set(&nl, l.eth, l.name, true) < 0 ||
	    (cfg->has_addr && addr_add(&nl, l.eth, l.name, cfg->addr, cfg->prefix) < 0) ||
	    (cfg->has_gw && route_default_add(&nl, l.eth, l.name, cfg->gw) < 0))
		log_msg("network: %s", err_msg);
	if (cfg->has_dns && resolv_write(cfg->dns) < 0)
		log_msg("network: %s", err_msg);
out:
	nl_close(&nl);
}

int net_eth_index(void)
{
	struct links l;
	struct nl nl;
	int r;

	if (fresh && boot_links_ok)
		return boot_links.eth > 0 ? boot_links.eth : -ENODEV;
	r = nl_open(&nl);
	if (r < 0)
		return r;
	r = links_find(&nl, &l);
	nl_close(&nl);
	if (r < 0)
		return r;
	return l.eth > 0 ? l.eth : -ENODEV;
}

/* The link bounce and everything that needs it; on failure the link is brought back up. */
/*
 * The new identity with the link up: virtio-net changes its MAC live (IFF_LIVE_ADDR_CHANGE),
 * and a down/up bounce would free and refill every receive buffer, a good part of the ~20-30 ms
 * the re-identification took right after a restore under TCG (measured). The address swap
 * takes the old subnet's routes with it; the default route is added anew. -EBUSY: the driver
 * wants the link down for a new MAC (reidentify_bounced does that).
 */
static int reidentify_live(struct nl *nl, const struct links *l, const struct net_cfg *cfg)
{
	int r;

	if (cfg->has_mac && (r = link_set_mac(nl, l->eth, l->name, cfg->mac)) < 0)
		return r;
	/* Fresh, eth0 has no address to flush: a template's boot gave it none. */
	if (cfg->has_addr && ((!fresh && (r = addr_flush(nl, l->eth, l->name)) < 0) ||
			      (r = addr_add(nl, l->eth, l->name, cfg->addr, cfg->prefix)) < 0))
		return r;
	return cfg->has_gw ? route_default_add(nl, l->eth, l->name, cfg->gw) : 0;
}

static int reidentify_bounced(struct nl *nl, const struct links *l, const struct net_cfg *cfg)
{
	struct gw_find old = { 0 };
	int r;

	/* A new MAC alone keeps the address, so it must keep the route the bounce removes. */
	if (!cfg->has_addr && !cfg->has_gw && (r = route_default_find(nl, l->eth, l->name, &old)) < 0)
		return r;
	if ((r = link_set(nl, l->eth, l->name, false)) < 0)
		return r;
	if ((cfg->has_mac && (r = link_set_mac(nl, l->eth, l->name, cfg->mac)) < 0) ||
	    (cfg->has_addr && ((r = addr_flush(nl, l->eth, l->name)) < 0 ||
			       (r = addr_add(nl, l->eth, l->name, cfg->addr, cfg->prefix)) < 0))) {
		/* A link left down is worse than a half-changed identity: the host can SYNC again. */
		char keep[sizeof(err_msg)];

		memcpy(keep, err_msg, sizeof(keep));
		(void)link_set(nl, l->eth, l->name, true);
		memcpy(err_msg, keep, sizeof(keep));
		return r;
	}
	if ((r = link_set(nl, l->eth, l->name, true)) < 0)
		return r;
	if (cfg->has_gw)
		return route_default_add(nl, l->eth, l->name, cfg->gw);
	if (old.found)
		return route_default_add(nl, l->eth, l->name, old.gw);
	return 0;
}

int net_reidentify(const struct net_cfg *cfg, const char **why)
{
	struct links l;
	struct nl nl;
	int r;

	err_msg[0] = '\0';
	r = nl_open(&nl);
	if (r < 0) {
		*why = "netlink socket failed";
		return r;
	}
	r = links_get(&nl, &l);
	if (r == 0 && l.eth <= 0)
		r = fail(NULL, -ENODEV, "no ethernet link to re-identify (isolated VM?)");
	if (r == 0 && (cfg->has_mac || cfg->has_addr)) {
		r = reidentify_live(&nl, &l, cfg);
		if (r == -EBUSY) {
			err_msg[0] = '\0';
			r = reidentify_bounced(&nl, &l, cfg);
		}
	}
	if (r == 0 && cfg->has_dns)
		r = resolv_write(cfg->dns);
	nl_close(&nl);
	if (r < 0) {
		log_msg("SYNC network: %s", err_msg);
		*why = err_msg;
	}
	return r;
}
