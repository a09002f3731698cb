// SPDX-License-Identifier: MIT
/*
 * nf_tool.c - a thin command-line driver of netfilter/ for tests/integration/test_nf_rules.sh.
 * Not installed, not part of agentvm: the CLI wires the library itself. Prints what tests check.
 *
 *   nf_tool pool-alloc DIR OWNER [CIDR]      -> "K NETWORK HOST GUEST"
 *   nf_tool pool-release DIR K [CIDR]
 *   nf_tool configure IFNAME HOSTIP/PLEN     link up + address + forwarding on IFNAME
 *   nf_tool forwarding IFNAME 0|1
 *   nf_tool vm-add TAP NAME GUEST HOST [MAC|-] [ALLOW|default|none] [HOSTPORTS|none] [KEY=VAL]...
 *                                            ALLOW = tcp:80,udp:53,...; KEY: dns=IP,
 *                                            open=CIDR[:PROTO:PORT] (repeatable), domains=TTL,
 *                                            conns=N, rate=N (new conns/s), bw=BYTES/s:BURST
 *   nf_tool dns-config TAP NAME LISTEN UPSTREAM TTL DOMAIN...   (dnsmasq config on stdout)
 *   nf_tool vm-del TAP GUEST
 *   nf_tool print-add TAP NAME GUEST HOST [MAC|-] [ALLOW] [HOSTPORTS]   (text, nothing applied)
 *   nf_tool counters TAP                     -> "tx_ok P B tx_drop P B rx_ok P B rx_drop P B
 *                                               closed P dns P conn P arp P set N"
 *   nf_tool vm-list
 *   nf_tool table-delete
 *   nf_tool tap-create NAME  /  nf_tool link-delete NAME
 *   nf_tool shape IFNAME RATE_BYTES BURST_BYTES  tbf on IFNAME (world -> VM bandwidth)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nf.h"

static struct nf_port ports[2][64];
static struct nf_cidr opens[16];

static int die(const struct avm_error *e, int r)
{
	fprintf(stderr, "nf_tool: %s (%s)\n", e->msg, strerror(-r));
	return 1;
}

static int parse_list(const char *s, struct nf_port *v, size_t *n, struct avm_error *e)
{
	char buf[1024], *save = NULL, *tok;
	int r;

	*n = 0;
	if (!s || strcmp(s, "default") == 0) {
		const struct nf_port *d;
		size_t k = nf_default_allow(&d);

		memcpy(v, d, k * sizeof(*d));
		*n = k;
		return 0;
	}
	if (strcmp(s, "none") == 0)
		return 0;
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok && *n < 64; tok = strtok_r(NULL, ",", &save)) {
		r = nf_port_parse(tok, &v[*n], e);
		if (r < 0)
			return r;
		(*n)++;
	}
	return 0;
}

static int build_vm(int argc, char **argv, struct nf_vm *vm, struct avm_error *e)
{
	unsigned m[6];
	int r;

	memset(vm, 0, sizeof(*vm));
	if (argc < 6)
		return -EINVAL;
	vm->tap = argv[2];
	vm->name = argv[3];
	if (inet_pton(AF_INET, argv[4], &vm->guest) != 1 || inet_pton(AF_INET, argv[5], &vm->host) != 1)
		return -EINVAL;
	if (argc > 6 && strcmp(argv[6], "-") != 0) {
		if (sscanf(argv[6], "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
			return -EINVAL;
		for (int i = 0; i < 6; i++)
			vm->mac[i] = (uint8_t)m[i];
		vm->check_mac = true;
	}
	r = parse_list(argc > 7 ? argv[7] : NULL, ports[0], &vm->n_allow, e);
	if (r < 0)
		return r;
	vm->allow = ports[0];
	r = parse_list(argc > 8 ? argv[8] : "none", ports[1], &vm->n_host_allow, e);
	vm->host_allow = ports[1];
	vm->open = opens;
	for (int i = 9; r >= 0 && i < argc; i++) {
		const char *eq = strchr(argv[i], '='), *v = eq ? eq + 1 : "";
		unsigned long long a = 0, b = 0;

		if (!strncmp(argv[i], "dns=", 4) && inet_pton(AF_INET, v, &vm->dns) == 1)
			continue;
		if (!strncmp(argv[i], "open=", 5) && vm->n_open < 16) {
			r = nf_cidr_parse(v, &opens[vm->n_open++], e);
			continue;
		}
		if (!strncmp(argv[i], "domains=", 8)) {
			vm->domains = true;
			vm->domain_ttl = (unsigned)atoi(v);
		} else if (!strncmp(argv[i], "conns=", 6)) {
			vm->conn_limit = (unsigned)atoi(v);
		} else if (!strncmp(argv[i], "rate=", 5)) {
			vm->conn_rate = (unsigned)atoi(v);
		} else if (!strncmp(argv[i], "bw=", 3) && sscanf(v, "%llu:%llu", &a, &b) == 2) {
			vm->rate_bytes = a;
			vm->burst_bytes = b;
		} else {
			r = -EINVAL;
			snprintf(e->msg, sizeof(e->msg), "bad option '%s'", argv[i]);
		}
	}
	return r;
}

int main(int argc, char **argv)
{
	struct avm_error e = { 0 };
	struct nf_nft *nft = NULL;
	const char *cmd = argc > 1 ? argv[1] : "";
	int r = 0;

	if (strncmp(cmd, "pool-", 5) == 0) {
		struct nf_pool *pool;
		struct nf_lease l;
		char a[3][INET_ADDRSTRLEN];

		if (argc < 4)
			return 2;
		r = nf_pool_new(argc > 4 ? argv[4] : NULL, argv[2], &pool, &e);
		if (r < 0)
			return die(&e, r);
		if (strcmp(cmd, "pool-alloc") == 0) {
			r = nf_pool_alloc(pool, argv[3], &l, &e);
			if (r >= 0)
				printf("%u %s %s %s\n", l.index,
				       inet_ntop(AF_INET, &l.network, a[0], sizeof(a[0])),
				       inet_ntop(AF_INET, &l.host, a[1], sizeof(a[1])),
				       inet_ntop(AF_INET, &l.guest, a[2], sizeof(a[2])));
		} else {
			r = nf_pool_release(pool, (uint32_t)atoi(argv[3]), &e);
		}
		nf_pool_free(pool);
		return r < 0 ? die(&e, r) : 0;
	}
	if (strcmp(cmd, "configure") == 0 && argc == 4) {
		char ip[32], *slash;
		struct in_addr a;

		snprintf(ip, sizeof(ip), "%s", argv[3]);
		slash = strchr(ip, '/');
		if (!slash)
			return 2;
		*slash = '\0';
		if (inet_pton(AF_INET, ip, &a) != 1)
			return 2;
		r = nf_link_configure(argv[2], a, (unsigned)atoi(slash + 1), &e);
		return r < 0 ? die(&e, r) : 0;
	}
	if (strcmp(cmd, "forwarding") == 0 && argc == 4) {
		r = nf_if_forwarding(argv[2], atoi(argv[3]) != 0, &e);
		return r < 0 ? die(&e, r) : 0;
	}
	if (strcmp(cmd, "tap-create") == 0 && argc == 3) {
		r = nf_tap_create(argv[2], true, &e);
		if (r < 0)
			return die(&e, r);
		close(r);
		return 0;
	}
	if (strcmp(cmd, "shape") == 0 && argc == 5) {
		r = nf_tap_shape(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10), &e);
		return r < 0 ? die(&e, r) : 0;
	}
	if (strcmp(cmd, "link-delete") == 0 && argc == 3) {
		r = nf_link_delete(argv[2], &e);
		return r < 0 ? die(&e, r) : 0;
	}
	if (strcmp(cmd, "dns-config") == 0 && argc >= 8) {
		struct nf_dns_conf c = { .tap = argv[2], .name = argv[3],
					 .ttl = (unsigned)atoi(argv[6]),
					 .domains = (const char *const *)argv + 7,
					 .n_domains = (size_t)(argc - 7) };
		char *text;

		if (inet_pton(AF_INET, argv[4], &c.listen) != 1 ||
		    inet_pton(AF_INET, argv[5], &c.upstream) != 1)
			return 2;
		r = nf_dns_config(&c, &text, &e);
		if (r < 0)
			return die(&e, r);
		fputs(text, stdout);
		free(text);
		return 0;
	}
	if (strcmp(cmd, "print-add") == 0) {
		struct nf_vm vm;
		char *text;

		r = build_vm(argc, argv, &vm, &e);
		if (r < 0)
			return die(&e, r);
		r = nf_rules_vm_add(&vm, &text, &e);
		if (r < 0)
			return die(&e, r);
		fputs(text, stdout);
		free(text);
		return 0;
	}

	r = nf_nft_new(&nft, &e);
	if (r < 0)
		return die(&e, r);
	if (strcmp(cmd, "vm-add") == 0) {
		struct nf_vm vm;

		r = build_vm(argc, argv, &vm, &e);
		if (r >= 0)
			r = nf_nft_vm_add(nft, &vm, &e);
	} else if (strcmp(cmd, "vm-del") == 0 && argc == 4) {
		struct nf_vm vm = { .tap = argv[2] };

		if (inet_pton(AF_INET, argv[3], &vm.guest) != 1)
			r = -EINVAL, snprintf(e.msg, sizeof(e.msg), "bad guest address");
		else
			r = nf_nft_vm_del(nft, &vm, &e);
	} else if (strcmp(cmd, "counters") == 0 && argc == 3) {
		struct nf_counters c;

		r = nf_nft_vm_counters(nft, argv[2], &c, &e);
		if (r >= 0)
			printf("tx_ok %llu %llu tx_drop %llu %llu rx_ok %llu %llu rx_drop %llu %llu "
			       "closed %llu dns %llu conn %llu arp %llu set %llu\n",
			       (unsigned long long)c.tx_ok_packets, (unsigned long long)c.tx_ok_bytes,
			       (unsigned long long)c.tx_drop_packets,
			       (unsigned long long)c.tx_drop_bytes,
			       (unsigned long long)c.rx_ok_packets, (unsigned long long)c.rx_ok_bytes,
			       (unsigned long long)c.rx_drop_packets,
			       (unsigned long long)c.rx_drop_bytes,
			       (unsigned long long)c.closed_drops, (unsigned long long)c.dns_drops,
			       (unsigned long long)c.conn_drops, (unsigned long long)c.arp_drops,
			       (unsigned long long)c.domain_set_size);
	} else if (strcmp(cmd, "vm-list") == 0) {
		char **v;

		r = nf_nft_vm_list(nft, &v, &e);
		for (int i = 0; i < r; i++)
			printf("%s\n", v[i]);
		if (r >= 0)
			nf_strv_free(v, (size_t)r);
	} else if (strcmp(cmd, "table-delete") == 0) {
		r = nf_nft_table_delete(nft, &e);
	} else if (strcmp(cmd, "base") == 0) {
		r = nf_nft_ensure_base(nft, &e);
	} else {
		fprintf(stderr, "nf_tool: bad command line (see the top of netfilter/tools/nf_tool.c)\n");
		r = -EINVAL;
		e.code = r;
		snprintf(e.msg, sizeof(e.msg), "usage");
	}
	nf_nft_free(nft);
	return r < 0 ? die(&e, r) : 0;
}
