/* SPDX-License-Identifier: MIT */
/* agentvm metrics [--listen ADDR:PORT] and agentvm stats [NAME] [--json] [--follow]. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "obs/metrics.h"
#include "report/metrics_render.h"
#include "pool/pool.h"
#include "report/metrics_http.h"
#include "report/stats.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"
#include "state/vmstate.h"

#define GUEST_TIMEOUT_MS 1000

/* Standalone endpoint: the pool's numbers come from a serve over its socket, when one runs. */
static int render_standalone(FILE *f, void *ctx)
{
	struct metrics_pool pool;

	pool_metrics_query(&pool);
	return metrics_render(f, &pool, NULL);
}

static int serve_metrics(const char *listen)
{
	struct avm_error err = { 0 };
	struct metrics_http *h = NULL;
	struct epoll_event ev = { .events = EPOLLIN }, evs[4];
	int sig_fd, ep, code = 0;

	if (metrics_http_start(listen, render_standalone, NULL, &h, &err) < 0)
		return cli_fail(&err);
	sig_fd = cli_block_signals();
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sig_fd < 0 || ep < 0) {
		cli_error("cannot set up the event loop: %s", strerror(errno));
		metrics_http_free(h);
		return EXIT_INTERNAL;
	}
	ev.data.u32 = 1;
	epoll_ctl(ep, EPOLL_CTL_ADD, metrics_http_fd(h), &ev);
	ev.data.u32 = 2;
	epoll_ctl(ep, EPOLL_CTL_ADD, sig_fd, &ev);
	fprintf(stderr, "agentvm: metrics on http://%s/metrics\n", metrics_http_address(h));
	for (bool stop = false; !stop;) {
		/* At least once a second: idle connections time out even when nothing else moves. */
		int n = epoll_wait(ep, evs, ARRAY_SIZE(evs), 1000);
		if (n < 0 && errno != EINTR) {
			cli_error("epoll_wait: %s", strerror(errno));
			code = EXIT_INTERNAL;
			break;
		}
		for (int i = 0; i < n; i++)
			if (evs[i].data.u32 == 2)
				stop = true;
		metrics_http_run(h);
	}
	metrics_http_free(h);
	close(ep);
	close(sig_fd);
	return code;
}

int cmd_metrics(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct avm_error err = { 0 };
	struct metrics_pool pool;
	const char *listen = NULL;
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'l') {
			listen = optarg;
		} else if (c == 'h') {
			puts("usage: agentvm metrics [--listen ADDR:PORT]\n"
			     "Print the Prometheus exposition text of this host's VMs once, or serve it\n"
			     "at http://ADDR:PORT/metrics until SIGINT/SIGTERM (read-only; bind a\n"
			     "loopback address such as 127.0.0.1:9464 unless a firewall guards it).");
			return 0;
		} else {
			cli_error("unknown or incomplete option '%s'; see 'agentvm metrics --help'",
				  argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cli_error("unexpected argument '%s'; usage: agentvm metrics [--listen ADDR:PORT]",
			  argv[optind]);
		return EXIT_USAGE;
	}
	if (listen)
		return serve_metrics(listen);
	pool_metrics_query(&pool);
	if (metrics_render(stdout, &pool, &err) < 0) {
		cli_error("%s", err.msg);
		return 1;
	}
	return 0;
}

/* ---- stats ------------------------------------------------------------------------------------ */

