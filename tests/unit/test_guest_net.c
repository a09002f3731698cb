/* SPDX-License-Identifier: MIT */
/* Guest network config: strict IPv4 parsing, the agentvm.* cmdline keys, SYNC's net TLVs. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "guest-init/netcfg.h"
#include "guest-init/proto.h"

static uint32_t ip(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

static int parse4(const char *s)
{
	struct in_addr a;

	return netcfg_parse_ipv4(s, strlen(s), &a);
}

static void test_ipv4_strict(void **state)
{
	static const char *const good[] = { "10.213.0.2", "0.0.0.0", "255.255.255.255", "1.2.3.4" };
	/* Everything inet_aton would "fix" into some other address is refused. */
	static const char *const bad[] = {
		"",	   "1.2.3",	"1.2.3.4.5", "01.2.3.4",  "1.2.3.256", "1.2.3.4 ", " 1.2.3.4",
		"1..3.4",  "1.2.3.-4",	"a.b.c.d",   "1.2.3.4/",  "0x1.2.3.4", "1.2.3.1000", "1.2.3.",
		".1.2.3.4", "1.2.3.00", "10",	     "4294967295", "1.2.3.4\n",
	};
	struct in_addr a;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(netcfg_parse_ipv4(good[i], strlen(good[i]), &a), 0);
		assert_int_equal(a.s_addr, ip(good[i]));
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse4(bad[i]) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
	}
	/* Length-delimited: what follows len is not looked at (TLV values have no NUL). */
	assert_int_equal(netcfg_parse_ipv4("1.2.3.4xyz", 7, &a), 0);
	assert_int_equal(a.s_addr, ip("1.2.3.4"));
	assert_int_equal(netcfg_parse_ipv4("1.2.3.4\0", 8, &a), -EINVAL);
}

static void test_cidr(void **state)
{
	static const char *const bad[] = { "10.0.0.1",	   "10.0.0.1/",	   "10.0.0.1/0",
					   "10.0.0.1/33",  "10.0.0.1/030", "10.0.0.1/3a",
					   "10.0.0.1/24/1", "10.0.0.1/100", "/24",
					   "10.0.0/24",	   "10.0.0.1/-1",  "10.0.0.1/ 24" };
	struct in_addr a;
	uint8_t p = 0;

	assert_int_equal(netcfg_parse_cidr("10.213.0.2/30", 13, &a, &p), 0);
	assert_int_equal(a.s_addr, ip("10.213.0.2"));
	assert_int_equal(p, 30);
	assert_int_equal(netcfg_parse_cidr("10.0.0.1/1", 10, &a, &p), 0);
	assert_int_equal(p, 1);
	assert_int_equal(netcfg_parse_cidr("10.0.0.1/32", 11, &a, &p), 0);
	assert_int_equal(p, 32);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (netcfg_parse_cidr(bad[i], strlen(bad[i]), &a, &p) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
	}
}

static void test_cmdline_contract(void **state)
{
	/* What the host passes (see /tmp/net-contract.md), among the kernel's own words. */
	const char *line = "console=hvc0 quiet agentvm.debug=1 agentvm.ip=10.213.0.2/30 "
			   "agentvm.gw=10.213.0.1\tagentvm.dns=192.168.1.1 agentvm.hostname=vm-1_a.b "
			   "agentvm.future=whatever agentvm.ipx=1 tsc_early_khz=2000000\n";
	struct net_cfg c;
	const char *why = NULL;

	assert_int_equal(netcfg_parse_cmdline(line, &c, &why), 0);
	assert_null(why);
	assert_true(c.has_addr && c.has_gw && c.has_dns && !c.has_mac);
	assert_int_equal(c.addr.s_addr, ip("10.213.0.2"));
	assert_int_equal(c.prefix, 30);
	assert_int_equal(c.gw.s_addr, ip("10.213.0.1"));
	assert_int_equal(c.dns.s_addr, ip("192.168.1.1"));
	assert_string_equal(c.hostname, "vm-1_a.b");
	assert_true(netcfg_has_net(&c));
}

