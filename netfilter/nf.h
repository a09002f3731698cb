/* SPDX-License-Identifier: MIT */
/*
 * nf.h - host-side networking for agentvm: address leases, nftables rules, tap devices.
 *
 * Four parts, usable on their own:
 *   pool   a /30 per VM out of a pool (default 10.213.0.0/16), leased through one file per lease in
 *          a directory, so many processes can allocate at once without a daemon.
 *   rules  pure text generation of the nft transactions (no syscalls; unit-testable).
 *   nft    applying those transactions with libnftables, reading per-VM counters back.
 *   tap    /dev/net/tun taps, link/address setup through libnl-route, per-interface forwarding.
 *
 * Never prints, never logs, never exits. Fallible functions return >= 0 on success or -errno, and
 * fill the optional last argument `err` (may be NULL) with a one-line reason; libnl NLE_* codes and
 * libnftables error text are converted here. Every fd this module opens is O_CLOEXEC.
 *
 * Ruleset model (one table `inet agentvm`, see DESIGN.md §5 and rules.c for the why):
 *   base chains forward / input / output (filter, priority 0, policy accept) and postrouting
 *   (nat, srcnat) act ONLY on interfaces named avm-*: they dispatch through verdict maps keyed by
 *   interface name into per-VM chains, and drop avm-* traffic that has no per-VM entry (fail
 *   closed). Traffic of other interfaces falls through untouched.
 *   Per VM (tap avm-X): chains out-avm-X (VM -> world), in-avm-X (world -> VM), host-avm-X
 *   (VM -> host), drop-avm-X (log with a rate limit + count + drop); counters avm-X-{tx,rx}-{ok,drop};
 *   its guest address in the set nat_src (masquerade out of non-avm interfaces).
 *   Adding or removing one VM is ONE nft transaction; both are idempotent (add replaces).
 */
#ifndef AGENTVM_NF_H
#define AGENTVM_NF_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Errors are the host's one error type (-errno + one line); by path, so that a tool built
   with -Inetfilter alone (tests/integration/test_nf_rules.sh) finds it too. */
#include "../src/base/error.h"

/* ---- address pool --------------------------------------------------------------------------- */

#define NF_POOL_DEFAULT	 "10.213.0.0/16"
#define NF_OWNER_MAX	 64 /* VM name, [A-Za-z0-9._-], not starting with '.' */

struct nf_lease {
	uint32_t index;		/* k: the k-th /30 of the pool */
	struct in_addr network; /* base + 4k */
	struct in_addr host;	/* network + 1: the tap's address, the guest's gateway */
	struct in_addr guest;	/* network + 2 */
	unsigned prefixlen;	/* always 30 */
	char owner[NF_OWNER_MAX + 1];
};

struct nf_pool;

/*
 * Parse `cidr` ("A.B.C.D/N", N <= 30, no host bits set; NULL = NF_POOL_DEFAULT) and bind the pool
 * to the lease directory `dir` (created 0700 if missing, parents must exist). The caller owns
 * *out and frees it with nf_pool_free(). Bad strings: -EINVAL with the reason.
 */
int nf_pool_new(const char *cidr, const char *dir, struct nf_pool **out, struct avm_error *err);
void nf_pool_free(struct nf_pool *pool);
/* Number of /30s in the pool. */
uint32_t nf_pool_size(const struct nf_pool *pool);
/* Addresses of the k-th /30 (no lease involved); -ERANGE when k is outside the pool. */
int nf_pool_addr(const struct nf_pool *pool, uint32_t k, struct nf_lease *out, struct avm_error *err);

/*
 * Lease a free /30 for `owner` (the VM name). Safe across processes: the lease file is published
 * with link(2), which is atomic and fails if the name exists, and it holds the owner from its
 * first visible instant. Fills *out and returns k. -ENOSPC when every /30 is leased.
 */
int nf_pool_alloc(struct nf_pool *pool, const char *owner, struct nf_lease *out,
		  struct avm_error *err);
/* Release lease k. -ENOENT if it was not leased (callers tearing down may ignore that). */
int nf_pool_release(struct nf_pool *pool, uint32_t k, struct avm_error *err);
/* Find the lease of `owner`; returns k, or -ENOENT. */
int nf_pool_find(struct nf_pool *pool, const char *owner, struct nf_lease *out,
		 struct avm_error *err);
/*
 * List the leases of this pool, sorted by k. *out is a malloc'ed array the caller frees (NULL
 * when there are none). Returns the count.
 */
