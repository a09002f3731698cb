/* SPDX-License-Identifier: MIT */
#include "vm/vm.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vm/agent_conn.h"
#include "obs/audit.h"
#include "vm/disk.h"
#include "vm/host.h"
#include "jail/launcher.h"
#include "vm/monitor.h"
#include "vm/qemu_argv.h"
#include "qmp/qmp.h"
#include "state/statedir.h"
#include "base/util.h"
#include "obs/metrics.h"
#include "vm/vm_internal.h"

/* Under TCG QEMU takes ~50 ms to greet; allow for a loaded CI machine. */
#define QMP_HANDSHAKE_TIMEOUT_MS 15000
#define QMP_COMMAND_TIMEOUT_MS 10000
#define QUIT_WAIT_MS 2000

const char *vm_name(const struct vm *vm)
{
	return vm->name;
}

const char *vm_state_dir(const struct vm *vm)
{
	return vm->dir;
}

pid_t vm_qemu_pid(const struct vm *vm)
{
	return vm->pid;
}

void vm_trace(const struct vm *vm, uint64_t t0_us, char *buf, size_t len)
{
	const uint64_t t[] = { vm->t_launch_us, vm->t_spawn_us, vm->t_qmp_us, vm->t_loaded_us,
			       vm->t_ready_us };
	static const char *const what[] = { "launch", "spawned", "QMP up",
					    "snapshot loaded", "ready" };
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(t) && off < len; i++)
		if (t[i])
			off += (size_t)snprintf(buf + off, len - off, "%s%s %.1f", off ? ", " : "",
						what[i], ((double)t[i] - (double)t0_us) / 1000);
}

uint64_t vm_boot_ms(const struct vm *vm)
{
	return vm->ready ? (vm->t_ready_us - vm->t_launch_us) / 1000 : 0;
}

int vm__ep_add(int epfd, int fd, uint32_t events, enum ev_tag tag)
{
	struct epoll_event ev = { .events = events, .data.u32 = tag };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void vm__agent_want_out(struct vm *vm)
{
	uint32_t want = (vm->agent_in_paused ? 0 : EPOLLIN) |
			(agent_conn_pending(&vm->agent) ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.u32 = EV_AGENT };

	if (want != vm->agent_events && epoll_ctl(vm->epfd, EPOLL_CTL_MOD, vm->agent_fd, &ev) == 0)
		vm->agent_events = want;
}

/* Reap QEMU if it has exited; true when it is gone. */
static bool reap(struct vm *vm, bool block)
{
	if (vm->exited)
		return true;
	if (vm->attached) {
		/* Not our child: the pidfd turning readable is all we can know. */
		struct pollfd pfd = { .fd = vm->pidfd, .events = POLLIN };
		if (vm->pidfd >= 0 && poll(&pfd, 1, block ? -1 : 0) == 1)
			vm->exited = true;
		return vm->exited;
	}
	pid_t r = waitpid(vm->pid, &vm->wstatus, block ? 0 : WNOHANG);
	if (r == vm->pid)
		vm->exited = true;
	return vm->exited;
}

/* The last line QEMU printed, for error messages ("could not open kernel..."). */
static void qemu_log_tail(const struct vm *vm, char *out, size_t len)
{
	char path[PATH_MAX];
	_cleanup_free_ char *buf = NULL;

	out[0] = '\0';
	if (statedir_file(path, sizeof(path), vm->dir, STATEDIR_QEMU_LOG) < 0 ||
	    read_file(path, &buf, 1 << 20) <= 0)
		return;
	size_t n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	char *line = strrchr(buf, '\n');
	snprintf(out, len, "%s", line ? line + 1 : buf);
}

int vm__qemu_died(struct vm *vm, const char *when, struct avm_error *err)
{
	char tail[512], how[64];

	reap(vm, true);
	if (vm->attached)
		return avm_error_set(err, -ECHILD, "the VM '%s' stopped %s", vm->name, when);
	qemu_log_tail(vm, tail, sizeof(tail));
	if (WIFSIGNALED(vm->wstatus))
		snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(vm->wstatus));
	else
		snprintf(how, sizeof(how), "exit status %d", WEXITSTATUS(vm->wstatus));
	console_close(&vm->con); /* its last words tell a panic from a reboot */
	audit_vm_str("error", vm->name, "what", "QEMU exited unexpectedly");
	if (vm__exit_reason(vm) && !strcmp(vm__exit_reason(vm), "guest-panic"))
		return avm_error_set(err, -ECHILD,
				     "the guest kernel panicked %s (out of memory?); see the console "
				     "log (--keep-state keeps it)",
				     when);
	if (vm->guest_shutdown && !tail[0])
		return avm_error_set(err, -ECHILD, "the guest shut down %s", when);
	return avm_error_set(err, -ECHILD, "QEMU exited %s (%s)%s%s", when, how,
			     tail[0] ? ": " : "; see the console log",
			     tail[0] ? tail : "");
}

