// SPDX-License-Identifier: MIT
/*
 * tap.c - tap devices through /dev/net/tun, link state and addresses through libnl-route, and the
 * per-interface forwarding switch. No shelling out to ip(8).
 *
 * Forwarding: IPv4 checks the forwarding flag of the interface a packet ARRIVES on, so the tap's
 * flag is what lets the VM's packets be routed out. Replies come in through the uplink, whose flag
 * (or the global net.ipv4.ip_forward, which sets every interface's) must be on too; that is a host
 * setting this module does not touch on its own (see netfilter/README.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/tbf.h>
#include <netlink/route/route.h>
#include <netlink/route/tc.h>

#include "nf_internal.h"

static int nle_to_errno(int nle)
{
	switch (nle < 0 ? -nle : nle) {
	case NLE_PERM:
		return -EPERM;
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_EXIST:
		return -EEXIST;
	case NLE_OBJ_NOTFOUND:
	case NLE_NODEV:
		return -ENODEV;
	case NLE_INVAL:
	case NLE_RANGE:
		return -EINVAL;
	case NLE_BUSY:
		return -EBUSY;
	case NLE_AF_NOSUPPORT:
	case NLE_OPNOTSUPP:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

static int nl_error(struct avm_error *err, int nle, const char *what, const char *ifname)
{
	int code = nle_to_errno(nle);

	if (code == -EPERM)
		return nf_set_error(err, code, "%s %s: needs root (CAP_NET_ADMIN)", what, ifname);
	return nf_set_error(err, code, "%s %s: %s", what, ifname, nl_geterror(nle));
}

static void sockp(struct nl_sock **s)
{
	if (*s)
		nl_socket_free(*s);
}

static void linkp(struct rtnl_link **l)
{
	if (*l)
		rtnl_link_put(*l);
}

static int route_socket(struct nl_sock **out, struct avm_error *err)
{
	struct nl_sock *s = nl_socket_alloc();
	int r;

	if (!s)
		return nf_set_error(err, -ENOMEM, "out of memory");
	/* nl_connect() opens its socket with SOCK_CLOEXEC (libnl >= 3.2.26). */
	r = nl_connect(s, NETLINK_ROUTE);
	if (r < 0) {
		nl_socket_free(s);
		return nl_error(err, r, "netlink connect for", "rtnetlink");
	}
	*out = s;
	return 0;
}

static int check_ifname(const char *ifname, struct avm_error *err)
{
	if (!ifname || !*ifname || strlen(ifname) >= IFNAMSIZ || strchr(ifname, '/') ||
	    strcmp(ifname, ".") == 0 || strcmp(ifname, "..") == 0)
		return nf_set_error(err, -EINVAL, "bad interface name '%s'",
				    ifname ? ifname : "(null)");
	return 0;
}

int nf_link_exists(const char *ifname, struct avm_error *err)
{
	__attribute__((cleanup(sockp))) struct nl_sock *s = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *l = NULL;
	int r = check_ifname(ifname, err);

	if (r < 0)
		return r;
	r = route_socket(&s, err);
	if (r < 0)
		return r;
	r = rtnl_link_get_kernel(s, 0, ifname, &l);
	if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
		return 0;
	if (r < 0)
		return nl_error(err, r, "cannot look up", ifname);
	return 1;
}

int nf_tap_create(const char *name, bool persist, struct avm_error *err)
{
	_nf_cleanup_close_ int fd = -1;
	struct ifreq ifr = { 0 };
	int r;

	r = nf_check_tap_name(name, err);
	if (r < 0)
		return r;
	/* TUNSETIFF would silently attach to an existing tap of that name: refuse instead. */
	r = nf_link_exists(name, err);
	if (r < 0)
		return r;
	if (r > 0)
		return nf_set_error(err, -EEXIST, "interface %s already exists", name);
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return nf_set_error(err, -errno, "cannot open /dev/net/tun: %s%s", strerror(errno),
				    errno == EACCES || errno == EPERM ? " (needs CAP_NET_ADMIN)" : "");
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return nf_set_error(err, -errno, "cannot create tap %s: %s%s", name, strerror(errno),
				    errno == EPERM ? " (needs root, CAP_NET_ADMIN)" : "");
	if (persist && ioctl(fd, TUNSETPERSIST, 1) < 0) {
		r = -errno;
		return nf_set_error(err, r, "cannot make tap %s persistent: %s", name, strerror(-r));
	}
	return NF_TAKE_FD(fd);
}

int nf_if_forwarding(const char *ifname, bool on, struct avm_error *err)
{
	_nf_cleanup_close_ int fd = -1;
	char path[96];
	int r = check_ifname(ifname, err);

	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/forwarding", ifname);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return nf_set_error(err, -errno, "cannot open %s: %s", path, strerror(errno));
	if (write(fd, on ? "1\n" : "0\n", 2) != 2)
		return nf_set_error(err, errno ? -errno : -EIO, "cannot write %s: %s", path,
				    strerror(errno));
	return 0;
}

