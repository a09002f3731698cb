// SPDX-License-Identifier: MIT
/*
 * rules.c - the nft transactions of agentvm, as text. Pure: no syscalls, so unit tests can check
 * every element of the policy without root.
 *
 * Why the shape (DESIGN.md §5):
 * - Our base chains must never change the fate of traffic that is not ours. They are policy
 *   accept and every rule in them matches an avm-* interface; everything else falls through to
 *   whatever other tables decide. (An accept here does not override a drop in another table, e.g.
 *   Docker's FORWARD policy; hosts with such a policy must accept avm-* there too.)
 * - Per-VM state is reached through verdict maps keyed by interface name, not through per-VM
 *   rules in the base chains: adding or removing a VM is then "add/delete element" plus its own
 *   chains, which needs no rule handles and fits in one atomic transaction.
 * - An avm-* interface with no map entry (a tap whose rules were removed, or a half-built VM)
 *   hits the "avm-*" drop rules: fail closed.
 * - Every transaction first re-asserts the base (add = create-if-missing, flush + refill of the
 *   base chains), so it never depends on some earlier call having run, and never duplicates.
 * - nft 1.0.6 has no "destroy", so removal makes itself idempotent by adding each object first
 *   (a no-op when it exists) and deleting it in the same transaction.
 * - VM -> VM: out-<tap> drops anything leaving through another avm-* interface, before the
 *   established rule, so not even a reply crosses between VMs.
 * - Drops go through one per-VM, per-direction chain that logs (rate limited; the limit
 *   statement ends the log rule only) and counts, so every drop path is logged and counted alike.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_internal.h"

#define T "inet " NF_TABLE
#define A "arp " NF_TABLE

static const struct nf_port default_allow[] = {
	{ IPPROTO_TCP, 80 },
	{ IPPROTO_TCP, 443 },
	{ IPPROTO_TCP, 22 },
	{ IPPROTO_TCP, 9418 },
};

/* IANA IPv4 special-purpose registry + multicast/reserved: nothing a sandbox needs by default. */
static const char *const closed_ranges[] = {
	"0.0.0.0/8",	  /* "this network" */
	"10.0.0.0/8",	  /* RFC 1918 */
	"100.64.0.0/10",  /* CGNAT (RFC 6598) */
	"127.0.0.0/8",	  /* loopback */
	"169.254.0.0/16", /* link-local: cloud instance metadata (169.254.169.254) */
	"172.16.0.0/12",  /* RFC 1918 */
	"192.0.0.0/24",	  /* IETF protocol assignments */
	"192.0.2.0/24",	  /* TEST-NET-1 */
	"192.88.99.0/24", /* 6to4 relay anycast (deprecated) */
	"192.168.0.0/16", /* RFC 1918 */
	"198.18.0.0/15",  /* benchmarking */
	"198.51.100.0/24", /* TEST-NET-2 */
	"203.0.113.0/24", /* TEST-NET-3 */
	"224.0.0.0/4",	  /* multicast */
	"240.0.0.0/4",	  /* reserved, and 255.255.255.255 broadcast */
};

size_t nf_closed_ranges(const char *const **out)
{
	*out = closed_ranges;
	return sizeof(closed_ranges) / sizeof(closed_ranges[0]);
}

size_t nf_default_allow(const struct nf_port **out)
{
	*out = default_allow;
	return sizeof(default_allow) / sizeof(default_allow[0]);
}

int nf_port_parse(const char *s, struct nf_port *out, struct avm_error *err)
{
	const char *p;
	unsigned long v;
	char *end;

	if (!s)
		return nf_set_error(err, -EINVAL, "empty port");
	if (strncmp(s, "tcp:", 4) == 0)
		out->proto = IPPROTO_TCP;
	else if (strncmp(s, "udp:", 4) == 0)
		out->proto = IPPROTO_UDP;
	else
		return nf_set_error(err, -EINVAL, "bad port '%s': expected tcp:PORT or udp:PORT", s);
	p = s + 4;
	if (*p < '0' || *p > '9')
		return nf_set_error(err, -EINVAL, "bad port '%s': not a number", s);
	errno = 0;
	v = strtoul(p, &end, 10);
	if (*end || errno || v < 1 || v > 65535)
		return nf_set_error(err, -EINVAL, "bad port '%s': must be 1..65535", s);
	out->port = (uint16_t)v;
	return 0;
}

