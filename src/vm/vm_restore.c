/* SPDX-License-Identifier: MIT */
/*
 * Starting a VM from a snapshot: the QEMU that vm_launch() started with `-incoming defer` loads
 * the migration stream (migrate-incoming on an fd passed with getfd), is resumed, and the guest
 * is told its new identity with SYNC: the host's clock, 64 fresh random bytes (the guest forces
 * a CRNG reseed, so clones never share random output) and its hostname (the new VM's name).
 * READY is sent once per boot, so SYNC_DONE is the restored VM's "ready".
 */
#include <arpa/inet.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "vm/migrate.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/vm_internal.h"
#include "vm/vm_restore.h"

#define INCOMING_TIMEOUT_MS 60000
#define QMP_TIMEOUT_MS 10000

struct incoming_wait {
	struct vm *vm;
	char status[32]; /* last MIGRATION status seen */
};

/* Listens while the stream loads (a shutdown is the VM's own listener's, vm.c). */
static void on_migration(void *opaque, const char *event, struct json_object *data, int64_t s,
			 int64_t us)
{
	struct incoming_wait *w = opaque;
	struct json_object *v;

	if (!strcmp(event, "MIGRATION") && data && json_object_object_get_ex(data, "status", &v))
		snprintf(w->status, sizeof(w->status), "%s", json_object_get_string(v));
}

/* The reply of a command sent ahead without waiting for it (vm__incoming()). */
static void on_ahead_reply(void *opaque, int status, struct json_object *ret,
			   const struct qmp_error *qe)
{
	struct vm_qmp_ahead *a = opaque;

	a->r = status;
	if (status < 0 && qe)
		a->qe = *qe;
}

static int qmp_failed(struct vm *vm, int r, const char *what, const struct qmp_error *qe,
		      struct avm_error *err)
{
	if (r == -EPIPE || r == -ECONNRESET) {
		struct pollfd p = { .fd = vm->pidfd, .events = POLLIN };
		poll(&p, 1, 2000);
		return vm__qemu_died(vm, "while loading the snapshot", err);
	}
	return avm_error_set(err, r, "QMP %s failed: %s", what, qe->desc);
}