int nf_pool_list(struct nf_pool *pool, struct nf_lease **out, struct avm_error *err);

typedef bool (*nf_is_alive_fn)(const char *owner, void *userdata);
/*
 * Remove every lease whose owner is_alive() says is gone, and stale temporary files of crashed
 * allocators. Returns the number of leases removed.
 */
int nf_pool_gc(struct nf_pool *pool, nf_is_alive_fn is_alive, void *userdata,
	       struct avm_error *err);

/* ---- policy and rule generation (pure) -------------------------------------------------------- */

struct nf_port {
	uint8_t proto;	/* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t port;	/* 1..65535 */
};

/*
 * The default egress allowlist: tcp 80, 443, 22, 9418. DNS is not in it: port 53 is open to the
 * VM's own resolver only (nf_vm.dns), unless udp:53/tcp:53 are named explicitly. Returns the count.
 */
size_t nf_default_allow(const struct nf_port **out);
/* Parse "tcp:5432" / "udp:53" (as given to --allow). -EINVAL with the reason. */
int nf_port_parse(const char *s, struct nf_port *out, struct avm_error *err);

/* A destination range opened on purpose (--allow-cidr CIDR[:PROTO:PORT]). */
struct nf_cidr {
	struct in_addr net; /* host bits clear */
	uint8_t plen;	    /* 0..32 */
	uint8_t proto;	    /* 0: any of the VM's allowed ports; else IPPROTO_TCP/UDP with port */
	uint16_t port;
};

/* Parse "10.1.0.0/16", "10.1.2.3" (a /32) or "10.1.2.3/32:tcp:5432". -EINVAL with the reason. */
int nf_cidr_parse(const char *s, struct nf_cidr *out, struct avm_error *err);
/* Back to text ("10.1.0.0/16:tcp:5432"); buf of at least NF_CIDR_STRLEN bytes. */
#define NF_CIDR_STRLEN 32
void nf_cidr_string(const struct nf_cidr *c, char *buf, size_t len);

/*
 * Destinations closed to every VM unless an nf_cidr opens them: "this network", RFC 1918,
 * CGNAT, loopback, link-local (cloud metadata), IETF protocol assignments, the TEST-NETs,
 * 6to4 relay, benchmarking, multicast, reserved and broadcast (IANA special-purpose registry).
 * Returns the count of "A.B.C.D/N" strings.
 */
size_t nf_closed_ranges(const char *const **out);

/*
 * Parse --bandwidth RATE[:BURST]: RATE in bits/s with an optional k/m/g + "bit" suffix (tc style,
 * powers of 1000: "20mbit"), BURST in bytes with an optional k/m suffix (powers of 1024; default
 * a quarter second of RATE, at least 32k). Out: bytes/s and bytes. -EINVAL with the reason.
 */
int nf_rate_parse(const char *s, uint64_t *rate_bytes, uint64_t *burst_bytes,
		  struct avm_error *err);

/* Defaults of the per-VM state bounds (conntrack entries, new connections per second). */
#define NF_DEFAULT_CONN_LIMIT 2048
#define NF_DEFAULT_CONN_RATE  200
/* How long an address learnt from an allowed name stays allowed (seconds), and the cap. */
#define NF_DEFAULT_DOMAIN_TTL 300
#define NF_DOMAIN_SET_SIZE    4096
/* DNS queries per second a VM may send to its forwarder (burst twice that). */
#define NF_DNS_RATE 100

#define NF_TAP_PREFIX "avm-"

