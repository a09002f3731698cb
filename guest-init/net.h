/* SPDX-License-Identifier: MIT */
/*
 * Guest networking through rtnetlink: lo, and "eth0" = the first non-loopback ethernet link
 * (microvm has exactly one virtio-net, or none when the VM is isolated), whatever its name.
 */
#ifndef AGENTVM_INIT_NET_H
#define AGENTVM_INIT_NET_H

#include <stdbool.h>

#include "netcfg.h"

/*
 * Boot: hostname from cfg when given; lo up; eth0 up, then its address, default route and
 * /etc/resolv.conf from cfg when given. Every failure is logged and skipped (PID 1 goes on:
 * a guest without network still runs commands).
 */
void net_setup(const struct net_cfg *cfg);

/* sethostname + /etc/hosts naming it at 127.0.1.1. 0 or -errno (logged). */
int net_set_hostname(const char *name, size_t len);

/*
 * fresh: a boot template's clone before its first command (SYNC). Nothing but PID 1 ran since
 * the template's boot, so /etc/hosts and /etc/resolv.conf may be rewritten in place (nobody can
 * read half a file), the links found at boot are still the links, and eth0 has no IPv4 address
 * (a template's cmdline names none). Each saves a kernel path that under TCG every clone
 * translates afresh before its first command. Otherwise (the default) files are written next to
 * themselves and renamed over, and links and addresses are asked of the kernel.
 */
void net_set_fresh(bool fresh);

/* eth0's ifindex, or -ENODEV when the VM has none (isolated), or another -errno. */
int net_eth_index(void);

/*
 * SYNC: give eth0 a restored clone's new identity. With a MAC or an address: link down (which
 * also empties the neighbour cache: the gateway's MAC changed with the host's tap), new MAC,
 * every IPv4 address replaced by the new one, link up, default route via the new gateway (or
 * via the old one when neither address nor gateway changed). A resolver rewrites
 * /etc/resolv.conf. Returns 0 or -errno (-ENODEV without eth0) with *why set to a message that
 * lives until the next call; the failure is also logged.
 */
int net_reidentify(const struct net_cfg *cfg, const char **why);

#endif
