/* SPDX-License-Identifier: MIT */
#include "vm/monitor.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <netlink/netfilter/ct.h>
#include <netlink/netfilter/log.h>
#include <netlink/netfilter/log_msg.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netlink.h>

#include "vm/anomaly.h"
#include "obs/audit.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/vm_internal.h"
#include "state/vmstate.h"

#define NL_RCVBUF (1 << 20)
#define LOST_REPORT_MS 10000
#define MAX_FLEET 1024

enum { T_TICK, T_CT, T_LOG };

struct monitor {
	struct vm *vm;
	int epfd;
	uint32_t tag_base;
	int tick_fd;
	struct nl_sock *ct, *log;
	struct in_addr guest;
	bool has_net;
	unsigned memory_mib;
	struct anomaly_conf conf;
	struct anomaly_vm an;
	uint64_t counts[AR_COUNT];
	/* Flood control: a token bucket of connection events per second. */
	uint64_t tokens, bucket_ms;
	uint64_t unlogged, overruns, last_lost_report_ms;
	/* Samples. */
	uint64_t cpu_ticks, cpu_ms, tap_rx;
	long clk_tck, page;
	unsigned vcpus;
};

static uint64_t wall_ms(void)
{
	return (uint64_t)realtime_ms();
}

/* --- flood control --------------------------------------------------------------------------- */

static bool may_log(struct monitor *m)
{
	uint64_t now = now_ms();

	if (now - m->bucket_ms >= 1000) {
		m->bucket_ms = now;
		m->tokens = m->conf.log_rate;
	}
	if (m->tokens == 0) {
		m->unlogged++;
		return false;
	}
	m->tokens--;
	return true;
}

static void report_lost(struct monitor *m, bool force)
{
	uint64_t now = now_ms();

	if (!m->unlogged && !m->overruns)
		return;
	if (!force && now - m->last_lost_report_ms < LOST_REPORT_MS)
		return;
	struct json_object *f = json_object_new_object();
	if (f) {
		json_object_object_add(f, "unlogged", json_object_new_int64((int64_t)m->unlogged));
		json_object_object_add(f, "overruns", json_object_new_int64((int64_t)m->overruns));
	}
	audit_log("connlog.lost", m->vm->name, f);
	m->unlogged = m->overruns = 0;
	m->last_lost_report_ms = now;
}

/* --- alerts ---------------------------------------------------------------------------------- */

static void write_anomalies(struct monitor *m)
{
	char path[PATH_MAX];
	struct json_object *o = json_object_new_object(), *rules = json_object_new_object();

	if (!o || !rules) {
		json_object_put(o);
		json_object_put(rules);
		return;
	}
	for (int r = 0; r < AR_COUNT; r++)
		if (m->counts[r])
			json_object_object_add(rules, anomaly_rule_name(r),
					       json_object_new_int64((int64_t)m->counts[r]));
	json_object_object_add(o, "rules", rules);
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	if (statedir_file(path, sizeof(path), m->vm->dir, MONITOR_FILE_ANOMALIES) == 0)
		write_file_atomic(path, s, strlen(s));
	json_object_put(o);
}

static void take_alerts(struct monitor *m)
{
	struct anomaly_alert al[ANOMALY_MAX_ALERTS];
	size_t n = anomaly_take(&m->an, al, ANOMALY_MAX_ALERTS);

	for (size_t i = 0; i < n; i++) {
		struct json_object *f = json_object_new_object();
		bool pause = m->conf.action == ANOMALY_ACTION_PAUSE;
		if (f) {
			json_object_object_add(f, "rule",
					       json_object_new_string(anomaly_rule_name(al[i].rule)));
			json_object_object_add(f, "value", json_object_new_double(al[i].value));
			json_object_object_add(f, "threshold",
					       json_object_new_double(al[i].threshold));
			json_object_object_add(f, "action",
					       json_object_new_string(pause ? "pause" : "none"));
		}
		audit_log("anomaly", m->vm->name, f);
		m->counts[al[i].rule]++;
		if (pause && m->vm->qmp &&
		    qmp_client_send(m->vm->qmp, "stop", NULL, NULL, 0, 0, NULL, NULL, NULL) >= 0)
			qmp_client_flush(m->vm->qmp, NULL);
	}
	if (n)
		write_anomalies(m);
}