int nf_cidr_parse(const char *s, struct nf_cidr *out, struct avm_error *err)
{
	char addr[INET_ADDRSTRLEN + 1];
	const char *colon, *slash;
	size_t alen;
	unsigned long plen = 32;
	uint32_t mask;
	int r;

	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return nf_set_error(err, -EINVAL, "empty address range");
	colon = strchr(s, ':');
	slash = strchr(s, '/');
	if (slash && colon && slash > colon)
		slash = NULL;
	alen = (size_t)((slash ? slash : colon ? colon : s + strlen(s)) - s);
	if (alen == 0 || alen >= sizeof(addr))
		return nf_set_error(err, -EINVAL, "bad range '%s': expected A.B.C.D[/N][:PROTO:PORT]",
				    s);
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, &out->net) != 1)
		return nf_set_error(err, -EINVAL, "bad range '%s': '%s' is not an IPv4 address", s,
				    addr);
	if (slash) {
		char *end;

		if (slash[1] < '0' || slash[1] > '9')
			return nf_set_error(err, -EINVAL, "bad range '%s': prefix length 0..32", s);
		errno = 0;
		plen = strtoul(slash + 1, &end, 10);
		if (errno || plen > 32 || (*end && *end != ':'))
			return nf_set_error(err, -EINVAL, "bad range '%s': prefix length 0..32", s);
	}
	out->plen = (uint8_t)plen;
	mask = plen ? htonl(~0u << (32 - plen)) : 0;
	if (out->net.s_addr & ~mask)
		return nf_set_error(err, -EINVAL,
				    "bad range '%s': host bits set (the network of /%lu is meant)",
				    s, plen);
	if (colon) {
		struct nf_port p;

		r = nf_port_parse(colon + 1, &p, err);
		if (r < 0)
			return nf_set_error(err, r, "bad range '%s': after the range, tcp:PORT or "
					    "udp:PORT", s);
		out->proto = p.proto;
		out->port = p.port;
	}
	return 0;
}

void nf_cidr_string(const struct nf_cidr *c, char *buf, size_t len)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &c->net, a, sizeof(a));
	if (c->proto)
		snprintf(buf, len, "%s/%u:%s:%u", a, c->plen,
			 c->proto == IPPROTO_UDP ? "udp" : "tcp", c->port);
	else
		snprintf(buf, len, "%s/%u", a, c->plen);
}

/* "<digits><suffix>" with suffix from the table; its multiplier into *mul. */
static int number_unit(const char *s, size_t len, const char *const *units,
		       const uint64_t *muls, size_t n_units, uint64_t *out)
{
	char buf[32];
	char *end;
	unsigned long long v;

	if (len == 0 || len >= sizeof(buf) || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || v == 0)
		return -EINVAL;
	for (size_t i = 0; i < n_units; i++) {
		if (strcmp(end, units[i]) == 0) {
			if (v > UINT64_MAX / muls[i])
				return -EINVAL;
			*out = v * muls[i];
			return 0;
		}
	}
	return -EINVAL;
}

int nf_rate_parse(const char *s, uint64_t *rate_bytes, uint64_t *burst_bytes,
		  struct avm_error *err)
{
	static const char *const rate_units[] = { "", "bit", "kbit", "mbit", "gbit" };
	static const uint64_t rate_muls[] = { 1, 1, 1000, 1000000, 1000000000 };
	static const char *const burst_units[] = { "", "b", "k", "kb", "m", "mb" };
	static const uint64_t burst_muls[] = { 1, 1, 1024, 1024, 1048576, 1048576 };
	const char *colon = s ? strchr(s, ':') : NULL;
	uint64_t bits, burst;

