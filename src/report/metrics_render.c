/* SPDX-License-Identifier: MIT */
#include "report/metrics_render.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/strv.h"
#include "base/util.h"
#include "netfilter/nf.h"
#include "report/stats.h"
#include "state/statedir.h"
#include "state/vmstate.h"

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_out(FILE *f, const char *name, const char *help, const struct metrics_hist *h)
{
	uint64_t cum = 0;

	head(f, name, "histogram", help);
	for (size_t i = 0; i < METRICS_NBOUNDS; i++) {
		cum += h->bucket[i];
		fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, metrics_bounds[i],
			(unsigned long long)cum);
	}
	fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
		(unsigned long long)h->count, name, h->sum, name, (unsigned long long)h->count);
}

/* The states agentvm_vms{state=...} counts: every one vmstate.h names but "unknown". */
#define VM_STATES_FIRST VMS_CREATED
#define VM_STATES_N (VMS_CRASHED - VMS_CREATED + 1)

struct vm_row {
	struct vm_sample s;
	uint64_t execs;
	size_t n_anom;
	struct metrics_anomaly anom[METRICS_MAX_RULES];
};

static void per_vm(FILE *f, struct vm_row *rows, size_t n)
{
	static const struct {
		const char *dir, *verdict;
		size_t bytes, packets; /* offsets into struct nf_counters */
	} net[] = {
		{ "tx", "accepted", offsetof(struct nf_counters, tx_ok_bytes),
		  offsetof(struct nf_counters, tx_ok_packets) },
		{ "tx", "dropped", offsetof(struct nf_counters, tx_drop_bytes),
		  offsetof(struct nf_counters, tx_drop_packets) },
		{ "rx", "accepted", offsetof(struct nf_counters, rx_ok_bytes),
		  offsetof(struct nf_counters, rx_ok_packets) },
		{ "rx", "dropped", offsetof(struct nf_counters, rx_drop_bytes),
		  offsetof(struct nf_counters, rx_drop_packets) },
	};
#define NETC(r, off) (*(const uint64_t *)((const char *)&(r)->s.net + (off)))

	head(f, "agentvm_vm_execs_total", "counter", "Commands run in the VM.");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "agentvm_vm_execs_total{vm=\"%s\"} %llu\n", rows[i].s.name,
			(unsigned long long)rows[i].execs);
	head(f, "agentvm_vm_cpu_seconds_total", "counter",
	     "CPU time used by the VM's QEMU process (user + system, all threads).");
	for (size_t i = 0; i < n; i++)
		if (rows[i].s.live)
			fprintf(f, "agentvm_vm_cpu_seconds_total{vm=\"%s\"} %.6f\n", rows[i].s.name,
				(double)rows[i].s.cpu_ns / 1e9);
	head(f, "agentvm_vm_memory_bytes", "gauge",
	     "Host memory of the VM's QEMU process: rss (resident), pss (proportional share).");
	for (size_t i = 0; i < n; i++)
		if (rows[i].s.live)
			fprintf(f,
				"agentvm_vm_memory_bytes{vm=\"%s\",kind=\"rss\"} %llu\n"
				"agentvm_vm_memory_bytes{vm=\"%s\",kind=\"pss\"} %llu\n",
				rows[i].s.name, (unsigned long long)rows[i].s.rss_bytes,
				rows[i].s.name, (unsigned long long)rows[i].s.pss_bytes);
	head(f, "agentvm_vm_disk_overlay_bytes", "gauge",
	     "Host disk space taken by the VM's copy-on-write overlays.");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "agentvm_vm_disk_overlay_bytes{vm=\"%s\"} %llu\n", rows[i].s.name,
			(unsigned long long)rows[i].s.disk_bytes);
	head(f, "agentvm_vm_ready_time_seconds", "gauge",
	     "When the VM became ready (Unix time); uptime is time() minus this.");
	for (size_t i = 0; i < n; i++)
		if (rows[i].s.live && rows[i].s.ready_ms > 0)
			fprintf(f, "agentvm_vm_ready_time_seconds{vm=\"%s\"} %.3f\n",
				rows[i].s.name, (double)rows[i].s.ready_ms / 1000);
	for (int unit = 0; unit < 2; unit++) { /* bytes, then packets */
		const char *what = unit ? "packets" : "bytes";
		fprintf(f,
			"# HELP agentvm_vm_network_%s_total %s through the VM's egress filter by "
			"direction (tx: from the VM) and verdict.\n"
			"# TYPE agentvm_vm_network_%s_total counter\n",
			what, unit ? "Packets" : "Bytes", what);
		for (size_t i = 0; i < n; i++)
			for (size_t k = 0; rows[i].s.have_net && k < ARRAY_SIZE(net); k++)
				fprintf(f,
					"agentvm_vm_network_%s_total{vm=\"%s\",direction=\"%s\","
					"verdict=\"%s\"} %llu\n",
					what, rows[i].s.name, net[k].dir, net[k].verdict,
					(unsigned long long)NETC(&rows[i], unit ? net[k].packets :
										    net[k].bytes));
	}
	head(f, "agentvm_anomalies_total", "counter", "Anomaly alerts raised, by VM and rule.");
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < rows[i].n_anom; k++)
			fprintf(f, "agentvm_anomalies_total{vm=\"%s\",rule=\"%s\"} %llu\n",
				rows[i].s.name, rows[i].anom[k].rule,
				(unsigned long long)rows[i].anom[k].count);