/* --- connections ----------------------------------------------------------------------------- */

static const char *proto_name(uint8_t p, char *buf, size_t len)
{
	if (p == IPPROTO_TCP)
		return "tcp";
	if (p == IPPROTO_UDP)
		return "udp";
	if (p == IPPROTO_ICMP)
		return "icmp";
	snprintf(buf, len, "%u", p);
	return buf;
}

static void add_tuple(struct json_object *f, uint8_t proto, struct in_addr src, uint16_t sport,
		      struct in_addr dst, uint16_t dport)
{
	char a[INET_ADDRSTRLEN], pb[8];

	json_object_object_add(f, "proto", json_object_new_string(proto_name(proto, pb, sizeof(pb))));
	inet_ntop(AF_INET, &src, a, sizeof(a));
	json_object_object_add(f, "src", json_object_new_string(a));
	json_object_object_add(f, "sport", json_object_new_int(sport));
	inet_ntop(AF_INET, &dst, a, sizeof(a));
	json_object_object_add(f, "dst", json_object_new_string(a));
	json_object_object_add(f, "dport", json_object_new_int(dport));
}

static bool addr4(struct nl_addr *a, struct in_addr *out)
{
	if (!a || nl_addr_get_family(a) != AF_INET || nl_addr_get_len(a) != 4)
		return false;
	memcpy(out, nl_addr_get_binary_addr(a), 4);
	return true;
}

static void on_ct(struct monitor *m, struct nlmsghdr *nlh)
{
	uint8_t type = NFNL_MSG_TYPE(nlh->nlmsg_type);
	struct nfnl_ct *ct = NULL;
	struct in_addr src, dst;

	if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK ||
	    (type != IPCTNL_MSG_CT_NEW && type != IPCTNL_MSG_CT_DELETE))
		return;
	if (nfnlmsg_ct_parse(nlh, &ct) < 0)
		return;
	if (nfnl_ct_get_family(ct) != AF_INET || !addr4(nfnl_ct_get_src(ct, 0), &src) ||
	    src.s_addr != m->guest.s_addr || !addr4(nfnl_ct_get_dst(ct, 0), &dst)) {
		nfnl_ct_put(ct);
		return;
	}
	uint8_t proto = nfnl_ct_get_proto(ct);
	uint16_t sport = nfnl_ct_test_src_port(ct, 0) ? nfnl_ct_get_src_port(ct, 0) : 0;
	uint16_t dport = nfnl_ct_test_dst_port(ct, 0) ? nfnl_ct_get_dst_port(ct, 0) : 0;
	bool open = type == IPCTNL_MSG_CT_NEW;
	if (open)
		anomaly_note_conn(&m->an, ntohl(dst.s_addr), dport, proto, false, wall_ms());
	if (may_log(m)) {
		struct json_object *f = json_object_new_object();
		if (f) {
			add_tuple(f, proto, src, sport, dst, dport);
			json_object_object_add(f, "verdict", json_object_new_string("allowed"));
			if (!open) {
				json_object_object_add(f, "bytes_out", json_object_new_int64(
					(int64_t)nfnl_ct_get_bytes(ct, 0)));
				json_object_object_add(f, "bytes_in", json_object_new_int64(
					(int64_t)nfnl_ct_get_bytes(ct, 1)));
				json_object_object_add(f, "packets_out", json_object_new_int64(
					(int64_t)nfnl_ct_get_packets(ct, 0)));
				json_object_object_add(f, "packets_in", json_object_new_int64(
					(int64_t)nfnl_ct_get_packets(ct, 1)));
				const struct nfnl_ct_timestamp *ts = nfnl_ct_test_timestamp(ct)
									     ? nfnl_ct_get_timestamp(ct)
									     : NULL;
				if (ts && ts->stop >= ts->start && ts->start)
					json_object_object_add(
						f, "duration_ms",
						json_object_new_int64(
							(int64_t)((ts->stop - ts->start) / 1000000)));
			}
		}
		audit_log(open ? "conn.open" : "conn.close", m->vm->name, f);
	}
	nfnl_ct_put(ct);
}

