/* SPDX-License-Identifier: MIT */
/*
 * Network config parsing. Both sources are untrusted in the sense that matters: a typo on a
 * cmdline or a buggy host must give a clear error, never a half-configured eth0 that looks fine
 * and routes nowhere. So the checks are strict and the results all-or-nothing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netcfg.h"
#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

bool netcfg_has_net(const struct net_cfg *cfg)
{
	return cfg->has_addr || cfg->has_gw || cfg->has_dns || cfg->has_mac;
}

/* One decimal number of at most max_digits digits and no leading zero, s[*i..len). */
static int parse_dec(const char *s, size_t len, size_t *i, unsigned max_digits, unsigned *out)
{
	unsigned v = 0, n = 0;

	while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
		if (n == max_digits || (n == 1 && v == 0))
			return -EINVAL;
		v = v * 10 + (unsigned)(s[*i] - '0');
		n++;
		(*i)++;
	}
	if (n == 0)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * By hand rather than inet_pton: the input is length-delimited (a TLV), and inet_aton-style
 * leniency ("10.1", hex, octal) must never turn a typo into some other valid address.
 */
int netcfg_parse_ipv4(const char *s, size_t len, struct in_addr *out)
{
	uint32_t v = 0;
	unsigned octet;
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		if (part > 0 && (i >= len || s[i++] != '.'))
			return -EINVAL;
		if (parse_dec(s, len, &i, 3, &octet) < 0 || octet > 255)
			return -EINVAL;
		v = v << 8 | octet;
	}
	if (i != len)
		return -EINVAL;
	out->s_addr = htonl(v);
	return 0;
}

int netcfg_parse_cidr(const char *s, size_t len, struct in_addr *addr, uint8_t *prefix)
{
	const char *slash = memchr(s, '/', len);
	size_t i, plen;
	unsigned p;

	if (!slash)
		return -EINVAL;
	plen = (size_t)(slash - s);
	i = plen + 1;
	if (netcfg_parse_ipv4(s, plen, addr) < 0 || parse_dec(s, len, &i, 2, &p) < 0 || i != len ||
	    p < 1 || p > 32)
		return -EINVAL;
	*prefix = (uint8_t)p;
	return 0;
}

/* Host byte order. 0/8 ("this network"), 127/8 and 224/3 (multicast, reserved) never fit. */
static bool unicast(uint32_t h)
{
	uint32_t a = h >> 24;

	return a != 0 && a != 127 && a < 224;
}

static uint32_t mask_of(uint8_t prefix)
{
	return prefix == 0 ? 0 : ~0u << (32 - prefix);
}

/* A host address of the subnet: not its network or broadcast address (/31 and /32 have none). */
static bool host_of(uint32_t h, uint32_t net, uint8_t prefix)
{
	uint32_t m = mask_of(prefix);

	if ((h & m) != net)
		return false;
	return prefix >= 31 || (h != net && h != (net | ~m));
}

/* The rules both sources share, once every field parsed on its own. */
static int check_net(const struct net_cfg *c, const char **why)
{
	uint32_t a = ntohl(c->addr.s_addr), net = a & mask_of(c->prefix);

	if (c->has_addr && (!unicast(a) || !host_of(a, net, c->prefix))) {
		*why = "address is not a unicast host address of its subnet";
		return -EINVAL;
	}
	if (c->has_gw) {
		uint32_t g = ntohl(c->gw.s_addr);

		if (!c->has_addr) {
			*why = "a gateway needs an address (it must be on-link)";
			return -EINVAL;
		}
		if (g == a || !unicast(g) || !host_of(g, net, c->prefix)) {
			*why = "gateway is not another host of the address's subnet";
			return -EINVAL;
		}
	}
	if (c->has_dns) {
		uint32_t d = ntohl(c->dns.s_addr);

		/* Loopback is allowed: someone may run a resolver inside the guest. */
		if ((d >> 24) == 0 || d >= 0xe0000000u) {
			*why = "resolver must be a unicast address";
			return -EINVAL;
		}
	}
	/* The kernel would refuse these with EADDRNOTAVAIL; say so before anything changed. */
	if (c->has_mac) {
		static const uint8_t zero[NETCFG_MAC_LEN];

		if ((c->mac[0] & 1) || memcmp(c->mac, zero, sizeof(zero)) == 0) {
			*why = "MAC must be a non-zero unicast address";
			return -EINVAL;
		}
	}
	return 0;
}