#undef NETC
}

int metrics_render(FILE *f, const struct metrics_pool *pool, struct avm_error *err)
{
	struct metrics_counters all, c;
	struct nf_nft *nft = NULL;
	_cleanup_free_ struct vm_row *rows = NULL;
	long by_state[VM_STATES_N] = { 0 };
	char **names = NULL;
	size_t n = 0;
	int count;

	count = statedir_list(&names);
	if (count < 0)
		return avm_error_setx(err, count, "cannot list %s", statedir_root());
	rows = calloc((size_t)count + 1, sizeof(*rows));
	if (!rows) {
		strv_free(names);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	nf_nft_new(&nft, NULL); /* no rights for nft: no network numbers, the rest still */
	{
		_cleanup_close_ int lock = metrics_lock_shared();
		metrics_read_gone(&all);
		for (int i = 0; i < count; i++) {
			char dir[PATH_MAX];
			struct vm_row *row = &rows[n];
			if (snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]) >=
				    (int)sizeof(dir) ||
			    stats_sample(names[i], dir, nft, false, 0, &row->s) < 0)
				continue;
			metrics_read_vm(dir, &c);
			metrics_counters_sum(&all, &c);
			row->execs = metrics_exec_count(&c);
			row->n_anom = metrics_read_anomalies(dir, row->anom, METRICS_MAX_RULES);
			enum vm_run_state k = vmstate_parse(row->s.state);
			if (k >= VM_STATES_FIRST && k < VM_STATES_FIRST + VM_STATES_N)
				by_state[k - VM_STATES_FIRST]++;
			n++;
		}
	}
	nf_nft_free(nft);
	strv_free(names);

	head(f, "agentvm_vms", "gauge", "VMs in this state root by state.");
	for (int k = 0; k < VM_STATES_N; k++)
		fprintf(f, "agentvm_vms{state=\"%s\"} %ld\n", vmstate_name(VM_STATES_FIRST + k),
			by_state[k]);
	hist_out(f, "agentvm_boot_duration_seconds",
		 "Time from QEMU launch to the guest agent's READY, cold boots.", &all.boot);
	hist_out(f, "agentvm_restore_duration_seconds",
		 "Time from QEMU launch to the guest's SYNC_DONE, restores from a snapshot.",
		 &all.restore);
	hist_out(f, "agentvm_exec_duration_seconds",
		 "Round trip of one command: EXEC sent to EXIT received.", &all.exec);
	head(f, "agentvm_exec_results_total", "counter", "Commands run, by how they ended.");
	for (size_t i = 0; i < METRICS_EXEC_NCLASSES; i++)
		fprintf(f, "agentvm_exec_results_total{result=\"%s\"} %llu\n",
			metrics_exec_class_names[i], (unsigned long long)all.results[i]);
	if (pool && pool->present) {
		head(f, "agentvm_pool_vms", "gauge", "VMs of the warm pool by state.");
		fprintf(f,
			"agentvm_pool_vms{state=\"ready\"} %ld\nagentvm_pool_vms{state=\"starting\"} "
			"%ld\nagentvm_pool_vms{state=\"acquired\"} %ld\n",
			pool->ready, pool->starting, pool->acquired);
		head(f, "agentvm_pool_waiting", "gauge", "Acquire requests waiting for a VM.");
		fprintf(f, "agentvm_pool_waiting %ld\n", pool->waiting);
		head(f, "agentvm_pool_refill_failures_total", "counter",
		     "Pool restores that failed since serve started.");
		fprintf(f, "agentvm_pool_refill_failures_total %llu\n",
			(unsigned long long)pool->refill_failures);
	}
	per_vm(f, rows, n);
	return ferror(f) ? avm_error_set(err, -EIO, "cannot write the metrics") : 0;
}
