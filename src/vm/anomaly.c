/* SPDX-License-Identifier: MIT */
#include "vm/anomaly.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* Weight of the newest window in the VM's own history (about the last 10 windows). */
#define EWMA_ALPHA 0.1

static const char *const rule_names[AR_COUNT] = {
	[AR_DROPS] = "drops",		  [AR_SCAN_PORTS] = "scan_ports",
	[AR_SCAN_HOSTS] = "scan_hosts",	  [AR_DNS] = "dns_rate",
	[AR_EGRESS] = "egress_bytes",	  [AR_FAILED_EXECS] = "failed_execs",
	[AR_CPU] = "cpu_pinned",	  [AR_MEMORY] = "memory_high",
	[AR_Z_CONNS] = "zscore_conns",	  [AR_Z_DROPS] = "zscore_drops",
	[AR_Z_EGRESS] = "zscore_egress",  [AR_FLEET_CONNS] = "fleet_conns",
	[AR_FLEET_DROPS] = "fleet_drops", [AR_FLEET_EGRESS] = "fleet_egress",
};

/* Below these a z-score says nothing worth an alert (a VM going from 0 to 3 connections). */
static const double series_floor[AS_COUNT] = { 20, 20, 1 << 20 };
static const double series_min_sd[AS_COUNT] = { 2, 2, 64 << 10 };

const char *anomaly_rule_name(enum anomaly_rule r)
{
	return r < AR_COUNT ? rule_names[r] : "unknown";
}

void anomaly_conf_defaults(struct anomaly_conf *c)
{
	*c = (struct anomaly_conf){
		.drops_per_min = 60,
		.scan_ports = 16,
		.scan_hosts = 32,
		.dns_per_min = 120,
		.egress_bytes_per_min = 1ull << 30,
		.failed_execs_per_min = 10,
		.cpu_pinned_pct = 95,
		.cpu_pinned_minutes = 5,
		.memory_pct = 95,
		.zscore = 4.0,
		.zscore_min_windows = 10,
		.fleet_min_vms = 3,
		.cooldown_s = 300,
		.log_rate = 200,
		.action = ANOMALY_ACTION_NONE,
	};
}

static const struct {
	const char *key;
	size_t off;
	uint64_t max;
} int_keys[] = {
#define K(name, max) { #name, offsetof(struct anomaly_conf, name), max }
	K(drops_per_min, 1ull << 40),	    K(scan_ports, 65536),
	K(scan_hosts, ANOMALY_MAX_HOSTS),   K(dns_per_min, 1ull << 40),
	K(egress_bytes_per_min, 1ull << 50), K(failed_execs_per_min, 1ull << 32),
	K(cpu_pinned_pct, 100),		    K(cpu_pinned_minutes, 1440),
	K(memory_pct, 100),		    K(zscore_min_windows, 100000),
	K(fleet_min_vms, 100000),	    K(cooldown_s, 86400 * 7),
	K(log_rate, 1000000),
#undef K
};

static int parse_line(char *line, struct anomaly_conf *c, const char **why)
{
	char *eq = strchr(line, '='), *key = line, *val, *end;

	if (!eq) {
		*why = "expected 'key = value'";
		return -EINVAL;
	}
	*eq = 0;
	val = eq + 1;
	/* Trim both sides of both. */
	while (*key == ' ' || *key == '\t')
		key++;
	for (end = eq; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
		end[-1] = 0;
	while (*val == ' ' || *val == '\t')
		val++;
	for (end = val + strlen(val); end > val && (end[-1] == ' ' || end[-1] == '\t'); end--)
		end[-1] = 0;
	if (!*val) {
		*why = "missing value";
		return -EINVAL;
	}
	if (!strcmp(key, "action")) {
		if (!strcmp(val, "none"))
			c->action = ANOMALY_ACTION_NONE;
		else if (!strcmp(val, "pause"))
			c->action = ANOMALY_ACTION_PAUSE;
		else {
			*why = "action is 'none' or 'pause'";
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "zscore")) {
		errno = 0;
		double d = strtod(val, &end);
		if (errno || *end || end == val || !(d >= 0 && d <= 1000)) {
			*why = "zscore is a number from 0 (off) to 1000";
			return -EINVAL;
		}
		c->zscore = d;
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(int_keys); i++) {
		if (strcmp(key, int_keys[i].key) != 0)
			continue;
		if (*val < '0' || *val > '9') {
			*why = "expected a whole number";
			return -EINVAL;
		}
		errno = 0;
		unsigned long long v = strtoull(val, &end, 10);
		if (errno || *end || v > int_keys[i].max) {
			*why = "not a whole number in range";
			return -EINVAL;
		}
		*(uint64_t *)((char *)c + int_keys[i].off) = v;
		return 0;
	}
	*why = "unknown key";
	return -EINVAL;
}

int anomaly_conf_parse(const char *text, size_t len, struct anomaly_conf *c,
		       struct avm_error *err)
{
	char line[256];
	size_t pos = 0;
	int lineno = 0;

	if (len > ANOMALY_CONF_MAX)
		return avm_error_set(err, -EINVAL, "the anomaly config is over %u bytes",
				     ANOMALY_CONF_MAX);
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
		const char *why = NULL;

		lineno++;
		if (n >= sizeof(line))
			return avm_error_set(err, -EINVAL, "line %d: longer than %zu bytes", lineno,
					     sizeof(line) - 1);
		memcpy(line, text + pos, n);
		line[n] = 0;
		pos += n + 1;
		if (memchr(line, 0, n) || strpbrk(line, "\r\v\f"))
			return avm_error_set(err, -EINVAL, "line %d: control characters", lineno);
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			continue;
		if (parse_line(p, c, &why) < 0) {
			char shown[64];
			snprintf(shown, sizeof(shown), "%.60s", p);
			return avm_error_set(err, -EINVAL, "line %d: %s ('%s')", lineno, why, shown);
		}
	}
	return 0;
}

