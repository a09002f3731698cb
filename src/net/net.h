/* SPDX-License-Identifier: MIT */
/*
 * A VM's network, from its spec to a tap fd QEMU can use, and back to nothing: the glue between
 * the spec, the netfilter/ library (leases, taps, nftables) and the state dir (net.json).
 *
 * nat-filtered: a /30 lease from the pool, a tap with the lease's host address, forwarding on
 * the tap and the uplink only, and the VM's rules in `table inet agentvm`, all before QEMU starts.
 * bridge: a tap attached to an existing bridge, nothing else. isolated: nothing at all.
 *
 * Teardown is idempotent and safe to run from any process that finds the VM's state dir (the
 * `run` process, the supervisor, `rm`, `net gc`): it deletes the VM's rules, its tap and its lease,
 * and touches a lease only while it is still owned by this VM's name.
 */
#ifndef AGENTVM_NET_H
#define AGENTVM_NET_H

#include <net/if.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stdint.h>

#include "netfilter/nf.h"
#include "base/error.h"
#include "spec/spec.h"

/* One step of a set-up or teardown and its cost (bench/net_cost.c, AGENTVM_TRACE=1 run). */
struct net_step {
	const char *what;
	uint32_t us;
	uint32_t faults; /* page faults taken (minor + major): the load-independent part */
};
#define NET_TRACE_MAX 24

/* Where leases live: <state root>/.net/leases; the pool: $AGENTVM_NET_POOL or NF_POOL_DEFAULT. */
#define NET_POOL_ENV "AGENTVM_NET_POOL"

struct vm_net {
	enum vm_net_mode mode;
	char vm[NF_OWNER_MAX + 1]; /* owner of the lease, log prefix of the rules */
	char tap[IFNAMSIZ];
	char bridge[IFNAMSIZ];
	uint8_t mac[6];
	bool has_lease;
	struct nf_lease lease;
	char dns[64];              /* "" = none */
	char pool[64];             /* the pool CIDR the lease came from; "" = the default */
	struct nf_port allow[VM_SPEC_MAX_ALLOW + 8];
	size_t n_allow;
	struct nf_port host_allow[VM_SPEC_MAX_ALLOW]; /* VM -> host (gateway) ports */
	size_t n_host_allow;
	/* Egress by destination (see netfilter/nf.h). */
	struct nf_cidr open[VM_SPEC_MAX_ALLOW]; /* --allow-cidr */
	size_t n_open;
	char domains[VM_SPEC_MAX_ALLOW][254];   /* --allow-domain; any = domain mode */
	size_t n_domains;
	unsigned domain_ttl, conn_limit, conn_rate; /* effective values (defaults applied) */
	uint64_t rate_bytes, burst_bytes;       /* --bandwidth; 0 = unlimited */
	char bandwidth[32];                     /* as given, for net ls */
	char upstream[64];                      /* domain mode: where the forwarder resolves */
	bool deny_all;                          /* --deny-all-egress: not even the resolver */
	pid_t dns_pid;                          /* the VM's dnsmasq, 0 = none */
	int dns_pidfd;                          /* -1 unless this process started it */
	unsigned dns_restarts;                  /* quick restarts in a row (net_forwarder_exited) */
	uint64_t dns_started_ms;                /* when this process last started it */
	char dns_exit[48];                      /* how the last one ended, for the log line */
	int tap_fd;                /* -1 once handed to QEMU and closed */
	struct nf_nft *nft;        /* kept open from setup to teardown (see net.c) */
	bool rules;                /* the VM's nft rules were installed */
	bool torn_down;
	/* Steps of this process's last net_setup() and teardown, in order (costs ~nothing). */
	struct net_step trace[NET_TRACE_MAX];
	size_t n_trace;
	uint64_t t_step;      /* when the previous step ended (us, monotonic) */
	bool filter_pending;  /* net_setup() done, net_setup_filter() still to run */
	uint64_t faults_step; /* this process's page faults then */
};

/* A vm_net for `mode` with nothing allocated (tap_fd -1). */
void net_init(struct vm_net *n, const char *vm_name);