static void note_shutdown(struct vm *vm, const char *event, struct json_object *data)
{
	struct json_object *v;
	const char *reason = NULL;

	if (strcmp(event, "SHUTDOWN") != 0 && strcmp(event, "GUEST_PANICKED") != 0)
		return;
	vm->guest_shutdown = true;
	if (data && json_object_object_get_ex(data, "reason", &v))
		reason = json_object_get_string(v);
	if (!strcmp(event, "GUEST_PANICKED") ||
	    (reason && (!strcmp(reason, "guest-reset") || !strcmp(reason, "guest-panic"))))
		vm->guest_reset = true;
}

static void on_qmp_event(void *opaque, const char *event, struct json_object *data,
			 int64_t ts_sec, int64_t ts_usec)
{
	struct vm *vm = opaque;

	note_shutdown(vm, event, data);
}

/* Copy console output into console.log; stop watching the socket at its EOF. */
static void pump_console(struct vm *vm)
{
	if (vm->con.fd >= 0 && console_pump(&vm->con) == 1)
		epoll_ctl(vm->epfd, EPOLL_CTL_DEL, vm->con.fd, NULL);
}

const char *vm__exit_reason(const struct vm *vm)
{
	if (!vm->guest_reset)
		return NULL;
	return vm->con.panic_seen ? "guest-panic" : "guest-reset";
}

void vm__set_state(struct vm *vm, enum vm_run_state state)
{
	enum vm_run_state old = vm->st.state;
	int r;

	vm->st.state = state;
	if (vm->attached)
		return;
	audit_vm_state(vm->name, old, state, vm->st.exit_reason);
	/* Console output that could not be written is worth a line in state.json. */
	if (vm->con.write_error && !vm->st.error[0])
		vm__note_write_error(vm, STATEDIR_CONSOLE_LOG, vm->con.write_error);
	if ((r = vmstate_write(vm->dir, &vm->st)) < 0 && !vm->st.error[0])
		vm__note_write_error(vm, STATEDIR_STATE, r);
}

void vm__note_write_error(struct vm *vm, const char *file, int r)
{
	if (vm->attached || vm->st.error[0])
		return;
	snprintf(vm->st.error, sizeof(vm->st.error), "cannot write %s in the state dir: %s", file,
		 strerror(-r));
	vmstate_write(vm->dir, &vm->st);
}

static void vm_free(struct vm *vm)
{
	if (!vm)
		return;
	monitor_free(vm->mon); /* its last events first, while the VM's network is there */
	/* Only once QEMU is gone: the tap must not vanish under a running VM. */
	if (!vm->attached && vm->dir && (vm->exited || vm->pid <= 0)) {
		bool had_net = vm->net.tap[0] && !vm->net.torn_down;
		net_teardown(&vm->net);
		if (had_net && vm->keep_state)
			net_save(&vm->net, vm->dir);
	}
	console_close(&vm->con);
	if (!vm->attached && (vm->exited || vm->pid <= 0))
		jail_release(&vm->jail);
	if (!vm->attached && vm->name && vmstate_is_live(vm->st.state))
		audit_vm_state(vm->name, vm->st.state, VMS_STOPPED, NULL);
	qmp_client_free(vm->qmp);
	agent_conn_release(&vm->agent);
	if (vm->agent_fd >= 0)
		close(vm->agent_fd);
	if (vm->epfd >= 0)
		close(vm->epfd);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	if (vm->dir && !vm->keep_state)
		vm_dir_remove(vm->dir);
	free(vm->dir);
	free(vm->name);
	free(vm->boot_words);
	free(vm);
}