const char *anomaly_conf_path(void)
{
	const char *e = getenv("AGENTVM_ANOMALY_CONF");

	return e && *e ? e : ANOMALY_CONF_DEFAULT;
}

int anomaly_conf_load(struct anomaly_conf *c, struct avm_error *err)
{
	_cleanup_free_ char *text = NULL;
	int r;

	anomaly_conf_defaults(c);
	r = read_file(anomaly_conf_path(), &text, ANOMALY_CONF_MAX);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return avm_error_setx(err, r, "cannot read %s", anomaly_conf_path());
	r = anomaly_conf_parse(text, strlen(text), c, err);
	if (r < 0)
		avm_error_wrap(err, "%s", anomaly_conf_path());
	return r;
}

/* --- detection ------------------------------------------------------------------------------ */

double anomaly_z(double x, double mean, double var, double min_sd)
{
	double sd = var > 0 ? sqrt(var) : 0;

	if (sd < min_sd)
		sd = min_sd;
	return (x - mean) / sd;
}

static void raise_alert(struct anomaly_vm *a, enum anomaly_rule r, double value, double threshold,
			uint64_t now_ms)
{
	if (a->fired[r])
		return;
	a->fired[r] = true;
	if (a->last_alert_ms[r] && now_ms - a->last_alert_ms[r] < a->conf->cooldown_s * 1000)
		return;
	a->last_alert_ms[r] = now_ms ? now_ms : 1;
	if (a->n_pending < ANOMALY_MAX_ALERTS)
		a->pending[a->n_pending++] = (struct anomaly_alert){ r, value, threshold };
}

/* A count rule: over its threshold (0 = off) within the window. */
static void check(struct anomaly_vm *a, enum anomaly_rule r, uint64_t value, uint64_t threshold,
		  uint64_t now_ms)
{
	if (threshold && value >= threshold)
		raise_alert(a, r, (double)value, (double)threshold, now_ms);
}

static void new_window(struct anomaly_vm *a, uint64_t start)
{
	a->window_start_ms = start;
	memset(a->count, 0, sizeof(a->count));
	a->dns = a->failed_execs = 0;
	memset(a->ports, 0, sizeof(a->ports));
	a->n_ports = a->n_hosts = 0;
	a->cpu_sum = 0;
	a->cpu_samples = 0;
	memset(a->fired, 0, sizeof(a->fired));
}

void anomaly_vm_init(struct anomaly_vm *a, const struct anomaly_conf *c, uint64_t now_ms)
{
	memset(a, 0, sizeof(*a));
	a->conf = c;
	new_window(a, now_ms);
}

void anomaly_note_conn(struct anomaly_vm *a, uint32_t daddr, uint16_t dport, uint8_t proto,
		       bool dropped, uint64_t now_ms)
{
	const struct anomaly_conf *c = a->conf;

	anomaly_tick(a, now_ms);
	a->count[dropped ? AS_DROPS : AS_CONNS]++;
	if (dport == 53)
		a->dns++;
	if (!(a->ports[dport / 8] & (1u << (dport % 8)))) {
		a->ports[dport / 8] |= (uint8_t)(1u << (dport % 8));
		a->n_ports++;
	}
	bool seen = false;
	for (uint32_t i = 0; i < a->n_hosts && !seen; i++)
		seen = a->hosts[i] == daddr;
	if (!seen && a->n_hosts < ANOMALY_MAX_HOSTS)
		a->hosts[a->n_hosts++] = daddr;
	if (dropped)
		check(a, AR_DROPS, a->count[AS_DROPS], c->drops_per_min, now_ms);
	check(a, AR_SCAN_PORTS, a->n_ports, c->scan_ports, now_ms);
	check(a, AR_SCAN_HOSTS, a->n_hosts, c->scan_hosts, now_ms);
	check(a, AR_DNS, a->dns, c->dns_per_min, now_ms);
}