static void test_cmdline_nothing(void **state)
{
	struct net_cfg c;
	const char *why = NULL;

	/* Isolated VMs: hostname only. No keys at all: nothing to do, and that is not an error. */
	assert_int_equal(netcfg_parse_cmdline("console=hvc0 agentvm.hostname=iso", &c, &why), 0);
	assert_false(netcfg_has_net(&c));
	assert_string_equal(c.hostname, "iso");
	assert_int_equal(netcfg_parse_cmdline("", &c, &why), 0);
	assert_int_equal(netcfg_parse_cmdline("  \n", &c, &why), 0);
	assert_false(netcfg_has_net(&c));
	assert_string_equal(c.hostname, "");
	/* An address without a gateway (bridge-like) and a resolver alone are both fine. */
	assert_int_equal(netcfg_parse_cmdline("agentvm.ip=192.168.7.9/24", &c, &why), 0);
	assert_true(c.has_addr && !c.has_gw);
	assert_int_equal(netcfg_parse_cmdline("agentvm.dns=127.0.0.53", &c, &why), 0);
	assert_true(c.has_dns && !c.has_addr);
}

/* The network group is dropped as a whole; why names the problem; the hostname survives. */
static void expect_net_rejected(const char *net_words, const char *why_part)
{
	char line[512];
	struct net_cfg c;
	const char *why = NULL;

	snprintf(line, sizeof(line), "agentvm.hostname=h %s console=hvc0", net_words);
	if (netcfg_parse_cmdline(line, &c, &why) != -EINVAL)
		fail_msg("accepted \"%s\"", net_words);
	assert_non_null(why);
	if (!strstr(why, why_part))
		fail_msg("\"%s\": why \"%s\" lacks \"%s\"", net_words, why, why_part);
	assert_false(netcfg_has_net(&c));
	assert_string_equal(c.hostname, "h");
}

static void test_cmdline_rejects(void **state)
{
	expect_net_rejected("agentvm.ip=10.213.0.2/33 agentvm.gw=10.213.0.1", "agentvm.ip");
	expect_net_rejected("agentvm.ip=10.213.0.2 agentvm.gw=10.213.0.1", "agentvm.ip");
	expect_net_rejected("agentvm.ip=10.213.0.2/30 agentvm.gw=10.213.0.01", "agentvm.gw");
	expect_net_rejected("agentvm.ip=10.213.0.2/30 agentvm.dns=8.8.8", "agentvm.dns");
	expect_net_rejected("agentvm.ip= agentvm.gw=10.213.0.1", "agentvm.ip");
	expect_net_rejected("agentvm.ip", "agentvm.ip");
	expect_net_rejected("agentvm.ip=10.0.0.2/24 agentvm.ip=10.0.0.3/24", "twice");
	expect_net_rejected("agentvm.gw=10.0.0.1", "needs an address");
	/* a gateway that is not on-link, the address itself, or its subnet's network/broadcast */
	expect_net_rejected("agentvm.ip=10.213.0.2/30 agentvm.gw=10.213.0.5", "gateway");
	expect_net_rejected("agentvm.ip=10.213.0.2/30 agentvm.gw=10.213.0.2", "gateway");
	expect_net_rejected("agentvm.ip=10.213.0.2/30 agentvm.gw=10.213.0.3", "gateway");
	expect_net_rejected("agentvm.ip=10.213.0.2/32 agentvm.gw=10.213.0.1", "gateway");
	expect_net_rejected("agentvm.ip=10.213.0.0/30", "address");
	expect_net_rejected("agentvm.ip=10.213.0.3/30", "address");
	expect_net_rejected("agentvm.ip=127.0.0.2/8", "address");
	expect_net_rejected("agentvm.ip=0.1.2.3/8", "address");
	expect_net_rejected("agentvm.ip=224.0.0.1/4", "address");
	expect_net_rejected("agentvm.ip=10.0.0.2/24 agentvm.dns=0.0.0.0", "resolver");
	expect_net_rejected("agentvm.ip=10.0.0.2/24 agentvm.dns=239.1.1.1", "resolver");
}