int vm_dir_remove(const char *dir)
{
	const char *slash = strrchr(dir, '/');
	int r;

	metrics_retire(dir); /* its counters outlive it in the host-wide sums */
	r = statedir_remove(dir);
	if (r == 0)
		audit_vm("vm.removed", slash ? slash + 1 : dir);
	return r;
}

/* Wait for the pidfd to become readable (QEMU exited) for up to ms; true when reaped. */
static bool wait_exit(struct vm *vm, int ms)
{
	uint64_t deadline = now_ms() + (uint64_t)ms;

	while (!reap(vm, false)) {
		int64_t left = (int64_t)(deadline - now_ms());
		struct pollfd pfd = { .fd = vm->pidfd, .events = POLLIN };
		if (left <= 0 || vm->pidfd < 0)
			return false;
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			return false;
	}
	return true;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->pid > 0 && !vm->attached && !reap(vm, false)) {
		/*
		 * quit is answered and QEMU exits at once; SIGKILL is the backstop. A VM whose state
		 * dir goes with it (a run's) is thrown away whole: QEMU's own clean-up (overlays
		 * flushed, devices reset) is for nobody, and SIGKILL ends it in ~4 ms against 8-14 ms
		 * for quit under TCG (measured), on every run's way out.
		 */
		if (!vm->keep_state)
			kill(vm->pid, SIGKILL);
		else if (vm->qmp &&
			 qmp_client_send(vm->qmp, "quit", NULL, NULL, 0, 0, NULL, NULL, NULL) >= 0)
			qmp_client_flush(vm->qmp, NULL);
		/* While QEMU exits: the kernel's clean-up of both overlaps. */
		net_release_rules(&vm->net);
		if (!wait_exit(vm, QUIT_WAIT_MS)) {
			kill(vm->pid, SIGKILL);
			reap(vm, true);
		}
	}
	vm_free(vm);
}

/*
 * One qcow2 overlay per disk in the state dir (removed with it). A cold boot backs it with the
 * user's image; a restore with the snapshot's copy, whose content matches the RAM state.
 */
static int make_overlays(const struct vm_launch_opts *o, const char *dir,
			 char paths[][PATH_MAX], struct qemu_disk *qd, struct avm_error *err)
{
	const struct vm_spec *spec = o->spec;
	const char *disk_dir = o->incoming ? o->incoming->disk_dir : NULL;
	char base[PATH_MAX];
	int r;

	for (size_t i = 0; i < spec->n_disks; i++) {
		const char *fmt = "qcow2";

		if (disk_overlay_path(paths[i], PATH_MAX, dir, i) < 0)
			return avm_error_set(err, -ENAMETOOLONG, "state dir path too long");
		if (disk_dir) {
			if (disk_overlay_path(base, sizeof(base), disk_dir, i) < 0)
				return avm_error_set(err, -ENAMETOOLONG, "snapshot path too long");
		} else {
			snprintf(base, sizeof(base), "%s", spec->disks[i].file);
			if ((r = disk_image_format(base, &fmt, err)) < 0)
				return r;
		}
		if ((r = disk_overlay_create(base, fmt, paths[i], err)) < 0 ||
		    (r = disk_identity_record(dir, i, spec->disks[i].file, base, err)) < 0)
			return r;
		qd[i] = (struct qemu_disk){ .overlay = paths[i],
					    .guest_dir = spec->disks[i].guest_dir,
					    .readonly = spec->disks[i].readonly,
					    .root = spec->disks[i].root };
	}
	return 0;
}

