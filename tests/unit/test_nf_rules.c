// SPDX-License-Identifier: MIT
/*
 * test_nf_rules.c - the generated nft transactions: every element of the policy (DESIGN.md §5),
 * the port lists, deny-all, idempotent removal, input validation, port parsing, and (when the
 * process may create a network namespace) that nft itself accepts the text, inside a private
 * namespace. Nothing touches the machine's own network.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "netfilter/nf.h"

static struct nf_vm make_vm(void)
{
	struct nf_vm vm = { .name = "vm1", .tap = "avm-ab12", .check_mac = true,
			    .mac = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 } };
	const struct nf_port *d;

	inet_pton(AF_INET, "10.213.0.6", &vm.guest);
	inet_pton(AF_INET, "10.213.0.5", &vm.host);
	vm.n_allow = nf_default_allow(&d);
	vm.allow = d;
	return vm;
}

static char *gen_add(const struct nf_vm *vm)
{
	struct avm_error e = { 0 };
	char *t = NULL;

	assert_int_equal(nf_rules_vm_add(vm, &t, &e), 0);
	assert_non_null(t);
	return t;
}

#define HAS(t, s)                                                             \
	do {                                                                  \
		if (!strstr((t), (s)))                                        \
			fail_msg("missing: %s\n--- in ---\n%s", (s), (t));    \
	} while (0)
#define HASNT(t, s)                                                           \
	do {                                                                  \
		if (strstr((t), (s)))                                         \
			fail_msg("unexpected: %s\n--- in ---\n%s", (s), (t)); \
	} while (0)

static int count(const char *t, const char *s)
{
	int n = 0;

	for (const char *p = t; (p = strstr(p, s)); p += strlen(s))
		n++;
	return n;
}

static void test_default_allow(void **state)
{
	const struct nf_port *d;
	size_t n = nf_default_allow(&d);

	/* tcp 80, 443, 22, 9418; DNS is pinned to the resolver, not an open port. */
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(d[i].proto, IPPROTO_TCP);
		assert_int_not_equal(d[i].port, 53);
	}
}

static void test_base_only_touches_avm(void **state)
{
	struct avm_error e = { 0 };
	char *t = NULL;

	assert_int_equal(nf_rules_base(&t, &e), 0);
	HAS(t, "add table inet agentvm\n");
	HAS(t, "add chain inet agentvm forward { type filter hook forward priority 0; policy accept; }");
	HAS(t, "add chain inet agentvm input { type filter hook input priority 0; policy accept; }");
	HAS(t, "type nat hook postrouting priority 100; policy accept;");
	/* Idempotent: base chains are flushed and refilled in the same transaction. */
	HAS(t, "flush chain inet agentvm forward\n");
	HAS(t, "flush chain inet agentvm input\n");
	HAS(t, "flush chain inet agentvm postrouting\n");
	HAS(t, "forward iifname vmap @fwd_from_vm\n");
	HAS(t, "forward oifname vmap @fwd_to_vm\n");
	HAS(t, "input iifname vmap @host_from_vm\n");
	HAS(t, "forward iifname \"avm-*\" drop\n"); /* fail closed for unknown taps */
	HAS(t, "input iifname \"avm-*\" drop\n");
	HAS(t, "output oifname \"avm-*\" drop\n");
	HAS(t, "postrouting oifname != \"avm-*\" ip saddr @nat_src masquerade\n");
	/* Every base rule matches an avm-* interface or one of our own sets: nothing else changes. */
	for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
		if (strncmp(line, "add rule ", 9) != 0)
			continue;
		if (!strstr(line, "avm-*") && !strstr(line, "vmap @"))
			fail_msg("base rule not restricted to avm-*: %s", line);
		HASNT(line, "policy drop");
	}
	free(t);
}

/* With an NFLOG group the drops go to it (the supervisor's connection log), same prefix. */
static void test_vm_drop_log_group(void **state)
{
	struct nf_vm vm = make_vm();
	char *t;

	vm.log_group = NF_LOG_GROUP(5);
	assert_int_equal(vm.log_group, 0x8005);
	t = gen_add(&vm);
	HAS(t, "drop-tx-avm-ab12 limit rate 10/second burst 20 packets log group 32773 prefix "
	       "\"avm-drop vm1 out: \"\n");
	HAS(t, "drop-rx-avm-ab12 limit rate 10/second burst 20 packets log group 32773 prefix "
	       "\"avm-drop vm1 in: \"\n");
	HAS(t, "drop-tx-avm-ab12 counter name \"avm-ab12-tx-drop\" drop\n");
	free(t);
	/* Lease indexes beyond the group range wrap within it, never to 0 (the kernel log). */
	assert_int_equal(NF_LOG_GROUP(0x8000), 0x8000);
}