	if (!s || number_unit(s, colon ? (size_t)(colon - s) : strlen(s), rate_units, rate_muls, 5,
			      &bits) < 0 || bits < 8000)
		return nf_set_error(err, -EINVAL,
				    "bad bandwidth '%s': expected RATE[:BURST], RATE like 20mbit "
				    "(at least 8kbit), BURST in bytes like 256k",
				    s ? s : "");
	*rate_bytes = bits / 8;
	burst = *rate_bytes / 4;
	if (colon && number_unit(colon + 1, strlen(colon + 1), burst_units, burst_muls, 6,
				 &burst) < 0)
		return nf_set_error(err, -EINVAL, "bad burst in '%s': bytes like 64k or 1m", s);
	if (!colon && burst < 32768)
		burst = 32768;
	if (burst > UINT32_MAX)
		return nf_set_error(err, -EINVAL, "burst in '%s' is too large (at most 4g)", s);
	*burst_bytes = burst;
	return 0;
}

static int check_ports(const struct nf_port *v, size_t n, struct avm_error *err)
{
	if (n && !v)
		return nf_set_error(err, -EINVAL, "port list is NULL");
	for (size_t i = 0; i < n; i++) {
		if (v[i].proto != IPPROTO_TCP && v[i].proto != IPPROTO_UDP)
			return nf_set_error(err, -EINVAL, "protocol %u: only tcp and udp", v[i].proto);
		if (v[i].port == 0)
			return nf_set_error(err, -EINVAL, "port 0 is not a port");
	}
	return 0;
}

static int check_vm(const struct nf_vm *vm, bool full, struct avm_error *err)
{
	int r;

	if (!vm)
		return nf_set_error(err, -EINVAL, "no VM given");
	r = nf_check_tap_name(vm->tap, err);
	if (r < 0)
		return r;
	if (vm->guest.s_addr == 0)
		return nf_set_error(err, -EINVAL, "VM %s has no guest address", vm->tap);
	if (!full)
		return 0;
	r = nf_check_owner(vm->name, err);
	if (r < 0)
		return r;
	if (vm->host.s_addr == 0 || vm->host.s_addr == vm->guest.s_addr)
		return nf_set_error(err, -EINVAL, "VM %s: bad host address", vm->tap);
	r = check_ports(vm->allow, vm->n_allow, err);
	if (r < 0)
		return r;
	if (vm->n_open && !vm->open)
		return nf_set_error(err, -EINVAL, "range list is NULL");
	for (size_t i = 0; i < vm->n_open; i++) {
		const struct nf_cidr *c = &vm->open[i];
		uint32_t mask = c->plen ? htonl(~0u << (32 - c->plen)) : 0;

		if (c->plen > 32 || (c->net.s_addr & ~mask))
			return nf_set_error(err, -EINVAL, "bad range in the policy");
		if (c->proto && ((c->proto != IPPROTO_TCP && c->proto != IPPROTO_UDP) || !c->port))
			return nf_set_error(err, -EINVAL, "bad port of a range in the policy");
	}
	if (vm->domains && (vm->domain_ttl == 0 || vm->domain_ttl > 86400))
		return nf_set_error(err, -EINVAL, "domain TTL must be 1..86400 s");
	return check_ports(vm->host_allow, vm->n_host_allow, err);
}

/* open_memstream keeps the builder trivial; finish() turns a write failure into -ENOMEM. */
static int finish(FILE *f, char **buf, char **out, struct avm_error *err)
{
	bool bad = ferror(f);

	if (fclose(f) != 0 || bad) {
		free(*buf);
		*buf = NULL;
		return nf_set_error(err, -ENOMEM, "out of memory building nft rules");
	}
	*out = *buf;
	return 0;
}

