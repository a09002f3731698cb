/* SPDX-License-Identifier: MIT */
/* Cleaning up the host side of VM networks after crashes (agentvm net gc). */
#ifndef AGENTVM_NET_GC_H
#define AGENTVM_NET_GC_H

#include "error.h"
#include "strv.h"

/*
 * Remove what no live VM claims: the networks of VMs that are gone, nft rules of orphaned taps,
 * the table and uplink forwarding once unused, and leases whose owner is gone. Each removal is
 * described by one line added to report (for people). Returns how many things were removed, or
 * -errno (the firewall rules could not be read: kind HOST for -EPERM).
 */
int net_gc(struct strv *report, struct avm_error *err);

#endif
