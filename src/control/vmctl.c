/* SPDX-License-Identifier: MIT */
/* Verbs on existing VMs (vmctl.h): the stop escalation, removal and gc. */
#include <dirent.h>
#include <json-c/json.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm/agent_conn.h"
#include "spec/spec.h"
#include "jail/jail.h"
#include "net/net.h"
#include "qmp/qmp.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/vm.h"
#include "control/vmctl.h"
#include "state/vmstate.h"

int vm_open(const char *name, char **dir, int *lock_fd, struct avm_error *err)
{
	int r = statedir_find(name, dir, err);

	if (r < 0 || !lock_fd)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	*lock_fd = statedir_open(*dir, STATEDIR_LOCK, O_RDWR | O_CREAT, 0600);
	if (*lock_fd < 0)
		errno = -*lock_fd;
	if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE,
				      avm_error_setx(err, -errno, "cannot lock VM '%s'", name));
	return 0;
}

/* vm_open, then read its effective state. */
static int open_state(const char *name, char **dir, int *lock, struct vm_state *st,
		      struct avm_error *err)
{
	int r = vm_open(name, dir, lock, err);

	if (r == 0 && (r = vmstate_read(*dir, st, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	if (r == 0)
		vmstate_effective(*dir, st);
	return r;
}

bool vm_wait_not_live(const char *dir, long ms)
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
		util_sleep_ms(20);
	}
}

int vm_qmp_open(const char *dir, struct qmp_client **out, struct avm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct qmp_error qe = { 0 };
	int fd, r;

	if (statedir_sockaddr(&sa, dir, STATEDIR_QMP_SOCK) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE,
				      avm_error_set(err, -ENAMETOOLONG,
						    "state dir %s is too long for a socket path", dir));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return avm_error_kind(err, AVM_ERR_VM_LOST,
				      avm_error_setx(err, r, "cannot connect to %s (is the VM running?)",
						     sa.sun_path));
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
		return avm_error_kind(err, AVM_ERR_VM_LOST,
				      avm_error_set(err, r, "QMP handshake failed: %s", qe.desc));
	}
	return 0;
}

int vm_pause(const char *name, bool pause, struct avm_error *err)
{
	const char *verb = pause ? "pause" : "resume", *cmd = pause ? "stop" : "cont";
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	struct avm_error e = { 0 };
	struct qmp_error qe = { 0 };
	struct qmp_client *q = NULL;
	struct vm_state st;
	int r;

	if ((r = open_state(name, &dir, &lock, &st, err)) < 0)
		return r;
	if (!vmstate_is_up(st.state))
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_set(err, -EBUSY,
						    "VM '%s' is %s; only a running or paused VM can "
						    "be %sd",
						    name, vmstate_name(st.state), verb));
	r = vm_qmp_open(dir, &q, &e);
	if (r == 0)
		r = qmp_client_execute(q, cmd, NULL, NULL, 0, NULL, 5000, &qe);
	qmp_client_free(q);
	if (r < 0)
		return avm_error_kind(err, AVM_ERR_VM_LOST,
				      avm_error_set(err, r, "%s %s: %s", verb, name,
						    e.msg[0] ? e.msg : qe.desc));
	/* The supervisor records the state from the STOP/RESUME event; wait for it, briefly. */
	enum vm_run_state want = pause ? VMS_PAUSED : VMS_RUNNING;
	for (int i = 0; i < 100; i++) {
		if (vmstate_read(dir, &st, NULL) == 0 && st.state == want)
			break;
		util_sleep_ms(10);
	}
	return 0;
}

/* Send POWEROFF through the supervisor's agent socket. */
static int agent_poweroff(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct agent_conn c;
	int fd, r;

	if (statedir_sockaddr(&sa, dir, STATEDIR_AGENT_SOCK) < 0)
		return -ENAMETOOLONG;
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
		util_sleep_ms(5);
		r = agent_conn_flush(&c);
	}
	agent_conn_release(&c);
	close(fd);
	return r;
}

/* The supervisor is gone but QEMU was killed: nobody else will write down what happened. */
static void record_if_orphaned(const char *dir, const char *reason)
{
	struct vm_state st;

	if (vmstate_read(dir, &st, NULL) < 0 || !vmstate_is_live(st.state))
		return;
	if (proc_is(st.supervisor_pid, st.supervisor_start))
		return;
	st.state = VMS_STOPPED;
	snprintf(st.exit_reason, sizeof(st.exit_reason), "%s", reason);
	st.stopped_ms = realtime_ms();
	vmstate_write(dir, &st);
}

static void kill_and_record(const char *dir, const struct vm_state *st)
{
	proc_kill(st->qemu_pid, st->qemu_start, SIGKILL);
	if (!vm_wait_not_live(dir, 5000))
		record_if_orphaned(dir, "killed");
}

int vm_stop(const char *name, long grace_ms, struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	struct vm_state st;
	int r;

	if ((r = open_state(name, &dir, &lock, &st, err)) < 0)
		return r;
	if (!vmstate_is_live(st.state))
		return 0; /* already stopped: stop is idempotent */
	/* 1: ask the guest agent (clean: syncs, then the VM exits). A paused guest cannot answer. */
	if (st.state != VMS_PAUSED && agent_poweroff(dir) == 0 &&
	    vm_wait_not_live(dir, grace_ms / 2))
		return 0;
	/* 2: ACPI power button (a no-op for guests without ACPI, like ours; kept for others). */
	struct qmp_client *q = NULL;
	if (vm_qmp_open(dir, &q, NULL) == 0) {
		qmp_client_execute(q, "system_powerdown", NULL, NULL, 0, NULL, 2000, NULL);
		qmp_client_free(q);
		if (vm_wait_not_live(dir, grace_ms / 2))
			return 0;
	}
	/* 3: kill. */
	kill_and_record(dir, &st);
	return 0;
}