int vm__incoming(struct vm *vm, const struct vm_incoming *in, struct avm_error *err)
{
	struct incoming_wait w = { .vm = vm };
	struct qmp_error qe = { 0 };
	struct json_object *args, *caps, *cap;
	_cleanup_close_ int fd = -1;
	int major = 0, minor = 0, micro = 0, r;
	char ver[32];

	if (in->qemu_version && qmp_client_version(vm->qmp, &major, &minor, &micro) == 0) {
		snprintf(ver, sizeof(ver), "%d.%d.%d", major, minor, micro);
		if (strcmp(ver, in->qemu_version) != 0)
			return avm_error_set(err, -ESTALE,
					     "the snapshot was taken with QEMU %s, this is QEMU %s; "
					     "take a new snapshot with this QEMU",
					     in->qemu_version, ver);
	}
	fd = open(in->state_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return avm_error_setx(err, -errno, "cannot open %s", in->state_path);

	/*
	 * events: MIGRATION events instead of polling. x-ignore-shared for a copy-on-write clone:
	 * its stream has no RAM (the RAM is in mem_path). A template (share=on) loads a full
	 * stream of an ordinary VM, so not there; it turns it on before its own save.
	 */
	caps = json_object_new_array();
	cap = json_object_new_object();
	json_object_object_add(cap, "capability", json_object_new_string("events"));
	json_object_object_add(cap, "state", json_object_new_boolean(1));
	json_object_array_add(caps, cap);
	if (in->mem_path && !in->mem_share) {
		cap = json_object_new_object();
		json_object_object_add(cap, "capability", json_object_new_string("x-ignore-shared"));
		json_object_object_add(cap, "state", json_object_new_boolean(1));
		json_object_array_add(caps, cap);
	}
	/*
	 * The capabilities and the fd go out ahead, unanswered: QEMU answers in order, so their
	 * replies are in when migrate-incoming's is, and two round trips through QEMU's main loop
	 * (a few ms under TCG, on every restore) are saved. A refusal of either still fails the
	 * restore before anything waits on the stream.
	 */
	struct vm_qmp_ahead *a_caps = &vm->ahead[0], *a_fd = &vm->ahead[1];
	*a_caps = *a_fd = (struct vm_qmp_ahead){ 0 };
	args = json_object_new_object();
	json_object_object_add(args, "capabilities", caps);
	r = qmp_client_send(vm->qmp, "migrate-set-capabilities", args, NULL, 0, QMP_TIMEOUT_MS,
			    on_ahead_reply, a_caps, &qe);
	json_object_put(args);
	if (r < 0)
		return qmp_failed(vm, r, "migrate-set-capabilities", &qe, err);

	args = json_object_new_object();
	json_object_object_add(args, "fdname", json_object_new_string("avm-incoming"));
	r = qmp_client_send(vm->qmp, "getfd", args, &fd, 1, QMP_TIMEOUT_MS, on_ahead_reply, a_fd,
			    &qe);
	json_object_put(args);
	if (r < 0)
		return qmp_failed(vm, r, "getfd", &qe, err);

	if ((r = qmp_client_add_event_listener(vm->qmp, on_migration, &w)) < 0)
		return avm_error_setx(err, r, "cannot watch QMP events");
	args = json_object_new_object();
	json_object_object_add(args, "uri", json_object_new_string("fd:avm-incoming"));
	r = qmp_client_execute(vm->qmp, "migrate-incoming", args, NULL, 0, NULL, QMP_TIMEOUT_MS,
			       &qe);
	json_object_put(args);
	if (r >= 0 && a_caps->r < 0)
		r = a_caps->r, qe = a_caps->qe;
	else if (r >= 0 && a_fd->r < 0)
		r = a_fd->r, qe = a_fd->qe;
	if (r < 0) {
		qmp_client_remove_event_listener(vm->qmp, on_migration, &w);
		return qmp_failed(vm, r,
				  a_caps->r < 0 ? "migrate-set-capabilities"
				  : a_fd->r < 0 ? "getfd"
						: "migrate-incoming",
				  &qe, err);
	}

	/* Wait for MIGRATION completed; a failed load makes QEMU 7.2 exit (pidfd). */
	uint64_t deadline = now_ms() + INCOMING_TIMEOUT_MS;
	r = 0;
	while (strcmp(w.status, "completed") != 0) {
		struct pollfd p[2] = { { .fd = qmp_client_fd(vm->qmp), .events = POLLIN },
				       { .fd = vm->pidfd, .events = POLLIN } };
		int64_t left = (int64_t)(deadline - now_ms());
		if (!strcmp(w.status, "failed")) {
			r = -EIO;
			break;
		}
		if (left <= 0) {
			r = avm_error_set(err, -ETIMEDOUT, "loading the snapshot took over %d s",
					  INCOMING_TIMEOUT_MS / 1000);
			break;
		}
		if (poll(p, 2, (int)left) < 0 && errno != EINTR) {
			r = avm_error_setx(err, -errno, "poll");
			break;
		}
		if (p[1].revents) {
			r = -EPIPE;
			break;
		}
		if (p[0].revents) {
			int q = qmp_client_process(vm->qmp, &qe);
			if (q == -EPIPE || q == -ECONNRESET) {
				r = q;
				break;
			}
		}
	}
	qmp_client_remove_event_listener(vm->qmp, on_migration, &w);
	if (r == -EPIPE || r == -ECONNRESET || r == -EIO) {
		struct pollfd p = { .fd = vm->pidfd, .events = POLLIN };
		poll(&p, 1, 3000);
		r = vm__qemu_died(vm, "while loading the snapshot (is the snapshot damaged?)", err);
		return r;
	}
	if (r < 0)
		return r;
	vm->t_loaded_us = now_us();
	if (in->stay_paused)
		return 0;
	r = qmp_client_execute(vm->qmp, "cont", NULL, NULL, 0, NULL, QMP_TIMEOUT_MS, &qe);
	if (r < 0)
		return qmp_failed(vm, r, "cont", &qe, err);
	vm->restored = true;
	return 0;
}

static int send_sync(struct vm *vm, uint32_t id, struct avm_error *err)
{
	struct avm_buf b = { 0 };
	uint8_t ent[64];
	struct timespec ts;
	int r;

	if (getrandom(ent, sizeof(ent), 0) != (ssize_t)sizeof(ent))
		return avm_error_setx(err, -errno, "getrandom");
	clock_gettime(CLOCK_REALTIME, &ts);
	r = avm_tlv_put_u64(&b, AVM_TAG_TIME_NS,
			    (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	if (r == 0)
		r = avm_tlv_put(&b, AVM_TAG_ENTROPY, ent, sizeof(ent));
	if (r == 0)
		r = avm_tlv_put_str(&b, AVM_TAG_HOSTNAME, vm->name);
	/* A boot template's clone finishes its boot now: root image, disks, shares. */
	if (r == 0 && vm->boot_words)
		r = avm_tlv_put_str(&b, AVM_TAG_BOOT_ARGS, vm->boot_words);
	/*
	 * A clone with a NIC has its own tap, MAC and (nat-filtered) /30 lease, made by vm_launch
	 * like any VM's; the guest still has the template's, so it is told the new ones.
	 */
	if (r == 0 && vm->net.tap[0])
		r = avm_tlv_put(&b, AVM_TAG_NET_MAC, vm->net.mac, 6);
	if (r == 0 && vm->net.mode == VM_NET_NAT_FILTERED && vm->net.has_lease) {
		char a[INET_ADDRSTRLEN], cidr[INET_ADDRSTRLEN + 4], gw[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &vm->net.lease.guest, a, sizeof(a));
		inet_ntop(AF_INET, &vm->net.lease.host, gw, sizeof(gw));
		snprintf(cidr, sizeof(cidr), "%s/%u", a, vm->net.lease.prefixlen);
		r = avm_tlv_put_str(&b, AVM_TAG_NET_ADDR, cidr);
		if (r == 0)
			r = avm_tlv_put_str(&b, AVM_TAG_NET_GW, gw);
		if (r == 0 && vm->net.dns[0])
			r = avm_tlv_put_str(&b, AVM_TAG_NET_DNS, vm->net.dns);
	}
	explicit_bzero(ent, sizeof(ent));
	if (r == 0)
		r = agent_conn_send(&vm->agent, AVM_MSG_SYNC, id, b.data, (uint32_t)b.len);
	avm_buf_release(&b);
	if (r < 0)
		return avm_error_setx(err, r, "sending SYNC to the guest");
	vm__agent_want_out(vm);
	return 0;
}

/* SYNC_DONE for our SYNC (ctx: its id) makes the guest ready; an ERROR for it is a refusal. */
static int on_sync_frame(struct vm *vm, const struct avm_frame_hdr *h, const uint8_t *p,
			 void *ctx, int r, struct avm_error *err)
{
	if (h->id != *(const uint32_t *)ctx)
		return r;
	if (h->type == AVM_MSG_SYNC_DONE) {
		vm->ready = true;
		vm->t_ready_us = now_us();
	} else if (h->type == AVM_MSG_ERROR && r == 0) {
		r = avm_error_set(err, -EPROTO, "the restored guest refused SYNC: %.*s",
				  h->len > 4 ? (int)h->len - 4 : 0,
				  h->len > 4 ? (const char *)p + 4 : "");
	}
	return r;
}

int vm__wait_synced(struct vm *vm, int timeout_ms, int sig_fd, struct avm_error *err)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	uint32_t id = ++vm->next_id;
	const struct vm_wait w = {
		.when = "right after the restore",
		.interrupted = "interrupted while restoring",
		.timeout_msg = "the restored guest did not answer",
		.timeout_hint = "",
		.on_frame = on_sync_frame,
		.ctx = &id,
	};

	if (sig_fd >= 0 && vm__ep_add(vm->epfd, sig_fd, EPOLLIN, EV_SIG) < 0)
		return avm_error_setx(err, -errno, "epoll");
	return vm__wait_guest(vm, &w, deadline, timeout_ms, sig_fd, send_sync(vm, id, err), err);
}

int vm_build_cow_template(const struct vm_launch_opts *o, const char *devstate_path,
			  struct avm_error *err)
{
	struct vm *vm = NULL;
	int r;

	r = vm_launch(o, &vm, err);
	if (r < 0)
		return r;
	r = vm_save_cow_state(vm, devstate_path, NULL, err);
	vm_destroy(vm);
	return r;
}

int vm_save_cow_state(struct vm *vm, const char *devstate_path, char qemu_version[32],
		      struct avm_error *err)
{
	struct qmp_error qe = { 0 };
	struct json_object *args;
	_cleanup_close_ int fd = -1;
	int major = 0, minor = 0, micro = 0, r;

	if (qemu_version) {
		qmp_client_version(vm->qmp, &major, &minor, &micro);
		snprintf(qemu_version, 32, "%d.%d.%d", major, minor, micro);
	}

	args = json_tokener_parse(
		"{\"capabilities\":[{\"capability\":\"x-ignore-shared\",\"state\":true}]}");
	r = qmp_client_execute(vm->qmp, "migrate-set-capabilities", args, NULL, 0, NULL,
			       QMP_TIMEOUT_MS, &qe);
	json_object_put(args);
	if (r < 0)
		return avm_error_set(err, r, "QMP migrate-set-capabilities failed: %s", qe.desc);
	fd = open(devstate_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return avm_error_setx(err, -errno, "cannot create %s", devstate_path);
	static const struct migrate_req rq = {
		.fdname = "avm-template", .timeout_ms = INCOMING_TIMEOUT_MS, .poll_ms = 1,
		.qmp_timeout_ms = QMP_TIMEOUT_MS,
	};
	struct migrate_end end;
	r = migrate_to_fd(vm->qmp, fd, &rq, &end, err);
	if (r < 0 && end.ended)
		r = avm_error_set(err, -EIO, "building the copy-on-write template failed: %s",
				  end.has_desc ? end.desc : end.status);
	if (r == 0 && fsync(fd) < 0)
		r = avm_error_setx(err, -errno, "fsync %s", devstate_path);
	return r;
}
