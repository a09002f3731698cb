/* SPDX-License-Identifier: MIT */
/* agentvm serve --pool (the daemon is src/pool/pool.c) and agentvm pool acquire|release|status. */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report/metrics_http.h"
#include "pool/pool.h"
#include "state/statedir.h"
#include "base/util.h"

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pool", required_argument, NULL, 'p' },
		{ "pool-pod", no_argument, NULL, 'P' },
		{ "pool-run", no_argument, NULL, 'R' },
		{ "profile", required_argument, NULL, 'r' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "memory", required_argument, NULL, 'y' },
		{ "accel", required_argument, NULL, 'a' },
		{ "image", required_argument, NULL, 'i' },
		{ "pool-min", required_argument, NULL, 'm' },
		{ "pool-max", required_argument, NULL, 'M' },
		{ "pool-ttl", required_argument, NULL, 't' },
		{ "boot-timeout", required_argument, NULL, 'b' },
		{ "metrics-listen", required_argument, NULL, 'L' },
		CLI_NET_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct pool_opts o = { .min = 1, .max = 4, .boot_timeout_s = CLI_DEFAULT_BOOT_TIMEOUT_S };
	struct pool_opts *p = &o;
	struct cli_net_override no = { .spec = vm_spec_new() };
	struct avm_error err = { 0 };
	const char *profile = NULL, *cpus = NULL, *memory = NULL, *accel = NULL, *image = NULL;
	int c, r;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		long *slot = c == 'm' ? &p->min : c == 'M' ? &p->max : c == 't' ? &p->ttl_s :
			     c == 'b' ? &p->boot_timeout_s : NULL;
		if ((r = cli_net_override_flag(&no, c, optarg, &err)) != 0) {
			if (r < 0) {
				cli_error("%s", err.msg);
				vm_spec_free(no.spec);
				return EXIT_USAGE;
			}
		} else if (c == 'p') {
			p->snap = optarg;
		} else if (c == 'P') {
			p->pod = true;
		} else if (c == 'R') {
			p->run = true;
		} else if (c == 'r' || c == 'c' || c == 'y' || c == 'a' || c == 'i') {
			*(c == 'r'   ? &profile
			  : c == 'c' ? &cpus
			  : c == 'y' ? &memory
			  : c == 'a' ? &accel
				     : &image) = optarg;
		} else if (c == 'L') {
			if (metrics_http_check(optarg, &err) < 0) {
				cli_error("--metrics-listen: %s", err.msg);
				vm_spec_free(no.spec);
				return EXIT_USAGE;
			}
			p->metrics_listen = optarg;
		} else if (slot) {
			if (parse_long(optarg, 0, c == 't' ? 30 * 86400 : POOL_MAX_VMS, slot) < 0) {
				cli_error("'%s' is not a valid value for %s", optarg,
					  argv[optind - 1]);
				vm_spec_free(no.spec);
				return EXIT_USAGE;
			}
		} else if (c == 'h') {
			puts("usage: agentvm serve --pool SNAPSHOT [--pool-min N] [--pool-max M] "
			     "[--pool-ttl SECONDS]\n"
			     "       agentvm serve --pool-pod|--pool-run [--profile P] [--cpus N] "
			     "[--memory MIB] [--accel A] [--pool-min N] ...\n"
			     "       (--pool-run also [--image NAME])\n"
			     "       [--network MODE] [--allow PROTO:PORT]... [--allow-host PROTO:PORT]...\n"
			     "       [--deny-all-egress] [--dns ADDR] [--allow-cidr CIDR[:PROTO:PORT]]...\n"
			     "       [--allow-domain NAME]... [--domain-ttl S] [--conn-limit N]\n"
			     "       [--conn-rate N] [--bandwidth RATE[:BURST]]"
			     " [--metrics-listen ADDR:PORT]\n"
			     "Keep N..M VMs restored from SNAPSHOT ready for 'agentvm pool acquire'.\n"
			     "The network flags replace the snapshot's policy, as for restore.\n"
			     "--pool-pod keeps VMs started (from a boot template) for the\n"
			     "containerd shim's pods instead: each with its empty pod directory\n"
			     "shared as /mnt/rootfs, the network isolated unless --network says\n"
			     "otherwise.\n"
			     "--pool-run keeps VMs started (from a boot template) as 'agentvm run'\n"
			     "with the same flags would boot them, each warmed up by one command:\n"
			     "such a run (no --name, --cold, --keep-state or copies) takes one.\n"
			     "--metrics-listen serves Prometheus metrics at http://ADDR:PORT/metrics\n"
			     "(read-only; bind a loopback address unless a firewall guards it).");
			vm_spec_free(no.spec);
			return 0;
		} else {
			cli_error("unknown or incomplete option '%s'; see 'agentvm serve --help'",
				  argv[optind - 1]);
			vm_spec_free(no.spec);
			return EXIT_USAGE;
		}
	}
	int code = 0;
	/* The profile first: --cpus and --memory override it, as for start. */
	if ((profile && vm_spec_set_profile(no.spec, profile, &err) < 0) ||
	    (cpus && vm_spec_set_cpus(no.spec, cpus, &err) < 0) ||
	    (memory && vm_spec_set_memory(no.spec, memory, &err) < 0) ||
	    (accel && vm_spec_set_accel(no.spec, accel, &err) < 0)) {
		cli_error("%s", err.msg);
		code = EXIT_USAGE;
	} else if ((profile || cpus || memory || accel) && !p->pod && !p->run) {
		cli_error("--profile, --cpus, --memory and --accel are for --pool-pod and --pool-run "
			  "(a snapshot has its own)");
		code = EXIT_USAGE;
	} else if (image && !p->run) {
		cli_error("--image is for --pool-run (a snapshot has its own root; the shim's pods "
			  "take theirs from its settings)");
		code = EXIT_USAGE;
	} else if (image && vm_spec_set_image(no.spec, image, &err) < 0) {
		/* Resolved now: the pool's VMs are of this content, and so are the runs they serve. */
		cli_error("%s", err.msg);
		code = EXIT_USAGE; /* as run --image */
	} else if ((p->snap != NULL) + p->pod + p->run != 1 || optind != argc) {
		cli_error("usage: agentvm serve --pool SNAPSHOT | --pool-pod | --pool-run "
			  "[--pool-min N] [--pool-max M] [--pool-ttl S] [network flags]");
		code = EXIT_USAGE;
	} else if (p->max < 1 || p->min > p->max) {
		cli_error("--pool-min (%ld) must not exceed --pool-max (%ld), and max must be >= 1",
			  p->min, p->max);
		code = EXIT_USAGE;
	} else {
		p->net_override = no.spec;
		p->net_mode_given = no.mode_given;
		p->policy_given = no.policy_given;
		if (pool_serve(p, &err) < 0)
			code = cli_fail(&err);
	}
	vm_spec_free(no.spec);
	return code;
}

