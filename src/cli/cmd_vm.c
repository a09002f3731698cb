/* SPDX-License-Identifier: MIT */
/* Verbs on existing VMs: ls, inspect, pause, resume, stop, kill, rm, wait, logs, gc (vmctl.h). */
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vm/boot_cache.h"
#include "cli.h"
#include "pool/pool.h"
#include "base/strv.h"
#include "state/statedir.h"
#include "base/util.h"
#include "control/vmctl.h"
#include "state/vmstate.h"


static int need_name(int argc, char **argv, const char *usage)
{
	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
			printf("usage: %s\n", usage);
			return 0;
		}
		cli_error("missing VM name; usage: %s", usage);
		return EXIT_USAGE;
	}
	return -1;
}

static int pause_verb(const char *verb, bool pause, int argc, char **argv)
{
	char usage[64];
	struct avm_error err = { 0 };
	int r;

	snprintf(usage, sizeof(usage), "agentvm %s NAME", verb);
	if ((r = need_name(argc, argv, usage)) >= 0)
		return r;
	return vm_pause(argv[1], pause, &err) < 0 ? cli_fail(&err) : 0;
}

int cmd_pause(int argc, char **argv)
{
	return pause_verb("pause", true, argc, argv);
}

int cmd_resume(int argc, char **argv)
{
	return pause_verb("resume", false, argc, argv);
}

int cmd_stop(int argc, char **argv)
{
	struct avm_error err = { 0 };
	long grace_ms = 10000;
	int r;

	if ((r = need_name(argc, argv, "agentvm stop NAME [--grace SECONDS]")) >= 0)
		return r;
	if (argc >= 4 && !strcmp(argv[2], "--grace")) {
		if (parse_long(argv[3], 0, 3600, &grace_ms) < 0) {
			cli_error("--grace '%s' is not a number of seconds", argv[3]);
			return EXIT_USAGE;
		}
		grace_ms *= 1000;
	} else if (argc > 2) {
		cli_error("unexpected argument '%s'; usage: agentvm stop NAME [--grace SECONDS]",
			  argv[2]);
		return EXIT_USAGE;
	}
	return vm_stop(argv[1], grace_ms, &err) < 0 ? cli_fail(&err) : 0;
}

int cmd_kill(int argc, char **argv)
{
	struct avm_error err = { 0 };
	int r;

	if ((r = need_name(argc, argv, "agentvm kill NAME")) >= 0)
		return r;
	return vm_kill(argv[1], &err) < 0 ? cli_fail(&err) : 0;
}

int cmd_rm(int argc, char **argv)
{
	struct avm_error err = { 0 };
	bool force = false;
	int i = 1;

	if (argc >= 2 && (!strcmp(argv[1], "--force") || !strcmp(argv[1], "-f"))) {
		force = true;
		i = 2;
	}
	if (argc != i + 1) {
		cli_error("usage: agentvm rm [--force] NAME");
		return EXIT_USAGE;
	}
	return vm_remove(argv[i], force, &err) < 0 ? cli_fail(&err) : 0;
}

int cmd_gc(int argc, char **argv)
{
	struct avm_error err = { 0 };
	unsigned removed = 0, tpl = 0;

	vm_gc(&removed, NULL);
	/* A serve killed with -9 left its socket: nothing answers on it. */
	if (pool_sock_remove_stale() > 0)
		printf("removed a stale %s/%s\n", statedir_root(), POOL_SOCK);
	printf("removed %u VM%s\n", removed, removed == 1 ? "" : "s");
	/* Boot templates unused for long, over the size bound, or left by a killed build. */
	if (boot_cache_gc(&tpl, &err) < 0)
		cli_warn("boot templates: %s", err.msg);
	else if (tpl)
		printf("removed %u boot template%s\n", tpl, tpl == 1 ? "" : "s");
	return 0;
}

