/* SPDX-License-Identifier: MIT */
/*
 * Anomaly detection for one VM, fed by its supervisor (src/vm/monitor.c): rules over one-minute
 * windows (drops, a scan of many ports or hosts, DNS rate, egress bytes, failed execs; CPU
 * pinned for minutes; memory near the limit) and a z-score of each window's connection, drop
 * and egress counts against the VM's own history (an exponentially weighted mean and variance)
 * and against the fleet's current rates. Pure: no I/O, time is passed in, so it is unit-tested
 * and the thresholds come from a small config file (anomaly_conf_*).
 *
 * The config ($AGENTVM_ANOMALY_CONF, default /etc/agentvm/anomaly.conf; absent = defaults):
 * "key = value" lines, '#' comments; 0 turns a rule off. See README.md "Anomaly detection".
 */
#ifndef AGENTVM_ANOMALY_H
#define AGENTVM_ANOMALY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define ANOMALY_CONF_DEFAULT "/etc/agentvm/anomaly.conf"
#define ANOMALY_CONF_MAX (64u << 10)
#define ANOMALY_WINDOW_MS 60000

enum anomaly_action { ANOMALY_ACTION_NONE, ANOMALY_ACTION_PAUSE };

struct anomaly_conf {
	uint64_t drops_per_min;       /* dropped packets logged by the filter */
	uint64_t scan_ports;          /* distinct destination ports tried in a minute */
	uint64_t scan_hosts;          /* distinct destination hosts tried in a minute */
	uint64_t dns_per_min;         /* new DNS flows (port 53) */
	uint64_t egress_bytes_per_min;
	uint64_t failed_execs_per_min;
	uint64_t cpu_pinned_pct;      /* % of the VM's vCPUs, */
	uint64_t cpu_pinned_minutes;  /* for this many whole minutes in a row */
	uint64_t memory_pct;          /* QEMU's resident memory over the guest's RAM size */
	double zscore;                /* own history and fleet; 0 = off */
	uint64_t zscore_min_windows;  /* history needed before the z-score speaks */
	uint64_t fleet_min_vms;       /* other VMs needed for the fleet z-score */
	uint64_t cooldown_s;          /* one alert per rule per VM in this long */
	uint64_t log_rate;            /* connection events written per second; more are counted */
	enum anomaly_action action;
};

void anomaly_conf_defaults(struct anomaly_conf *c);
/* Parse config text over the defaults. -EINVAL with "line N: ..." in err. */
int anomaly_conf_parse(const char *text, size_t len, struct anomaly_conf *c,
		       struct avm_error *err);
/* Defaults, then the file at $AGENTVM_ANOMALY_CONF or ANOMALY_CONF_DEFAULT if it exists. */
int anomaly_conf_load(struct anomaly_conf *c, struct avm_error *err);
const char *anomaly_conf_path(void);

/* The rules, by name (a bounded label set: anomalies.json and the metrics use them). */
enum anomaly_rule {
	AR_DROPS,
	AR_SCAN_PORTS,
	AR_SCAN_HOSTS,
	AR_DNS,
	AR_EGRESS,
	AR_FAILED_EXECS,
	AR_CPU,
	AR_MEMORY,
	AR_Z_CONNS,
	AR_Z_DROPS,
	AR_Z_EGRESS,
	AR_FLEET_CONNS,
	AR_FLEET_DROPS,
	AR_FLEET_EGRESS,
	AR_COUNT
};
const char *anomaly_rule_name(enum anomaly_rule r);

struct anomaly_alert {
	enum anomaly_rule rule;
	double value, threshold;
};

/* The per-window series the z-scores look at. */
enum anomaly_series { AS_CONNS, AS_DROPS, AS_EGRESS, AS_COUNT };

struct anomaly_ewma {
	double mean, var;
	uint64_t n;
};

#define ANOMALY_MAX_HOSTS 256
#define ANOMALY_MAX_ALERTS 16

struct anomaly_vm {
	const struct anomaly_conf *conf;
	uint64_t window_start_ms;
	/* This window. */
	uint64_t count[AS_COUNT];
	uint64_t dns, failed_execs;
	uint8_t ports[65536 / 8]; /* destination ports tried (bitmap) */
	uint32_t n_ports;
	uint32_t hosts[ANOMALY_MAX_HOSTS]; /* distinct destinations, saturating */
	uint32_t n_hosts;
	double cpu_sum;                    /* sum of 1 s CPU samples (fraction of vCPUs) */
	uint32_t cpu_samples;
	bool fired[AR_COUNT];              /* once per window */
	/* History. */
	struct anomaly_ewma hist[AS_COUNT];
	uint64_t last_counts[AS_COUNT];    /* the last complete window (for the fleet) */
	uint32_t cpu_pinned_run;           /* whole windows in a row over cpu_pinned_pct */
	uint64_t last_alert_ms[AR_COUNT];
	/* Alerts raised and not yet taken. */
	struct anomaly_alert pending[ANOMALY_MAX_ALERTS];
	size_t n_pending;
};

void anomaly_vm_init(struct anomaly_vm *a, const struct anomaly_conf *c, uint64_t now_ms);
/* A new flow the VM opened (allowed) or tried (dropped). addr, port host order. */
void anomaly_note_conn(struct anomaly_vm *a, uint32_t daddr, uint16_t dport, uint8_t proto,
		       bool dropped, uint64_t now_ms);
void anomaly_note_exec(struct anomaly_vm *a, bool failed, uint64_t now_ms);
void anomaly_note_egress(struct anomaly_vm *a, uint64_t bytes, uint64_t now_ms);
/* One CPU sample (fraction of the VM's vCPUs busy since the last) and memory (fraction). */
void anomaly_note_usage(struct anomaly_vm *a, double cpu, double mem, uint64_t now_ms);
/*
 * Close the window if it is over (call at least every few seconds): the per-window rules and
 * the VM's own z-scores. Returns true when a window closed (last_counts is then new).
 */
bool anomaly_tick(struct anomaly_vm *a, uint64_t now_ms);
/* The fleet z-score of the last window against other VMs' last windows (n each series). */
void anomaly_fleet(struct anomaly_vm *a, const uint64_t (*others)[AS_COUNT], size_t n,
		   uint64_t now_ms);
/* Take the alerts raised since the last call; returns how many were copied. */
size_t anomaly_take(struct anomaly_vm *a, struct anomaly_alert *out, size_t max);

/* z of x against mean/var with a floor under the deviation (a flat history is not infinite). */
double anomaly_z(double x, double mean, double var, double min_sd);

#endif
