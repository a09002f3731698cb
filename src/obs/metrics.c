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

#include "state/statedir.h"
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

static void hist_from_json(struct json_object *o, const char *k, struct metrics_hist *h)
{
	struct json_object *j, *b, *v;

	if (!json_object_object_get_ex(o, k, &j) || !json_object_is_type(j, json_type_object))
		return;
	h->count = json_get_u64(j, "count");
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
			c->results[i] = json_get_u64(res, metrics_exec_class_names[i]);
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

/* ---- reading it back (report/metrics_render.c) ------------------------------------------------- */

int metrics_lock_shared(void)
{
	return lock_root(LOCK_SH);
}

void metrics_read_gone(struct metrics_counters *c)
{
	char path[PATH_MAX];

	memset(c, 0, sizeof(*c));
	if (statedir_file(path, sizeof(path), statedir_root(), GONE_FILE) == 0)
		metrics_counters_read(path, c);
}

void metrics_read_vm(const char *vm_dir, struct metrics_counters *c)
{
	char path[PATH_MAX];

	memset(c, 0, sizeof(*c));
	if (statedir_file(path, sizeof(path), vm_dir, VM_FILE) == 0)
		metrics_counters_read(path, c);
}

size_t metrics_read_anomalies(const char *vm_dir, struct metrics_anomaly *out, size_t max)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;

	if (statedir_file(path, sizeof(path), vm_dir, ANOMALIES_FILE) < 0 ||
	    read_file(path, &text, MAX_FILE) < 0)
		return 0;
	return metrics_anomalies_parse(text, strlen(text), out, max);
}
