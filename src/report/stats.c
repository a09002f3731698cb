/* SPDX-License-Identifier: MIT */
#include "report/stats.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm/agent_conn.h"
#include "vm/disk.h"
#include "obs/metrics.h"
#include "net/net.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"
#include "state/vmstate.h"

int stats_parse_proc_stat(const char *text, uint64_t *ticks)
{
	/* comm (field 2) may hold spaces and parentheses: fields count from the last ')'. */
	const char *p = strrchr(text, ')');
	unsigned long long ut, st;

	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return -EBADMSG;
	*ticks = ut + st;
	return 0;
}

int stats_parse_smaps_rollup(const char *text, uint64_t *rss, uint64_t *pss)
{
	const char *p;
	unsigned long long kb;
	int have = 0;

	*rss = *pss = 0;
	for (p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (sscanf(p, "Rss: %llu kB", &kb) == 1) {
			*rss = kb * 1024;
			have |= 1;
		} else if (sscanf(p, "Pss: %llu kB", &kb) == 1) {
			*pss = kb * 1024;
			have |= 2;
		}
	}
	return have == 3 ? 0 : -EBADMSG;
}

static void sample_proc(pid_t pid, struct vm_sample *out)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	uint64_t ticks;
	long hz = sysconf(_SC_CLK_TCK);

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	out->sample_ns = now_ns();
	if (read_file(path, &text, 4096) >= 0 && stats_parse_proc_stat(text, &ticks) == 0 && hz > 0)
		out->cpu_ns = ticks * (1000000000ull / (uint64_t)hz);
	free(text);
	text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	if (read_file(path, &text, 8192) >= 0)
		stats_parse_smaps_rollup(text, &out->rss_bytes, &out->pss_bytes);
}

/* Blocks the overlays hold on the host (sparse files: not their apparent size). */
static uint64_t overlay_bytes(const char *dir)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < 64; i++) {
		char path[PATH_MAX];
		struct stat st;
		disk_overlay_path(path, sizeof(path), dir, i);
		if (lstat(path, &st) < 0)
			break;
		if (S_ISREG(st.st_mode))
			sum += (uint64_t)st.st_blocks * 512;
	}
	return sum;
}

int stats_guest_mem(const char *dir, int timeout_ms, uint64_t *total, uint64_t *available)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct agent_conn c;
	int r = -ETIMEDOUT;
	_cleanup_close_ int fd = -1;

	if (statedir_sockaddr(&sa, dir, STATEDIR_AGENT_SOCK) < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	agent_conn_init(&c, fd);
	agent_conn_send(&c, AVM_MSG_STATS, 1, NULL, 0);
	for (uint64_t end = now_ms() + (uint64_t)timeout_ms; r == -ETIMEDOUT && now_ms() < end;) {
		struct pollfd pf = { .fd = fd,
				     .events = POLLIN | (agent_conn_pending(&c) ? POLLOUT : 0) };
		if (poll(&pf, 1, 50) <= 0)
			continue;
		if (pf.revents & POLLOUT)
			agent_conn_flush(&c);
		if ((pf.revents & (POLLIN | POLLHUP)) && agent_conn_read(&c) < 0) {
			r = -EPIPE;
			break;
		}
		struct avm_frame_hdr h;
		const uint8_t *pl;
		const char *why;
		int d;
		while ((d = agent_conn_next(&c, &h, &pl, &why)) != AVM_DECODE_NEED_MORE) {
			struct avm_guest_stats gs;
			if (d != AVM_DECODE_FRAME || h.id != 1)
				continue;
			if (h.type == AVM_MSG_STATS_REPLY) {
				r = avm_guest_stats_decode(pl, h.len, &gs);
				*total = gs.mem_total;
				*available = gs.mem_available;
			} else if (h.type == AVM_MSG_ERROR) {
				r = -EPROTO; /* an agent older than STATS, or /proc unreadable */
			}
		}
	}
	agent_conn_release(&c);
	return r;
}

int stats_sample(const char *name, const char *dir, struct nf_nft *nft, bool guest,
		 int timeout_ms, struct vm_sample *out)
{
	struct vm_state st;
	struct metrics_counters c;
	struct vm_net net;
	int r;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	if ((r = vmstate_read(dir, &st, NULL)) < 0)
		return r;
	vmstate_effective(dir, &st);
	snprintf(out->state, sizeof(out->state), "%s", vmstate_name(st.state));
	/* pid + start time: a reused pid is somebody else's process, never sampled. */
	out->live = vmstate_is_live(st.state) && st.qemu_pid > 0 &&
		    proc_is(st.qemu_pid, st.qemu_start);
	if (out->live) {
		sample_proc(st.qemu_pid, out);
		out->ready_ms = st.ready_ms;
		if (st.ready_ms > 0 && realtime_ms() > st.ready_ms)
			out->uptime_s = (double)(realtime_ms() - st.ready_ms) / 1000;
	}
	if (nft && net_load(&net, dir, NULL) == 0 && net.rules && !net.torn_down &&
	    nf_nft_vm_counters(nft, net.tap, &out->net, NULL) == 0)
		out->have_net = true;
	out->disk_bytes = overlay_bytes(dir);
	metrics_read_vm(dir, &c);
	out->execs = metrics_exec_count(&c);
	if (guest && out->live && st.state == VMS_RUNNING &&
	    stats_guest_mem(dir, timeout_ms, &out->guest_mem_total, &out->guest_mem_available) == 0)
		out->have_guest = true;
	return 0;
}

int stats_set_open(struct stats_set *set, const char *name, struct avm_error *err)
{
	char *dir = NULL;
	int n;

	memset(set, 0, sizeof(*set));
	set->only_live = !name;
	if (name) {
		if ((n = statedir_find(name, &dir, err)) < 0)
			return n;
		free(dir);
		set->names = calloc(2, sizeof(char *));
		if (!set->names || !(set->names[0] = strdup(name))) {
			stats_set_close(set);
			return avm_error_set(err, -ENOMEM, "out of memory");
		}
	} else {
		n = statedir_list(&set->names);
		if (n < 0)
			return avm_error_setx(err, n, "cannot list %s", statedir_root());
		if (!set->names && !(set->names = calloc(1, sizeof(char *)))) /* no VM at all */
			return avm_error_set(err, -ENOMEM, "out of memory");
	}
	while (set->names[set->cap])
		set->cap++;
	nf_nft_new(&set->nft, NULL);
	return 0;
}

size_t stats_set_capacity(const struct stats_set *set)
{
	return set->cap + 1;
}

void stats_set_sample(struct stats_set *set, bool guest, int timeout_ms, struct vm_sample *out,
		      size_t *n)
{
	*n = 0;
	for (size_t i = 0; set->names[i]; i++) {
		char dir[PATH_MAX];
		if (snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), set->names[i]) >=
			    (int)sizeof(dir) ||
		    stats_sample(set->names[i], dir, set->nft, guest, timeout_ms, &out[*n]) < 0)
			continue;
		if (set->only_live && !vmstate_is_live(vmstate_parse(out[*n].state)))
			continue;
		(*n)++;
	}
}

void stats_set_close(struct stats_set *set)
{
	nf_nft_free(set->nft);
	strv_free(set->names);
	memset(set, 0, sizeof(*set));
}

double stats_cpu_percent(const struct vm_sample *a, const struct vm_sample *b)
{
	if (!a->live || !b->live || b->sample_ns <= a->sample_ns || b->cpu_ns < a->cpu_ns)
		return 0;
	return 100.0 * (double)(b->cpu_ns - a->cpu_ns) / (double)(b->sample_ns - a->sample_ns);
}