struct nf_vm {
	const char *name;	/* VM name: log prefix; [A-Za-z0-9._-], at most NF_OWNER_MAX */
	const char *tap;	/* "avm-" + 1..11 of [A-Za-z0-9_] (fits IFNAMSIZ) */
	struct in_addr guest;	/* the only source address accepted from the VM */
	struct in_addr host;	/* the tap's address (gateway) */
	bool check_mac;		/* also drop frames whose Ethernet source is not `mac` */
	uint8_t mac[6];
	const struct nf_port *allow; /* egress allowlist; n_allow == 0 = deny all egress */
	size_t n_allow;
	const struct nf_port *host_allow; /* VM -> host (its gateway address) ports; may be empty */
	size_t n_host_allow;
	/*
	 * The guest's resolver (0 = none). Not with `domains`: it may be reached on port 53 even in
	 * a closed range (a LAN or cloud resolver); port 53 anywhere else is dropped and counted.
	 */
	struct in_addr dns;
	const struct nf_cidr *open; /* ranges opened on purpose */
	size_t n_open;
	/*
	 * Domain allowlist mode: new connections only to addresses in the set dom-<tap> (filled by
	 * the VM's DNS forwarder, entries expire domain_ttl s after they were added or last used)
	 * or in `open`; DNS only to the forwarder on the gateway address (rate limited).
	 */
	bool domains;
	unsigned domain_ttl;
	unsigned conn_limit; /* conntrack entries the VM may hold (world + host); 0 = unbounded */
	unsigned conn_rate;  /* new connections per second (burst twice that); 0 = unbounded */
	uint64_t rate_bytes; /* VM -> world bytes/s (nft limit); 0 = unlimited. The other way: */
	uint64_t burst_bytes; /* nf_tap_shape() on the tap */
	/* NFLOG group of the drop log (NF_LOG_GROUP of the lease; 0: the kernel log). One
	 * listener per group: the VM's supervisor (src/vm/monitor.h). */
	uint16_t log_group;
};
#define NF_LOG_GROUP_BASE 0x8000u
#define NF_LOG_GROUP(lease_index) ((uint16_t)(NF_LOG_GROUP_BASE + ((lease_index) & 0x7fffu)))

/*
 * Text of the transaction that (re)asserts the base table and chains. Idempotent: it flushes and
 * refills the base chains, so running it again never duplicates a rule. *out is malloc'ed.
 */
int nf_rules_base(char **out, struct avm_error *err);
/* Base + everything of one VM, replacing a previous version of that VM. *out is malloc'ed. */
int nf_rules_vm_add(const struct nf_vm *vm, char **out, struct avm_error *err);
/*
 * Removal of everything of one VM (needs vm->tap and vm->guest only). Idempotent: it succeeds
 * whether the VM's rules exist or not. *out is malloc'ed.
 */
int nf_rules_vm_del(const struct nf_vm *vm, char **out, struct avm_error *err);

/* ---- the DNS forwarder of a VM with a domain allowlist (pure text, see dns.c) ------------------ */

#define NF_DNS_FORWARD_MAX 64 /* queries in flight per VM */

struct nf_dns_conf {
	const char *name;	     /* VM name (a comment) */
	const char *tap;	     /* the set filled is dom-<tap> */
	struct in_addr listen;	     /* the VM's gateway address */
	struct in_addr upstream;     /* where allowed names are resolved */
	const char *const *domains;  /* "example.com" (and its subdomains) or "*.example.com" */
	size_t n_domains;
	unsigned ttl;		     /* TTL cap handed to the guest = the set's timeout */
};

/*
 * Check one --allow-domain NAME ("example.com", "*.example.com", a trailing dot is dropped) and
 * write its lower-case form to out (len >= 254). -EINVAL with the reason.
 */
int nf_domain_check(const char *name, char *out, size_t len, struct avm_error *err);
/* The dnsmasq configuration file for `c` (*out malloc'ed). */
int nf_dns_config(const struct nf_dns_conf *c, char **out, struct avm_error *err);

/* ---- applying rules (libnftables) ------------------------------------------------------------- */

#define NF_TABLE "agentvm"

struct nf_nft;

struct nf_counters {
	uint64_t tx_ok_packets, tx_ok_bytes;	 /* VM -> anywhere, accepted (incl. replies to it) */
	uint64_t tx_drop_packets, tx_drop_bytes; /* VM -> anywhere, dropped */
	uint64_t rx_ok_packets, rx_ok_bytes;	 /* anywhere -> VM, accepted */
	uint64_t rx_drop_packets, rx_drop_bytes; /* anywhere -> VM, dropped */
	/* Parts of the drops above, by cause (packets): */
	uint64_t closed_drops; /* to a closed range or, with domains, an address no answer gave */
	uint64_t dns_drops;    /* DNS to another server than the VM's resolver, or over the rate */
	uint64_t conn_drops;   /* over the conntrack count or the new-connection rate */
	uint64_t arp_drops;    /* ARP the guest may not send (table arp agentvm) */
	uint64_t domain_set_size; /* addresses in dom-<tap> now */
};

/* A libnftables context with buffered output and error (nothing is ever printed). */
int nf_nft_new(struct nf_nft **out, struct avm_error *err);
void nf_nft_free(struct nf_nft *nft);
/*
 * The context's netlink socket, or -1 when unknown. For callers that hand its last close to
 * another process: after a commit that close waits for the kernel's transaction clean-up (an
 * RCU grace period, ~18 ms measured).
 */
