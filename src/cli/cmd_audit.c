/* SPDX-License-Identifier: MIT */
/* agentvm audit: read the audit log (src/obs/audit.h), filtered, and follow it. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "obs/audit.h"
#include "cli.h"
#include "base/util.h"
#include "state/vmstate.h"

#define USAGE "usage: agentvm audit [--vm NAME] [--since T] [--follow] [--json]"

struct show {
	bool json;
};

/* One event per line: time, event, VM, then its own fields as key=value. */
static int show_line(void *opaque, const char *line, struct json_object *ev)
{
	const struct show *sh = opaque;
	struct json_object *v;

	if (sh->json || !ev) {
		puts(line);
	} else {
		printf("%-29s %-16s %-20s",
		       json_object_object_get_ex(ev, "ts", &v) ? json_object_get_string(v) : "-",
		       json_object_object_get_ex(ev, "event", &v) ? json_object_get_string(v) : "-",
		       json_object_object_get_ex(ev, "vm", &v) ? json_object_get_string(v) : "-");
		json_object_object_foreach(ev, k, val)
		{
			if (!strcmp(k, "ts") || !strcmp(k, "event") || !strcmp(k, "vm") ||
			    !strcmp(k, "epoch_ms") || !strcmp(k, "pid"))
				continue;
			printf(" %s=%s", k,
			       json_object_is_type(val, json_type_string)
				       ? json_object_get_string(val)
				       : json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN));
		}
		putchar('\n');
	}
	fflush(stdout);
	return ferror(stdout) ? 1 : 0;
}

int cmd_audit(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vm", required_argument, NULL, 'v' },   { "since", required_argument, NULL, 's' },
		{ "follow", no_argument, NULL, 'f' },     { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },       { 0 },
	};
	struct audit_filter f = { 0 };
	struct show sh = { 0 };
	struct avm_error err = { 0 };
	bool follow = false;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+f", opts, NULL)) != -1) {
		switch (c) {
		case 'v':
			f.vm = optarg;
			break;
		case 's':
			if (audit_parse_since(optarg, realtime_ms(), &f.since_ms, &err) < 0) {
				cli_error("%s", err.msg);
				return EXIT_USAGE;
			}
			break;
		case 'f':
			follow = true;
			break;
		case 'j':
			sh.json = true;
			break;
		case 'h':
			printf("%s\n\nThe audit log (%s): VM lifecycle, execs, snapshots, the pool, network "
			       "policies, connections, drops and anomaly alerts, one JSON object a line.\n"
			       "  --vm NAME   only this VM's events\n"
			       "  --since T   from T on: 30s, 10m, 2h, 7d ago, a date (2026-12-06, New "
			       "York) or RFC 3339\n"
			       "  --follow    then wait for new events (Ctrl-C ends)\n"
			       "  --json      the raw JSON lines\n",
			       USAGE, audit_path());
			return 0;
		default:
			cli_error(USAGE);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cli_error("unexpected argument '%s'; " USAGE, argv[optind]);
		return EXIT_USAGE;
	}
	_cleanup_close_ int sig_fd = follow ? cli_block_signals() : -1;
	if (audit_read(&f, follow, sig_fd, show_line, &sh, &err) < 0) {
		cli_error("%s", err.msg);
		return 1;
	}
	return 0;
}