int vm_launch(const struct vm_launch_opts *o, struct vm **out, struct avm_error *err)
{
	char overlays[VM_SPEC_MAX_DISKS][PATH_MAX];
	struct qemu_disk qdisks[VM_SPEC_MAX_DISKS];
	struct qemu_share qshares[VM_SPEC_MAX_SHARES];
	struct vm *vm = calloc(1, sizeof(*vm));
	int qmp_sp[2] = { -1, -1 }, agent_sp[2] = { -1, -1 }, con_sp[2] = { -1, -1 };
	_cleanup_close_ int qmp_listen = -1;
	char qlog[PATH_MAX], qmp_sock[PATH_MAX], pidpath[PATH_MAX], namebuf[32], pidbuf[32];
	char net_cmdline[256];
	struct strv argv = { 0 };
	struct qmp_error qerr = { 0 };
	int r;

	if (!vm)
		return avm_error_set(err, -ENOMEM, "out of memory");
	vm->pidfd = vm->agent_fd = vm->epfd = -1;
	vm->con = (struct console){ .fd = -1, .dir_fd = -1, .log_fd = -1 };
	vm->agent.fd = -1;
	net_init(&vm->net, "");
	vm->keep_state = o->keep_state || o->detached;
	vm->t_launch_us = now_us();

	if (o->spec->name) {
		r = statedir_validate_name(o->spec->name, err);
		if (r < 0)
			goto fail;
		vm->name = strdup(o->spec->name);
	} else {
		statedir_random_name(namebuf, sizeof(namebuf));
		vm->name = strdup(namebuf);
	}
	if (!vm->name) {
		r = avm_error_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	r = statedir_create(vm->name, &vm->dir, err);
	if (r < 0)
		goto fail;
	r = vmstate_reserve(vm->dir);
	if (r < 0) {
		avm_error_setx(err, r, "cannot reserve room for %s/state.json (is its file system "
				       "full?)", vm->dir);
		goto fail;
	}
	r = vm_spec_write(vm->dir, o->spec, vm->name);
	if (r < 0) {
		avm_error_setx(err, r, "cannot write %s/spec.json", vm->dir);
		goto fail;
	}

	net_init(&vm->net, vm->name);
	r = net_setup(&vm->net, o->spec, err);
	if (r < 0)
		goto fail;
	if (vm->net.mode != VM_NET_ISOLATED && (r = net_save(&vm->net, vm->dir)) < 0) {
		avm_error_setx(err, r, "cannot write %s/net.json", vm->dir);
		goto fail;
	}
	r = net_guest_cmdline(&vm->net, vm->name, net_cmdline, sizeof(net_cmdline));
	if (r < 0) {
		avm_error_set(err, r, "internal: guest network cmdline too long");
		goto fail;
	}

	r = make_overlays(o, vm->dir, overlays, qdisks, err);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < o->spec->n_shares; i++)
		qshares[i] = (struct qemu_share){ .host_dir = o->spec->shares[i].host_dir,
						  .guest_dir = o->spec->shares[i].guest_dir,
						  .readonly = o->spec->shares[i].readonly,
						  .container_root =
							  o->spec->shares[i].container_root };

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp_sp) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, agent_sp) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, con_sp) < 0) {
		r = avm_error_setx(err, -errno, "socketpair");
		goto fail;
	}
	r = console_open(&vm->con, con_sp[0], vm->dir);
	if (r < 0) {
		avm_error_setx(err, r, "cannot create %s/console.log", vm->dir);
		goto fail;
	}
	con_sp[0] = -1;
	statedir_file(qlog, sizeof(qlog), vm->dir, STATEDIR_QEMU_LOG);
	statedir_file(qmp_sock, sizeof(qmp_sock), vm->dir, STATEDIR_QMP_SOCK);
	/* Absolute: the jail binds them at their own paths, and QEMU's cwd is the jail's. */
	char kernel[PATH_MAX] = "", initrd[PATH_MAX] = "";
	if (!o->incoming && (!realpath(o->kernel, kernel) || !realpath(o->initrd, initrd))) {
		r = avm_error_setx(err, -errno, "cannot find the guest kernel %s or initramfs %s",
				   o->kernel, o->initrd);
		goto fail;
	}
	struct qemu_config qc = {
		.qemu = o->qemu,
		.kernel = o->incoming ? o->kernel : kernel,
		.initrd = o->incoming ? o->initrd : initrd,
		.accel = o->accel,
		.cpus = o->spec->cpus,
		.memory_mib = o->spec->memory_mib,
		.incoming = o->incoming != NULL,
		.mem_path = o->incoming ? o->incoming->mem_path : o->template_mem,
		.mem_share = o->incoming ? o->incoming->mem_share : o->template_mem != NULL,
		.template_boot = o->template_boot,
		.tsc_khz = o->accel == VM_ACCEL_TCG ? host_tsc_khz() : 0,
		.qmp_fd = qmp_sp[1],
		.agent_fd = agent_sp[1],
		.console_fd = con_sp[1],
		.name_tag = vm->dir,
		.sandbox = 1,
		.qmp_sock_path = o->detached ? qmp_sock : NULL,
		.extra_cmdline = net_cmdline,
		/* AGENTVM_GUEST_DEBUG=1: guest-init's boot timings and debug lines in console.log. */
		.guest_debug = getenv("AGENTVM_GUEST_DEBUG") && !strcmp(getenv("AGENTVM_GUEST_DEBUG"), "1"),
		.nic = vm->net.tap_fd >= 0,
		.tap_fd = vm->net.tap_fd,
		.mac = vm->net.mac,
		.disks = qdisks,
		.n_disks = o->spec->n_disks,
		.shares = qshares,
		.n_shares = o->spec->n_shares,
	};
	if (o->template_boot && o->incoming && !(vm->boot_words = qemu_guest_boot_words(&qc))) {
		r = avm_error_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if (o->detached) {
		/* The second monitor's socket is made here and inherited, listening. */
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", qmp_sock) >=
		    (int)sizeof(sa.sun_path)) {
			r = avm_error_set(err, -ENAMETOOLONG, "%s: path too long", qmp_sock);
			goto fail;
		}
		qmp_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (qmp_listen < 0 || bind(qmp_listen, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    listen(qmp_listen, 16) < 0) {
			r = avm_error_setx(err, -errno, "cannot listen on %s", qmp_sock);
			goto fail;
		}
		qc.qmp_listen_fd = qmp_listen;
	}
	struct jail_opts jo = { .name = vm->name, .dir = vm->dir, .cpus = o->spec->cpus,
				.memory_mib = o->spec->memory_mib, .kvm = o->accel == VM_ACCEL_KVM,
				.io_weight = vm_profile_io_weight(o->spec->profile),
				.qemu = o->qemu };
	size_t nro = 0, nrw = 0;
	if (!o->incoming) { /* a restore loads no kernel (qemu_argv.c) */
		jo.ro[nro++] = kernel;
		jo.ro[nro++] = initrd;
	}
	for (size_t i = 0; i < o->spec->n_disks && nrw < ARRAY_SIZE(jo.rw) - 2; i++)
		jo.rw[nrw++] = overlays[i];
	if (qc.mem_path)
		jo.rw[nrw++] = qc.mem_path;
	for (size_t i = 0, nd_ro = 0, nd_rw = 0; i < o->spec->n_shares && i < 8; i++) {
		const struct vm_share *sh = &o->spec->shares[i];
		if (sh->readonly)
			jo.dirs_ro[nd_ro++] = sh->host_dir;
		else
			jo.dirs_rw[nd_rw++] = sh->host_dir;
	}
	r = jail_prepare(&vm->jail, &jo, err);
	if (r < 0)
		goto fail;
	r = qemu_build_argv(&qc, &argv, err);
	if (r < 0)
		goto fail;
	int keep[5] = { qmp_sp[1], agent_sp[1], con_sp[1], vm->net.tap_fd, qmp_listen };
	if (!qc.nic) {
		keep[3] = qmp_listen;
		keep[4] = -1;
	}
	struct launch_opts lo = { .argv = argv.v, .keep_fds = keep,
				  .n_keep = 3 + (qc.nic ? 1 : 0) + (qmp_listen >= 0 ? 1 : 0),
				  .log_path = qlog, .jail = &vm->jail };
	r = launch_spawn(&lo, &vm->pid, &vm->pidfd, err);
	vm->t_spawn_us = now_us();
	strv_release(&argv);
	close(qmp_sp[1]);
	close(agent_sp[1]);
	close(con_sp[1]);
	qmp_sp[1] = agent_sp[1] = con_sp[1] = -1;
	/*
	 * vm->net.tap_fd stays open: with our copy the tap outlives QEMU by the moment teardown
	 * needs, and its slow unregister happens off every waiting path (see net_teardown()).
	 */
	if (r < 0)
		goto fail;
	vm->st.qemu_pid = vm->pid;
	vm->st.qemu_start = proc_start_time(vm->pid);
	vm->st.supervisor_pid = o->detached ? getpid() : 0;
	vm->st.supervisor_start = o->detached ? proc_start_time(getpid()) : 0;
	vm->st.created_ms = realtime_ms();
	snprintf(vm->st.accel, sizeof(vm->st.accel), "%s", vm_accel_name(o->accel));
	vm__set_state(vm, VMS_CREATED);
	statedir_file(pidpath, sizeof(pidpath), vm->dir, "qemu.pid");
	snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int)vm->pid);
	if ((r = write_file_atomic(pidpath, pidbuf, strlen(pidbuf))) < 0) {
		avm_error_setx(err, r, "cannot write %s", pidpath);
		goto fail;
	}
	/* The firewall while QEMU starts up (paused: the guest runs only after cont). */
	r = net_setup_filter(&vm->net, err);
	if (r < 0)
		goto fail;
	if (getenv("AGENTVM_TRACE") && *getenv("AGENTVM_TRACE") == '1')
		for (size_t i = 0; i < vm->net.n_trace; i++) /* benchmarks and debugging */
			fprintf(stderr, "agentvm: trace: net %s %u us, %u faults\n",
				vm->net.trace[i].what, vm->net.trace[i].us, vm->net.trace[i].faults);

	vm->agent_fd = TAKE_FD(agent_sp[0]);
	r = agent_conn_init(&vm->agent, vm->agent_fd);
	if (r < 0) {
		avm_error_setx(err, r, "agent channel");
		goto fail;
	}
	vm->qmp = qmp_client_new(qmp_sp[0]);
	if (!vm->qmp) {
		close(qmp_sp[0]);
		r = avm_error_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	qmp_sp[0] = -1;
	/* First listener: the VM's own record of a shutdown, before anyone else's (supervisor). */
	qmp_client_add_event_listener(vm->qmp, on_qmp_event, vm);

	vm->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (vm->epfd < 0 || vm__ep_add(vm->epfd, qmp_client_fd(vm->qmp), EPOLLIN, EV_QMP) < 0 ||
	    vm__ep_add(vm->epfd, vm->agent_fd, EPOLLIN, EV_AGENT) < 0 ||
	    vm__ep_add(vm->epfd, vm->pidfd, EPOLLIN, EV_PIDFD) < 0 ||
	    vm__ep_add(vm->epfd, vm->con.fd, EPOLLIN, EV_CONSOLE) < 0) {
		r = avm_error_setx(err, -errno, "epoll");
		goto fail;
	}
	vm->agent_events = EPOLLIN;

	r = qmp_client_handshake(vm->qmp, QMP_HANDSHAKE_TIMEOUT_MS, &qerr);
	vm->t_qmp_us = now_us();
	if (r < 0) {
		if (reap(vm, false) || r == -EPIPE || r == -ECONNRESET)
			r = vm__qemu_died(vm, "while starting", err);
		else
			avm_error_set(err, r, "QMP handshake with QEMU failed: %s", qerr.desc);
		goto fail;
	}
	/* The guest's DNS forwarder (--allow-domain) started beside QEMU: ready before the guest runs. */
	r = net_ready(&vm->net, err);
	if (r < 0)
		goto fail;
	if (o->incoming) {
		r = vm__incoming(vm, o->incoming, err);
		if (r < 0)
			goto fail;
		goto started;
	}
	r = qmp_client_execute(vm->qmp, "cont", NULL, NULL, 0, NULL, QMP_COMMAND_TIMEOUT_MS, &qerr);
	if (r < 0) {
		if (reap(vm, false) || r == -EPIPE || r == -ECONNRESET)
			r = vm__qemu_died(vm, "while starting", err);
		else
			avm_error_set(err, r, "QMP cont failed: %s", qerr.desc);
		goto fail;
	}
started:
	vm__set_state(vm, VMS_STARTING);
	*out = vm;
	return 0;
fail:
	if (qmp_sp[0] >= 0)
		close(qmp_sp[0]);
	if (qmp_sp[1] >= 0)
		close(qmp_sp[1]);
	if (agent_sp[0] >= 0)
		close(agent_sp[0]);
	if (agent_sp[1] >= 0)
		close(agent_sp[1]);
	if (con_sp[0] >= 0)
		close(con_sp[0]);
	if (con_sp[1] >= 0)
		close(con_sp[1]);
	/* A detached VM that never started leaves nothing either (--keep-state aside). */
	vm->keep_state = o->keep_state;
	vm_destroy(vm);
	return r;
}