/* Letters, digits, '-', '.', '_': what a VM name can be, and nothing a shell prompt chokes on. */
bool netcfg_hostname_ok(const char *s, size_t len)
{
	if (len == 0 || len > NETCFG_HOSTNAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
			return false;
	}
	return true;
}

static void clear_net(struct net_cfg *cfg)
{
	char host[sizeof(cfg->hostname)];

	memcpy(host, cfg->hostname, sizeof(host));
	memset(cfg, 0, sizeof(*cfg));
	memcpy(cfg->hostname, host, sizeof(host));
}

enum cmd_key { KEY_IP, KEY_GW, KEY_DNS, KEY_HOSTNAME, KEY_COUNT };

static const char *const cmd_keys[KEY_COUNT] = {
	[KEY_IP] = "agentvm.ip",
	[KEY_GW] = "agentvm.gw",
	[KEY_DNS] = "agentvm.dns",
	[KEY_HOSTNAME] = "agentvm.hostname",
};

static const char *const cmd_bad[KEY_COUNT] = {
	[KEY_IP] = "agentvm.ip must be A.B.C.D/P with P in 1..32",
	[KEY_GW] = "agentvm.gw must be A.B.C.D",
	[KEY_DNS] = "agentvm.dns must be A.B.C.D",
	[KEY_HOSTNAME] = "agentvm.hostname must be 1..64 of [A-Za-z0-9._-]",
};

static const char *const cmd_twice[KEY_COUNT] = {
	[KEY_IP] = "agentvm.ip given twice",
	[KEY_GW] = "agentvm.gw given twice",
	[KEY_DNS] = "agentvm.dns given twice",
	[KEY_HOSTNAME] = "agentvm.hostname given twice",
};

/* Which of our keys the word w[0..len) sets (-1: none of ours); *val is what follows '='. */
static int cmd_key(const char *w, size_t len, const char **val, size_t *vlen)
{
	for (int k = 0; k < KEY_COUNT; k++) {
		size_t kl = strlen(cmd_keys[k]);

		if (len < kl || memcmp(w, cmd_keys[k], kl) != 0)
			continue;
		if (len == kl) { /* "agentvm.ip" alone: ours, but without a value */
			*val = w + len;
			*vlen = 0;
			return k;
		}
		if (w[kl] != '=')
			continue; /* a longer key such as agentvm.ipx is someone else's */
		*val = w + kl + 1;
		*vlen = len - kl - 1;
		return k;
	}
	return -1;
}

/* Record the first error only: it is the one the log line names. */
static void fail(const char **why, const char *msg, bool *net_bad, bool is_net, bool *host_bad)
{
	if (!*net_bad && !*host_bad)
		*why = msg;
	if (is_net)
		*net_bad = true;
	else
		*host_bad = true;
}

