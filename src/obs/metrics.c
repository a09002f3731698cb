/* SPDX-License-Identifier: MIT */
#include "obs/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/pool.h"
#include "state/statedir.h"
#include "obs/stats.h"
#include "base/strv.h"
#include "base/util.h"
#include "state/vmstate.h"

#define VM_FILE "metrics.json"
#define HOST_DIR ".metrics" /* in the state root; not a VM name (those start with [a-z0-9]) */
#define GONE_FILE HOST_DIR "/gone.json"
#define LOCK_FILE HOST_DIR "/lock"
#define ANOMALIES_FILE "anomalies.json"
#define MAX_FILE (64u << 10)

/* From a 5 ms exec to a 5 min TCG boot under load. */
const double metrics_bounds[METRICS_NBOUNDS] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
						 1,     2.5,  5,     10,   30,  60,   120, 300 };

const char *const metrics_exec_class_names[METRICS_EXEC_NCLASSES] = {
	"ok", "nonzero", "signal", "timeout", "oom", "start_failed", "error",
};

void metrics_hist_add(struct metrics_hist *h, double seconds)
{
	size_t i = 0;

	while (i < METRICS_NBOUNDS && seconds > metrics_bounds[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum += seconds;
}

static void hist_sum(struct metrics_hist *into, const struct metrics_hist *h)
{
	into->count += h->count;
	into->sum += h->sum;
	for (size_t i = 0; i <= METRICS_NBOUNDS; i++)
		into->bucket[i] += h->bucket[i];
}

void metrics_counters_sum(struct metrics_counters *into, const struct metrics_counters *c)
{
	hist_sum(&into->boot, &c->boot);
	hist_sum(&into->restore, &c->restore);
	hist_sum(&into->exec, &c->exec);
	for (size_t i = 0; i < METRICS_EXEC_NCLASSES; i++)
		into->results[i] += c->results[i];
}

uint64_t metrics_exec_count(const struct metrics_counters *c)
{
	uint64_t n = 0;

	for (size_t i = 0; i < METRICS_EXEC_NCLASSES; i++)
		n += c->results[i];
	return n;
}

enum metrics_exec_class metrics_exec_class_of(const struct avm_exit_info *info)
{
	switch (info->kind) {
	case AVM_EXIT_CODE:
		return info->code == 0 ? METRICS_EXEC_OK : METRICS_EXEC_NONZERO;
	case AVM_EXIT_SIGNAL:
		return METRICS_EXEC_SIGNAL;
	case AVM_EXIT_TIMEOUT:
		return METRICS_EXEC_TIMEOUT;
	case AVM_EXIT_OOM:
		return METRICS_EXEC_OOM;
	case AVM_EXIT_START_FAILED:
		return METRICS_EXEC_START_FAILED;
	}
	return METRICS_EXEC_ERROR;
}

/* ---- the files -------------------------------------------------------------------------------- */

static uint64_t get_u64(struct json_object *o, const char *k)
{
	struct json_object *v;
	int64_t n;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_int))
		return 0;
	n = json_object_get_int64(v);
	return n > 0 ? (uint64_t)n : 0;
}

