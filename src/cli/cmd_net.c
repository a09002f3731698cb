/* SPDX-License-Identifier: MIT */
/* agentvm net ls | gc: the host side of every VM's network, and cleaning up after crashes. */
#include <arpa/inet.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "net/net.h"
#include "net/net_admin.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"
#include "state/vmstate.h"

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
		struct json_object *o = net_vm_json(names[i], &net, nft), *v;
		if (json) {
			json_object_array_add(arr, o);
			continue;
		}
		char tx[32], rx[32];
		snprintf(tx, sizeof(tx), "%llu/%llu", (unsigned long long)net_vm_json_counter(o, "tx_ok_packets"),
			 (unsigned long long)net_vm_json_counter(o, "tx_drop_packets"));
		snprintf(rx, sizeof(rx), "%llu/%llu", (unsigned long long)net_vm_json_counter(o, "rx_ok_packets"),
			 (unsigned long long)net_vm_json_counter(o, "rx_drop_packets"));
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
