/* SPDX-License-Identifier: MIT */
/*
 * One VM's resource use right now, for `agentvm stats` and the per-VM metrics: QEMU's CPU time
 * and memory (host /proc of its host pid, recorded in state.json and checked against its start
 * time), the VM's nft counters, its disk overlays, uptime, exec count, and the guest's own
 * memory (asked of the agent with a STATS request, only when wanted: it costs a round trip).
 */
#ifndef AGENTVM_STATS_H
#define AGENTVM_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "netfilter/nf.h"
#include "base/error.h"

struct vm_sample {
	char name[64];
	char state[16];
	bool live;           /* QEMU runs: the /proc numbers below are set */
	uint64_t cpu_ns;     /* QEMU's user + system time, all threads */
	uint64_t sample_ns;  /* CLOCK_MONOTONIC when cpu_ns was read */
	uint64_t rss_bytes, pss_bytes;
	bool have_net;       /* nat-filtered with rules: net is set */
	struct nf_counters net;
	uint64_t disk_bytes; /* space the VM's disk overlays take on the host */
	double uptime_s;     /* since READY; 0 when it never got there or is stopped */
	int64_t ready_ms;    /* CLOCK_REALTIME ms at READY */
	uint64_t execs;
	bool have_guest;     /* the agent answered STATS */
	uint64_t guest_mem_total, guest_mem_available;
};

/*
 * Sample the VM named `name` (state dir dir). nft: a libnftables context or NULL (no network
 * numbers). guest: also ask the agent (up to timeout_ms). 0, or -errno when the VM has no
 * readable state.
 */
int stats_sample(const char *name, const char *dir, struct nf_nft *nft, bool guest,
		 int timeout_ms, struct vm_sample *out);

/*
 * The VMs `agentvm stats` watches, sampled again and again: one VM by name, or every VM of the
 * state root that is live at each sample. stats_set_open: 0, or -errno with err filled (no such
 * VM, the root unreadable). stats_set_sample fills out (room for stats_set_capacity() samples)
 * and *n; guest: also ask each agent (up to timeout_ms).
 */
struct stats_set {
	char **names;
	bool only_live;
	size_t cap;
	struct nf_nft *nft; /* NULL without CAP_NET_ADMIN: no network numbers */
};
int stats_set_open(struct stats_set *set, const char *name, struct avm_error *err);
size_t stats_set_capacity(const struct stats_set *set);
void stats_set_sample(struct stats_set *set, bool guest, int timeout_ms, struct vm_sample *out,
		      size_t *n);
void stats_set_close(struct stats_set *set);
/* QEMU's CPU use between two samples of one VM, in % of one core (0 when not comparable). */
double stats_cpu_percent(const struct vm_sample *a, const struct vm_sample *b);

/* The guest's memory through agent.sock of state dir dir. 0 or -errno. */
int stats_guest_mem(const char *dir, int timeout_ms, uint64_t *total, uint64_t *available);

/* Rss and Pss (bytes) out of a /proc/PID/smaps_rollup text. 0 or -EBADMSG. */
int stats_parse_smaps_rollup(const char *text, uint64_t *rss, uint64_t *pss);
/* utime + stime (clock ticks) out of a /proc/PID/stat line. 0 or -EBADMSG. */
int stats_parse_proc_stat(const char *text, uint64_t *ticks);

#endif