static void hist_from_json(struct json_object *o, const char *k, struct metrics_hist *h)
{
	struct json_object *j, *b, *v;

	if (!json_object_object_get_ex(o, k, &j) || !json_object_is_type(j, json_type_object))
		return;
	h->count = get_u64(j, "count");
	if (json_object_object_get_ex(j, "sum", &v) &&
	    (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
		h->sum = json_object_get_double(v);
	if (!isfinite(h->sum) || h->sum < 0)
		h->sum = 0;
	if (json_object_object_get_ex(j, "buckets", &b) && json_object_is_type(b, json_type_array))
		for (size_t i = 0; i <= METRICS_NBOUNDS && i < json_object_array_length(b); i++) {
			v = json_object_array_get_idx(b, i);
			int64_t n = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : 0;
			h->bucket[i] = n > 0 ? (uint64_t)n : 0;
		}
}

/* The writer formats by hand (json-c's object building cost more than the file write). */
static void hist_put(FILE *f, const char *name, const struct metrics_hist *h)
{
	fprintf(f, "\"%s\":{\"count\":%llu,\"sum\":%.9g,\"buckets\":[", name,
		(unsigned long long)h->count, h->sum);
	for (size_t i = 0; i <= METRICS_NBOUNDS; i++)
		fprintf(f, "%s%llu", i ? "," : "", (unsigned long long)h->bucket[i]);
	fputs("]},", f);
}

int metrics_counters_read(const char *path, struct metrics_counters *c)
{
	_cleanup_free_ char *text = NULL;
	struct json_object *o, *res;
	int r;

	memset(c, 0, sizeof(*c));
	r = read_file(path, &text, MAX_FILE);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return -EBADMSG;
	}
	hist_from_json(o, "boot_seconds", &c->boot);
	hist_from_json(o, "restore_seconds", &c->restore);
	hist_from_json(o, "exec_seconds", &c->exec);
	if (json_object_object_get_ex(o, "exec_results", &res))
		for (size_t i = 0; i < METRICS_EXEC_NCLASSES; i++)
			c->results[i] = get_u64(res, metrics_exec_class_names[i]);
	json_object_put(o);
	return 0;
}

int metrics_counters_write(const char *path, const struct metrics_counters *c)
{
	char buf[2048];
	FILE *f = fmemopen(buf, sizeof(buf), "w");
	long len;

	if (!f)
		return -errno;
	fputs("{\"version\":1,", f);
	hist_put(f, "boot_seconds", &c->boot);
	hist_put(f, "restore_seconds", &c->restore);
	hist_put(f, "exec_seconds", &c->exec);
	fputs("\"exec_results\":{", f);
	for (size_t i = 0; i < METRICS_EXEC_NCLASSES; i++)
		fprintf(f, "%s\"%s\":%llu", i ? "," : "", metrics_exec_class_names[i],
			(unsigned long long)c->results[i]);
	fputs("}}\n", f);
	len = ftell(f);
	if (ferror(f) || len <= 0 || len >= (long)sizeof(buf) - 1) {
		fclose(f);
		return -EOVERFLOW;
	}
	fclose(f);
	return write_file_atomic(path, buf, (size_t)len);
}

static bool recording = true;

void metrics_set_recording(bool on)
{
	recording = on;
}

/*
 * One owner per VM writes its file: read, add, write back (atomically, for the readers). The
 * owner keeps what it wrote last (one VM per owner process) and reads the file again only when
 * its inode is not the one it renamed into place: half the cost of an exec's recording.
 */
static struct {
	char path[PATH_MAX];
	ino_t ino;
	struct metrics_counters c;
} cache;

static void vm_update(const char *vm_dir, void (*fn)(struct metrics_counters *, const void *),
		      const void *arg)
{
	char path[PATH_MAX];
	struct stat st;

	if (!recording || !vm_dir || statedir_file(path, sizeof(path), vm_dir, VM_FILE) < 0)
		return;
	if (strcmp(cache.path, path) != 0 || stat(path, &st) < 0 || st.st_ino != cache.ino) {
		metrics_counters_read(path, &cache.c);
		snprintf(cache.path, sizeof(cache.path), "%s", path);
	}
	fn(&cache.c, arg);
	cache.ino = 0;
	if (metrics_counters_write(path, &cache.c) == 0 && stat(path, &st) == 0)
		cache.ino = st.st_ino;
}

struct ready_arg {
	bool restored;
	double s;
};
static void add_ready(struct metrics_counters *c, const void *p)
{
	const struct ready_arg *a = p;

	metrics_hist_add(a->restored ? &c->restore : &c->boot, a->s);
}

void metrics_record_ready(const char *vm_dir, bool restored, uint64_t us)
{
	struct ready_arg a = { restored, (double)us / 1e6 };

	vm_update(vm_dir, add_ready, &a);
}

struct exec_arg {
	enum metrics_exec_class cls;
	double s;
};
static void add_exec(struct metrics_counters *c, const void *p)
{
	const struct exec_arg *a = p;

	metrics_hist_add(&c->exec, a->s);
	c->results[a->cls < METRICS_EXEC_NCLASSES ? a->cls : METRICS_EXEC_ERROR]++;
}

void metrics_record_exec(const char *vm_dir, enum metrics_exec_class cls, uint64_t us)
{
	struct exec_arg a = { cls, (double)us / 1e6 };

	vm_update(vm_dir, add_exec, &a);
}

/* flock on <root>/.metrics.lock: LOCK_EX to retire a VM, LOCK_SH to read the sums. -1 = none. */
static int lock_root(int how)
{
	char path[PATH_MAX];
	int fd;

	if (statedir_file(path, sizeof(path), statedir_root(), HOST_DIR) < 0)
		return -1;
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -1;
	if (statedir_file(path, sizeof(path), statedir_root(), LOCK_FILE) < 0)
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0 && flock(fd, how) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

void metrics_retire(const char *vm_dir)
{
	char vm_path[PATH_MAX], gone_path[PATH_MAX];
	struct metrics_counters c, gone;
	_cleanup_close_ int lock = -1;

	if (statedir_file(vm_path, sizeof(vm_path), vm_dir, VM_FILE) < 0 ||
	    statedir_file(gone_path, sizeof(gone_path), statedir_root(), GONE_FILE) < 0 ||
	    access(vm_path, F_OK) < 0)
		return;
	lock = lock_root(LOCK_EX);
	if (metrics_counters_read(vm_path, &c) < 0)
		return;
	metrics_counters_read(gone_path, &gone);
	metrics_counters_sum(&gone, &c);
	/* Added and then removed under the lock: a reader sees it in one place, never two. */
	if (metrics_counters_write(gone_path, &gone) == 0)
		unlink(vm_path);
}

/* ---- anomalies -------------------------------------------------------------------------------- */

static bool rule_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		      s[i] == '.' || s[i] == '-'))
			return false;
	return true;
}