static void put_base(FILE *f)
{
	static const char *const chains[] = { "forward", "input", "output", "postrouting" };

	fputs("add table " T "\n", f);
	fputs("add map " T " fwd_from_vm { type ifname : verdict; }\n", f);
	fputs("add map " T " fwd_to_vm { type ifname : verdict; }\n", f);
	fputs("add map " T " host_from_vm { type ifname : verdict; }\n", f);
	fputs("add set " T " nat_src { type ipv4_addr; }\n", f);
	fputs("add chain " T " forward { type filter hook forward priority 0; policy accept; }\n", f);
	fputs("add chain " T " input { type filter hook input priority 0; policy accept; }\n", f);
	fputs("add chain " T " output { type filter hook output priority 0; policy accept; }\n", f);
	fputs("add chain " T " postrouting { type nat hook postrouting priority 100; policy accept; }\n",
	      f);
	for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++)
		fprintf(f, "flush chain " T " %s\n", chains[i]);
	fputs("add rule " T " forward iifname vmap @fwd_from_vm\n", f);
	fputs("add rule " T " forward oifname vmap @fwd_to_vm\n", f);
	fputs("add rule " T " forward iifname \"avm-*\" drop\n", f);
	fputs("add rule " T " forward oifname \"avm-*\" drop\n", f);
	fputs("add rule " T " input iifname vmap @host_from_vm\n", f);
	fputs("add rule " T " input iifname \"avm-*\" drop\n", f);
	/* The host answers the VM, it never opens connections into it. */
	fputs("add rule " T " output oifname \"avm-*\" ct state established,related accept\n", f);
	fputs("add rule " T " output oifname \"avm-*\" drop\n", f);
	fputs("add rule " T " postrouting oifname != \"avm-*\" ip saddr @nat_src masquerade\n", f);

	/*
	 * ARP never reaches an inet table: a second table polices it before the host's neighbour
	 * code sees it (no forged entries in the host-wide neighbour table), same dispatch model.
	 */
	fputs("add table " A "\n", f);
	fputs("add map " A " arp_from_vm { type ifname : verdict; }\n", f);
	fputs("add map " A " arp_to_vm { type ifname : verdict; }\n", f);
	fputs("add chain " A " input { type filter hook input priority 0; policy accept; }\n", f);
	fputs("add chain " A " output { type filter hook output priority 0; policy accept; }\n", f);
	fputs("flush chain " A " input\n", f);
	fputs("flush chain " A " output\n", f);
	fputs("add rule " A " input iifname vmap @arp_from_vm\n", f);
	fputs("add rule " A " input iifname \"avm-*\" drop\n", f);
	fputs("add rule " A " output oifname vmap @arp_to_vm\n", f);
	fputs("add rule " A " output oifname \"avm-*\" drop\n", f);
}

int nf_rules_base(char **out, struct avm_error *err)
{
	char *buf = NULL;
	size_t len;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return nf_set_error(err, -ENOMEM, "out of memory building nft rules");
	put_base(f);
	return finish(f, &buf, out, err);
}

/* Per-VM objects: chains are "<prefix><tap>", counters "<tap><suffix>". */
static const char *const vm_chain_prefix[] = { "out-", "in-", "host-", "drop-tx-", "drop-rx-" };
static const char *const vm_counter_suffix[] = { "-tx-ok",      "-tx-drop",  "-rx-ok",
						 "-rx-drop",   "-closed",   "-dns-drop",
						 "-conn-drop" };
#define N_CHAINS   (sizeof(vm_chain_prefix) / sizeof(vm_chain_prefix[0]))
#define N_COUNTERS (sizeof(vm_counter_suffix) / sizeof(vm_counter_suffix[0]))

static void put_chain_verb(FILE *f, const char *verb, const char *tap)
{
	for (size_t i = 0; i < N_CHAINS; i++)
		fprintf(f, "%s chain " T " %s%s\n", verb, vm_chain_prefix[i], tap);
}

