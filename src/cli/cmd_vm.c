/* SPDX-License-Identifier: MIT */
/* Verbs on existing VMs: ls, inspect, pause, resume, stop, kill, rm, wait, logs, gc. */
#include <dirent.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent_conn.h"
#include "boot_cache.h"
#include "cli.h"
#include "pool.h"
#include "net.h"
#include "strv.h"
#include "qmp.h"
#include "statedir.h"
#include "util.h"
#include "vmstate.h"


static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Find the VM and take its lock (released when the process exits or *lock_fd is closed). */
static int open_vm(const char *name, char **dir, int *lock_fd, struct avm_error *err)
{
	char path[PATH_MAX];
	int r = statedir_find(name, dir, err);

	if (r < 0 || !lock_fd)
		return r;
	statedir_file(path, sizeof(path), *dir, "lock");
	*lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX) < 0)
		return avm_error_setx(err, -errno, "cannot lock VM '%s'", name);
	return 0;
}

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

/* Wait until the VM's recorded state leaves the live set (or its owner vanished). */
static bool wait_not_live(const char *dir, long ms)
{
	struct vm_state st;

	for (long waited = 0;; waited += 20) {
		if (vmstate_read(dir, &st, NULL) < 0)
			return true;
		vmstate_effective(dir, &st);
		if (!vmstate_is_live(st.state))
			return true;
		if (waited >= ms)
			return false;
		sleep_ms(20);
	}
}

int cli_qmp_open(const char *dir, struct qmp_client **out, struct avm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct qmp_error qe = { 0 };
	int fd, r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/qmp.sock", dir);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return avm_error_setx(err, r, "cannot connect to %s (is the VM running?)",
				      sa.sun_path);
	}
	*out = qmp_client_new(fd);
	if (!*out) {
		close(fd);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	r = qmp_client_handshake(*out, 5000, &qe);
	if (r < 0) {
		qmp_client_free(*out);
		*out = NULL;
		return avm_error_set(err, r, "QMP handshake failed: %s", qe.desc);
	}
	return 0;
}