/* Handle QMP input; a broken QMP connection means QEMU is going away. */
static int pump_qmp(struct vm *vm, struct avm_error *err)
{
	struct qmp_error qerr = { 0 };
	int r = qmp_client_process(vm->qmp, &qerr);

	if (r == -EPIPE || r == -ECONNRESET) {
		/* The pidfd will say why; stop listening to a dead socket. */
		epoll_ctl(vm->epfd, EPOLL_CTL_DEL, qmp_client_fd(vm->qmp), NULL);
		return 0;
	}
	return 0;
}

int vm__pump_qemu(struct vm *vm, uint32_t tag, struct avm_error *err)
{
	if (tag == EV_QMP)
		return pump_qmp(vm, err);
	if (tag == EV_CONSOLE)
		pump_console(vm);
	return 0;
}

int vm__read_agent(struct vm *vm, const char *when, struct avm_error *err)
{
	int r = agent_conn_read(&vm->agent);

	if (r == -EPIPE) {
		if (wait_exit(vm, 1000))
			return vm__qemu_died(vm, when, err);
		return avm_error_set(err, -EPIPE, "the guest agent channel closed %s", when);
	}
	if (r < 0)
		return avm_error_setx(err, r, "reading the agent channel");
	return 0;
}

int vm__wait_guest(struct vm *vm, const struct vm_wait *w, uint64_t deadline, int timeout_ms,
		   int sig_fd, int r, struct avm_error *err)
{
	struct epoll_event evs[8];

	while (!vm->ready && r == 0) {
		int64_t left = (int64_t)(deadline - now_ms());
		if (left <= 0) {
			r = avm_error_set(err, -ETIMEDOUT, "%s within %d s; see %s/console.log%s",
					  w->timeout_msg, timeout_ms / 1000, vm->dir, w->timeout_hint);
			break;
		}
		int n = epoll_wait(vm->epfd, evs, ARRAY_SIZE(evs), (int)left);
		if (n < 0 && errno != EINTR) {
			r = avm_error_setx(err, -errno, "epoll_wait");
			break;
		}
		for (int i = 0; i < n && r == 0; i++) {
			switch (evs[i].data.u32) {
			case EV_PIDFD:
				r = vm__qemu_died(vm, w->when, err);
				break;
			case EV_QMP:
			case EV_CONSOLE:
				r = vm__pump_qemu(vm, evs[i].data.u32, err);
				break;
			case EV_SIG:
				r = avm_error_set(err, -EINTR, "%s", w->interrupted);
				break;
			case EV_AGENT:
				/* EPOLLOUT only while something is queued (a SYNC), never at boot. */
				if (evs[i].events & EPOLLOUT) {
					agent_conn_flush(&vm->agent);
					vm__agent_want_out(vm);
				}
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					r = vm__read_agent(vm, w->when, err);
				break;
			}
		}
		/* Take every complete frame: only the one w waits for matters now. */
		for (;;) {
			struct avm_frame_hdr h;
			const uint8_t *p;
			const char *why;
			int d = agent_conn_next(&vm->agent, &h, &p, &why);
			if (d == AVM_DECODE_NEED_MORE)
				break;
			if (d == AVM_DECODE_FRAME)
				r = w->on_frame(vm, &h, p, w->ctx, r, err);
		}
	}
	if (sig_fd >= 0)
		epoll_ctl(vm->epfd, EPOLL_CTL_DEL, sig_fd, NULL);
	if (r == 0) {
		vm->st.ready_ms = realtime_ms();
		vm__set_state(vm, VMS_RUNNING);
		metrics_record_ready(vm->dir, vm->restored, vm->t_ready_us - vm->t_launch_us);
	}
	return r;
}

