/* SPDX-License-Identifier: MIT */
/* The host side of VM networks: what each is (net ls), and cleaning up after crashes (net gc). */
#ifndef AGENTVM_NET_ADMIN_H
#define AGENTVM_NET_ADMIN_H

#include <stdint.h>

#include "base/error.h"
#include "net/net.h"
#include "base/strv.h"

struct json_object;
/* One VM's network as `net ls --json` shows it (with its nft counters when nft is given). */
struct json_object *net_vm_json(const char *name, const struct vm_net *n, struct nf_nft *nft);
/* A counter of net_vm_json()'s "counters" object (0 when absent). */
uint64_t net_vm_json_counter(struct json_object *o, const char *k);
/* The array of every live VM's net_vm_json() (caller puts it). */
struct json_object *net_vm_list_json(void);

/*
 * Remove what no live VM claims: the networks of VMs that are gone, nft rules of orphaned taps,
 * the table and uplink forwarding once unused, and leases whose owner is gone. Each removal is
 * described by one line added to report (for people). Returns how many things were removed, or
 * -errno (the firewall rules could not be read: kind HOST for -EPERM).
 */
int net_gc(struct strv *report, struct avm_error *err);

#endif