static void put_objects(FILE *f, const char *verb, const char *tap)
{
	bool add = strcmp(verb, "add") == 0;

	for (size_t i = 0; i < N_COUNTERS; i++)
		fprintf(f, "%s counter " T " %s%s\n", verb, tap, vm_counter_suffix[i]);
	put_chain_verb(f, verb, tap);
	/* The conntrack count of the VM: one dynamic element, keyed by its (checked) source. */
	fprintf(f, "%s set " T " ct-%s%s\n", verb, tap,
		add ? " { type ipv4_addr; size 1; flags dynamic; }" : "");
	fprintf(f, "%s counter " A " %s-arp-drop\n", verb, tap);
	fprintf(f, "%s chain " A " arpin-%s\n", verb, tap);
	fprintf(f, "%s chain " A " arpout-%s\n", verb, tap);
}

/* The set of addresses answers for allowed names gave; its timeout is fixed at creation. */
static void put_domain_set(FILE *f, const char *verb, const char *tap, unsigned ttl)
{
	if (strcmp(verb, "add") == 0)
		fprintf(f, "add set " T " dom-%s { type ipv4_addr; size %u; flags dynamic,timeout; "
			   "timeout %us; }\n", tap, NF_DOMAIN_SET_SIZE, ttl);
	else
		fprintf(f, "%s set " T " dom-%s\n", verb, tap);
}

static void put_elements(FILE *f, const char *verb, const char *tap, const char *guest, bool data)
{
	if (data) {
		fprintf(f, "%s element " T " fwd_from_vm { \"%s\" : jump out-%s }\n", verb, tap, tap);
		fprintf(f, "%s element " T " fwd_to_vm { \"%s\" : jump in-%s }\n", verb, tap, tap);
		fprintf(f, "%s element " T " host_from_vm { \"%s\" : jump host-%s }\n", verb, tap,
			tap);
		fprintf(f, "%s element " A " arp_from_vm { \"%s\" : jump arpin-%s }\n", verb, tap,
			tap);
		fprintf(f, "%s element " A " arp_to_vm { \"%s\" : jump arpout-%s }\n", verb, tap,
			tap);
	} else {
		fprintf(f, "%s element " A " arp_from_vm { \"%s\" }\n", verb, tap);
		fprintf(f, "%s element " A " arp_to_vm { \"%s\" }\n", verb, tap);
		fprintf(f, "%s element " T " fwd_from_vm { \"%s\" }\n", verb, tap);
		fprintf(f, "%s element " T " fwd_to_vm { \"%s\" }\n", verb, tap);
		fprintf(f, "%s element " T " host_from_vm { \"%s\" }\n", verb, tap);
	}
	fprintf(f, "%s element " T " nat_src { %s }\n", verb, guest);
}

/* "tcp dport { 22, 80 }" rules, one per protocol present. */
static void put_allow(FILE *f, const char *chain, const char *tap, const char *match,
		      const struct nf_port *v, size_t n)
{
	static const struct {
		uint8_t proto;
		const char *name;
	} protos[] = { { IPPROTO_TCP, "tcp" }, { IPPROTO_UDP, "udp" } };

	for (size_t p = 0; p < 2; p++) {
		bool any = false;

		for (size_t i = 0; i < n; i++) {
			if (v[i].proto != protos[p].proto)
				continue;
			if (!any)
				fprintf(f, "add rule " T " %s-%s %sct state new %s dport { ", chain, tap,
					match, protos[p].name);
			fprintf(f, "%s%u", any ? ", " : "", v[i].port);
			any = true;
		}
		if (any)
			fprintf(f, " } counter name \"%s-tx-ok\" accept\n", tap);
	}
}

/* Anti-spoofing head shared by the two chains that see the VM's packets. */
static void put_spoof(FILE *f, const char *chain, const struct nf_vm *vm, const char *guest)
{
	const char *t = vm->tap;
	const uint8_t *m = vm->mac;

	fprintf(f, "add rule " T " %s-%s meta nfproto != ipv4 goto drop-tx-%s\n", chain, t, t);
	if (vm->check_mac)
		fprintf(f,
			"add rule " T " %s-%s ether saddr != %02x:%02x:%02x:%02x:%02x:%02x "
			"goto drop-tx-%s\n",
			chain, t, m[0], m[1], m[2], m[3], m[4], m[5], t);
	fprintf(f, "add rule " T " %s-%s ip saddr != %s goto drop-tx-%s\n", chain, t, guest, t);
}