static int on_ready_frame(struct vm *vm, const struct avm_frame_hdr *h, const uint8_t *p,
			  void *ctx, int r, struct avm_error *err)
{
	if (h->type == AVM_MSG_READY && !vm->ready) {
		vm->ready = true;
		vm->t_ready_us = now_us();
	}
	return r;
}

int vm_wait_ready(struct vm *vm, int timeout_ms, int sig_fd, struct avm_error *err)
{
	static const struct vm_wait w = {
		.when = "before the guest was ready",
		.interrupted = "interrupted while booting",
		.timeout_msg = "the guest did not become ready",
		.timeout_hint = " (run with --keep-state to keep it)",
		.on_frame = on_ready_frame,
	};
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	if (vm->restored) /* READY is sent once per boot; a restored guest is asked instead */
		return vm__wait_synced(vm, timeout_ms, sig_fd, err);
	if (sig_fd >= 0 && vm__ep_add(vm->epfd, sig_fd, EPOLLIN, EV_SIG) < 0)
		return avm_error_setx(err, -errno, "epoll");
	return vm__wait_guest(vm, &w, deadline, timeout_ms, sig_fd, 0, err);
}

void vm_monitor_start(struct vm *vm, unsigned cpus, unsigned memory_mib)
{
	if (!vm->attached && !vm->mon)
		vm->mon = monitor_new(vm, cpus, memory_mib, vm->epfd, EV_MONITOR0);
}