/* "avm-drop <vm> out: " from the rules (netfilter/rules.c); ours only. */
static bool our_prefix(const struct monitor *m, const char *prefix, const char **dir)
{
	size_t n = strlen(m->vm->name);

	if (!prefix || strncmp(prefix, "avm-drop ", 9) != 0 || strncmp(prefix + 9, m->vm->name, n) ||
	    prefix[9 + n] != ' ')
		return false;
	*dir = !strncmp(prefix + 10 + n, "in", 2) ? "in" : "out";
	return true;
}

static void on_log(struct monitor *m, struct nlmsghdr *nlh)
{
	struct nfnl_log_msg *msg = NULL;
	const char *dir;
	int len = 0;

	if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_ULOG ||
	    NFNL_MSG_TYPE(nlh->nlmsg_type) != NFULNL_MSG_PACKET || nfnlmsg_log_msg_parse(nlh, &msg) < 0)
		return;
	const uint8_t *p = nfnl_log_msg_get_payload(msg, &len);
	if (!our_prefix(m, nfnl_log_msg_get_prefix(msg), &dir) || !p || len < 20 ||
	    (p[0] >> 4) != 4) {
		nfnl_log_msg_put(msg);
		return;
	}
	/* The IPv4 header (and the ports just after it) of the dropped packet. */
	size_t ihl = (size_t)(p[0] & 0xf) * 4;
	uint8_t proto = p[9];
	struct in_addr src, dst;
	uint16_t sport = 0, dport = 0;
	memcpy(&src, p + 12, 4);
	memcpy(&dst, p + 16, 4);
	if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP) && ihl >= 20 && (size_t)len >= ihl + 4) {
		sport = (uint16_t)(p[ihl] << 8 | p[ihl + 1]);
		dport = (uint16_t)(p[ihl + 2] << 8 | p[ihl + 3]);
	}
	if (!strcmp(dir, "out"))
		anomaly_note_conn(&m->an, ntohl(dst.s_addr), dport, proto, true, wall_ms());
	if (may_log(m)) {
		struct json_object *f = json_object_new_object();
		if (f) {
			add_tuple(f, proto, src, sport, dst, dport);
			json_object_object_add(f, "verdict", json_object_new_string("dropped"));
			json_object_object_add(f, "direction", json_object_new_string(dir));
		}
		audit_log("conn.drop", m->vm->name, f);
	}
	nfnl_log_msg_put(msg);
}

/* Everything queued on a netlink socket, bounded per call so the supervisor's loop turns. */
static void pump_nl(struct monitor *m, struct nl_sock *sk, void (*fn)(struct monitor *,
								     struct nlmsghdr *))
{
	static uint8_t buf[65536];

	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n = recv(nl_socket_get_fd(sk), buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == ENOBUFS) {
			m->overruns++; /* the kernel dropped events for us: counted, never waited for */
			continue;
		}
		if (n <= 0)
			break;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n))
			fn(m, h);
	}
	take_alerts(m);
	report_lost(m, false);
}

static struct nl_sock *nl_open(void)
{
	struct nl_sock *sk = nl_socket_alloc();

	if (!sk)
		return NULL;
	if (nfnl_connect(sk) < 0) {
		nl_socket_free(sk);
		return NULL;
	}
	/* Bounded: beyond it the kernel drops events for us and says so (ENOBUFS, counted). */
	nl_socket_set_buffer_size(sk, NL_RCVBUF, 0);
	return sk;
}

static void sysctl_on(const char *name)
{
	char path[128], c = 0;

	snprintf(path, sizeof(path), "/proc/sys/net/netfilter/%s", name);
	_cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0 && read(fd, &c, 1) == 1 && c == '0')
		(void)!pwrite(fd, "1", 1, 0);
}

static int open_ct(struct monitor *m)
{
	if (!(m->ct = nl_open()))
		return -1;
	if (nl_socket_add_memberships(m->ct, NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY, 0) <
	    0)
		return -1;
	/* Bytes and durations in DESTROY events (per network namespace, cheap). */
	sysctl_on("nf_conntrack_acct");
	sysctl_on("nf_conntrack_timestamp");
	return 0;
}