size_t metrics_anomalies_parse(const char *buf, size_t len, struct metrics_anomaly *out,
			       size_t max)
{
	struct json_tokener *tok;
	struct json_object *o, *rules;
	size_t n = 0;

	if (len > MAX_FILE || len > INT_MAX)
		return 0;
	tok = json_tokener_new();
	if (!tok)
		return 0;
	o = json_tokener_parse_ex(tok, buf, (int)len);
	json_tokener_free(tok);
	if (o && json_object_object_get_ex(o, "rules", &rules) &&
	    json_object_is_type(rules, json_type_object)) {
		json_object_object_foreach(rules, k, v)
		{
			if (n >= max || !rule_name_ok(k) || !json_object_is_type(v, json_type_int) ||
			    json_object_get_int64(v) < 0)
				continue;
			snprintf(out[n].rule, sizeof(out[n].rule), "%s", k);
			out[n++].count = (uint64_t)json_object_get_int64(v);
		}
	}
	json_object_put(o);
	return n;
}

/* ---- the pool --------------------------------------------------------------------------------- */

void metrics_pool_query(struct metrics_pool *p)
{
	char line[65536];
	struct json_object *o;

	memset(p, 0, sizeof(*p));
	if (pool_request("STATUS\n", line, sizeof(line), NULL) < 0)
		return;
	o = json_tokener_parse(line);
	if (o && json_object_is_type(o, json_type_object)) {
		p->present = true;
		p->ready = (long)get_u64(o, "ready");
		p->starting = (long)get_u64(o, "starting");
		p->acquired = (long)get_u64(o, "leased");
		p->waiting = (long)get_u64(o, "waiting");
		p->refill_failures = get_u64(o, "refill_failures");
	}
	json_object_put(o);
}

/* ---- the exposition --------------------------------------------------------------------------- */

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
	char path[PATH_MAX];
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
		_cleanup_close_ int lock = lock_root(LOCK_SH);
		statedir_file(path, sizeof(path), statedir_root(), GONE_FILE);
		metrics_counters_read(path, &all);
		for (int i = 0; i < count; i++) {
			char dir[PATH_MAX];
			struct vm_row *row = &rows[n];
			if (snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]) >=
				    (int)sizeof(dir) ||
			    stats_sample(names[i], dir, nft, false, 0, &row->s) < 0)
				continue;
			statedir_file(path, sizeof(path), dir, VM_FILE);
			metrics_counters_read(path, &c);
			metrics_counters_sum(&all, &c);
			row->execs = metrics_exec_count(&c);
			statedir_file(path, sizeof(path), dir, ANOMALIES_FILE);
			_cleanup_free_ char *text = NULL;
			if (read_file(path, &text, MAX_FILE) >= 0)
				row->n_anom = metrics_anomalies_parse(text, strlen(text), row->anom,
								      METRICS_MAX_RULES);
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