int vm_attach(const char *name, struct vm **out, struct avm_error *err)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int r;

	if (!vm)
		return avm_error_set(err, -ENOMEM, "out of memory");
	vm->pidfd = vm->agent_fd = vm->epfd = -1;
	vm->con = (struct console){ .fd = -1, .dir_fd = -1, .log_fd = -1 };
	net_init(&vm->net, "");
	vm->attached = vm->keep_state = true;
	r = statedir_find(name, &vm->dir, err);
	if (r < 0)
		goto fail;
	vm->name = strdup(name);
	r = vmstate_read(vm->dir, &vm->st, err);
	if (r < 0)
		goto fail;
	vmstate_effective(vm->dir, &vm->st);
	if (vm->st.state == VMS_PAUSED) {
		r = avm_error_set(err, -EAGAIN, "VM '%s' is paused; resume it with 'agentvm resume %s'",
				  name, name);
		goto fail;
	}
	if (vm->st.state != VMS_RUNNING) {
		r = avm_error_set(err, -ESRCH, "VM '%s' is %s%s%s, not running", name,
				  vmstate_name(vm->st.state),
				  vm->st.exit_reason[0] ? " " : "", vm->st.exit_reason);
		goto fail;
	}
	vm->pid = vm->st.qemu_pid;
	vm->pidfd = pidfd_open_cloexec(vm->pid);
	if (statedir_sockaddr(&sa, vm->dir, STATEDIR_AGENT_SOCK) < 0) {
		r = avm_error_set(err, -ENAMETOOLONG, "state dir path too long for a socket");
		goto fail;
	}
	vm->agent_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (vm->agent_fd < 0 || connect(vm->agent_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = avm_error_setx(err, -errno, "cannot reach the supervisor of VM '%s' (%s)", name,
				   sa.sun_path);
		goto fail;
	}
	agent_conn_init(&vm->agent, vm->agent_fd);
	vm->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (vm->epfd < 0 || vm__ep_add(vm->epfd, vm->agent_fd, EPOLLIN, EV_AGENT) < 0 ||
	    (vm->pidfd >= 0 && vm__ep_add(vm->epfd, vm->pidfd, EPOLLIN, EV_PIDFD) < 0)) {
		r = avm_error_setx(err, -errno, "epoll");
		goto fail;
	}
	vm->agent_events = EPOLLIN;
	vm->ready = true;
	*out = vm;
	return 0;
fail:
	vm_free(vm);
	return r;
}