int netcfg_parse_cmdline(const char *cmdline, struct net_cfg *cfg, const char **why)
{
	static const char ws[] = " \t\n";
	bool seen[KEY_COUNT] = { false }, net_bad = false, host_bad = false;
	const char *w = cmdline, *val;
	size_t len, vlen;
	int k, r = 0;

	memset(cfg, 0, sizeof(*cfg));
	for (;; w += len) {
		w += strspn(w, ws);
		if (!*w)
			break;
		len = strcspn(w, ws);
		k = cmd_key(w, len, &val, &vlen);
		if (k < 0)
			continue;
		if (seen[k]) {
			fail(why, cmd_twice[k], &net_bad, k != KEY_HOSTNAME, &host_bad);
			continue;
		}
		seen[k] = true;
		switch (k) {
		case KEY_IP:
			r = netcfg_parse_cidr(val, vlen, &cfg->addr, &cfg->prefix);
			cfg->has_addr = r == 0;
			break;
		case KEY_GW:
			r = netcfg_parse_ipv4(val, vlen, &cfg->gw);
			cfg->has_gw = r == 0;
			break;
		case KEY_DNS:
			r = netcfg_parse_ipv4(val, vlen, &cfg->dns);
			cfg->has_dns = r == 0;
			break;
		case KEY_HOSTNAME:
			r = netcfg_hostname_ok(val, vlen) ? 0 : -EINVAL;
			if (r == 0)
				memcpy(cfg->hostname, val, vlen);
			break;
		}
		if (r < 0)
			fail(why, cmd_bad[k], &net_bad, k != KEY_HOSTNAME, &host_bad);
	}
	if (!net_bad) {
		const char *msg;

		if (check_net(cfg, &msg) < 0)
			fail(why, msg, &net_bad, true, &host_bad);
	}
	if (net_bad)
		clear_net(cfg);
	if (host_bad)
		cfg->hostname[0] = '\0';
	return net_bad || host_bad ? -EINVAL : 0;
}

static int sync_once(bool *has, const char **why, const char *msg)
{
	if (*has) {
		*why = msg;
		return -EINVAL;
	}
	return 0;
}

static int sync_field(struct net_cfg *c, uint16_t tag, const uint8_t *val, uint32_t vlen,
		      const char **why)
{
	const char *s = (const char *)val;

	switch (tag) {
	case AVM_TAG_NET_ADDR:
		if (sync_once(&c->has_addr, why, "address given twice") < 0)
			return -EINVAL;
		if (netcfg_parse_cidr(s, vlen, &c->addr, &c->prefix) < 0) {
			*why = "address must be \"A.B.C.D/P\" with P in 1..32";
			return -EINVAL;
		}
		c->has_addr = true;
		break;
	case AVM_TAG_NET_GW:
		if (sync_once(&c->has_gw, why, "gateway given twice") < 0)
			return -EINVAL;
		if (netcfg_parse_ipv4(s, vlen, &c->gw) < 0) {
			*why = "gateway must be \"A.B.C.D\"";
			return -EINVAL;
		}
		c->has_gw = true;
		break;
	case AVM_TAG_NET_DNS:
		if (sync_once(&c->has_dns, why, "resolver given twice") < 0)
			return -EINVAL;
		if (netcfg_parse_ipv4(s, vlen, &c->dns) < 0) {
			*why = "resolver must be \"A.B.C.D\"";
			return -EINVAL;
		}
		c->has_dns = true;
		break;
	case AVM_TAG_NET_MAC:
		if (sync_once(&c->has_mac, why, "MAC given twice") < 0)
			return -EINVAL;
		if (vlen != NETCFG_MAC_LEN) {
			*why = "MAC must be 6 bytes";
			return -EINVAL;
		}
		memcpy(c->mac, val, NETCFG_MAC_LEN);
		c->has_mac = true;
		break;
	default:
		break; /* time, entropy, hostname: sync_apply()'s business */
	}
	return 0;
}

int netcfg_parse_sync(const uint8_t *p, size_t len, struct net_cfg *cfg, const char **why)
{
	struct avm_tlv_iter it;
	const uint8_t *val;
	uint32_t vlen;
	uint16_t tag;
	int r;

	memset(cfg, 0, sizeof(*cfg));
	avm_tlv_iter_init(&it, p, len);
	while ((r = avm_tlv_next(&it, &tag, &val, &vlen)) > 0)
		if ((r = sync_field(cfg, tag, val, vlen, why)) < 0)
			break;
	if (r == 0 && (r = check_net(cfg, why)) == 0)
		return 0;
	if (r != -EINVAL) {
		*why = "truncated TLV record";
		r = -EBADMSG;
	}
	memset(cfg, 0, sizeof(*cfg));
	return r;
}