static void test_vm_add_elements(void **state)
{
	struct nf_vm vm = make_vm();
	char *t = gen_add(&vm);

	/* One transaction that also ensures the base. */
	HAS(t, "add table inet agentvm\n");
	/* Counters, chains, and replace semantics (add + flush). */
	HAS(t, "add counter inet agentvm avm-ab12-tx-ok\n");
	HAS(t, "add counter inet agentvm avm-ab12-tx-drop\n");
	HAS(t, "add counter inet agentvm avm-ab12-rx-ok\n");
	HAS(t, "add counter inet agentvm avm-ab12-rx-drop\n");
	HAS(t, "flush chain inet agentvm out-avm-ab12\n");
	HAS(t, "flush chain inet agentvm in-avm-ab12\n");
	HAS(t, "flush chain inet agentvm host-avm-ab12\n");
	/* Anti-spoofing in both chains the VM's packets reach. */
	HAS(t, "out-avm-ab12 ip saddr != 10.213.0.6 goto drop-tx-avm-ab12\n");
	HAS(t, "host-avm-ab12 ip saddr != 10.213.0.6 goto drop-tx-avm-ab12\n");
	HAS(t, "out-avm-ab12 ether saddr != 52:54:00:12:34:56 goto drop-tx-avm-ab12\n");
	HAS(t, "out-avm-ab12 meta nfproto != ipv4 goto drop-tx-avm-ab12\n");
	/* No VM-to-VM, checked before the established rule. */
	HAS(t, "out-avm-ab12 oifname \"avm-*\" goto drop-tx-avm-ab12\n");
	assert_true(strstr(t, "out-avm-ab12 oifname \"avm-*\"") <
		    strstr(t, "out-avm-ab12 ct state established,related"));
	HAS(t, "out-avm-ab12 ct state established,related counter name \"avm-ab12-tx-ok\" accept\n");
	/* The allowlist, new connections only. */
	HAS(t, "out-avm-ab12 ct state new tcp dport { 80, 443, 22, 9418 } counter name "
	       "\"avm-ab12-tx-ok\" accept\n");
	HASNT(t, "out-avm-ab12 ct state new udp dport {");
	HAS(t, "add rule inet agentvm out-avm-ab12 goto drop-tx-avm-ab12\n");
	/* Nothing NEW in: only established/related, then drop. */
	HAS(t, "in-avm-ab12 ct state established,related counter name \"avm-ab12-rx-ok\" accept\n");
	HAS(t, "add rule inet agentvm in-avm-ab12 goto drop-rx-avm-ab12\n");
	assert_int_equal(count(t, "add rule inet agentvm in-avm-ab12 "), 2);
	/* VM -> host: nothing new without host ports. */
	HASNT(t, "host-avm-ab12 ip daddr");
	HAS(t, "add rule inet agentvm host-avm-ab12 goto drop-tx-avm-ab12\n");
	/* Logged, rate-limited, counted drops with the VM's name. */
	HAS(t, "drop-tx-avm-ab12 limit rate 10/second burst 20 packets log prefix \"avm-drop vm1 out: \"\n");
	HAS(t, "drop-rx-avm-ab12 limit rate 10/second burst 20 packets log prefix \"avm-drop vm1 in: \"\n");
	HAS(t, "drop-tx-avm-ab12 counter name \"avm-ab12-tx-drop\" drop\n");
	HAS(t, "drop-rx-avm-ab12 counter name \"avm-ab12-rx-drop\" drop\n");
	/* Dispatch + NAT membership, last. */
	HAS(t, "add element inet agentvm fwd_from_vm { \"avm-ab12\" : jump out-avm-ab12 }\n");
	HAS(t, "add element inet agentvm fwd_to_vm { \"avm-ab12\" : jump in-avm-ab12 }\n");
	HAS(t, "add element inet agentvm host_from_vm { \"avm-ab12\" : jump host-avm-ab12 }\n");
	HAS(t, "add element inet agentvm nat_src { 10.213.0.6 }\n");
	assert_true(strstr(t, "add element") > strstr(t, "add rule inet agentvm in-avm-ab12"));
	free(t);
}