int vm_kill(const char *name, struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	struct vm_state st;
	int r;

	if ((r = vm_open(name, &dir, &lock, err)) < 0)
		return r;
	if ((r = vmstate_read(dir, &st, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	kill_and_record(dir, &st);
	return 0;
}

/* Remove a VM whose processes are gone (or, forced, make them gone first). */
static int remove_dir(const char *name, const char *dir, bool force, struct avm_error *err)
{
	struct vm_state st;

	if (vmstate_read(dir, &st, NULL) == 0) {
		vmstate_effective(dir, &st);
		if (vmstate_is_live(st.state) && !force)
			return avm_error_kind(err, AVM_ERR_STATE,
					      avm_error_set(err, -EBUSY,
							    "VM '%s' is %s; stop it first ('agentvm "
							    "stop %s') or use rm --force",
							    name, vmstate_name(st.state), name));
		proc_kill(st.qemu_pid, st.qemu_start, SIGKILL);
		/*
		 * A live supervisor writes the exit down, then tears the network down and exits: let
		 * it. Killed half-way (as soon as the state said stopped), it left this process to redo
		 * that teardown from a cold start and to wait out its own dying closes in 20 ms polls
		 * (~60-90 ms of every rm of a nat-filtered VM, bench/net.sh). A stuck one is killed.
		 */
		proc_wait_gone(st.supervisor_pid, st.supervisor_start, 5000);
		vm_wait_not_live(dir, 5000);
		proc_kill(st.supervisor_pid, st.supervisor_start, SIGKILL);
		/* Give the supervisor a moment to finish removing its sockets. */
		for (int i = 0; i < 250 && (proc_is(st.supervisor_pid, st.supervisor_start) ||
					    proc_is(st.qemu_pid, st.qemu_start));
		     i++)
			util_sleep_ms(20);
	}
	/* A killed supervisor never tore down its VM's tap, rules and lease. */
	net_teardown_dir(dir);
	jail_release_dir(dir); /* and its cgroups */
	if (vm_dir_remove(dir) < 0)
		return avm_error_kind(err, AVM_ERR_INTERNAL,
				      avm_error_setx(err, -errno, "cannot remove %s", dir));
	return 0;
}

int vm_remove(const char *name, bool force, struct avm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int lock = -1;
	int r = vm_open(name, &dir, &lock, err);

	return r < 0 ? r : remove_dir(name, dir, force, err);
}

int vm_gc(unsigned *removed, struct avm_error *err)
{
	const char *root = statedir_root();
	_cleanup_closedir_ DIR *d = opendir(root);
	struct dirent *e;

	*removed = 0;
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char dir[PATH_MAX];
		if (e->d_name[0] == '.' || statedir_validate_name(e->d_name, NULL) < 0)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
		if (vmstate_dir_may_be_live(dir))
			continue;
		struct avm_error e2 = { 0 };
		if (remove_dir(e->d_name, dir, true, &e2) == 0)
			(*removed)++;
		else
			avm_log("agentvm: %s\n", e2.msg);
	}
	return 0;
}

int vm_connect(const char *name, struct vm **out, struct avm_error *err)
{
	int r = vm_attach(name, out, err);

	return r < 0 ? avm_error_kind(err, r == -ENOENT ? AVM_ERR_USAGE : AVM_ERR_VM_LOST, r) : 0;
}

int vm_exec_failed(int r, const struct vm_exec_result *res, struct avm_error *err)
{
	return avm_error_kind(err, r == -EINTR		 ? AVM_ERR_INTERRUPTED
				   : res->output_error ? AVM_ERR_OUTPUT
						       : AVM_ERR_VM_LOST,
			      r);
}

static struct json_object *read_json_file(const char *dir, const char *file)
{
	_cleanup_free_ char *buf = NULL;

	if (statedir_read(dir, file, &buf, 1 << 20) < 0)
		return NULL;
	return json_tokener_parse(buf);
}

struct json_object *vm_inspect_json(const char *name, const char *dir)
{
	struct json_object *o = json_object_new_object(), *spec = NULL;
	struct vm_state st;
	char path[PATH_MAX];

	vm_spec_read(dir, &spec, NULL);
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "dir", json_object_new_string(dir));
	if (vmstate_read(dir, &st, NULL) < 0)
		st.state = VMS_UNKNOWN;
	vmstate_effective(dir, &st);
	json_object_object_add(o, "state", json_object_new_string(vmstate_name(st.state)));
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
	static const char *const files[] = { STATEDIR_QMP_SOCK, STATEDIR_AGENT_SOCK,
					     STATEDIR_CONSOLE_LOG, STATEDIR_EVENTS,
					     STATEDIR_QEMU_LOG };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		statedir_file(path, sizeof(path), dir, files[i]);
		if (access(path, F_OK) == 0)
			json_object_object_add(socks, files[i], json_object_new_string(path));
	}
	json_object_object_add(o, "files", socks);
	if (spec)
		json_object_object_add(o, "spec", spec);
	struct json_object *net = read_json_file(dir, STATEDIR_NET);
	if (net)
		json_object_object_add(o, "network", net);
	return o;
}