static int qmp_simple(const char *verb, const char *cmd, int argc, char **argv)
{
	char usage[64];
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	struct avm_error err = { 0 };
	struct qmp_error qe = { 0 };
	struct qmp_client *q = NULL;
	struct vm_state st;
	int r;

	snprintf(usage, sizeof(usage), "agentvm %s NAME", verb);
	if ((r = need_name(argc, argv, usage)) >= 0)
		return r;
	if (open_vm(argv[1], &dir, &lock, &err) < 0 || vmstate_read(dir, &st, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	vmstate_effective(dir, &st);
	if (strcmp(st.state, "running") != 0 && strcmp(st.state, "paused") != 0) {
		cli_error("VM '%s' is %s; only a running or paused VM can be %sd", argv[1], st.state,
			  verb);
		return 1;
	}
	r = cli_qmp_open(dir, &q, &err);
	if (r == 0)
		r = qmp_client_execute(q, cmd, NULL, NULL, 0, NULL, 5000, &qe);
	qmp_client_free(q);
	if (r < 0) {
		cli_error("%s %s: %s", verb, argv[1], err.msg[0] ? err.msg : qe.desc);
		return EXIT_VM_LOST;
	}
	/* The supervisor records the state from the STOP/RESUME event; wait for it, briefly. */
	const char *want = !strcmp(cmd, "stop") ? "paused" : "running";
	for (int i = 0; i < 100; i++) {
		if (vmstate_read(dir, &st, NULL) == 0 && !strcmp(st.state, want))
			break;
		sleep_ms(10);
	}
	return 0;
}

int cmd_pause(int argc, char **argv)
{
	return qmp_simple("pause", "stop", argc, argv);
}

int cmd_resume(int argc, char **argv)
{
	return qmp_simple("resume", "cont", argc, argv);
}

/* Send POWEROFF through the supervisor's agent socket. */
static int agent_poweroff(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct agent_conn c;
	int fd, r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/agent.sock", dir);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	agent_conn_init(&c, fd);
	r = agent_conn_send(&c, AVM_MSG_POWEROFF, 1, NULL, 0);
	for (int i = 0; r == 0 && agent_conn_pending(&c) && i < 100; i++) {
		sleep_ms(5);
		r = agent_conn_flush(&c);
	}
	agent_conn_release(&c);
	close(fd);
	return r;
}

static void kill_qemu(const char *dir, const struct vm_state *st)
{
	proc_kill(st->qemu_pid, st->qemu_start, SIGKILL);
}

/* The supervisor is gone but QEMU was killed: nobody else will write down what happened. */
static void record_if_orphaned(const char *dir, const char *reason)
{
	struct vm_state st;

	if (vmstate_read(dir, &st, NULL) < 0 || !vmstate_is_live(st.state))
		return;
	if (proc_is(st.supervisor_pid, st.supervisor_start))
		return;
	snprintf(st.state, sizeof(st.state), "stopped");
	snprintf(st.exit_reason, sizeof(st.exit_reason), "%s", reason);
	st.stopped_ms = realtime_ms();
	vmstate_write(dir, &st);
}

int cmd_stop(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	struct avm_error err = { 0 };
	struct vm_state st;
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
	if (open_vm(argv[1], &dir, &lock, &err) < 0 || vmstate_read(dir, &st, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	vmstate_effective(dir, &st);
	if (!vmstate_is_live(st.state))
		return 0; /* already stopped: stop is idempotent */
	/* 1: ask the guest agent (clean: syncs, then the VM exits). A paused guest cannot answer. */
	if (strcmp(st.state, "paused") != 0 && agent_poweroff(dir) == 0 &&
	    wait_not_live(dir, grace_ms / 2))
		return 0;
	/* 2: ACPI power button (a no-op for guests without ACPI, like ours; kept for others). */
	struct qmp_client *q = NULL;
	if (cli_qmp_open(dir, &q, NULL) == 0) {
		qmp_client_execute(q, "system_powerdown", NULL, NULL, 0, NULL, 2000, NULL);
		qmp_client_free(q);
		if (wait_not_live(dir, grace_ms / 2))
			return 0;
	}
	/* 3: kill. */
	kill_qemu(dir, &st);
	if (!wait_not_live(dir, 5000))
		record_if_orphaned(dir, "killed");
	return 0;
}

int cmd_kill(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	struct avm_error err = { 0 };
	struct vm_state st;
	int r;

	if ((r = need_name(argc, argv, "agentvm kill NAME")) >= 0)
		return r;
	if (open_vm(argv[1], &dir, &lock, &err) < 0 || vmstate_read(dir, &st, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	kill_qemu(dir, &st);
	if (!wait_not_live(dir, 5000))
		record_if_orphaned(dir, "killed");
	return 0;
}

/* Remove a VM whose processes are gone (or, forced, make them gone first). */
static int remove_vm(const char *name, const char *dir, bool force)
{
	struct vm_state st;

	if (vmstate_read(dir, &st, NULL) == 0) {
		vmstate_effective(dir, &st);
		if (vmstate_is_live(st.state) && !force) {
			cli_error("VM '%s' is %s; stop it first ('agentvm stop %s') or use rm --force",
				  name, st.state, name);
			return 1;
		}
		kill_qemu(dir, &st);
		/*
		 * A live supervisor writes the exit down, then tears the network down and exits: let
		 * it. Killed half-way (as soon as the state said stopped), it left this process to redo
		 * that teardown from a cold start and to wait out its own dying closes in 20 ms polls
		 * (~60-90 ms of every rm of a nat-filtered VM, bench/net.sh). A stuck one is killed.
		 */
		proc_wait_gone(st.supervisor_pid, st.supervisor_start, 5000);
		wait_not_live(dir, 5000);
		proc_kill(st.supervisor_pid, st.supervisor_start, SIGKILL);
		/* Give the supervisor a moment to finish removing its sockets. */
		for (int i = 0; i < 250 && (proc_is(st.supervisor_pid, st.supervisor_start) ||
					    proc_is(st.qemu_pid, st.qemu_start));
		     i++)
			sleep_ms(20);
	}
	/* A killed supervisor never tore down its VM's tap, rules and lease. */
	net_teardown_dir(dir);
	if (statedir_remove(dir) < 0) {
		cli_error("cannot remove %s: %s", dir, strerror(errno));
		return EXIT_INTERNAL;
	}
	return 0;
}

int cmd_rm(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
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
	if (open_vm(argv[i], &dir, &lock, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	return remove_vm(argv[i], dir, force);
}

int cmd_gc(int argc, char **argv)
{
	const char *root = statedir_root();
	DIR *d = opendir(root);
	struct dirent *e;
	int removed = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char dir[PATH_MAX];
		if (e->d_name[0] == '.' || statedir_validate_name(e->d_name, NULL) < 0)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
		if (vmstate_dir_may_be_live(dir))
			continue;
		if (remove_vm(e->d_name, dir, true) == 0)
			removed++;
	}
	closedir(d);
	/* A serve killed with -9 left its socket: nothing answers on it. */
	if (pool_sock_remove_stale() > 0)
		printf("removed a stale %s/%s\n", root, POOL_SOCK);
	printf("removed %d VM%s\n", removed, removed == 1 ? "" : "s");
	/* Boot templates unused for long, over the size bound, or left by a killed build. */
	unsigned tpl = 0;
	struct avm_error err = { 0 };
	if (boot_cache_gc(&tpl, &err) < 0)
		cli_warn("boot templates: %s", err.msg);
	else if (tpl)
		printf("removed %u boot template%s\n", tpl, tpl == 1 ? "" : "s");
	return 0;
}

static struct json_object *read_json_file(const char *dir, const char *file)
{
	char path[PATH_MAX];
	_cleanup_free_ char *buf = NULL;

	statedir_file(path, sizeof(path), dir, file);
	if (read_file(path, &buf, 1 << 20) < 0)
		return NULL;
	return json_tokener_parse(buf);
}

static struct json_object *vm_json(const char *name, const char *dir)
{
	struct json_object *o = json_object_new_object(), *spec = read_json_file(dir, "spec.json");
	struct vm_state st;
	char path[PATH_MAX];

	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "dir", json_object_new_string(dir));
	if (vmstate_read(dir, &st, NULL) < 0)
		snprintf(st.state, sizeof(st.state), "unknown");
	vmstate_effective(dir, &st);
	json_object_object_add(o, "state", json_object_new_string(st.state));
	json_object_object_add(o, "accel", json_object_new_string(st.accel));
	json_object_object_add(o, "exit_reason", json_object_new_string(st.exit_reason));
	json_object_object_add(o, "exit_status", json_object_new_int(st.exit_status));
	if (st.error[0])
		json_object_object_add(o, "error", json_object_new_string(st.error));
	json_object_object_add(o, "supervisor_pid", json_object_new_int(st.supervisor_pid));
	json_object_object_add(o, "qemu_pid", json_object_new_int(st.qemu_pid));
	int64_t end = vmstate_is_live(st.state) ? realtime_ms() : st.stopped_ms;
	json_object_object_add(o, "uptime_s",
			       json_object_new_double(st.created_ms && end > st.created_ms ?
							      (double)(end - st.created_ms) / 1000.0 :
							      0.0));
	json_object_object_add(o, "created_ms", json_object_new_int64(st.created_ms));
	struct json_object *socks = json_object_new_object();
	static const char *const files[] = { "qmp.sock", "agent.sock", "console.log",
					     "events.jsonl", "qemu.log" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		statedir_file(path, sizeof(path), dir, files[i]);
		if (access(path, F_OK) == 0)
			json_object_object_add(socks, files[i], json_object_new_string(path));
	}
	json_object_object_add(o, "files", socks);
	if (spec)
		json_object_object_add(o, "spec", spec);
	struct json_object *net = read_json_file(dir, "net.json");
	if (net)
		json_object_object_add(o, "network", net);
	return o;
}

int cmd_inspect(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	struct avm_error err = { 0 };
	int r;

	if ((r = need_name(argc, argv, "agentvm inspect NAME")) >= 0)
		return r;
	if (open_vm(argv[1], &dir, NULL, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	struct json_object *o = vm_json(argv[1], dir);
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
		struct json_object *o = vm_json(names[i], dir), *spec, *v;
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
	if (open_vm(argv[1], &dir, NULL, &err) < 0) {
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
		if (!strcmp(st.state, want) || (!strcmp(want, "stopped") && stopped)) {
			printf("%s\n", st.state);
			return 0;
		}
		if (stopped) {
			cli_error("VM '%s' is %s and will never be %s", argv[1], st.state, want);
			return 1;
		}
		if (timeout_s && now_ms() >= deadline) {
			cli_error("timed out waiting for VM '%s' to be %s (it is %s)", argv[1], want,
				  st.state);
			return EXIT_TIMEOUT;
		}
		sleep_ms(20);
	}
}

int cmd_logs(int argc, char **argv)
{
	_cleanup_free_ char *dir = NULL;
	struct avm_error err = { 0 };
	char path[PATH_MAX], buf[65536];
	bool follow = argc >= 3 && (!strcmp(argv[2], "--follow") || !strcmp(argv[2], "-f"));
	int r;

	if ((r = need_name(argc, argv, "agentvm logs NAME [--follow]")) >= 0)
		return r;
	if (open_vm(argv[1], &dir, NULL, &err) < 0) {
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	statedir_file(path, sizeof(path), dir, "console.log");
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
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
		sleep_ms(100);
	}
}
