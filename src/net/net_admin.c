/* SPDX-License-Identifier: MIT */
/* net ls and gc (net_admin.h): what each VM's network is, and cleaning up after crashes. */
#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "net/net.h"
#include "net/net_admin.h"
#include "state/statedir.h"
#include "state/vmstate.h"

static void put_counter(struct json_object *c, const char *k, uint64_t v)
{
	json_object_object_add(c, k, json_object_new_int64((int64_t)v));
}

struct json_object *net_vm_json(const char *name, const struct vm_net *n, struct nf_nft *nft)
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

uint64_t net_vm_json_counter(struct json_object *o, const char *k)
{
	struct json_object *c, *v;

	if (json_object_object_get_ex(o, "counters", &c) && json_object_object_get_ex(c, k, &v))
		return (uint64_t)json_object_get_int64(v);
	return 0;
}

static bool owner_alive(const char *owner, void *userdata)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), owner);
	return access(dir, F_OK) == 0 && vmstate_dir_may_be_live(dir);
}

/* Is `tap` the tap of a VM that may still use it? */
static bool tap_claimed(const char *tap, char **names, int n)
{
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX];
		struct vm_net net;
		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (net_load(&net, dir, NULL) == 0 && !strcmp(net.tap, tap))
			return vmstate_dir_may_be_live(dir);
	}
	return false;
}

struct json_object *net_vm_list_json(void)
{
	struct json_object *arr = json_object_new_array();
	struct nf_nft *nft = NULL;
	char **names = NULL;
	int n = statedir_list(&names);

	nf_nft_new(&nft, NULL);
	for (int i = 0; arr && i < n; i++) {
		char dir[PATH_MAX];
		struct vm_net net;
		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (net_load(&net, dir, NULL) == 0 && !net.torn_down)
			json_object_array_add(arr, net_vm_json(names[i], &net, nft));
	}
	nf_nft_free(nft);
	strv_free(names);
	return arr;
}

int net_gc(struct strv *report, struct avm_error *err)
{
	struct nf_pool *pool = NULL;
	struct nf_nft *nft = NULL;
	struct avm_error nerr = { 0 };
	char **names = NULL, **taps = NULL;
	int n = statedir_list(&names), ntaps, removed = 0, r;

	/* 1: VMs that are gone but whose network was never torn down (killed supervisors). */
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX];
		struct vm_net net;
		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (net_load(&net, dir, NULL) < 0 || net.torn_down || vmstate_dir_may_be_live(dir))
			continue;
		net_teardown_dir(dir);
		strv_addf(report, "removed the network of VM %s (tap %s)", names[i], net.tap);
		removed++;
	}
	/* 2: rules and taps no VM claims (a VM dir removed by hand, a crash mid-setup). */
	r = nf_nft_new(&nft, &nerr);
	ntaps = r < 0 ? r : nf_nft_vm_list(nft, &taps, &nerr);
	if (ntaps < 0) {
		nf_nft_free(nft);
		strv_free(names);
		return avm_error_kind(err, nerr.code == -EPERM ? AVM_ERR_HOST : AVM_ERR_INTERNAL,
				      avm_error_set(err, nerr.code,
						    "cannot read the firewall rules: %s", nerr.msg));
	}
	for (int i = 0; i < ntaps; i++) {
		/*
		 * Taps are not persistent: one whose link exists is held open by a live process,
		 * e.g. a VM between net_setup() and writing its net.json. Not an orphan.
		 */
		if (tap_claimed(taps[i], names, n) || nf_link_exists(taps[i], NULL) > 0)
			continue;
		/* Any never-leased address will do: the element delete is idempotent. */
		struct nf_vm v = { .tap = taps[i], .guest = { htonl(0xffffffffu) } };
		if (nf_nft_vm_del(nft, &v, &nerr) == 0)
			strv_addf(report, "removed the rules of orphaned tap %s", taps[i]);
		removed++;
	}
	/* 3: the table itself, and uplink forwarding, once no VM has rules left. */
	nf_strv_free(taps, (size_t)(ntaps > 0 ? ntaps : 0));
	nf_nft_free(nft);
	net_host_gc();
	/* 4: leases whose owner is gone. */
	if (net_pool_open(NULL, &pool, &nerr) == 0) {
		r = nf_pool_gc(pool, owner_alive, NULL, &nerr);
		if (r > 0) {
			strv_addf(report, "released %d lease%s", r, r == 1 ? "" : "s");
			removed += r;
		}
		nf_pool_free(pool);
	}
	strv_free(names);
	return removed;
}