static int put_sysctl(const char *family, const char *ifname, const char *key, const char *value,
		      bool must, struct avm_error *err)
{
	_nf_cleanup_close_ int fd = -1;
	char path[128];
	size_t len = strlen(value);

	snprintf(path, sizeof(path), "/proc/sys/net/%s/conf/%s/%s", family, ifname, key);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 && !must && errno == ENOENT)
		return 0; /* e.g. no IPv6 in this kernel: nothing to switch off */
	if (fd < 0)
		return nf_set_error(err, -errno, "cannot open %s: %s", path, strerror(errno));
	if (write(fd, value, len) != (ssize_t)len)
		return nf_set_error(err, errno ? -errno : -EIO, "cannot write %s: %s", path,
				    strerror(errno));
	return 0;
}

/*
 * The tap's neighbour behaviour: answer ARP only for the tap's own address and only from it
 * (arp_ignore 1, arp_announce 2, arp_filter 1), drop what fails strict reverse-path checks
 * (rp_filter 1; the kernel uses the larger of this and conf/all, so a host set to loose (2) keeps
 * loose here: the nft source check is the strict one), and no IPv6 on the tap at all (no
 * link-local address, no neighbour discovery, no router solicitations to the guest).
 */
int nf_link_harden(const char *ifname, struct avm_error *err)
{
	static const struct {
		const char *family, *key, *value;
		bool must;
	} ctl[] = {
		{ "ipv4", "arp_ignore", "1\n", true },	  { "ipv4", "arp_announce", "2\n", true },
		{ "ipv4", "arp_filter", "1\n", true },	  { "ipv4", "rp_filter", "1\n", true },
		{ "ipv4", "accept_local", "0\n", true }, { "ipv4", "proxy_arp", "0\n", true },
		{ "ipv6", "disable_ipv6", "1\n", false },
	};
	int r = check_ifname(ifname, err);

	for (size_t i = 0; r >= 0 && i < sizeof(ctl) / sizeof(ctl[0]); i++)
		r = put_sysctl(ctl[i].family, ifname, ctl[i].key, ctl[i].value, ctl[i].must, err);
	return r < 0 ? r : 0;
}

int nf_link_configure(const char *ifname, struct in_addr host, unsigned prefixlen,
		      struct avm_error *err)
{
	__attribute__((cleanup(sockp))) struct nl_sock *s = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *l = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *change = NULL;
	struct rtnl_addr *addr = NULL;
	struct nl_addr *local = NULL;
	int r, ifindex;

	r = check_ifname(ifname, err);
	if (r < 0)
		return r;
	if (prefixlen < 1 || prefixlen > 32)
		return nf_set_error(err, -EINVAL, "bad prefix length /%u", prefixlen);
	r = route_socket(&s, err);
	if (r < 0)
		return r;
	r = rtnl_link_get_kernel(s, 0, ifname, &l);
	if (r < 0)
		return nl_error(err, r, "cannot find interface", ifname);
	ifindex = rtnl_link_get_ifindex(l);
	/* Before the link is up: no IPv6 address, no neighbour answers, from the first packet. */
	r = nf_link_harden(ifname, err);
	if (r < 0)
		return r;

	/* Address first, then up: the connected route exists by the time traffic can flow. */
	addr = rtnl_addr_alloc();
	local = nl_addr_build(AF_INET, &host, sizeof(host));
	if (!addr || !local) {
		rtnl_addr_put(addr);
		nl_addr_put(local);
		return nf_set_error(err, -ENOMEM, "out of memory");
	}
	nl_addr_set_prefixlen(local, (int)prefixlen);
	rtnl_addr_set_ifindex(addr, ifindex);
	rtnl_addr_set_family(addr, AF_INET);
	r = rtnl_addr_set_local(addr, local);
	if (r >= 0)
		r = rtnl_addr_add(s, addr, 0);
	rtnl_addr_put(addr);
	nl_addr_put(local);
	if (r < 0 && r != -NLE_EXIST)
		return nl_error(err, r, "cannot add address to", ifname);

	change = rtnl_link_alloc();
	if (!change)
		return nf_set_error(err, -ENOMEM, "out of memory");
	rtnl_link_set_flags(change, IFF_UP);
	r = rtnl_link_change(s, l, change, 0);
	if (r < 0)
		return nl_error(err, r, "cannot bring up", ifname);
	return nf_if_forwarding(ifname, true, err);
}

int nf_link_delete(const char *ifname, struct avm_error *err)
{
	__attribute__((cleanup(sockp))) struct nl_sock *s = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *l = NULL;
	int r = check_ifname(ifname, err);

	if (r < 0)
		return r;
	r = route_socket(&s, err);
	if (r < 0)
		return r;
	l = rtnl_link_alloc();
	if (!l)
		return nf_set_error(err, -ENOMEM, "out of memory");
	rtnl_link_set_name(l, ifname);
	r = rtnl_link_delete(s, l);
	if (r < 0)
		return nl_error(err, r, "cannot delete interface", ifname);
	return 0;
}

