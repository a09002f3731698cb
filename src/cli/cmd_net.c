/* SPDX-License-Identifier: MIT */
/* agentvm net ls | gc: the host side of every VM's network, and cleaning up after crashes. */
#include <arpa/inet.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "net.h"
#include "net_gc.h"
#include "statedir.h"
#include "strv.h"
#include "util.h"
#include "vmstate.h"

static void put_counter(struct json_object *c, const char *k, uint64_t v)
{
	json_object_object_add(c, k, json_object_new_int64((int64_t)v));
}

static struct json_object *net_json(const char *name, const struct vm_net *n, struct nf_nft *nft)
{
	struct json_object *o = json_object_new_object(), *allow = json_object_new_array(),
			   *host_allow = json_object_new_array();
	char a[INET_ADDRSTRLEN], mac[18];
	struct nf_counters c = { 0 };

	json_object_object_add(o, "vm", json_object_new_string(name));
	json_object_object_add(o, "mode", json_object_new_string(vm_net_mode_name(n->mode)));
	json_object_object_add(o, "tap", json_object_new_string(n->tap));
	if (n->mode == VM_NET_BRIDGE)
		json_object_object_add(o, "bridge", json_object_new_string(n->bridge));
	if (n->has_lease) {
		inet_ntop(AF_INET, &n->lease.guest, a, sizeof(a));
		json_object_object_add(o, "guest", json_object_new_string(a));
		inet_ntop(AF_INET, &n->lease.host, a, sizeof(a));
		json_object_object_add(o, "gateway", json_object_new_string(a));
	}
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2],
		 n->mac[3], n->mac[4], n->mac[5]);
	json_object_object_add(o, "mac", json_object_new_string(mac));
	json_object_object_add(o, "active", json_object_new_boolean(!n->torn_down));
	for (size_t i = 0; n->mode == VM_NET_NAT_FILTERED && i < n->n_allow; i++) {
		char p[16];
		net_port_string(&n->allow[i], p, sizeof(p));
		json_object_array_add(allow, json_object_new_string(p));
	}
	json_object_object_add(o, "allow", allow);
	for (size_t i = 0; n->mode == VM_NET_NAT_FILTERED && i < n->n_host_allow; i++) {
		char p[16];
		net_port_string(&n->host_allow[i], p, sizeof(p));
		json_object_array_add(host_allow, json_object_new_string(p));
	}
	json_object_object_add(o, "host_allow", host_allow);
	if (n->mode == VM_NET_NAT_FILTERED) {
		struct json_object *open = json_object_new_array(), *doms = json_object_new_array();
		for (size_t i = 0; i < n->n_open; i++) {
			char cidr[NF_CIDR_STRLEN];
			nf_cidr_string(&n->open[i], cidr, sizeof(cidr));
			json_object_array_add(open, json_object_new_string(cidr));
		}
		for (size_t i = 0; i < n->n_domains; i++)
			json_object_array_add(doms, json_object_new_string(n->domains[i]));
		/* "public": any public address; "domains": only what the allowed names resolve to. */
		json_object_object_add(o, "destinations",
				       json_object_new_string(n->n_domains ? "domains" : "public"));
		json_object_object_add(o, "allow_cidr", open);
		json_object_object_add(o, "allow_domain", doms);
		if (n->n_domains) {
			json_object_object_add(o, "domain_ttl", json_object_new_int((int)n->domain_ttl));
			json_object_object_add(o, "upstream", json_object_new_string(n->upstream));
		}
		json_object_object_add(o, "dns", json_object_new_string(n->dns));
		json_object_object_add(o, "conn_limit", json_object_new_int((int)n->conn_limit));
		json_object_object_add(o, "conn_rate", json_object_new_int((int)n->conn_rate));
		json_object_object_add(o, "bandwidth", json_object_new_string(n->bandwidth[0] ?
									      n->bandwidth :
									      "unlimited"));
	}
	if (nft && n->rules && !n->torn_down && nf_nft_vm_counters(nft, n->tap, &c, NULL) == 0) {
		struct json_object *cj = json_object_new_object();
		put_counter(cj, "tx_ok_packets", c.tx_ok_packets);
		put_counter(cj, "tx_ok_bytes", c.tx_ok_bytes);
		put_counter(cj, "tx_drop_packets", c.tx_drop_packets);
		put_counter(cj, "tx_drop_bytes", c.tx_drop_bytes);
		put_counter(cj, "rx_ok_packets", c.rx_ok_packets);
		put_counter(cj, "rx_ok_bytes", c.rx_ok_bytes);
		put_counter(cj, "rx_drop_packets", c.rx_drop_packets);
		put_counter(cj, "rx_drop_bytes", c.rx_drop_bytes);
		put_counter(cj, "closed_drop_packets", c.closed_drops);
		put_counter(cj, "dns_drop_packets", c.dns_drops);
		put_counter(cj, "conn_drop_packets", c.conn_drops);
		put_counter(cj, "arp_drop_packets", c.arp_drops);
		json_object_object_add(o, "counters", cj);
		if (n->n_domains)
			json_object_object_add(o, "domain_set_size",
					       json_object_new_int64((int64_t)c.domain_set_size));
	}
	return o;
}