int cmd_inspect(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	struct avm_error err = { 0 };
	int r;

	if ((r = need_name(argc, argv, "agentvm inspect NAME")) >= 0)
		return r;
	if (vm_open(argv[1], &dir, NULL, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	struct json_object *o = vm_inspect_json(argv[1], dir);
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return 0;
}

int cmd_ls(int argc, char **argv)
{
	bool json = argc >= 2 && !strcmp(argv[1], "--json");
	const char *root = statedir_root();
	struct json_object *arr = json_object_new_array();
	char **names = NULL;
	int n;

	if (argc >= 2 && !json) {
		cli_error("usage: agentvm ls [--json]");
		return EXIT_USAGE;
	}
	n = statedir_list(&names);
	if (!json)
		printf("%-24s %-9s %-6s %5s %7s %9s %s\n", "NAME", "STATE", "ACCEL", "CPUS", "MEM",
		       "UPTIME", "REASON");
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s/%s", root, names[i]);
		struct json_object *o = vm_inspect_json(names[i], dir), *spec, *v;
		if (json) {
			json_object_array_add(arr, o);
		} else {
			int cpus = 0, mem = 0;
			if (json_object_object_get_ex(o, "spec", &spec)) {
				if (json_object_object_get_ex(spec, "cpus", &v))
					cpus = json_object_get_int(v);
				if (json_object_object_get_ex(spec, "memory_mib", &v))
					mem = json_object_get_int(v);
			}
			json_object_object_get_ex(o, "uptime_s", &v);
			double up = json_object_get_double(v);
			json_object_object_get_ex(o, "state", &v);
			const char *state = json_object_get_string(v);
			json_object_object_get_ex(o, "accel", &v);
			const char *accel = json_object_get_string(v);
			json_object_object_get_ex(o, "exit_reason", &v);
			printf("%-24s %-9s %-6s %5d %6dM %8.1fs %s\n", names[i], state, accel, cpus,
			       mem, up, json_object_get_string(v));
			if (json_object_object_get_ex(o, "error", &v))
				cli_warn("VM '%s': %s", names[i], json_object_get_string(v));
			json_object_put(o);
		}
	}
	strv_free(names);
	if (json)
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
	return 0;
}

int cmd_wait(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	struct avm_error err = { 0 };
	const char *want = "stopped";
	long timeout_s = 0;
	int r;

	if ((r = need_name(argc, argv,
			   "agentvm wait NAME [--state running|paused|stopped] [--timeout S]")) >= 0)
		return r;
	for (int i = 2; i < argc; i += 2) {
		if (i + 1 >= argc) {
			cli_error("option '%s' needs a value", argv[i]);
			return EXIT_USAGE;
		}
		if (!strcmp(argv[i], "--state") &&
		    (!strcmp(argv[i + 1], "running") || !strcmp(argv[i + 1], "paused") ||
		     !strcmp(argv[i + 1], "stopped")))
			want = argv[i + 1];
		else if (!strcmp(argv[i], "--timeout") &&
			 parse_long(argv[i + 1], 0, 86400, &timeout_s) == 0)
			;
		else {
			cli_error("bad option '%s %s'; use --state running|paused|stopped or "
				  "--timeout SECONDS",
				  argv[i], argv[i + 1]);
			return EXIT_USAGE;
		}
	}
	if (vm_open(argv[1], &dir, NULL, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	uint64_t deadline = now_ms() + (uint64_t)timeout_s * 1000;
	for (;;) {
		struct vm_state st;
		if (vmstate_read(dir, &st, NULL) < 0) {
			cli_error("VM '%s' disappeared", argv[1]);
			return 1;
		}
		vmstate_effective(dir, &st);
		bool stopped = !vmstate_is_live(st.state);
		const char *now = vmstate_name(st.state);
		if (!strcmp(now, want) || (!strcmp(want, "stopped") && stopped)) {
			printf("%s\n", now);
			return 0;
		}
		if (stopped) {
			cli_error("VM '%s' is %s and will never be %s", argv[1], now, want);
			return 1;
		}
		if (timeout_s && now_ms() >= deadline) {
			cli_error("timed out waiting for VM '%s' to be %s (it is %s)", argv[1], want,
				  now);
			return EXIT_TIMEOUT;
		}
		util_sleep_ms(20);
	}
}

int cmd_logs(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	struct avm_error err = { 0 };
	char buf[65536];
	bool follow = argc >= 3 && (!strcmp(argv[2], "--follow") || !strcmp(argv[2], "-f"));
	int r;

	if ((r = need_name(argc, argv, "agentvm logs NAME [--follow]")) >= 0)
		return r;
	if (vm_open(argv[1], &dir, NULL, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	_cleanup_close_ int fd = statedir_open(dir, STATEDIR_CONSOLE_LOG, O_RDONLY, 0);
	if (fd == -ELOOP) {
		cli_error("%s/console.log is a symlink (planted?); not followed: remove it", dir);
		return 1;
	}
	if (fd < 0) {
		cli_error("VM '%s' has no console log yet", argv[1]);
		return 1;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
				return 0;
			continue;
		}
		if (!follow)
			return 0;
		struct vm_state st;
		if (vmstate_read(dir, &st, NULL) < 0)
			return 0;
		vmstate_effective(dir, &st);
		if (!vmstate_is_live(st.state)) {
			/* One last read for what was written just before the end. */
			while ((n = read(fd, buf, sizeof(buf))) > 0)
				write_all(STDOUT_FILENO, buf, (size_t)n);
			return 0;
		}
		util_sleep_ms(100);
	}
}