int nf_link_set_master(const char *ifname, const char *bridge, struct avm_error *err)
{
	__attribute__((cleanup(sockp))) struct nl_sock *s = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *l = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *br = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *change = NULL;
	int r;

	if ((r = check_ifname(ifname, err)) < 0 || (r = check_ifname(bridge, err)) < 0)
		return r;
	r = route_socket(&s, err);
	if (r < 0)
		return r;
	r = rtnl_link_get_kernel(s, 0, bridge, &br);
	if (r < 0)
		return nl_error(err, r, "cannot find bridge", bridge);
	if (!rtnl_link_get_type(br) || strcmp(rtnl_link_get_type(br), "bridge") != 0)
		return nf_set_error(err, -EINVAL, "%s is not a bridge", bridge);
	r = rtnl_link_get_kernel(s, 0, ifname, &l);
	if (r < 0)
		return nl_error(err, r, "cannot find interface", ifname);
	change = rtnl_link_alloc();
	if (!change)
		return nf_set_error(err, -ENOMEM, "out of memory");
	rtnl_link_set_master(change, rtnl_link_get_ifindex(br));
	rtnl_link_set_flags(change, IFF_UP);
	r = rtnl_link_change(s, l, change, 0);
	if (r < 0)
		return nl_error(err, r, "cannot attach to the bridge:", ifname);
	return 0;
}

/* The first IPv4 default route of the main table; its nexthop's interface is the uplink. */
int nf_uplink(char *out, struct avm_error *err)
{
	__attribute__((cleanup(sockp))) struct nl_sock *s = NULL;
	struct nl_cache *routes = NULL, *links = NULL;
	int r, ifindex = 0;

	out[0] = '\0';
	r = route_socket(&s, err);
	if (r < 0)
		return r;
	r = rtnl_route_alloc_cache(s, AF_INET, 0, &routes);
	if (r < 0)
		return nl_error(err, r, "cannot read the routes of", "this namespace");
	for (struct nl_object *o = nl_cache_get_first(routes); o && !ifindex;
	     o = nl_cache_get_next(o)) {
		struct rtnl_route *rt = (struct rtnl_route *)o;
		struct nl_addr *dst = rtnl_route_get_dst(rt);
		if (rtnl_route_get_table(rt) != RT_TABLE_MAIN || (dst && nl_addr_get_prefixlen(dst)))
			continue;
		if (rtnl_route_get_nnexthops(rt) > 0)
			ifindex = rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(rt, 0));
	}
	nl_cache_free(routes);
	if (!ifindex)
		return -ENOENT;
	r = rtnl_link_alloc_cache(s, AF_UNSPEC, &links);
	if (r < 0)
		return nl_error(err, r, "cannot read the links of", "this namespace");
	if (!rtnl_link_i2name(links, ifindex, out, IFNAMSIZ))
		r = nf_set_error(err, -ENODEV, "the default route's interface %d vanished", ifindex);
	nl_cache_free(links);
	return r < 0 ? r : 0;
}

/*
 * Measured on veth (bench/RESULTS.md): a tbf qdisc holds a TCP download within 5 % of its rate,
 * while an nft byte limit lets the first second of traffic through unmetered (its bucket is one
 * second of the rate plus the burst), 19 % over on a 30 MB transfer.
 */
int nf_tap_shape(const char *ifname, uint64_t rate_bytes, uint64_t burst_bytes,
		 struct avm_error *err)
{
	__attribute__((cleanup(sockp))) struct nl_sock *s = NULL;
	__attribute__((cleanup(linkp))) struct rtnl_link *l = NULL;
	struct rtnl_qdisc *q;
	int r = check_ifname(ifname, err);

	if (r < 0)
		return r;
	if (rate_bytes == 0 || rate_bytes > INT32_MAX || burst_bytes == 0 || burst_bytes > INT32_MAX)
		return nf_set_error(err, -EINVAL, "bandwidth out of range");
	r = route_socket(&s, err);
	if (r < 0)
		return r;
	r = rtnl_link_get_kernel(s, 0, ifname, &l);
	if (r < 0)
		return nl_error(err, r, "cannot find interface", ifname);
	q = rtnl_qdisc_alloc();
	if (!q)
		return nf_set_error(err, -ENOMEM, "out of memory");
	rtnl_tc_set_ifindex(TC_CAST(q), rtnl_link_get_ifindex(l));
	rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
	rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(1, 0));
	r = rtnl_tc_set_kind(TC_CAST(q), "tbf");
	if (r >= 0) {
		rtnl_qdisc_tbf_set_rate(q, (int)rate_bytes, (int)burst_bytes, 0);
		/* Queue at most 50 ms of the rate: shaping, not bufferbloat. */
		r = rtnl_qdisc_tbf_set_limit_by_latency(q, 50000);
	}
	if (r >= 0)
		r = rtnl_qdisc_add(s, q, NLM_F_CREATE | NLM_F_REPLACE);
	rtnl_qdisc_put(q);
	if (r < 0)
		return nl_error(err, r, "cannot set the bandwidth of", ifname);
	return 0;
}
