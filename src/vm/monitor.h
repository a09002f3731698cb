/* SPDX-License-Identifier: MIT */
/*
 * What a detached VM's supervisor watches besides QEMU: its connections and drops, logged to
 * the audit log, and its behaviour, judged by the anomaly rules (src/vm/anomaly.h).
 *
 * - Connections: conntrack NEW and DESTROY events over netlink (libnl-nf) whose original source
 *   is the VM's unique address become conn.open / conn.close events (5-tuple, bytes, packets,
 *   duration). The supervisor turns on the netns's nf_conntrack_acct and _timestamp (cheap;
 *   bytes and durations need them).
 * - Drops: the filter's drop chains log to the VM's own NFLOG group (NF_LOG_GROUP_BASE + its
 *   lease index, rate limited by the rules) with the prefix "avm-drop <vm> ..."; each becomes a
 *   conn.drop event.
 * - Flood: at most anomaly_conf.log_rate connection events a second are written; the rest, and
 *   whatever the kernel could not queue to us (ENOBUFS on a 1 MiB socket buffer), are counted
 *   and reported in a connlog.lost event every 10 s. Memory is fixed; the VM never waits on us.
 * - Every second: QEMU's CPU and resident memory, the tap's received bytes (the VM's egress);
 *   every minute the anomaly window closes, <state dir>/rates.json is written for the fleet
 *   z-score of the other VMs, and alerts become "anomaly" audit events, counted per rule in
 *   <state dir>/anomalies.json = {"rules": {"<rule>": <count>}} (written atomically; the
 *   metrics export it). With "action = pause" an alert also pauses the VM.
 */
#ifndef AGENTVM_MONITOR_H
#define AGENTVM_MONITOR_H

#include <stdbool.h>
#include <stdint.h>

#define MONITOR_FILE_ANOMALIES "anomalies.json"
#define MONITOR_FILE_RATES "rates.json"
#define MONITOR_FDS 3

struct vm;
struct monitor;

/*
 * Start watching vm (running, owned by this process): registers MONITOR_FDS fds in epfd with
 * tags tag_base + 0..MONITOR_FDS-1. A part that cannot start (no netfilter network, netlink
 * refused) is left out and said once in the audit log: never fatal. NULL when the audit log is
 * off ($AGENTVM_AUDIT=off: nothing to report to) or out of memory; the monitor_* calls take NULL.
 */
struct monitor *monitor_new(struct vm *vm, unsigned cpus, unsigned memory_mib, int epfd,
			    uint32_t tag_base);
bool monitor_owns(const struct monitor *m, uint32_t tag);
void monitor_event(struct monitor *m, uint32_t tag);
/* An exec ended (its EXIT frame passed through the supervisor). */
void monitor_note_exec(struct monitor *m, bool failed);
void monitor_free(struct monitor *m);

#endif
