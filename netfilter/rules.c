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

static const struct nf_port default_allow[] = {
	{ IPPROTO_UDP, 53 }, { IPPROTO_TCP, 53 },  { IPPROTO_TCP, 80 },
	{ IPPROTO_TCP, 443 }, { IPPROTO_TCP, 22 }, { IPPROTO_TCP, 9418 },
};

size_t nf_default_allow(const struct nf_port **out)
{
	*out = default_allow;
	return sizeof(default_allow) / sizeof(default_allow[0]);
}

int nf_port_parse(const char *s, struct nf_port *out, struct nf_error *err)
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

static int check_ports(const struct nf_port *v, size_t n, struct nf_error *err)
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

static int check_vm(const struct nf_vm *vm, bool full, struct nf_error *err)
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
	return check_ports(vm->host_allow, vm->n_host_allow, err);
}

/* open_memstream keeps the builder trivial; finish() turns a write failure into -ENOMEM. */
static int finish(FILE *f, char **buf, char **out, struct nf_error *err)
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
}

int nf_rules_base(char **out, struct nf_error *err)
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
static const char *const vm_counter_suffix[] = { "-tx-ok", "-tx-drop", "-rx-ok", "-rx-drop" };
#define N_CHAINS   (sizeof(vm_chain_prefix) / sizeof(vm_chain_prefix[0]))
#define N_COUNTERS (sizeof(vm_counter_suffix) / sizeof(vm_counter_suffix[0]))

static void put_chain_verb(FILE *f, const char *verb, const char *tap)
{
	for (size_t i = 0; i < N_CHAINS; i++)
		fprintf(f, "%s chain " T " %s%s\n", verb, vm_chain_prefix[i], tap);
}

static void put_objects(FILE *f, const char *verb, const char *tap)
{
	for (size_t i = 0; i < N_COUNTERS; i++)
		fprintf(f, "%s counter " T " %s%s\n", verb, tap, vm_counter_suffix[i]);
	put_chain_verb(f, verb, tap);
}

static void put_elements(FILE *f, const char *verb, const char *tap, const char *guest, bool data)
{
	if (data) {
		fprintf(f, "%s element " T " fwd_from_vm { \"%s\" : jump out-%s }\n", verb, tap, tap);
		fprintf(f, "%s element " T " fwd_to_vm { \"%s\" : jump in-%s }\n", verb, tap, tap);
		fprintf(f, "%s element " T " host_from_vm { \"%s\" : jump host-%s }\n", verb, tap,
			tap);
	} else {
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

int nf_rules_vm_add(const struct nf_vm *vm, char **out, struct nf_error *err)
{
	char guest[INET_ADDRSTRLEN], host[INET_ADDRSTRLEN], match[64];
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
	f = open_memstream(&buf, &len);
	if (!f)
		return nf_set_error(err, -ENOMEM, "out of memory building nft rules");

	put_base(f);
	/* add (create if missing) then flush: re-adding a VM replaces it instead of doubling it. */
	put_objects(f, "add", t);
	put_chain_verb(f, "flush", t);

	fprintf(f, "add rule " T " drop-tx-%s limit rate 10/second burst 20 packets "
		   "log prefix \"avm-drop %s out: \"\n", t, vm->name);
	fprintf(f, "add rule " T " drop-tx-%s counter name \"%s-tx-drop\" drop\n", t, t);
	fprintf(f, "add rule " T " drop-rx-%s limit rate 10/second burst 20 packets "
		   "log prefix \"avm-drop %s in: \"\n", t, vm->name);
	fprintf(f, "add rule " T " drop-rx-%s counter name \"%s-rx-drop\" drop\n", t, t);

	/* VM -> world (forwarded). */
	put_spoof(f, "out", vm, guest);
	fprintf(f, "add rule " T " out-%s oifname \"avm-*\" goto drop-tx-%s\n", t, t);
	fprintf(f, "add rule " T " out-%s ct state established,related counter name \"%s-tx-ok\" "
		   "accept\n", t, t);
	put_allow(f, "out", t, "", vm->allow, vm->n_allow);
	fprintf(f, "add rule " T " out-%s goto drop-tx-%s\n", t, t);

	/* World -> VM: only what belongs to connections the VM opened. */
	fprintf(f, "add rule " T " in-%s ct state established,related counter name \"%s-rx-ok\" "
		   "accept\n", t, t);
	fprintf(f, "add rule " T " in-%s goto drop-rx-%s\n", t, t);

	/* VM -> host: nothing unless the policy names host ports, and then only on the gateway. */
	put_spoof(f, "host", vm, guest);
	fprintf(f, "add rule " T " host-%s ct state established,related counter name \"%s-tx-ok\" "
		   "accept\n", t, t);
	snprintf(match, sizeof(match), "ip daddr %s ", host);
	put_allow(f, "host", t, match, vm->host_allow, vm->n_host_allow);
	fprintf(f, "add rule " T " host-%s goto drop-tx-%s\n", t, t);

	/* Last: the dispatch entries make the VM's chains live in the same commit. */
	put_elements(f, "add", t, guest, true);
	return finish(f, &buf, out, err);
}

int nf_rules_vm_del(const struct nf_vm *vm, char **out, struct nf_error *err)
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
	put_elements(f, "delete", vm->tap, guest, false);
	put_chain_verb(f, "flush", vm->tap);
	put_objects(f, "delete", vm->tap);
	return finish(f, &buf, out, err);
}