static uint64_t counter(struct json_object *o, const char *k)
{
	struct json_object *c, *v;

	if (json_object_object_get_ex(o, "counters", &c) && json_object_object_get_ex(c, k, &v))
		return (uint64_t)json_object_get_int64(v);
	return 0;
}

static int net_ls(bool json)
{
	struct json_object *arr = json_object_new_array();
	struct nf_nft *nft = NULL;
	char **names = NULL;
	int n = statedir_list(&names);

	nf_nft_new(&nft, NULL);
	if (!json)
		printf("%-20s %-12s %-12s %-15s %-10s %-22s %-15s %-28s %s\n", "VM", "MODE", "TAP",
		       "GUEST", "TX OK/DROP", "RX OK/DROP (packets)", "HOST PORTS", "ALLOW",
		       "DESTINATIONS");
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX], allow[512], host[512];
		struct vm_net net;
		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (net_load(&net, dir, NULL) < 0 || net.torn_down)
			continue;
		struct json_object *o = net_json(names[i], &net, nft), *v;
		if (json) {
			json_object_array_add(arr, o);
			continue;
		}
		char tx[32], rx[32];
		snprintf(tx, sizeof(tx), "%llu/%llu", (unsigned long long)counter(o, "tx_ok_packets"),
			 (unsigned long long)counter(o, "tx_drop_packets"));
		snprintf(rx, sizeof(rx), "%llu/%llu", (unsigned long long)counter(o, "rx_ok_packets"),
			 (unsigned long long)counter(o, "rx_drop_packets"));
		net_allow_string(&net, allow, sizeof(allow));
		net_ports_string(net.host_allow, net.n_host_allow, host, sizeof(host));
		bool filtered = net.mode == VM_NET_NAT_FILTERED;
		char dest[1024];
		size_t off = 0;
		/* "public" or "domains a.com,*.b.org (set 3)", "+ opened ranges", DNS, bounds. */
		if (net.n_domains) {
			off += (size_t)snprintf(dest + off, sizeof(dest) - off, "domains ");
			for (size_t k = 0; k < net.n_domains && off < sizeof(dest); k++)
				off += (size_t)snprintf(dest + off, sizeof(dest) - off, "%s%s",
							k ? "," : "", net.domains[k]);
			if (off < sizeof(dest))
				off += (size_t)snprintf(dest + off, sizeof(dest) - off, " (set %lld)",
							json_object_object_get_ex(o, "domain_set_size", &v)
								? (long long)json_object_get_int64(v)
								: 0LL);
		} else {
			off += (size_t)snprintf(dest, sizeof(dest), "public");
		}
		for (size_t k = 0; k < net.n_open && off < sizeof(dest); k++) {
			char cidr[NF_CIDR_STRLEN];
			nf_cidr_string(&net.open[k], cidr, sizeof(cidr));
			off += (size_t)snprintf(dest + off, sizeof(dest) - off, " +%s", cidr);
		}
		if (off < sizeof(dest))
			snprintf(dest + off, sizeof(dest) - off, "; dns %s; conns %u, %u/s; bw %s",
				 net.dns[0] ? net.dns : "none", net.conn_limit, net.conn_rate,
				 net.bandwidth[0] ? net.bandwidth : "unlimited");
		printf("%-20s %-12s %-12s %-15s %-10s %-22s %-15s %-28s %s\n", names[i],
		       vm_net_mode_name(net.mode), net.tap,
		       json_object_object_get_ex(o, "guest", &v) ? json_object_get_string(v) : "-", tx,
		       rx, filtered ? host : "-", filtered ? allow : "(unfiltered)",
		       filtered ? dest : "-");
		json_object_put(o);
	}
	if (json)
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_SPACED |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
	nf_nft_free(nft);
	strv_free(names);
	return 0;
}

static int net_gc_verb(void)
{
	struct avm_error err = { 0 };
	struct strv report = { 0 };
	int r = net_gc(&report, &err);

	for (size_t i = 0; i < report.n; i++)
		puts(report.v[i]);
	strv_release(&report);
	if (r < 0)
		return cli_fail(&err);
	if (!r)
		puts("nothing to remove");
	return 0;
}

int cmd_net(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "ls") &&
	    (argc == 2 || (argc == 3 && !strcmp(argv[2], "--json"))))
		return net_ls(argc == 3);
	if (argc == 2 && !strcmp(argv[1], "gc"))
		return net_gc_verb();
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))) {
		puts("usage: agentvm net ls [--json]   taps, addresses, policies and counters\n"
		     "       agentvm net gc            remove taps, rules and leases of VMs that are gone");
		return 0;
	}
	cli_error("usage: agentvm net ls [--json] | agentvm net gc");
	return EXIT_USAGE;
}