static void test_vm_add_deny_all_and_custom(void **state)
{
	struct nf_vm vm = make_vm();
	struct nf_port custom[] = { { IPPROTO_TCP, 8080 }, { IPPROTO_UDP, 9999 } };
	struct nf_port host[] = { { IPPROTO_TCP, 2222 } };
	char *t;

	vm.allow = NULL;
	vm.n_allow = 0;
	vm.check_mac = false;
	t = gen_add(&vm);
	HASNT(t, "ct state new tcp dport");
	HASNT(t, "ct state new udp dport");
	HASNT(t, "ether saddr");
	HAS(t, "out-avm-ab12 ct state established,related"); /* replies to nothing: harmless */
	HAS(t, "add rule inet agentvm out-avm-ab12 goto drop-tx-avm-ab12\n");
	free(t);

	vm.allow = custom;
	vm.n_allow = 2;
	vm.host_allow = host;
	vm.n_host_allow = 1;
	t = gen_add(&vm);
	HAS(t, "out-avm-ab12 ct state new tcp dport { 8080 } counter");
	HAS(t, "out-avm-ab12 ct state new udp dport { 9999 } counter");
	HASNT(t, "443");
	HAS(t, "host-avm-ab12 ip daddr 10.213.0.5 ct state new tcp dport { 2222 } counter name "
	       "\"avm-ab12-tx-ok\" accept\n");
	free(t);
}

static void test_closed_destinations(void **state)
{
	struct nf_vm vm = make_vm();
	const char *const *closed;
	size_t n = nf_closed_ranges(&closed);
	char *t = gen_add(&vm), *rule;
	const char *must[] = { "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
			       "169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",
			       "0.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24" };

	for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++) {
		bool found = false;
		for (size_t k = 0; k < n; k++)
			found |= strcmp(closed[k], must[i]) == 0;
		if (!found)
			fail_msg("%s is not closed", must[i]);
	}
	/* One rule, before the port allowlist, counted apart. */
	rule = strstr(t, "out-avm-ab12 ip daddr { 0.0.0.0/8, 10.0.0.0/8");
	assert_non_null(rule);
	assert_true(rule < strstr(t, "out-avm-ab12 ct state new tcp dport {"));
	assert_true(rule > strstr(t, "out-avm-ab12 ct state established,related"));
	HAS(t, "240.0.0.0/4 } counter name \"avm-ab12-closed\" goto drop-tx-avm-ab12\n");
	HAS(t, "add counter inet agentvm avm-ab12-closed\n");
	/* Not in domain mode: no set lookup. */
	HASNT(t, "ip daddr != @dom-avm-ab12");
	free(t);
}

static void test_open_ranges(void **state)
{
	struct nf_vm vm = make_vm();
	struct nf_cidr open[2];
	struct avm_error e = { 0 };
	char *t;

	assert_int_equal(nf_cidr_parse("10.1.0.0/16", &open[0], &e), 0);
	assert_int_equal(nf_cidr_parse("169.254.169.254:tcp:80", &open[1], &e), 0);
	vm.open = open;
	vm.n_open = 2;
	t = gen_add(&vm);
	/* A range without a port is exempt from the closed list; the allowlist still applies. */
	HAS(t, "out-avm-ab12 ip daddr != { 10.1.0.0/16 } ip daddr { 0.0.0.0/8");
	/* A range with a port: that port, before the closed rule. */
	HAS(t, "out-avm-ab12 ip daddr 169.254.169.254/32 ct state new tcp dport 80 counter name "
	       "\"avm-ab12-tx-ok\" accept\n");
	assert_true(strstr(t, "ip daddr 169.254.169.254/32") < strstr(t, "ip daddr != { 10.1"));
	free(t);
	open[0].plen = 8; /* host bits set now */
	vm.n_open = 1;
	assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
}