int cmd_pool(int argc, char **argv)
{
	struct avm_error err = { 0 };
	static char buf[1 << 20];

	if (argc >= 2 && !strcmp(argv[1], "acquire")) {
		long timeout_s = 30;
		if (argc == 4 && !strcmp(argv[2], "--timeout")) {
			if (parse_long(argv[3], 0, 86400, &timeout_s) < 0) {
				cli_error("--timeout '%s' is not a number of seconds", argv[3]);
				return EXIT_USAGE;
			}
		} else if (argc != 2) {
			cli_error("usage: agentvm pool acquire [--timeout SECONDS]");
			return EXIT_USAGE;
		}
		if (pool_acquire(timeout_s, buf, sizeof(buf), &err) < 0)
			return cli_fail(&err);
		puts(buf);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "release"))
		return pool_release(argv[2], &err) < 0 ? cli_fail(&err) : 0;
	if (!(argc >= 2 && !strcmp(argv[1], "status") &&
	      (argc == 2 || (argc == 3 && !strcmp(argv[2], "--json"))))) {
		cli_error("usage: agentvm pool acquire [--timeout S] | release NAME | status [--json]");
		return EXIT_USAGE;
	}
	if (pool_status(buf, sizeof(buf), &err) < 0)
		return cli_fail(&err);
	struct json_object *o = json_tokener_parse(buf), *v;
	if (argc == 3 || !o) {
		puts(o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								   JSON_C_TO_STRING_SPACED)
		       : buf);
	} else {
		int r = 0, s = 0, l = 0;
		if (json_object_object_get_ex(o, "ready", &v))
			r = json_object_get_int(v);
		if (json_object_object_get_ex(o, "starting", &v))
			s = json_object_get_int(v);
		if (json_object_object_get_ex(o, "leased", &v))
			l = json_object_get_int(v);
		const char *snap = json_object_object_get_ex(o, "snapshot", &v)
					   ? json_object_get_string(v)
					   : NULL;
		bool run = json_object_object_get_ex(o, "run", &v) && json_object_get_boolean(v);
		if (snap)
			printf("pool of '%s': %d ready, %d starting, %d acquired\n", snap, r, s, l);
		else
			printf("pool of %s: %d ready, %d starting, %d acquired\n",
			       run ? "VMs for agentvm run" : "pod VMs", r, s, l);
	}
	json_object_put(o);
	return 0;
}