static void test_cmdline_edges(void **state)
{
	struct net_cfg c;
	const char *why = NULL;

	/* /31 (RFC 3021) has no network or broadcast address; /32 stands alone. */
	assert_int_equal(
		netcfg_parse_cmdline("agentvm.ip=10.0.0.0/31 agentvm.gw=10.0.0.1", &c, &why), 0);
	assert_int_equal(c.prefix, 31);
	assert_int_equal(netcfg_parse_cmdline("agentvm.ip=10.0.0.7/32", &c, &why), 0);
	/* slirp's defaults, as used by the manual QEMU test */
	assert_int_equal(netcfg_parse_cmdline("agentvm.ip=10.0.2.15/24 agentvm.gw=10.0.2.2", &c,
					      &why),
			 0);

	/* A bad hostname costs only the hostname. */
	why = NULL;
	assert_int_equal(netcfg_parse_cmdline("agentvm.ip=10.0.0.2/24 agentvm.hostname=a/b", &c,
					      &why),
			 -EINVAL);
	assert_non_null(strstr(why, "agentvm.hostname"));
	assert_true(c.has_addr);
	assert_string_equal(c.hostname, "");

	char line[200];
	memset(line, 0, sizeof(line));
	strcpy(line, "agentvm.hostname=");
	memset(line + strlen(line), 'x', 65);
	assert_int_equal(netcfg_parse_cmdline(line, &c, &why), -EINVAL);
	line[strlen(line) - 1] = '\0'; /* 64 is the limit, inclusive */
	assert_int_equal(netcfg_parse_cmdline(line, &c, &why), 0);
	assert_int_equal(strlen(c.hostname), 64);
	assert_int_equal(netcfg_parse_cmdline("agentvm.hostname=", &c, &why), -EINVAL);
	assert_int_equal(netcfg_parse_cmdline("agentvm.hostname=a agentvm.hostname=b", &c, &why),
			 -EINVAL);
	assert_string_equal(c.hostname, "");

	/* The first problem is the one reported. */
	assert_int_equal(netcfg_parse_cmdline("agentvm.hostname=a:b agentvm.ip=1", &c, &why),
			 -EINVAL);
	assert_non_null(strstr(why, "agentvm.hostname"));
}

/* SYNC payload builder: tag/value pairs, plus the records sync_apply() handles itself. */
static void put(struct avm_buf *b, uint16_t tag, const char *s)
{
	assert_int_equal(avm_tlv_put_str(b, tag, s), 0);
}

static const uint8_t mac1[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };

static void test_sync_full(void **state)
{
	struct avm_buf b = { 0 };
	struct net_cfg c;
	const char *why = NULL;

	assert_int_equal(avm_tlv_put_u64(&b, AVM_TAG_TIME_NS, 1), 0);
	put(&b, AVM_TAG_HOSTNAME, "clone-7");
	put(&b, AVM_TAG_NET_ADDR, "10.213.0.6/30");
	put(&b, AVM_TAG_NET_GW, "10.213.0.5");
	put(&b, AVM_TAG_NET_DNS, "1.1.1.1");
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, mac1, 6), 0);
	assert_int_equal(avm_tlv_put(&b, 999, "future", 6), 0);
	assert_int_equal(netcfg_parse_sync(b.data, b.len, &c, &why), 0);
	assert_true(c.has_addr && c.has_gw && c.has_dns && c.has_mac);
	assert_int_equal(c.addr.s_addr, ip("10.213.0.6"));
	assert_int_equal(c.prefix, 30);
	assert_int_equal(c.gw.s_addr, ip("10.213.0.5"));
	assert_int_equal(c.dns.s_addr, ip("1.1.1.1"));
	assert_memory_equal(c.mac, mac1, 6);
	assert_string_equal(c.hostname, ""); /* SYNC's hostname is sync_apply()'s */
	avm_buf_release(&b);

	/* No net records: nothing to do (an old host, or a clock-only SYNC). */
	assert_int_equal(avm_tlv_put_u64(&b, AVM_TAG_TIME_NS, 1), 0);
	assert_int_equal(netcfg_parse_sync(b.data, b.len, &c, &why), 0);
	assert_false(netcfg_has_net(&c));
	assert_int_equal(netcfg_parse_sync(NULL, 0, &c, &why), 0);
	avm_buf_release(&b);

	/* A MAC alone (bridge mode) or a resolver alone are fine. */
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, mac1, 6), 0);
	assert_int_equal(netcfg_parse_sync(b.data, b.len, &c, &why), 0);
	assert_true(c.has_mac && !c.has_addr);
	avm_buf_release(&b);
}

