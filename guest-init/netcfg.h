/* SPDX-License-Identifier: MIT */
/*
 * The guest's network identity, parsed from the kernel cmdline (boot) or from SYNC TLVs (a
 * restored clone). Pure functions only: nothing here touches the system, so the parsers can
 * be unit-tested and fuzzed; net.c applies the result.
 */
#ifndef AGENTVM_INIT_NETCFG_H
#define AGENTVM_INIT_NETCFG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETCFG_HOSTNAME_MAX 64
#define NETCFG_MAC_LEN 6

/* Addresses in network byte order; a has_* flag says whether the field was given. */
struct net_cfg {
	bool has_addr, has_gw, has_dns, has_mac;
	struct in_addr addr, gw, dns;
	uint8_t prefix; /* of addr: 1..32 */
	uint8_t mac[NETCFG_MAC_LEN];
	char hostname[NETCFG_HOSTNAME_MAX + 1]; /* "" when not given (cmdline only) */
};

/* true when the config changes anything about eth0 or resolv.conf (not just the hostname). */
bool netcfg_has_net(const struct net_cfg *cfg);
/* 1..64 of [A-Za-z0-9._-]: for the cmdline and SYNC alike (it goes into /etc/hosts). */
bool netcfg_hostname_ok(const char *s, size_t len);

/*
 * Strict dotted quad: exactly four decimal octets 0..255, no leading zeros, no spaces, s[0..len)
 * need not be NUL-terminated. "A.B.C.D/P" with P in 1..32 for the _cidr variant. 0 or -EINVAL.
 */
int netcfg_parse_ipv4(const char *s, size_t len, struct in_addr *out);
int netcfg_parse_cidr(const char *s, size_t len, struct in_addr *addr, uint8_t *prefix);

/*
 * The agentvm.ip/gw/dns/hostname keys of a kernel cmdline (whitespace-separated words; other
 * words and unknown agentvm.* keys are ignored). Two independent groups: the network keys are
 * all-or-nothing (a bad or repeated value, or a combination that cannot work such as a gateway
 * without an address or outside its subnet, drops all three), the hostname stands alone. Returns
 * 0, or -EINVAL with *why set to a static message naming the first rejected key; cfg then holds
 * whichever group was valid, so a typo in one never costs the other.
 */
int netcfg_parse_cmdline(const char *cmdline, struct net_cfg *cfg, const char **why);

/*
 * The AVM_TAG_NET_* records of a SYNC payload (other tags are ignored, they belong to
 * sync_apply()). Same rules as the cmdline; a repeated tag is an error. 0, or -EINVAL /
 * -EBADMSG (truncated record) with *why set and cfg cleared.
 */
int netcfg_parse_sync(const uint8_t *p, size_t len, struct net_cfg *cfg, const char **why);

#endif