static int open_log(struct monitor *m)
{
	struct nfnl_log *l;
	int r;

	if (!(m->log = nl_open()))
		return -1;
	if (!(l = nfnl_log_alloc()))
		return -1;
	nfnl_log_set_group(l, NF_LOG_GROUP(m->vm->net.lease.index));
	nfnl_log_set_copy_mode(l, NFNL_LOG_COPY_PACKET);
	nfnl_log_set_copy_range(l, 64); /* headers only */
	r = nfnl_log_create(m->log, l);
	nfnl_log_put(l);
	return r < 0 ? -1 : 0;
}

/* --- samples --------------------------------------------------------------------------------- */

static bool read_u64_file(const char *path, uint64_t *out)
{
	char buf[32];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (n <= 0)
		return false;
	buf[n] = 0;
	*out = strtoull(buf, NULL, 10);
	return true;
}

/* QEMU's CPU time (clock ticks) and resident pages. */
static bool qemu_usage(pid_t pid, uint64_t *ticks, uint64_t *rss_pages)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	unsigned long long ut, st;
	long rss;

	if (n <= 0)
		return false;
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* comm may hold spaces */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
				"%*d %*d %*d %*u %*u %ld",
			 &ut, &st, &rss) != 3)
		return false;
	*ticks = ut + st;
	*rss_pages = rss > 0 ? (uint64_t)rss : 0;
	return true;
}

static void write_rates(struct monitor *m, uint64_t now)
{
	char path[PATH_MAX], text[160];

	snprintf(text, sizeof(text), "{\"window_end_ms\":%llu,\"conns\":%llu,\"drops\":%llu,"
				     "\"egress_bytes\":%llu}",
		 (unsigned long long)now, (unsigned long long)m->an.last_counts[AS_CONNS],
		 (unsigned long long)m->an.last_counts[AS_DROPS],
		 (unsigned long long)m->an.last_counts[AS_EGRESS]);
	if (statedir_file(path, sizeof(path), m->vm->dir, MONITOR_FILE_RATES) == 0)
		write_file_atomic(path, text, strlen(text));
}

/* The other VMs' last windows (rates.json no older than two windows). */
static void fleet(struct monitor *m, uint64_t now)
{
	static uint64_t others[MAX_FLEET][AS_COUNT];
	static const char *const keys[AS_COUNT] = { "conns", "drops", "egress_bytes" };
	char **names = NULL;
	size_t n = 0;

	if (m->conf.zscore <= 0 || !m->conf.fleet_min_vms || statedir_list(&names) < 0)
		return;
	for (char **nm = names; *nm && n < MAX_FLEET; nm++) {
		char path[PATH_MAX];
		_cleanup_free_ char *text = NULL;
		struct json_object *o, *v;
		if (!strcmp(*nm, m->vm->name) ||
		    snprintf(path, sizeof(path), "%s/%s/" MONITOR_FILE_RATES, statedir_root(), *nm) >=
			    (int)sizeof(path) ||
		    read_file(path, &text, 4096) < 0 || !(o = json_tokener_parse(text)))
			continue;
		bool ok = json_object_object_get_ex(o, "window_end_ms", &v) &&
			  now - (uint64_t)json_object_get_int64(v) < 2 * ANOMALY_WINDOW_MS;
		for (int s = 0; ok && s < AS_COUNT; s++) {
			ok = json_object_object_get_ex(o, keys[s], &v);
			others[n][s] = ok ? (uint64_t)json_object_get_int64(v) : 0;
		}
		n += ok;
		json_object_put(o);
	}
	for (char **nm = names; *nm; nm++)
		free(*nm);
	free(names);
	anomaly_fleet(&m->an, (const uint64_t(*)[AS_COUNT])others, n, now);
}

static void tick(struct monitor *m)
{
	uint64_t exp, now = wall_ms(), ticks, rss, rx;
	char path[128];

	(void)!read(m->tick_fd, &exp, sizeof(exp));
	double cpu = -1, mem = 0;
	if (qemu_usage(m->vm->pid, &ticks, &rss)) {
		uint64_t mono = now_ms();
		if (m->cpu_ms && mono > m->cpu_ms && m->clk_tck > 0)
			cpu = (double)(ticks - m->cpu_ticks) / (double)m->clk_tck /
			      ((double)(mono - m->cpu_ms) / 1000.0) / (m->vcpus ? m->vcpus : 1);
		m->cpu_ticks = ticks;
		m->cpu_ms = mono;
		if (m->memory_mib)
			mem = (double)rss * (double)m->page / ((double)m->memory_mib * 1048576.0);
	}
	anomaly_note_usage(&m->an, cpu, mem, now);
	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/rx_bytes", m->vm->net.tap);
	if (m->has_net && read_u64_file(path, &rx)) {
		if (m->tap_rx && rx >= m->tap_rx)
			anomaly_note_egress(&m->an, rx - m->tap_rx, now);
		m->tap_rx = rx;
	}
	if (anomaly_tick(&m->an, now)) {
		write_rates(m, now);
		fleet(m, now);
	}
	take_alerts(m);
	report_lost(m, false);
}