int nf_nft_fd(const struct nf_nft *nft);
/*
 * Run `cmds` as one transaction. Error text is converted: no CAP_NET_ADMIN -> -EPERM
 * "needs root (CAP_NET_ADMIN)", nf_tables missing -> -EPROTONOSUPPORT, else -EINVAL/-EIO with
 * nft's first error line.
 */
int nf_nft_run(struct nf_nft *nft, const char *cmds, struct avm_error *err);
int nf_nft_ensure_base(struct nf_nft *nft, struct avm_error *err);
int nf_nft_vm_add(struct nf_nft *nft, const struct nf_vm *vm, struct avm_error *err);
int nf_nft_vm_del(struct nf_nft *nft, const struct nf_vm *vm, struct avm_error *err);
/* Counters of tap `tap`; -ENOENT when that VM has no rules. */
int nf_nft_vm_counters(struct nf_nft *nft, const char *tap, struct nf_counters *out,
		       struct avm_error *err);
/*
 * Taps that currently have rules (keys of the dispatch map), for gc. *out is a malloc'ed array of
 * malloc'ed strings; free with nf_strv_free(). Returns the count (0 when the table is absent).
 */
int nf_nft_vm_list(struct nf_nft *nft, char ***out, struct avm_error *err);
void nf_strv_free(char **v, size_t n);
/* Delete the whole table (gc when no VM is left). Succeeds when it does not exist. */
int nf_nft_table_delete(struct nf_nft *nft, struct avm_error *err);

/* ---- tap devices and links (/dev/net/tun, libnl-route) ---------------------------------------- */

/*
 * Create tap `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) and return its fd (O_CLOEXEC: the
 * launcher clears that on the copy it hands to QEMU as -netdev tap,fd=N). -EEXIST if an
 * interface of that name exists. Caller owns the fd.
 * persist = false: the tap lives exactly as long as an fd refers to it, so it vanishes with
 * QEMU however QEMU ends (even kill -9) and its removal costs the caller nothing. persist =
 * true: it stays until nf_link_delete().
 */
int nf_tap_create(const char *name, bool persist, struct avm_error *err);
/*
 * Bring `ifname` up, give it host/prefixlen (the /30's gateway address), harden it
 * (nf_link_harden) and enable IPv4 forwarding on it only (/proc/sys/net/ipv4/conf/IF/forwarding).
 * Idempotent.
 */
int nf_link_configure(const char *ifname, struct in_addr host, unsigned prefixlen,
		      struct avm_error *err);
/*
 * Per-interface sysctls of a tap (nf_link_configure() calls it): ARP answered only for and from
 * the tap's address (arp_ignore 1, arp_announce 2, arp_filter 1), rp_filter 1, no accept_local,
 * no proxy_arp, IPv6 disabled on the interface.
 */
int nf_link_harden(const char *ifname, struct avm_error *err);
/*
 * Limit what the host sends into `ifname` (world -> VM) to rate_bytes/s with a bucket of
 * burst_bytes: a tbf root qdisc (libnl-route). The other direction is an nft limit (nf_vm).
 */
int nf_tap_shape(const char *ifname, uint64_t rate_bytes, uint64_t burst_bytes,
		 struct avm_error *err);
/* Set /proc/sys/net/ipv4/conf/IFNAME/forwarding. */
int nf_if_forwarding(const char *ifname, bool on, struct avm_error *err);
/* Delete the interface; -ENODEV when it does not exist. */
int nf_link_delete(const char *ifname, struct avm_error *err);
/* Attach `ifname` to the existing bridge `bridge` and bring it up (-ENODEV: no such bridge). */
int nf_link_set_master(const char *ifname, const char *bridge, struct avm_error *err);
/*
 * The interface of this namespace's IPv4 default route (out, IFNAMSIZ bytes): where NATed VM
 * traffic leaves and its replies arrive. -ENOENT when there is no default route.
 */
int nf_uplink(char *out, struct avm_error *err);
/* Whether an interface exists: 1 yes, 0 no, < 0 error. */
int nf_link_exists(const char *ifname, struct avm_error *err);

/* Validation shared by all parts (0 or -EINVAL with the reason). */
int nf_check_tap_name(const char *tap, struct avm_error *err);
int nf_check_owner(const char *owner, struct avm_error *err);

#endif /* AGENTVM_NF_H */