static void test_cidr_parse(void **state)
{
	struct avm_error e = { 0 };
	struct nf_cidr c;
	char buf[NF_CIDR_STRLEN];
	const char *bad[] = { "",	     "10.0.0.0/33",	"10.0.0.1/8",	  "10.0.0.0/",
			      "10.0.0/8",    "10.0.0.0/8:tcp",	"10.0.0.0/8:tcp:0", "x/8",
			      "10.0.0.0/8x", "10.0.0.0/8:icmp:1", "1.2.3.4:80",	  "/8",
			      "10.0.0.0/-1", "10.0.0.0/8:tcp:80:x" };

	assert_int_equal(nf_cidr_parse("10.0.0.0/8", &c, &e), 0);
	assert_int_equal(c.plen, 8);
	assert_int_equal(c.proto, 0);
	nf_cidr_string(&c, buf, sizeof(buf));
	assert_string_equal(buf, "10.0.0.0/8");
	assert_int_equal(nf_cidr_parse("192.168.1.5", &c, &e), 0);
	assert_int_equal(c.plen, 32);
	assert_int_equal(nf_cidr_parse("192.168.1.0/24:udp:5353", &c, &e), 0);
	assert_int_equal(c.proto, IPPROTO_UDP);
	assert_int_equal(c.port, 5353);
	nf_cidr_string(&c, buf, sizeof(buf));
	assert_string_equal(buf, "192.168.1.0/24:udp:5353");
	assert_int_equal(nf_cidr_parse("0.0.0.0/0", &c, &e), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (nf_cidr_parse(bad[i], &c, &e) != -EINVAL)
			fail_msg("'%s' parsed", bad[i]);
	assert_int_equal(nf_cidr_parse(NULL, &c, &e), -EINVAL);
}

static void test_dns_pinned(void **state)
{
	struct nf_vm vm = make_vm();
	struct nf_port with53[] = { { IPPROTO_UDP, 53 }, { IPPROTO_TCP, 443 } };
	char *t;

	inet_pton(AF_INET, "192.168.1.1", &vm.dns);
	t = gen_add(&vm);
	/* The resolver, even in a closed range, on 53 only; before the closed rule. */
	HAS(t, "out-avm-ab12 ip daddr 192.168.1.1 ct state new udp dport 53 counter name "
	       "\"avm-ab12-tx-ok\" accept\n");
	HAS(t, "out-avm-ab12 ip daddr 192.168.1.1 ct state new tcp dport 53 counter");
	assert_true(strstr(t, "ip daddr 192.168.1.1") < strstr(t, "ip daddr { 0.0.0.0/8"));
	/* Anything else on 53: dropped, counted apart. */
	HAS(t, "out-avm-ab12 udp dport 53 counter name \"avm-ab12-dns-drop\" goto drop-tx-avm-ab12\n");
	HAS(t, "out-avm-ab12 tcp dport 53 counter name \"avm-ab12-dns-drop\" goto drop-tx-avm-ab12\n");
	assert_true(strstr(t, "ip daddr 192.168.1.1") < strstr(t, "udp dport 53 counter name"));
	free(t);
	/* Opt-in: udp:53 named in the allowlist opens udp 53 (public destinations), not tcp. */
	vm.allow = with53;
	vm.n_allow = 2;
	t = gen_add(&vm);
	HASNT(t, "udp dport 53 counter name \"avm-ab12-dns-drop\"");
	HAS(t, "tcp dport 53 counter name \"avm-ab12-dns-drop\"");
	HAS(t, "out-avm-ab12 ct state new udp dport { 53 } counter");
	free(t);
}

static void test_domains(void **state)
{
	struct nf_vm vm = make_vm();
	struct nf_cidr open[1];
	char *t;

	vm.domains = true;
	vm.domain_ttl = 7;
	inet_pton(AF_INET, "8.8.8.8", &vm.dns); /* the upstream: not the guest's business */
	assert_int_equal(nf_cidr_parse("10.9.0.0/16", &open[0], NULL), 0);
	vm.open = open;
	vm.n_open = 1;
	t = gen_add(&vm);
	HAS(t, "add set inet agentvm dom-avm-ab12 { type ipv4_addr; size 4096; flags "
	       "dynamic,timeout; timeout 7s; }\n");
	/* The upstream is not reachable from the guest: only the forwarder is. */
	HASNT(t, "ip daddr 8.8.8.8");
	HAS(t, "out-avm-ab12 ip daddr != { 10.9.0.0/16 } ip daddr != @dom-avm-ab12 counter name "
	       "\"avm-ab12-closed\" goto drop-tx-avm-ab12\n");
	HAS(t, "out-avm-ab12 ct state new ip daddr @dom-avm-ab12 update @dom-avm-ab12 { ip daddr }\n");
	/* Set lookup before the port allowlist: a member on a closed port still fails. */
	assert_true(strstr(t, "ip daddr != @dom-avm-ab12") < strstr(t, "ct state new tcp dport {"));
	HAS(t, "host-avm-ab12 ip daddr 10.213.0.5 meta l4proto { tcp, udp } th dport 53 limit rate "
	       "over 100/second burst 200 packets counter name \"avm-ab12-dns-drop\"");
	HAS(t, "host-avm-ab12 ip daddr 10.213.0.5 ct state new meta l4proto { tcp, udp } th dport 53 "
	       "counter name \"avm-ab12-tx-ok\" accept\n");
	/* The rate applies to established flows too (a flood from one socket is one flow). */
	assert_true(strstr(t, "host-avm-ab12 ip daddr 10.213.0.5 meta l4proto { tcp, udp } th dport 53 "
			      "limit") < strstr(t, "host-avm-ab12 ct state established"));
	free(t);
	vm.domain_ttl = 0;
	assert_int_equal(nf_rules_vm_add(&vm, &t, NULL), -EINVAL);
}

static void test_bounds_and_arp(void **state)
{
	struct nf_vm vm = make_vm();
	char *t;

	vm.conn_limit = 100;
	vm.conn_rate = 20;
	vm.rate_bytes = 1000000;
	vm.burst_bytes = 64000;
	t = gen_add(&vm);
	HAS(t, "add set inet agentvm ct-avm-ab12 { type ipv4_addr; size 1; flags dynamic; }\n");
	/* Both chains that see new connections share one count (world + host). */
	HAS(t, "out-avm-ab12 ct state new add @ct-avm-ab12 { ip saddr ct count over 100 } counter "
	       "name \"avm-ab12-conn-drop\" goto drop-tx-avm-ab12\n");
	HAS(t, "host-avm-ab12 ct state new add @ct-avm-ab12 { ip saddr ct count over 100 }");
	HAS(t, "out-avm-ab12 ct state new limit rate over 20/second burst 40 packets counter name "
	       "\"avm-ab12-conn-drop\"");
	HAS(t, "host-avm-ab12 ct state new limit rate over 20/second");
	/* After the source checks: a spoofed source cannot fill someone else's count. */
	assert_true(strstr(t, "out-avm-ab12 ip saddr != 10.213.0.6") <
		    strstr(t, "out-avm-ab12 ct state new add @ct"));
	/* Bandwidth VM -> world here; world -> VM is a tbf qdisc on the tap (nf_tap_shape). */
	HAS(t, "out-avm-ab12 limit rate over 1000000 bytes/second burst 64000 bytes drop\n");
	HASNT(t, "inet agentvm in-avm-ab12 limit rate");
	/* ARP: table arp agentvm, the guest as itself asking for / answering its gateway only. */
	HAS(t, "add table arp agentvm\n");
	HAS(t, "add rule arp agentvm input iifname vmap @arp_from_vm\n");
	HAS(t, "add rule arp agentvm input iifname \"avm-*\" drop\n");
	HAS(t, "add rule arp agentvm arpin-avm-ab12 arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
	       "arp saddr ether 52:54:00:12:34:56 arp saddr ip 10.213.0.6 arp daddr ip 10.213.0.5 "
	       "arp operation { request, reply } accept\n");
	HAS(t, "add rule arp agentvm arpin-avm-ab12 counter name \"avm-ab12-arp-drop\" drop\n");
	HAS(t, "add rule arp agentvm arpout-avm-ab12 arp saddr ip 10.213.0.5 accept\n");
	HAS(t, "add element arp agentvm arp_from_vm { \"avm-ab12\" : jump arpin-avm-ab12 }\n");
	free(t);
	/* Defaults off in the builder: no bound rules when 0 (the caller picks the defaults). */
	vm = make_vm();
	t = gen_add(&vm);
	HASNT(t, "ct count");
	HASNT(t, "bytes/second");
	free(t);
}

static void test_dns_config(void **state)
{
	const char *doms[] = { "good.test", "*.sub.test", "API.Example.com." };
	struct nf_dns_conf c = { .name = "vm1", .tap = "avm-ab12", .domains = doms, .n_domains = 3,
				 .ttl = 30 };
	struct avm_error e = { 0 };
	char *t = NULL, d[256];

	inet_pton(AF_INET, "10.213.0.5", &c.listen);
	inet_pton(AF_INET, "8.8.8.8", &c.upstream);
	assert_int_equal(nf_dns_config(&c, &t, &e), 0);
	/* Only on the VM's gateway, in the foreground (supervised), nothing from the host's files. */
	HAS(t, "\nlisten-address=10.213.0.5\nbind-interfaces\nport=53\n");
	HAS(t, "\nkeep-in-foreground\nno-resolv\nno-hosts\n");
	HAS(t, "\npid-file=\n");
	/* Every answer from upstream (so every lookup refreshes the set), TTL capped at the set's. */
	HAS(t, "\ncache-size=0\n");
	HAS(t, "\nmax-ttl=30\n");
	HAS(t, "\nstop-dns-rebind\n");
	HAS(t, "\ndns-forward-max=64\n");
	/* Allowed names forwarded and their A answers into the VM's set; the rest NXDOMAIN. */
	HAS(t, "\nserver=/good.test/8.8.8.8\nnftset=/good.test/4#inet#agentvm#dom-avm-ab12\n");
	HAS(t, "\nserver=/*.sub.test/8.8.8.8\nnftset=/sub.test/4#inet#agentvm#dom-avm-ab12\n");
	HAS(t, "\nserver=/api.example.com/8.8.8.8\n");
	HAS(t, "\naddress=/#/\n");
	assert_true(strstr(t, "address=/#/") > strstr(t, "server=/api.example.com/"));
	HASNT(t, "resolv-file");
	free(t);

	/* Bad input: nothing generated. */
	c.tap = "eth0";
	assert_int_equal(nf_dns_config(&c, &t, &e), -EINVAL);
	c.tap = "avm-ab12";
	c.n_domains = 0;
	assert_int_equal(nf_dns_config(&c, &t, &e), -EINVAL);
	c.n_domains = 3;
	c.upstream.s_addr = 0;
	assert_int_equal(nf_dns_config(&c, &t, &e), -EINVAL);
	inet_pton(AF_INET, "8.8.8.8", &c.upstream);
	c.ttl = 0;
	assert_int_equal(nf_dns_config(&c, &t, &e), -EINVAL);
	c.ttl = 5;
	doms[0] = "evil/\nserver=/#/1.2.3.4";
	assert_int_equal(nf_dns_config(&c, &t, &e), -EINVAL);
	assert_null(t);

	/* Names: what dnsmasq and DNS accept, lower-cased; an injection cannot pass. */
	assert_int_equal(nf_domain_check("Example.COM", d, sizeof(d), &e), 0);
	assert_string_equal(d, "example.com");
	assert_int_equal(nf_domain_check("*.example.com", d, sizeof(d), &e), 0);
	assert_string_equal(d, "*.example.com");
	const char *bad[] = { "", "com", "*.com", "a..com", ".a.com", "a.com..", "a b.com", "a/b.com",
			      "a#b.com", "*a.com", "a.*.com", "x.com\n", "\xc3\xa9.com" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (nf_domain_check(bad[i], d, sizeof(d), &e) != -EINVAL)
			fail_msg("'%s' accepted", bad[i]);
	char long_label[80];
	memset(long_label, 'a', 64);
	strcpy(long_label + 64, ".com");
	assert_int_equal(nf_domain_check(long_label, d, sizeof(d), &e), -EINVAL);
}

static void test_rate_parse(void **state)
{
	uint64_t r, b;

	assert_int_equal(nf_rate_parse("20mbit", &r, &b, NULL), 0);
	assert_int_equal(r, 2500000);
	assert_int_equal(b, 625000); /* a quarter second */
	assert_int_equal(nf_rate_parse("100kbit", &r, &b, NULL), 0);
	assert_int_equal(r, 12500);
	assert_int_equal(b, 32768); /* at least 32k */
	assert_int_equal(nf_rate_parse("1gbit:1m", &r, &b, NULL), 0);
	assert_int_equal(r, 125000000);
	assert_int_equal(b, 1048576);
	const char *bad[] = { "", "fast", "10", "1kbit", "10mbps", "0mbit", "-1mbit", "10mbit:",
			      "10mbit:x", "10mbit:5g", "99999999999999999999gbit" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (nf_rate_parse(bad[i], &r, &b, NULL) != -EINVAL)
			fail_msg("'%s' accepted", bad[i]);
}

static void test_vm_del(void **state)
{
	struct nf_vm vm = { .tap = "avm-ab12" };
	struct avm_error e = { 0 };
	char *t = NULL;

	inet_pton(AF_INET, "10.213.0.6", &vm.guest);
	assert_int_equal(nf_rules_vm_del(&vm, &t, &e), 0);
	/* Everything of the VM goes, and every delete is preceded by an add (idempotence). */
	const char *objs[] = { "counter inet agentvm avm-ab12-tx-ok", "counter inet agentvm avm-ab12-tx-drop",
			       "counter inet agentvm avm-ab12-rx-ok", "counter inet agentvm avm-ab12-rx-drop",
			       "chain inet agentvm out-avm-ab12", "chain inet agentvm in-avm-ab12",
			       "chain inet agentvm host-avm-ab12", "chain inet agentvm drop-tx-avm-ab12",
			       "chain inet agentvm drop-rx-avm-ab12" };
	for (size_t i = 0; i < sizeof(objs) / sizeof(objs[0]); i++) {
		char add[128], del[128];

		snprintf(add, sizeof(add), "add %s\n", objs[i]);
		snprintf(del, sizeof(del), "delete %s\n", objs[i]);
		HAS(t, add);
		HAS(t, del);
		assert_true(strstr(t, add) < strstr(t, del));
	}
	HAS(t, "delete element inet agentvm fwd_from_vm { \"avm-ab12\" }\n");
	HAS(t, "delete element inet agentvm fwd_to_vm { \"avm-ab12\" }\n");
	HAS(t, "delete element inet agentvm host_from_vm { \"avm-ab12\" }\n");
	HAS(t, "delete element inet agentvm nat_src { 10.213.0.6 }\n");
	HAS(t, "delete element arp agentvm arp_from_vm { \"avm-ab12\" }\n");
	HAS(t, "delete chain arp agentvm arpin-avm-ab12\n");
	HAS(t, "delete counter arp agentvm avm-ab12-arp-drop\n");
	HAS(t, "delete set inet agentvm ct-avm-ab12\n");
	HAS(t, "delete set inet agentvm dom-avm-ab12\n");
	HAS(t, "delete counter inet agentvm avm-ab12-closed\n");
	/* Chains are emptied before they are deleted (rules reference counters and drop chains). */
	assert_true(strstr(t, "flush chain inet agentvm out-avm-ab12") <
		    strstr(t, "delete chain inet agentvm out-avm-ab12"));
	HASNT(t, "delete table");
	free(t);
}

static void test_validation(void **state)
{
	struct avm_error e = { 0 };
	struct nf_vm vm;
	char *t = (char *)1;
	const char *bad_taps[] = { "eth0", "avm-", "avm-123456789012", "avm-a b", "avm-a\"b",
				   "avm-x;drop" };
	struct nf_port bad_port[] = { { IPPROTO_TCP, 0 } }, bad_proto[] = { { IPPROTO_ICMP, 1 } };

	for (size_t i = 0; i < sizeof(bad_taps) / sizeof(bad_taps[0]); i++) {
		vm = make_vm();
		vm.tap = bad_taps[i];
		assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
		assert_null(t);
		assert_int_equal(nf_rules_vm_del(&vm, &t, &e), -EINVAL);
	}
	vm = make_vm();
	vm.tap = "avm-12345678901"; /* 15 bytes: the longest that fits IFNAMSIZ */
	t = gen_add(&vm);
	free(t);
	vm = make_vm();
	vm.name = "vm\" accept";
	assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
	vm = make_vm();
	vm.guest.s_addr = 0;
	assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
	vm = make_vm();
	vm.host = vm.guest;
	assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
	vm = make_vm();
	vm.allow = bad_port;
	vm.n_allow = 1;
	assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
	vm.allow = bad_proto;
	assert_int_equal(nf_rules_vm_add(&vm, &t, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "tcp and udp"));
}

static void test_port_parse(void **state)
{
	struct avm_error e = { 0 };
	struct nf_port p;
	const char *bad[] = { "", "tcp", "tcp:", "tcp:0", "tcp:65536", "tcp:-1", "tcp:+5", "tcp:80x",
			      "sctp:80", "TCP:80", "tcp: 80", "udp:99999999999999999999" };

	assert_int_equal(nf_port_parse("tcp:5432", &p, &e), 0);
	assert_int_equal(p.proto, IPPROTO_TCP);
	assert_int_equal(p.port, 5432);
	assert_int_equal(nf_port_parse("udp:65535", &p, &e), 0);
	assert_int_equal(p.proto, IPPROTO_UDP);
	assert_int_equal(p.port, 65535);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(nf_port_parse(bad[i], &p, &e), -EINVAL);
		assert_non_null(strstr(e.msg, "port"));
	}
	assert_int_equal(nf_port_parse(NULL, &p, &e), -EINVAL);
}

/*
 * nft accepts what we generate (syntax and kernel semantics), applied in a fresh network
 * namespace of a child process. Skipped without the privilege to create one.
 */
static void test_applies_in_private_netns(void **state)
{
	pid_t pid;
	int st;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct nf_vm vm = make_vm(), vm2 = make_vm();
		struct nf_cidr open[2];
		struct nf_counters c;
		struct avm_error e = { 0 };
		struct nf_nft *nft;
		char **v;
		int n;

		if (unshare(CLONE_NEWNET) < 0)
			_exit(77);
		/* From here on only this process's private namespace can be changed. */
		bool inherited[64];

		for (int fd = 0; fd < 64; fd++)
			inherited[fd] = fcntl(fd, F_GETFD) >= 0;
		if (nf_nft_new(&nft, &e) < 0)
			_exit(10);
		/* Every fd the context added is close-on-exec (libnftables' own socket is not). */
		for (int fd = 0; fd < 64; fd++) {
			int fl = fcntl(fd, F_GETFD);

			if (!inherited[fd] && fl >= 0 && !(fl & FD_CLOEXEC))
				_exit(9);
		}
		/* Every feature at once, then re-added with another domain TTL (the set is remade). */
		nf_cidr_parse("10.1.0.0/16", &open[0], NULL);
		nf_cidr_parse("169.254.169.254:tcp:80", &open[1], NULL);
		vm.open = open;
		vm.n_open = 2;
		vm.domains = true;
		vm.domain_ttl = 5;
		vm.conn_limit = 10;
		vm.conn_rate = 5;
		vm.rate_bytes = 100000;
		vm.burst_bytes = 10000;
		inet_pton(AF_INET, "9.9.9.9", &vm.dns);
		if (nf_nft_vm_add(nft, &vm, &e) < 0)
			_exit((fprintf(stderr, "%s\n", e.msg), 11));
		if (nf_nft_run(nft, "add element inet agentvm dom-avm-ab12 { 1.2.3.4 }", &e) < 0 ||
		    nf_nft_vm_counters(nft, "avm-ab12", &c, &e) < 0 || c.domain_set_size != 1)
			_exit((fprintf(stderr, "%s\n", e.msg), 24));
		vm.domain_ttl = 9;
		if (nf_nft_vm_add(nft, &vm, &e) < 0)
			_exit((fprintf(stderr, "%s\n", e.msg), 11));
		vm.domains = false;
		if (nf_nft_vm_add(nft, &vm, &e) < 0)
			_exit((fprintf(stderr, "%s\n", e.msg), 11));
		vm2.tap = "avm-cd34";
		vm2.name = "vm2";
		inet_pton(AF_INET, "10.213.0.10", &vm2.guest);
		inet_pton(AF_INET, "10.213.0.9", &vm2.host);
		if (nf_nft_vm_add(nft, &vm2, &e) < 0)
			_exit(12);
		if (nf_nft_vm_counters(nft, "avm-ab12", &c, &e) < 0 || c.tx_ok_packets != 0)
			_exit(13);
		n = nf_nft_vm_list(nft, &v, &e);
		if (n != 2 || strcmp(v[0], "avm-ab12") || strcmp(v[1], "avm-cd34"))
			_exit(14);
		nf_strv_free(v, (size_t)n);
		if (nf_nft_vm_del(nft, &vm, &e) < 0 || nf_nft_vm_del(nft, &vm, &e) < 0)
			_exit((fprintf(stderr, "%s\n", e.msg), 15));
		if (nf_nft_vm_counters(nft, "avm-ab12", &c, &e) != -ENOENT)
			_exit(16);
		if (nf_nft_run(nft, "add rule inet agentvm forward bogus", &e) != -EINVAL ||
		    !strstr(e.msg, "Error") || strchr(e.msg, '\n'))
			_exit(17);
		if (nf_nft_table_delete(nft, &e) < 0 || nf_nft_table_delete(nft, &e) < 0)
			_exit(18);
		if (nf_nft_vm_list(nft, &v, &e) != 0)
			_exit(19);
		if (nf_nft_vm_counters(nft, "avm-ab12", &c, &e) != -ENOENT)
			_exit(20);
		nf_nft_free(nft);
		/* Without CAP_NET_ADMIN: the one-line reason. */
		if (nf_nft_new(&nft, &e) < 0)
			_exit(21);
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(22);
		if (nf_nft_ensure_base(nft, &e) != -EPERM || !strstr(e.msg, "needs root (CAP_NET_ADMIN)"))
			_exit((fprintf(stderr, "%d %s\n", e.code, e.msg), 23));
		nf_nft_free(nft);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_allow),
		cmocka_unit_test(test_base_only_touches_avm),
		cmocka_unit_test(test_vm_add_elements),
		cmocka_unit_test(test_vm_drop_log_group),
		cmocka_unit_test(test_vm_add_deny_all_and_custom),
		cmocka_unit_test(test_closed_destinations),
		cmocka_unit_test(test_open_ranges),
		cmocka_unit_test(test_cidr_parse),
		cmocka_unit_test(test_dns_pinned),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_bounds_and_arp),
		cmocka_unit_test(test_dns_config),
		cmocka_unit_test(test_rate_parse),
		cmocka_unit_test(test_vm_del),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_port_parse),
		cmocka_unit_test(test_applies_in_private_netns),
	};

	return cmocka_run_group_tests_name("nf_rules", tests, NULL, NULL);
}