/* One bad payload: refused, why contains why_part, and nothing is left in cfg. */
static void expect_sync_rejected(struct avm_buf *b, int err, const char *why_part)
{
	struct net_cfg c;
	const char *why = NULL;

	assert_int_equal(netcfg_parse_sync(b->data, b->len, &c, &why), err);
	assert_non_null(why);
	if (!strstr(why, why_part))
		fail_msg("why \"%s\" lacks \"%s\"", why, why_part);
	assert_false(netcfg_has_net(&c));
	avm_buf_release(b);
}

static void test_sync_rejects(void **state)
{
	static const uint8_t mcast[6] = { 0x01, 0, 0x5e, 0, 0, 1 }, zero[6] = { 0 };
	struct avm_buf b = { 0 };

	put(&b, AVM_TAG_NET_ADDR, "10.213.0.6");
	expect_sync_rejected(&b, -EINVAL, "address");
	put(&b, AVM_TAG_NET_ADDR, "10.213.0.6/30");
	put(&b, AVM_TAG_NET_GW, "10.213.0.9");
	expect_sync_rejected(&b, -EINVAL, "gateway");
	put(&b, AVM_TAG_NET_GW, "10.213.0.5");
	expect_sync_rejected(&b, -EINVAL, "needs an address");
	put(&b, AVM_TAG_NET_ADDR, "10.213.0.6/30");
	put(&b, AVM_TAG_NET_ADDR, "10.213.0.10/30");
	expect_sync_rejected(&b, -EINVAL, "twice");
	put(&b, AVM_TAG_NET_DNS, "1.1.1");
	expect_sync_rejected(&b, -EINVAL, "resolver");
	/* A C string's NUL sent along is not part of the address. */
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_GW, "10.0.0.1", 9), 0);
	expect_sync_rejected(&b, -EINVAL, "gateway");
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, mac1, 5), 0);
	expect_sync_rejected(&b, -EINVAL, "6 bytes");
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, mcast, 6), 0);
	expect_sync_rejected(&b, -EINVAL, "MAC");
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, zero, 6), 0);
	expect_sync_rejected(&b, -EINVAL, "MAC");
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, mac1, 6), 0);
	assert_int_equal(avm_tlv_put(&b, AVM_TAG_NET_MAC, mac1, 6), 0);
	expect_sync_rejected(&b, -EINVAL, "twice");

	/* A record running past the end: the payload as a whole is refused. */
	put(&b, AVM_TAG_NET_ADDR, "10.213.0.6/30");
	b.len -= 3;
	expect_sync_rejected(&b, -EBADMSG, "truncated");
	/* A valid net record before a bad one does not survive either. */
	put(&b, AVM_TAG_NET_DNS, "9.9.9.9");
	put(&b, AVM_TAG_NET_ADDR, "10.213.0.6/0");
	expect_sync_rejected(&b, -EINVAL, "address");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_strict),	  cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_cmdline_contract), cmocka_unit_test(test_cmdline_nothing),
		cmocka_unit_test(test_cmdline_rejects),  cmocka_unit_test(test_cmdline_edges),
		cmocka_unit_test(test_sync_full),	  cmocka_unit_test(test_sync_rejects),
	};
	return cmocka_run_group_tests_name("guest_net", tests, NULL, NULL);
}