/*
 * Build the VM's network from its spec. On failure everything built so far is removed and err
 * says what and how to fix it (no root, no nf_tables, no such bridge, pool exhausted...).
 */
int net_setup(struct vm_net *n, const struct vm_spec *spec, struct avm_error *err);

/*
 * The rest of a nat-filtered set-up: the VM's nftables rules and its DNS forwarder. Called
 * after QEMU was spawned paused (-S), so the ~8 ms a fresh process takes for its first nft
 * transaction runs beside QEMU's own start-up; before the guest runs (cont or incoming), always.
 * 0 at once for other modes. On failure err says why; net_teardown() removes the rest.
 */
int net_setup_filter(struct vm_net *n, struct avm_error *err);

/* The dnsmasq binary the domain allowlist needs ($AGENTVM_DNSMASQ, else /usr/sbin...), or NULL. */
const char *net_dnsmasq_path(void);

/*
 * Wait until the VM's DNS forwarder (started by net_setup, beside QEMU's own start) answers;
 * 0 at once when there is none. Call before the guest runs.
 */
int net_ready(struct vm_net *n, struct avm_error *err);

/*
 * Supervision of the forwarder by the process that started it (the supervisor of a detached or
 * pooled VM). net_forwarder_fd(): its pidfd, readable once it has exited, or -1.
 * net_forwarder_exited(): reap it and say when to start it again: 0 now, > 0 in that many ms
 * (it keeps dying: 250 ms doubling up to 8 s), < 0 never (NET_DNS_MAX_RESTARTS quick restarts
 * in a row; a forwarder that ran NET_DNS_STABLE_MS counts as healthy again).
 * net_forwarder_restart(): start it again with the same configuration and append one line to
 * its log (dnsmasq.log in the state dir). The caller saves net.json (the pid changed).
 */
#define NET_DNS_MAX_RESTARTS 5
#define NET_DNS_STABLE_MS    30000
int net_forwarder_fd(const struct vm_net *n);
int net_forwarder_exited(struct vm_net *n);
int net_forwarder_restart(struct vm_net *n, struct avm_error *err);

/* Kernel cmdline keys for the guest ("" for isolated): agentvm.ip/gw/dns/hostname. */
int net_guest_cmdline(const struct vm_net *n, const char *hostname, char *buf, size_t len);

/* net.json in the VM's state dir: what teardown and `net ls` need. */
int net_save(const struct vm_net *n, const char *dir);
/* -ENOENT when the VM has no net.json (isolated, or older). */
/* avm- + 8 lowercase hex digits: a name agentvm gives its taps (and nothing else). */
bool net_tap_name_is_ours(const char *name);
int net_load(struct vm_net *n, const char *dir, struct avm_error *err);

/*
 * Remove the VM's rules now (the VM is going away; its tap, if still there, is dropped by the
 * base chains). Lets the kernel's deferred clean-up of the transaction overlap QEMU's exit.
 */
void net_release_rules(struct vm_net *n);
/* Remove rules, tap and lease (those still owned by this VM). Idempotent; never fails loudly. */
void net_teardown(struct vm_net *n);
/* net_load + net_teardown + mark net.json torn down. 0 also when there was nothing to do. */
int net_teardown_dir(const char *dir);

/*
 * When no VM in this network namespace has rules left: remove table inet agentvm and switch
 * off the uplink forwarding agentvm switched on. True when it did (net gc).
 */
bool net_host_gc(void);

/* "tcp:80,udp:53" (or "none") into buf: ports of a list (n->allow, n->host_allow). */
void net_ports_string(const struct nf_port *v, size_t n, char *buf, size_t len);
/* The egress allowlist as net_ports_string() puts it. */
void net_allow_string(const struct vm_net *n, char *buf, size_t len);
/* One port as "tcp:80" (buf of at least 10 bytes). */
void net_port_string(const struct nf_port *p, char *buf, size_t len);

/*
 * The lease pool `cidr` ("" or NULL: $AGENTVM_NET_POOL, else the default) of this state root;
 * the caller frees it with nf_pool_free().
 */
int net_pool_open(const char *cidr, struct nf_pool **out, struct avm_error *err);

#endif