/* 1536 -> "1.5KiB" (binary units, like docker stats). */
static const char *human(uint64_t v, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double d = (double)v;
	size_t u = 0;

	while (d >= 1024 && u + 1 < ARRAY_SIZE(unit)) {
		d /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f%s" : "%.0f%s", d, unit[u]);
	return buf;
}

/* A double printed with 3 decimals (json-c would print 3.4300000000000002). */
static struct json_object *dbl3(double v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%.3f", v);
	return json_object_new_double_s(v, buf);
}

static struct json_object *sample_json(const struct vm_sample *s, double cpu)
{
	struct json_object *o = json_object_new_object(), *n;

#define I64(k, v) json_object_object_add(o, k, json_object_new_int64((int64_t)(v)))
	json_object_object_add(o, "name", json_object_new_string(s->name));
	json_object_object_add(o, "state", json_object_new_string(s->state));
	json_object_object_add(o, "cpu_percent", dbl3(cpu));
	json_object_object_add(o, "cpu_seconds", dbl3((double)s->cpu_ns / 1e9));
	I64("host_rss_bytes", s->rss_bytes);
	I64("host_pss_bytes", s->pss_bytes);
	if (s->have_guest) {
		I64("guest_mem_total_bytes", s->guest_mem_total);
		I64("guest_mem_used_bytes", s->guest_mem_total - s->guest_mem_available);
	}
	if (s->have_net) {
		n = json_object_new_object();
		json_object_object_add(n, "tx_bytes", json_object_new_int64((int64_t)s->net.tx_ok_bytes));
		json_object_object_add(n, "tx_packets",
				       json_object_new_int64((int64_t)s->net.tx_ok_packets));
		json_object_object_add(n, "rx_bytes", json_object_new_int64((int64_t)s->net.rx_ok_bytes));
		json_object_object_add(n, "rx_packets",
				       json_object_new_int64((int64_t)s->net.rx_ok_packets));
		json_object_object_add(n, "tx_drop_packets",
				       json_object_new_int64((int64_t)s->net.tx_drop_packets));
		json_object_object_add(n, "rx_drop_packets",
				       json_object_new_int64((int64_t)s->net.rx_drop_packets));
		json_object_object_add(o, "net", n);
	}
	I64("disk_overlay_bytes", s->disk_bytes);
	json_object_object_add(o, "uptime_s", dbl3(s->uptime_s));
	I64("execs", s->execs);
#undef I64
	return o;
}

static void print_row(const struct vm_sample *s, double cpu)
{
	char a[16], b[16], mem[40] = "-", net[48] = "-", drops[24] = "-", disk[16];

	if (s->have_guest)
		snprintf(mem, sizeof(mem), "%s / %s",
			 human(s->guest_mem_total - s->guest_mem_available, a, sizeof(a)),
			 human(s->guest_mem_total, b, sizeof(b)));
	if (s->have_net) {
		snprintf(net, sizeof(net), "%s / %s", human(s->net.tx_ok_bytes, a, sizeof(a)),
			 human(s->net.rx_ok_bytes, b, sizeof(b)));
		snprintf(drops, sizeof(drops), "%llu / %llu",
			 (unsigned long long)s->net.tx_drop_packets,
			 (unsigned long long)s->net.rx_drop_packets);
	}
	printf("%-20s %-8s %6.1f%% %9s %9s %-19s %-19s %-11s %9s %8.0fs %6llu\n", s->name, s->state,
	       cpu, s->live ? human(s->rss_bytes, a, sizeof(a)) : "-",
	       s->live ? human(s->pss_bytes, b, sizeof(b)) : "-", mem, net, drops,
	       human(s->disk_bytes, disk, sizeof(disk)), s->uptime_s, (unsigned long long)s->execs);
}

int cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "follow", no_argument, NULL, 'f' },
		{ "interval", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false, follow = false;
	long interval_ms = 1000;
	struct stats_set set;
	struct avm_error err = { 0 };
	int c, code = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "hf", opts, NULL)) != -1) {
		if (c == 'j') {
			json = true;
		} else if (c == 'f') {
			follow = true;
		} else if (c == 'i') {
			double d;
			char *end;
			errno = 0;
			d = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(d >= 0.1 && d <= 3600)) {
				cli_error("--interval '%s' is not a number of seconds from 0.1 to "
					  "3600",
					  optarg);
				return EXIT_USAGE;
			}
			interval_ms = (long)(d * 1000);
		} else if (c == 'h') {
			puts("usage: agentvm stats [NAME] [--json] [--follow] [--interval SECONDS]\n"
			     "Resource use of NAME (default: every live VM): CPU (% of one core, over\n"
			     "the interval, default 1 s), QEMU's host memory (RSS, PSS), the guest's\n"
			     "memory (used / total, from its agent), network bytes out / in and\n"
			     "dropped packets out / in (nft counters), disk overlay size, uptime,\n"
			     "commands run. --follow: a new sample every interval until Ctrl-C;\n"
			     "--json: one JSON array per sample.");
			return 0;
		} else {
			cli_error("unknown or incomplete option '%s'; see 'agentvm stats --help'",
				  argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1) {
		cli_error("usage: agentvm stats [NAME] [--json] [--follow] [--interval SECONDS]");
		return EXIT_USAGE;
	}
	const char *name = optind < argc ? argv[optind] : NULL;
	if (stats_set_open(&set, name, &err) < 0) {
		/* No such VM, or a root it cannot list: a refusal (1), not a crash. */
		if (err.kind == AVM_ERR_ERRNO && err.code != -ENOMEM)
			avm_error_kind(&err, AVM_ERR_STATE, err.code);
		return cli_fail(&err);
	}
	size_t n0, n1;
	struct vm_sample *s0 = calloc(stats_set_capacity(&set), sizeof(*s0)),
			 *s1 = calloc(stats_set_capacity(&set), sizeof(*s1));
	if (!s0 || !s1) {
		cli_error("out of memory");
		code = EXIT_INTERNAL;
		goto out;
	}
	stats_set_sample(&set, false, GUEST_TIMEOUT_MS, s0, &n0);
	do {
		struct timespec ts = { interval_ms / 1000, (interval_ms % 1000) * 1000000 };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		stats_set_sample(&set, true, GUEST_TIMEOUT_MS, s1, &n1);
		if (name && n1 == 0) { /* removed while we watched: nothing more will come */
			cli_error("VM %s is gone (removed); see agentvm ls", name);
			code = 1;
			break;
		}
		struct json_object *arr = json ? json_object_new_array() : NULL;
		if (!json)
			printf("%-20s %-8s %7s %9s %9s %-19s %-19s %-11s %9s %9s %6s\n", "NAME",
			       "STATE", "CPU", "RSS", "PSS", "GUEST MEM", "NET OUT / IN",
			       "DROPS O/I", "DISK", "UPTIME", "EXECS");
		for (size_t i = 0; i < n1; i++) {
			double cpu = 0;
			for (size_t k = 0; k < n0; k++)
				if (!strcmp(s0[k].name, s1[i].name))
					cpu = stats_cpu_percent(&s0[k], &s1[i]);
			if (json)
				json_object_array_add(arr, sample_json(&s1[i], cpu));
			else
				print_row(&s1[i], cpu);
		}
		if (json) {
			puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
			json_object_put(arr);
		} else if (follow) {
			putchar('\n');
		}
		if (fflush(stdout) != 0)
			break; /* the reader went away */
		struct vm_sample *t = s0;
		s0 = s1;
		s1 = t;
		n0 = n1;
	} while (follow);
out:
	stats_set_close(&set);
	free(s0);
	free(s1);
	return code;
}
