/* SPDX-License-Identifier: MIT */
/* QMP-level debugging: `agentvm qmp NAME CMD [ARGS]`, `qmp NAME --shell`, `events NAME`. */
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "control/vmctl.h"
#include "qmp/qmp.h"
#include "state/statedir.h"
#include "base/util.h"
#include "state/vmstate.h"

#define JSON_OUT (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)
#define QMP_CLI_TIMEOUT_MS 30000

static void print_event(void *opaque, const char *event, struct json_object *data, int64_t sec,
			int64_t usec)
{
	printf("event %s %s\n", event,
	       data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "{}");
	fflush(stdout);
}

static int connect_qmp(const char *name, struct qmp_client **out, struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	int r = vm_open(name, &dir, NULL, err);

	return r < 0 ? r : vm_qmp_open(dir, out, err);
}

/* One command; prints the reply (or the QMP error) as JSON. 0 ok, 1 QMP error, <0 other. */
static int run_one(struct qmp_client *q, const char *cmd, const char *args_text)
{
	struct json_object *args = NULL, *ret = NULL;
	struct qmp_error qe = { 0 };
	int r;

	if (args_text && *args_text) {
		args = json_tokener_parse(args_text);
		if (!args || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			cli_error("arguments must be a JSON object, e.g. '{\"device\": \"x\"}'");
			return 2;
		}
	}
	r = qmp_client_execute(q, cmd, args, NULL, 0, &ret, QMP_CLI_TIMEOUT_MS, &qe);
	json_object_put(args);
	if (r < 0 && qe.klass[0]) {
		struct json_object *e = json_object_new_object(), *in = json_object_new_object();
		json_object_object_add(in, "class", json_object_new_string(qe.klass));
		json_object_object_add(in, "desc", json_object_new_string(qe.desc));
		json_object_object_add(e, "error", in);
		puts(json_object_to_json_string_ext(e, JSON_OUT));
		json_object_put(e);
		return 1;
	}
	if (r < 0) {
		cli_error("QMP %s: %s", cmd, qe.desc);
		return -1;
	}
	/* json-c pretty-prints {} over two lines; keep the empty reply on one. */
	bool empty = !ret || (json_object_is_type(ret, json_type_object) &&
			      json_object_object_length(ret) == 0);
	puts(empty ? "{}" : json_object_to_json_string_ext(ret, JSON_OUT));
	json_object_put(ret);
	fflush(stdout);
	return 0;
}

static int qmp_shell(struct qmp_client *q)
{
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;

	qmp_client_add_event_listener(q, print_event, NULL);
	for (;;) {
		struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN },
				       { .fd = qmp_client_fd(q), .events = POLLIN } };
		if (isatty(STDIN_FILENO)) {
			fputs("(qmp) ", stdout);
			fflush(stdout);
		}
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents) {
			if (qmp_client_process(q, NULL) < 0) {
				cli_error("QMP connection closed (the VM stopped)");
				rc = EXIT_VM_LOST;
				break;
			}
			if (!p[0].revents)
				continue;
		}
		ssize_t n = getline(&line, &cap, stdin);
		if (n < 0)
			break;
		line[strcspn(line, "\n")] = '\0';
		char *cmd = line + strspn(line, " \t");
		if (!*cmd || *cmd == '#')
			continue;
		char *args = cmd + strcspn(cmd, " \t");
		if (*args)
			*args++ = '\0';
		if (run_one(q, cmd, args) < 0) {
			rc = EXIT_VM_LOST;
			break;
		}
	}
	free(line);
	return rc;
}

int cmd_qmp(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct qmp_client *q = NULL;
	int r;

	if (argc < 3) {
		cli_error("usage: agentvm qmp NAME COMMAND ['{\"arg\": ...}'] | agentvm qmp NAME --shell");
		return EXIT_USAGE;
	}
	if (connect_qmp(argv[1], &q, &err) < 0)
		return cli_fail(&err);
	if (!strcmp(argv[2], "--shell"))
		r = qmp_shell(q);
	else {
		r = run_one(q, argv[2], argc > 3 ? argv[3] : NULL);
		if (r < 0)
			r = EXIT_VM_LOST;
	}
	qmp_client_free(q);
	return r;
}

/* One events.jsonl line, as JSON or as "TIME EVENT DATA". */
static void show_event_line(const char *line, bool json)
{
	struct json_object *o, *ev, *ts, *sec, *usec, *data;

	if (json) {
		fputs(line, stdout);
		return;
	}
	o = json_tokener_parse(line);
	if (!o || !json_object_object_get_ex(o, "event", &ev)) {
		json_object_put(o);
		return;
	}
	long long s = 0, us = 0;
	if (json_object_object_get_ex(o, "timestamp", &ts)) {
		if (json_object_object_get_ex(ts, "seconds", &sec))
			s = json_object_get_int64(sec);
		if (json_object_object_get_ex(ts, "microseconds", &usec))
			us = json_object_get_int64(usec);
	}
	time_t t = (time_t)s;
	struct tm tm;
	char when[32];
	localtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	json_object_object_get_ex(o, "data", &data);
	printf("%s.%06lld %s %s\n", when, us, json_object_get_string(ev),
	       data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "{}");
	json_object_put(o);
}

int cmd_events(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	struct avm_error err = { 0 };
	bool follow = false, json = false;
	const char *name = NULL;
	char path[PATH_MAX];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--follow") || !strcmp(argv[i], "-f"))
			follow = true;
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!name && argv[i][0] != '-')
			name = argv[i];
		else {
			cli_error("usage: agentvm events NAME [--follow] [--json]");
			return EXIT_USAGE;
		}
	}
	if (!name) {
		cli_error("usage: agentvm events NAME [--follow] [--json]");
		return EXIT_USAGE;
	}
	if (statedir_find(name, &dir, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	statedir_file(path, sizeof(path), dir, STATEDIR_EVENTS);
	int efd = statedir_open(dir, STATEDIR_EVENTS, O_RDONLY, 0);
	FILE *f = efd < 0 ? NULL : fdopen(efd, "r");
	if (!f) {
		if (efd >= 0)
			close(efd);
		cli_error("VM '%s' has no event log", name);
		return 1;
	}
	/* The supervisor appends whole lines; read what is there, then follow new lines. */
	char *line = NULL;
	size_t cap = 0;
	for (;;) {
		ssize_t n;
		while ((n = getline(&line, &cap, f)) > 0) {
			if (line[n - 1] != '\n') {
				fseek(f, -n, SEEK_CUR); /* a partial line: wait for the rest */
				break;
			}
			show_event_line(line, json);
		}
		fflush(stdout);
		clearerr(f);
		if (!follow)
			break;
		struct vm_state st;
		if (vmstate_read(dir, &st, NULL) < 0)
			break;
		vmstate_effective(dir, &st);
		if (!vmstate_is_up(st.state) && st.state != VMS_STARTING &&
		    st.state != VMS_STOPPING)
			break;
		struct timespec ts = { 0, 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
	free(line);
	fclose(f);
	return 0;
}