void anomaly_note_exec(struct anomaly_vm *a, bool failed, uint64_t now_ms)
{
	anomaly_tick(a, now_ms);
	if (failed)
		check(a, AR_FAILED_EXECS, ++a->failed_execs, a->conf->failed_execs_per_min, now_ms);
}

void anomaly_note_egress(struct anomaly_vm *a, uint64_t bytes, uint64_t now_ms)
{
	anomaly_tick(a, now_ms);
	a->count[AS_EGRESS] += bytes;
	check(a, AR_EGRESS, a->count[AS_EGRESS], a->conf->egress_bytes_per_min, now_ms);
}

void anomaly_note_usage(struct anomaly_vm *a, double cpu, double mem, uint64_t now_ms)
{
	anomaly_tick(a, now_ms);
	if (cpu >= 0) {
		a->cpu_sum += cpu;
		a->cpu_samples++;
	}
	if (a->conf->memory_pct && mem * 100 >= (double)a->conf->memory_pct)
		raise_alert(a, AR_MEMORY, mem * 100, (double)a->conf->memory_pct, now_ms);
}

bool anomaly_tick(struct anomaly_vm *a, uint64_t now_ms)
{
	const struct anomaly_conf *c = a->conf;

	if (now_ms < a->window_start_ms + ANOMALY_WINDOW_MS)
		return false;
	/* CPU: the window's average, in whole windows in a row. */
	double cpu = a->cpu_samples ? a->cpu_sum / a->cpu_samples : 0;
	if (c->cpu_pinned_pct && a->cpu_samples && cpu * 100 >= (double)c->cpu_pinned_pct)
		a->cpu_pinned_run++;
	else
		a->cpu_pinned_run = 0;
	if (c->cpu_pinned_minutes && a->cpu_pinned_run >= c->cpu_pinned_minutes)
		raise_alert(a, AR_CPU, cpu * 100, (double)c->cpu_pinned_pct, now_ms);
	/* The VM's own history: z before the window joins it. */
	static const enum anomaly_rule zr[AS_COUNT] = { AR_Z_CONNS, AR_Z_DROPS, AR_Z_EGRESS };
	for (int s = 0; s < AS_COUNT; s++) {
		struct anomaly_ewma *h = &a->hist[s];
		double x = (double)a->count[s];
		if (c->zscore > 0 && h->n >= c->zscore_min_windows && x >= series_floor[s]) {
			double z = anomaly_z(x, h->mean, h->var, series_min_sd[s]);
			if (z >= c->zscore)
				raise_alert(a, zr[s], z, c->zscore, now_ms);
		}
		if (h->n == 0) {
			h->mean = x;
		} else {
			double diff = x - h->mean, incr = EWMA_ALPHA * diff;
			h->mean += incr;
			h->var = (1 - EWMA_ALPHA) * (h->var + diff * incr);
		}
		h->n++;
		a->last_counts[s] = a->count[s];
	}
	/* Windows with nothing in them (an idle VM, a suspended host) count as such, at most 1. */
	uint64_t next = a->window_start_ms + ANOMALY_WINDOW_MS;
	if (now_ms >= next + ANOMALY_WINDOW_MS)
		next = now_ms;
	new_window(a, next);
	return true;
}

void anomaly_fleet(struct anomaly_vm *a, const uint64_t (*others)[AS_COUNT], size_t n,
		   uint64_t now_ms)
{
	static const enum anomaly_rule fr[AS_COUNT] = { AR_FLEET_CONNS, AR_FLEET_DROPS,
							AR_FLEET_EGRESS };
	const struct anomaly_conf *c = a->conf;

	if (c->zscore <= 0 || !c->fleet_min_vms || n < c->fleet_min_vms)
		return;
	for (int s = 0; s < AS_COUNT; s++) {
		double sum = 0, sq = 0, x = (double)a->last_counts[s];
		for (size_t i = 0; i < n; i++)
			sum += (double)others[i][s];
		double mean = sum / (double)n;
		for (size_t i = 0; i < n; i++)
			sq += ((double)others[i][s] - mean) * ((double)others[i][s] - mean);
		if (x < series_floor[s])
			continue;
		double z = anomaly_z(x, mean, sq / (double)n, series_min_sd[s]);
		if (z >= c->zscore) {
			a->fired[fr[s]] = false; /* judged once per closed window, here */
			raise_alert(a, fr[s], z, c->zscore, now_ms);
		}
	}
}

size_t anomaly_take(struct anomaly_vm *a, struct anomaly_alert *out, size_t max)
{
	size_t n = a->n_pending < max ? a->n_pending : max;

	memcpy(out, a->pending, n * sizeof(*out));
	memmove(a->pending, a->pending + n, (a->n_pending - n) * sizeof(*out));
	a->n_pending -= n;
	return n;
}