/* --- life cycle ------------------------------------------------------------------------------ */

struct monitor *monitor_new(struct vm *vm, unsigned cpus, unsigned memory_mib, int epfd,
			    uint32_t tag_base)
{
	struct monitor *m = calloc(1, sizeof(*m));
	struct avm_error err = { 0 };
	struct itimerspec its = { .it_interval = { 1, 0 }, .it_value = { 1, 0 } };

	if (!m || !audit_enabled()) {
		free(m); /* nothing to log to: no listening, no alerts (the bench's "off") */
		return NULL;
	}
	m->vm = vm;
	m->epfd = epfd;
	m->tag_base = tag_base;
	m->memory_mib = memory_mib;
	m->clk_tck = sysconf(_SC_CLK_TCK);
	m->page = sysconf(_SC_PAGESIZE);
	m->vcpus = cpus ? cpus : 1;
	if (anomaly_conf_load(&m->conf, &err) < 0) {
		/* A broken config must not stop the VM: defaults, and the reason on record. */
		audit_vm_str("error", vm->name, "message", err.msg);
		anomaly_conf_defaults(&m->conf);
	}
	anomaly_vm_init(&m->an, &m->conf, wall_ms());
	m->tokens = m->conf.log_rate;
	m->bucket_ms = now_ms();
	m->tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (m->tick_fd >= 0 && timerfd_settime(m->tick_fd, 0, &its, NULL) == 0)
		vm__ep_add(epfd, m->tick_fd, EPOLLIN, (enum ev_tag)(tag_base + T_TICK));
	m->has_net = vm->net.mode == VM_NET_NAT_FILTERED && vm->net.has_lease && vm->net.rules;
	if (m->has_net) {
		m->guest = vm->net.lease.guest;
		const char *why = NULL;
		if (open_ct(m) < 0)
			why = "cannot listen to conntrack events";
		else if (open_log(m) < 0)
			why = "cannot bind the VM's NFLOG group";
		if (why) {
			audit_vm_str("error", vm->name, "message", why);
		}
		if (m->ct)
			vm__ep_add(epfd, nl_socket_get_fd(m->ct), EPOLLIN,
				   (enum ev_tag)(tag_base + T_CT));
		if (m->log)
			vm__ep_add(epfd, nl_socket_get_fd(m->log), EPOLLIN,
				   (enum ev_tag)(tag_base + T_LOG));
	}
	return m;
}

bool monitor_owns(const struct monitor *m, uint32_t tag)
{
	return m && tag >= m->tag_base && tag < m->tag_base + MONITOR_FDS;
}

void monitor_event(struct monitor *m, uint32_t tag)
{
	switch (tag - m->tag_base) {
	case T_TICK:
		tick(m);
		break;
	case T_CT:
		pump_nl(m, m->ct, on_ct);
		break;
	case T_LOG:
		pump_nl(m, m->log, on_log);
		break;
	}
}

void monitor_note_exec(struct monitor *m, bool failed)
{
	if (!m)
		return;
	anomaly_note_exec(&m->an, failed, wall_ms());
	take_alerts(m);
}

void monitor_free(struct monitor *m)
{
	if (!m)
		return;
	/* The last events: what closed while QEMU went down. */
	if (m->ct)
		pump_nl(m, m->ct, on_ct);
	if (m->log)
		pump_nl(m, m->log, on_log);
	report_lost(m, true);
	if (m->tick_fd >= 0)
		close(m->tick_fd);
	if (m->ct)
		nl_socket_free(m->ct);
	if (m->log)
		nl_socket_free(m->log);
	free(m);
}