static bool has_port(const struct nf_port *v, size_t n, uint8_t proto, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].proto == proto && v[i].port == port)
			return true;
	return false;
}

/* "{ 10.0.0.0/8, ... }" of the ranges opened without a port, or "" when there are none. */
static void put_open_set(FILE *f, const struct nf_vm *vm, const char *prefix)
{
	bool any = false;

	for (size_t i = 0; i < vm->n_open; i++) {
		char c[NF_CIDR_STRLEN];

		if (vm->open[i].proto)
			continue;
		nf_cidr_string(&vm->open[i], c, sizeof(c));
		fprintf(f, "%s%s", any ? ", " : prefix, c);
		any = true;
	}
	if (any)
		fputs(" } ", f);
}

/* State bounds shared by the two chains that see the VM's new connections. */
static void put_bounds(FILE *f, const char *chain, const struct nf_vm *vm)
{
	const char *t = vm->tap;

	if (vm->conn_rate)
		fprintf(f, "add rule " T " %s-%s ct state new limit rate over %u/second burst %u "
			   "packets counter name \"%s-conn-drop\" goto drop-tx-%s\n",
			chain, t, vm->conn_rate, 2 * vm->conn_rate, t, t);
	if (vm->conn_limit)
		fprintf(f, "add rule " T " %s-%s ct state new add @ct-%s { ip saddr ct count over %u } "
			   "counter name \"%s-conn-drop\" goto drop-tx-%s\n",
			chain, t, t, vm->conn_limit, t, t);
}

static void put_arp(FILE *f, const struct nf_vm *vm, const char *guest, const char *host)
{
	const char *t = vm->tap;
	const uint8_t *m = vm->mac;
	char mac[48] = "";

	if (vm->check_mac)
		snprintf(mac, sizeof(mac), "arp saddr ether %02x:%02x:%02x:%02x:%02x:%02x ", m[0],
			 m[1], m[2], m[3], m[4], m[5]);
	/*
	 * The guest asks only for its gateway and answers only the gateway, always as itself: one
	 * neighbour entry per VM on the host, whatever it forges.
	 */
	fprintf(f, "add rule " A " arpin-%s arp htype 1 arp ptype ip arp hlen 6 arp plen 4 %s"
		   "arp saddr ip %s arp daddr ip %s arp operation { request, reply } accept\n",
		t, mac, guest, host);
	fprintf(f, "add rule " A " arpin-%s limit rate 10/second burst 20 packets log prefix "
		   "\"avm-drop %s arp: \"\n", t, vm->name);
	fprintf(f, "add rule " A " arpin-%s counter name \"%s-arp-drop\" drop\n", t, t);
	/* The host speaks ARP on the tap only as the gateway. */
	fprintf(f, "add rule " A " arpout-%s arp saddr ip %s accept\n", t, host);
	fprintf(f, "add rule " A " arpout-%s drop\n", t);
}

int nf_rules_vm_add(const struct nf_vm *vm, char **out, struct avm_error *err)
{
	char guest[INET_ADDRSTRLEN], host[INET_ADDRSTRLEN], dns[INET_ADDRSTRLEN], match[64];
	const char *t;
	char *buf = NULL;
	size_t len;
	FILE *f;
	int r;

	*out = NULL;
	r = check_vm(vm, true, err);
	if (r < 0)
		return r;
	t = vm->tap;
	inet_ntop(AF_INET, &vm->guest, guest, sizeof(guest));
	inet_ntop(AF_INET, &vm->host, host, sizeof(host));
	inet_ntop(AF_INET, &vm->dns, dns, sizeof(dns));
	f = open_memstream(&buf, &len);
	if (!f)
		return nf_set_error(err, -ENOMEM, "out of memory building nft rules");

	put_base(f);
	/* add (create if missing) then flush: re-adding a VM replaces it instead of doubling it. */
	put_objects(f, "add", t);
	put_chain_verb(f, "flush", t);
	fprintf(f, "flush chain " A " arpin-%s\nflush chain " A " arpout-%s\n", t, t);
	/* The set's timeout is fixed when it is made: a re-add makes it anew (rules flushed above). */
	put_domain_set(f, "add", t, vm->domain_ttl ? vm->domain_ttl : NF_DEFAULT_DOMAIN_TTL);
	put_domain_set(f, "delete", t, 0);
	put_domain_set(f, "add", t, vm->domain_ttl ? vm->domain_ttl : NF_DEFAULT_DOMAIN_TTL);

	/* Drops go to the VM's NFLOG group when it has one: its supervisor audits them. */
	char group[24] = "";
	if (vm->log_group)
		snprintf(group, sizeof(group), "group %u ", vm->log_group);
	fprintf(f, "add rule " T " drop-tx-%s limit rate 10/second burst 20 packets "
		   "log %sprefix \"avm-drop %s out: \"\n", t, group, vm->name);
	fprintf(f, "add rule " T " drop-tx-%s counter name \"%s-tx-drop\" drop\n", t, t);
	fprintf(f, "add rule " T " drop-rx-%s limit rate 10/second burst 20 packets "
		   "log %sprefix \"avm-drop %s in: \"\n", t, group, vm->name);
	fprintf(f, "add rule " T " drop-rx-%s counter name \"%s-rx-drop\" drop\n", t, t);

	/* VM -> world (forwarded). */
	put_spoof(f, "out", vm, guest);
	fprintf(f, "add rule " T " out-%s oifname \"avm-*\" goto drop-tx-%s\n", t, t);
	if (vm->rate_bytes)
		fprintf(f, "add rule " T " out-%s limit rate over %llu bytes/second burst %llu bytes "
			   "drop\n", t, (unsigned long long)vm->rate_bytes,
			(unsigned long long)vm->burst_bytes);
	fprintf(f, "add rule " T " out-%s ct state established,related counter name \"%s-tx-ok\" "
		   "accept\n", t, t);
	put_bounds(f, "out", vm);
	/* DNS is pinned: the VM's resolver only (even in a closed range), unless 53 is named. */
	if (!vm->domains && vm->dns.s_addr) {
		fprintf(f, "add rule " T " out-%s ip daddr %s ct state new udp dport 53 counter name "
			   "\"%s-tx-ok\" accept\n", t, dns, t);
		fprintf(f, "add rule " T " out-%s ip daddr %s ct state new tcp dport 53 counter name "
			   "\"%s-tx-ok\" accept\n", t, dns, t);
	}
	if (!has_port(vm->allow, vm->n_allow, IPPROTO_UDP, 53))
		fprintf(f, "add rule " T " out-%s udp dport 53 counter name \"%s-dns-drop\" "
			   "goto drop-tx-%s\n", t, t, t);
	if (!has_port(vm->allow, vm->n_allow, IPPROTO_TCP, 53))
		fprintf(f, "add rule " T " out-%s tcp dport 53 counter name \"%s-dns-drop\" "
			   "goto drop-tx-%s\n", t, t, t);
	/* Ranges opened for one port: that port, whatever the allowlist says. */
	for (size_t i = 0; i < vm->n_open; i++) {
		char c[NF_CIDR_STRLEN], a[INET_ADDRSTRLEN];

		if (!vm->open[i].proto)
			continue;
		nf_cidr_string(&vm->open[i], c, sizeof(c));
		inet_ntop(AF_INET, &vm->open[i].net, a, sizeof(a));
		fprintf(f, "add rule " T " out-%s ip daddr %s/%u ct state new %s dport %u counter "
			   "name \"%s-tx-ok\" accept\n", t, a, vm->open[i].plen,
			vm->open[i].proto == IPPROTO_UDP ? "udp" : "tcp", vm->open[i].port, t);
	}
	/* Closed destinations, except the ranges opened without a port. */
	fprintf(f, "add rule " T " out-%s ", t);
	put_open_set(f, vm, "ip daddr != { ");
	fputs("ip daddr { ", f);
	for (size_t i = 0; i < sizeof(closed_ranges) / sizeof(closed_ranges[0]); i++)
		fprintf(f, "%s%s", i ? ", " : "", closed_ranges[i]);
	fprintf(f, " } counter name \"%s-closed\" goto drop-tx-%s\n", t, t);
	/* By name: only addresses an allowed name resolved to (or an opened range). */
	if (vm->domains) {
		fprintf(f, "add rule " T " out-%s ", t);
		put_open_set(f, vm, "ip daddr != { ");
		fprintf(f, "ip daddr != @dom-%s counter name \"%s-closed\" goto drop-tx-%s\n", t, t,
			t);
		/* In use keeps an address allowed: the timeout restarts with each new connection. */
		fprintf(f, "add rule " T " out-%s ct state new ip daddr @dom-%s update @dom-%s "
			   "{ ip daddr }\n", t, t, t);
	}
	put_allow(f, "out", t, "", vm->allow, vm->n_allow);
	fprintf(f, "add rule " T " out-%s goto drop-tx-%s\n", t, t);

	/* World -> VM: only what belongs to connections the VM opened. */
	fprintf(f, "add rule " T " in-%s ct state established,related counter name \"%s-rx-ok\" "
		   "accept\n", t, t);
	fprintf(f, "add rule " T " in-%s goto drop-rx-%s\n", t, t);

	/* VM -> host: nothing unless the policy names host ports, and then only on the gateway. */
	put_spoof(f, "host", vm, guest);
	/*
	 * The forwarder on the gateway is the VM's only DNS, at a bounded rate: before the
	 * established rule, since a flood from one socket is one established flow.
	 */
	if (vm->domains)
		fprintf(f, "add rule " T " host-%s ip daddr %s meta l4proto { tcp, udp } th dport 53 "
			   "limit rate over %u/second burst %u packets counter name \"%s-dns-drop\" "
			   "goto drop-tx-%s\n", t, host, NF_DNS_RATE, 2 * NF_DNS_RATE, t, t);
	fprintf(f, "add rule " T " host-%s ct state established,related counter name \"%s-tx-ok\" "
		   "accept\n", t, t);
	put_bounds(f, "host", vm);
	if (vm->domains)
		fprintf(f, "add rule " T " host-%s ip daddr %s ct state new meta l4proto { tcp, udp } "
			   "th dport 53 counter name \"%s-tx-ok\" accept\n", t, host, t);
	snprintf(match, sizeof(match), "ip daddr %s ", host);
	put_allow(f, "host", t, match, vm->host_allow, vm->n_host_allow);
	fprintf(f, "add rule " T " host-%s goto drop-tx-%s\n", t, t);

	put_arp(f, vm, guest, host);

	/* Last: the dispatch entries make the VM's chains live in the same commit. */
	put_elements(f, "add", t, guest, true);
	return finish(f, &buf, out, err);
}

int nf_rules_vm_del(const struct nf_vm *vm, char **out, struct avm_error *err)
{
	char guest[INET_ADDRSTRLEN];
	char *buf = NULL;
	size_t len;
	FILE *f;
	int r;

	*out = NULL;
	r = check_vm(vm, false, err);
	if (r < 0)
		return r;
	inet_ntop(AF_INET, &vm->guest, guest, sizeof(guest));
	f = open_memstream(&buf, &len);
	if (!f)
		return nf_set_error(err, -ENOMEM, "out of memory building nft rules");
	put_base(f);
	put_objects(f, "add", vm->tap);
	put_elements(f, "add", vm->tap, guest, true);
	put_domain_set(f, "add", vm->tap, NF_DEFAULT_DOMAIN_TTL);
	put_elements(f, "delete", vm->tap, guest, false);
	put_chain_verb(f, "flush", vm->tap);
	fprintf(f, "flush chain " A " arpin-%s\nflush chain " A " arpout-%s\n", vm->tap, vm->tap);
	put_objects(f, "delete", vm->tap);
	put_domain_set(f, "delete", vm->tap, 0);
	return finish(f, &buf, out, err);
}
