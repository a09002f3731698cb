/* SPDX-License-Identifier: MIT */
/*
 * The containerd.task.v2.Task service: one shim and one VM per pod. A plain task (`ctr run`) is
 * a pod of one container; containerd's CRI plugin sends every container of a sandbox to the
 * sandbox's shim (main.c groups them by io.kubernetes.cri.sandbox-id). Each container's root
 * file system (the bundle's rootfs, mounted here from the mounts containerd hands over) is
 * attached beneath the VM's pod share (shim_vm_attach_root) and every process of the container
 * runs chrooted into it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "config.h"
#include "podstate.h"
#include "shim.h"
#include "shim_vm.h"
#include "base/strv.h"

#define MAX_PROCS SHIM_MAX_PROCS
#define MAX_CTRS SHIM_MAX_CTRS
#define MAX_WAITERS 8
#define MAX_MOUNTS 8
#define BOOT_TIMEOUT_S 120

struct proc {
	bool used;
	int c; /* its container: an index into task.ctrs */
	char *exec_id; /* NULL for the init process */
	char *stdio[3];
	bool terminal;
	struct shim_proc spec;
	pid_t pid; /* the helper running it (shim_vm.h) */
	uint64_t start; /* its start time: a re-attached shim checks it is still that process */
	int pidfd; /* +1 (0 = none): a helper of an earlier shim process, not our child */
	int stdin_w; /* our writer on the stdin FIFO, +1 (0 = none): see start_stdin() */
	enum shim_status status;
	uint32_t exit_status;
	int64_t exited_ns;
	struct ttrpc_call waiters[MAX_WAITERS];
	int n_waiters;
};

/* A container of the pod. */
struct ctr {
	bool used;
	char *id;
	char *bundle;
	char rootfs[4096]; /* on the host */
	char guest_root[128]; /* in the guest: SHIM_GUEST_ROOT "/" id */
	bool mounted; /* rootfs, on the host */
	bool attached; /* beneath the pod dir, in QEMU's namespace */
};

/* The pod: its VM and containers. */
struct task {
	const struct shim_opts *o;
	struct ttrpc_server *srv;
	char vm[24]; /* "" until the first Create boots it */
	char pod_dir[4096];
	char netns[4096]; /* the pod's network namespace (path), "" for the host's */
	bool paused;
	char state_path[4200]; /* the pod's saved state (shim_vm_work_path ".json") */
	char exit_prefix[4200]; /* helpers' exit statuses (".exit-") */
	struct ctr ctrs[MAX_CTRS];
	struct proc procs[MAX_PROCS];
};

/* --- processes ------------------------------------------------------------------------------- */

static struct ctr *ctr_find(struct task *t, const char *id)
{
	for (int i = 0; id && i < MAX_CTRS; i++)
		if (t->ctrs[i].used && !strcmp(t->ctrs[i].id, id))
			return &t->ctrs[i];
	return NULL;
}

static int n_ctrs(const struct task *t)
{
	int n = 0;

	for (int i = 0; i < MAX_CTRS; i++)
		n += t->ctrs[i].used;
	return n;
}

static struct proc *proc_find(struct task *t, const struct ctr *c, const char *exec_id)
{
	bool init = !exec_id || !*exec_id;

	for (int i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &t->procs[i];
		if (!p->used || &t->ctrs[p->c] != c)
			continue;
		if (init ? !p->exec_id : p->exec_id && !strcmp(p->exec_id, exec_id))
			return p;
	}
	return NULL;
}

static void close_stdin(struct proc *p)
{
	if (p->stdin_w > 0)
		close(p->stdin_w - 1);
	p->stdin_w = 0;
}

static void proc_free(struct proc *p)
{
	close_stdin(p);
	free(p->exec_id);
	for (int i = 0; i < 3; i++)
		free(p->stdio[i]);
	shim_proc_release(&p->spec);
	*p = (struct proc){ 0 };
}

static struct proc *proc_new(struct task *t, const struct ctr *c)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (!t->procs[i].used) {
			t->procs[i] = (struct proc){ .used = true, .status = ST_CREATED,
						     .c = (int)(c - t->ctrs) };
			return &t->procs[i];
		}
	return NULL;
}

static const char *ctr_id(const struct task *t, const struct proc *p)
{
	return t->ctrs[p->c].id;
}

static const char *proc_event_id(const struct task *t, const struct proc *p)
{
	return p->exec_id ? p->exec_id : ctr_id(t, p);
}

static void reply_wait(struct task *t, struct proc *p, struct ttrpc_call call)
{
	struct pb_buf b = { 0 };

	pb_put_varint(&b, 1, p->exit_status);
	pb_put_timestamp(&b, 2, p->exited_ns);
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
	pb_buf_release(&b);
}

static void state_save(struct task *t);

static void drop_pidfd(struct task *t, struct proc *p)
{
	if (p->pidfd) {
		ttrpc_server_unwatch(t->srv, p->pidfd - 1);
		close(p->pidfd - 1);
		p->pidfd = 0;
	}
}

static void proc_exited(struct task *t, struct proc *p, uint32_t code)
{
	struct pb_buf ev = { 0 };
	char path[4300];

	p->status = ST_STOPPED;
	close_stdin(p);
	drop_pidfd(t, p);
	if (p->pid > 0) {
		snprintf(path, sizeof(path), "%s%d", t->exit_prefix, (int)p->pid);
		unlink(path);
	}
	p->exit_status = code;
	p->exited_ns = shim_now_ns();
	shim_log("process %s (helper %d) exited with %u", proc_event_id(t, p), (int)p->pid,
		 p->exit_status);
	pb_put_str(&ev, 1, ctr_id(t, p));
	pb_put_str(&ev, 2, proc_event_id(t, p));
	pb_put_varint(&ev, 3, (uint32_t)p->pid);
	pb_put_varint(&ev, 4, p->exit_status);
	pb_put_timestamp(&ev, 5, p->exited_ns);
	shim_publish(t->o, "/tasks/exit", "containerd.events.TaskExit", &ev);
	pb_buf_release(&ev);
	for (int i = 0; i < p->n_waiters; i++)
		reply_wait(t, p, p->waiters[i]);
	p->n_waiters = 0;
	/* The container ends with its init: its other processes go too (as with runc). */
	if (!p->exec_id)
		for (int i = 0; i < MAX_PROCS; i++)
			if (t->procs[i].used && t->procs[i].c == p->c &&
			    t->procs[i].status == ST_RUNNING)
				shim_vm_signal(t->procs[i].pid, SIGKILL);
	state_save(t);
}

static uint32_t wait_code(int ws)
{
	return WIFEXITED(ws) ? (uint32_t)WEXITSTATUS(ws) : 128u + (uint32_t)WTERMSIG(ws);
}

static void on_sigchld(void *ctx, int fd, uint32_t events)
{
	struct task *t = ctx;
	struct signalfd_siginfo si;
	int ws;
	pid_t pid;

	while (read(fd, &si, sizeof(si)) == sizeof(si))
		;
	while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &t->procs[i];
			if (p->used && p->pid == pid && p->status != ST_STOPPED)
				proc_exited(t, p, wait_code(ws));
		}
	}
}

/* --- the pod's saved state: a new shim process for the same pod re-attaches ------------------ */

/*
 * Saved after every change (atomically: a temp file of ours, 0600, renamed): the VM, the
 * containers and their processes (a started one's helper pid and start time; an exec added but
 * not started, its spec, since containerd starts it later through whichever shim is there). A
 * shim that starts for a pod with a saved state and a live VM takes all of it back; the helpers
 * of the earlier process are no children of the new one, so their ends come through pidfds and
 * their exit statuses through the files they write (shim_vm_spawn's status_path).
 */
static struct json_object *state_json(const struct task *t)
{
	struct json_object *o = json_object_new_object(), *cs = json_object_new_array(),
			   *ps = json_object_new_array();
	bool failed = !o || !cs || !ps;

	for (int i = 0; !failed && i < MAX_CTRS; i++) {
		const struct ctr *c = &t->ctrs[i];
		struct json_object *j = c->used ? json_object_new_object() : NULL;
		if (!j)
			continue;
		json_object_object_add(j, "i", json_object_new_int(i));
		json_object_object_add(j, "id", json_object_new_string(c->id));
		json_object_object_add(j, "bundle", json_object_new_string(c->bundle));
		json_object_object_add(j, "rootfs", json_object_new_string(c->rootfs));
		json_object_object_add(j, "mounted", json_object_new_boolean(c->mounted));
		json_object_object_add(j, "attached", json_object_new_boolean(c->attached));
		json_object_array_add(cs, j);
	}
	for (int i = 0; !failed && i < MAX_PROCS; i++) {
		const struct proc *p = &t->procs[i];
		struct json_object *j = p->used ? json_object_new_object() : NULL;
		if (!j)
			continue;
		json_object_object_add(j, "c", json_object_new_int(p->c));
		if (p->exec_id)
			json_object_object_add(j, "exec_id", json_object_new_string(p->exec_id));
		static const char *const keys[] = { "stdin", "stdout", "stderr" };
		for (int k = 0; k < 3; k++) {
			const char *v = p->stdio[k] ? p->stdio[k] : "";
			json_object_object_add(j, keys[k], json_object_new_string(v));
		}
		json_object_object_add(j, "pid", json_object_new_int(p->pid));
		json_object_object_add(j, "start", json_object_new_int64((int64_t)p->start));
		json_object_object_add(j, "status", json_object_new_int(p->status));
		json_object_object_add(j, "exit_status", json_object_new_int64(p->exit_status));
		json_object_object_add(j, "exited_ns", json_object_new_int64(p->exited_ns));
		/* (A created init's spec is the bundle's: read from there again.) */
		if (p->exec_id && p->status == ST_CREATED) {
			struct json_object *spec = shim_proc_json(&p->spec);
			failed |= !spec;
			json_object_object_add(j, "spec", spec);
		}
		json_object_array_add(ps, j);
	}
	if (failed) {
		json_object_put(o);
		json_object_put(cs);
		json_object_put(ps);
		return NULL;
	}
	json_object_object_add(o, "vm", json_object_new_string(t->vm));
	json_object_object_add(o, "paused", json_object_new_boolean(t->paused));
	json_object_object_add(o, "netns", json_object_new_string(t->netns));
	json_object_object_add(o, "ctrs", cs);
	json_object_object_add(o, "procs", ps);
	return o;
}

static void state_save(struct task *t)
{
	struct json_object *o;
	const char *text;
	char tmp[4300];
	int fd = -1;
	bool ok = false;

	if (!t->vm[0] || n_ctrs(t) == 0) {
		unlink(t->state_path);
		return;
	}
	o = state_json(t);
	text = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : NULL;
	snprintf(tmp, sizeof(tmp), "%s.tmp", t->state_path);
	unlink(tmp);
	if (text && strlen(text) <= SHIM_POD_STATE_MAX_BYTES)
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		size_t n = strlen(text);
		ok = write(fd, text, n) == (ssize_t)n;
		ok = close(fd) == 0 && ok;
		ok = ok && rename(tmp, t->state_path) == 0;
	}
	if (!ok) {
		shim_log("cannot save the pod's state in %s", t->state_path);
		unlink(tmp);
	}
	json_object_put(o);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

/* An earlier shim's helper ended: its status from the file it wrote (255 without one). */
static uint32_t orphan_code(struct task *t, pid_t pid)
{
	char path[4300], *buf = NULL;
	const char *why;
	size_t n = 0;
	uint32_t code = 255;

	snprintf(path, sizeof(path), "%s%d", t->exit_prefix, (int)pid);
	/* A decimal status and a newline: read like the pod's state (ours, nobody else's). */
	if (shim_read_private(path, 15, &buf, &n, &why) == 0 && n > 0)
		code = (uint32_t)strtoul(buf, NULL, 10) & 0xff;
	free(buf);
	return code;
}

static void on_pidfd(void *ctx, int fd, uint32_t events)
{
	struct task *t = ctx;

	(void)events;
	for (int i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &t->procs[i];
		if (p->used && p->pidfd == fd + 1 && p->status == ST_RUNNING)
			proc_exited(t, p, orphan_code(t, p->pid));
	}
}

/* A created init's spec, again from its bundle's config.json. */
static int init_spec(const struct ctr *c, struct shim_proc *spec)
{
	char path[4200], *why = NULL;
	struct json_object *cfg, *pj;
	int r;

	snprintf(path, sizeof(path), "%s/config.json", c->bundle);
	cfg = json_object_from_file(path);
	const char *js = cfg && json_object_object_get_ex(cfg, "process", &pj)
				 ? json_object_to_json_string(pj)
				 : "";
	r = shim_oci_process(js, strlen(js), spec, &why);
	json_object_put(cfg);
	return r;
}

/* A saved process back into the table; false when the table is full. */
static bool proc_restore(struct task *t, struct pod_state_proc *sp, bool alive)
{
	struct proc *p = proc_new(t, &t->ctrs[sp->c]);

	if (!p)
		return false;
	/* The strings move from the parsed state into the table. */
	p->exec_id = sp->exec_id;
	sp->exec_id = NULL;
	for (int k = 0; k < 3; k++) {
		p->stdio[k] = sp->stdio[k];
		sp->stdio[k] = NULL;
	}
	p->pid = sp->pid;
	p->start = sp->start;
	p->status = sp->status;
	p->exit_status = sp->exit_status;
	p->exited_ns = sp->exited_ns;
	if (p->status == ST_CREATED && sp->has_spec) {
		p->spec = sp->spec; /* an exec added but not started */
		sp->spec = (struct shim_proc){ 0 };
	} else if (p->status == ST_CREATED) {
		if (init_spec(&t->ctrs[p->c], &p->spec) < 0)
			p->status = ST_STOPPED, p->exit_status = 255;
	} else if (p->status == ST_RUNNING) {
		int fd = -1;
		if (alive && shim_vm_proc_is(p->pid, p->start))
			fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
		if (fd >= 0 && ttrpc_server_watch(t->srv, fd, on_pidfd, t) == 0)
			p->pidfd = fd + 1;
		else {
			if (fd >= 0)
				close(fd);
			proc_exited(t, p, orphan_code(t, p->pid));
		}
	}
	return true;
}

static void state_load(struct task *t)
{
	struct pod_state *s = calloc(1, sizeof(*s));
	const char *why = "out of memory";
	size_t len = 0;
	char *buf = NULL;
	int r = s ? shim_read_private(t->state_path, SHIM_POD_STATE_MAX_BYTES, &buf, &len, &why)
		  : -ENOMEM;

	if (r == 0)
		r = shim_pod_state_parse(buf, len, s, &why);
	free(buf);
	if (r < 0) {
		/* None (a new pod) is the usual case; a refused one is left for `delete`. */
		if (r != -ENOENT)
			shim_log("ignoring the saved pod state %s: %s", t->state_path, why);
		if (s)
			shim_pod_state_release(s);
		free(s);
		return;
	}
	snprintf(t->vm, sizeof(t->vm), "%s", s->vm);
	shim_vm_work_path(t->vm, "", t->pod_dir, sizeof(t->pod_dir));
	t->paused = s->paused;
	snprintf(t->netns, sizeof(t->netns), "%s", s->netns);
	bool alive = shim_vm_alive(t->vm);
	for (size_t i = 0; i < s->n_ctrs; i++) {
		struct pod_state_ctr *sc = &s->ctrs[i];
		struct ctr *c = &t->ctrs[sc->i];
		*c = (struct ctr){ .used = true, .id = sc->id, .bundle = sc->bundle,
				   .mounted = sc->mounted, .attached = sc->attached };
		sc->id = sc->bundle = NULL;
		snprintf(c->rootfs, sizeof(c->rootfs), "%s", sc->rootfs);
		snprintf(c->guest_root, sizeof(c->guest_root), SHIM_GUEST_ROOT "/%s", c->id);
	}
	for (size_t i = 0; i < s->n_procs && proc_restore(t, &s->procs[i], alive); i++)
		;
	shim_pod_state_release(s);
	free(s);
	shim_log("re-attached to pod VM %s (%d containers)%s", t->vm, n_ctrs(t),
		 alive ? "" : "; the VM is gone");
	/* Processes whose helper already ended are done: an exit seen now (pidfd readable). */
	for (int i = 0; i < MAX_PROCS; i++)
		if (t->procs[i].used && t->procs[i].pidfd &&
		    !shim_vm_proc_is(t->procs[i].pid, t->procs[i].start))
			proc_exited(t, &t->procs[i], orphan_code(t, t->procs[i].pid));
	state_save(t);
}

/* --- requests ------------------------------------------------------------------------------- */

/* The fields most requests carry: id = 1, exec_id = 2 (or a varint: Shutdown's now), and
 * varints 3 and 4 (Kill's signal and all, CloseIO's stdin). */
struct common_req {
	char *id;
	char *exec_id;
	uint64_t v2, v3, v4;
};

static int parse_common(const uint8_t *p, size_t len, struct common_req *c)
{
	struct pb_reader r;
	struct pb_field f;
	int n;

	pb_reader_init(&r, p, len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 1)
			n = pb_field_str(&f, &c->id);
		else if (f.num == 2 && f.wire == PB_LEN)
			n = pb_field_str(&f, &c->exec_id);
		else if (f.num == 2 && f.wire == PB_VARINT)
			c->v2 = f.v;
		else if (f.num == 3 && f.wire == PB_VARINT)
			c->v3 = f.v;
		else if (f.num == 4 && f.wire == PB_VARINT)
			c->v4 = f.v;
		if (n < 0)
			return n;
	}
	return n;
}

static void common_release(struct common_req *c)
{
	free(c->id);
	free(c->exec_id);
}

static void publish_id(struct task *t, const char *id, const char *topic, const char *type)
{
	struct pb_buf ev = { 0 };

	pb_put_str(&ev, 1, id);
	shim_publish(t->o, topic, type, &ev);
	pb_buf_release(&ev);
}

struct mount_req {
	char *type, *source;
	char *options[16];
	int n_options;
};

static int parse_mount(const struct pb_field *mf, struct mount_req *m)
{
	struct pb_reader r;
	struct pb_field f;
	int n;

	pb_reader_init(&r, mf->data, mf->len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 1)
			n = pb_field_str(&f, &m->type);
		else if (f.num == 2)
			n = pb_field_str(&f, &m->source);
		else if (f.num == 4) {
			if (m->n_options == 16)
				return -E2BIG;
			m->options[m->n_options] = NULL;
			n = pb_field_str(&f, &m->options[m->n_options]);
			if (n == 0)
				m->n_options++;
		}
		if (n < 0)
			return n;
	}
	return n;
}

static void mount_release(struct mount_req *m)
{
	free(m->type);
	free(m->source);
	for (int i = 0; i < m->n_options; i++)
		free(m->options[i]);
}

/* Mount one of containerd's rootfs mounts (overlay or bind) at the bundle's rootfs. */
static int do_mount(const struct mount_req *m, const char *target, char **why)
{
	unsigned long flags = 0;
	char data[8192] = "";
	size_t dl = 0;

	for (int i = 0; i < m->n_options; i++) {
		const char *o = m->options[i];
		if (!strcmp(o, "ro"))
			flags |= MS_RDONLY;
		else if (!strcmp(o, "rw"))
			;
		else if (!strcmp(o, "bind"))
			flags |= MS_BIND;
		else if (!strcmp(o, "rbind"))
			flags |= MS_BIND | MS_REC;
		else {
			int k = snprintf(data + dl, sizeof(data) - dl, "%s%s", dl ? "," : "", o);
			if (k < 0 || (size_t)k >= sizeof(data) - dl) {
				*why = "mount options too long";
				return -E2BIG;
			}
			dl += (size_t)k;
		}
	}
	if (mount(m->source, target, m->type, flags, dl ? data : NULL) < 0) {
		*why = "cannot mount the container's root file system";
		return -errno;
	}
	return 0;
}

static void remove_pod_dir(struct task *t)
{
	char own[24];

	shim_vm_pod_dir_remove(t->vm);
	/* A pool VM's pod dir has its name; the work files (.json, .exit-) have the pod's. */
	shim_vm_name(t->o->ns, t->o->id, own);
	if (strcmp(own, t->vm) != 0)
		shim_vm_pod_dir_remove(own);
	t->pod_dir[0] = '\0';
}

/*
 * The pod's VM from the warm pool (its config's "pool": true): 0 with t->vm and t->pod_dir
 * set, or < 0 after one log line (the caller boots a VM as before).
 */
static int pod_from_pool(struct task *t, const struct shim_vm_config *vc, const char *id)
{
	struct shim_err err = { 0 };
	int r;

	if (vc->netns) {
		shim_log("create %s: not from the pool: the pod has its own network namespace, a "
			 "pool VM's network is in the host's; booting a VM", id);
		return -EXDEV;
	}
	if ((r = shim_vm_pool_acquire(t->vm, sizeof(t->vm), &err)) < 0) {
		shim_log("create %s: no VM from the pool (%s); booting one", id, err.msg);
		t->vm[0] = '\0';
		return r;
	}
	shim_vm_work_path(t->vm, "", t->pod_dir, sizeof(t->pod_dir));
	shim_log("create %s: VM %s from the pool, with the pod dir %s", id, t->vm, t->pod_dir);
	return 0;
}

/* The VM (the first container's Create boots it) and the container's root beneath its share. */
static int ctr_attach(struct task *t, struct ctr *ct, const struct shim_vm_config *vc,
		      char **why)
{
	static char msg[sizeof(((struct shim_err *)0)->msg) + 48];
	struct shim_err err = { 0 };
	bool booted = false;
	int r;

	if (!t->vm[0] && vc->pool && !strcmp(vc->pool, "true") &&
	    pod_from_pool(t, vc, ct->id) == 0) {
		t->netns[0] = '\0';
		booted = true;
	}
	if (!t->vm[0]) {
		snprintf(t->netns, sizeof(t->netns), "%s", vc->netns ? vc->netns : "");
		shim_vm_name(t->o->ns, t->o->id, t->vm);
		if ((r = shim_vm_pod_dir(t->vm, t->pod_dir, sizeof(t->pod_dir), &err)) < 0) {
			snprintf(msg, sizeof(msg), "%s", err.msg);
			*why = msg;
			t->vm[0] = '\0';
			return r;
		}
		shim_log("create %s: booting VM %s with the pod dir %s", ct->id, t->vm, t->pod_dir);
		if ((r = shim_vm_boot(t->vm, t->pod_dir, vc, BOOT_TIMEOUT_S, &err)) < 0) {
			snprintf(msg, sizeof(msg), "cannot boot the VM: %s", err.msg);
			*why = msg;
			remove_pod_dir(t);
			t->vm[0] = '\0';
			return r;
		}
		booted = true;
	}
	int64_t t0 = shim_now_ns();
	r = shim_vm_attach_root(t->vm, ct->rootfs, t->pod_dir, ct->id, &err);
	shim_log("create %s: root attached in VM %s in %.2f ms", ct->id, t->vm,
		 (double)(shim_now_ns() - t0) / 1e6);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot attach the container's root: %s", err.msg);
		*why = msg;
		if (booted) {
			shim_vm_remove(t->vm, t->netns[0] ? t->netns : NULL);
			remove_pod_dir(t);
			t->vm[0] = '\0';
		}
		return r;
	}
	ct->attached = true;
	snprintf(ct->guest_root, sizeof(ct->guest_root), SHIM_GUEST_ROOT "/%s", ct->id);
	return 0;
}

/* The spec's network namespace path (linux.namespaces, type network), or NULL. */
static const char *spec_netns(struct json_object *cfg)
{
	struct json_object *lx, *nss;

	if (!json_object_object_get_ex(cfg, "linux", &lx) ||
	    !json_object_object_get_ex(lx, "namespaces", &nss) ||
	    !json_object_is_type(nss, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(nss); i++) {
		struct json_object *ns = json_object_array_get_idx(nss, i);
		const char *type = jstr(ns, "type"), *path = jstr(ns, "path");
		if (type && !strcmp(type, "network") && path && path[0] == '/')
			return path;
	}
	return NULL;
}

/* A created container that fails after its root was attached: out of the VM again. */
static void ctr_unattach(struct task *t, struct ctr *ct)
{
	if (!ct->attached)
		return;
	if (n_ctrs(t) > 1) {
		shim_vm_detach_root(t->vm, t->pod_dir, ct->id);
	} else {
		shim_vm_remove(t->vm, t->netns[0] ? t->netns : NULL);
		remove_pod_dir(t);
		t->vm[0] = '\0';
	}
	ct->attached = false;
}

/*
 * The spec's bind mounts (the CRI plugin's /etc/hosts, /etc/resolv.conf, /etc/hostname and the
 * pod's volumes; ctr run --mount type=bind,...) into the container root. Not below /proc, /dev
 * and /sys: the guest's own are bound there. Other types (proc, tmpfs, sysfs, ...): the guest's.
 */
static int ctr_binds(struct task *t, struct ctr *ct, struct json_object *cfg, char **why)
{
	static char msg[sizeof(((struct shim_err *)0)->msg)];
	struct json_object *ms, *v;
	struct shim_err err = { 0 };

	if (!json_object_object_get_ex(cfg, "mounts", &ms) ||
	    !json_object_is_type(ms, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(ms); i++) {
		struct json_object *m = json_object_array_get_idx(ms, i);
		const char *type = json_object_object_get_ex(m, "type", &v)
					   ? json_object_get_string(v)
					   : "";
		const char *src = json_object_object_get_ex(m, "source", &v)
					  ? json_object_get_string(v)
					  : NULL;
		const char *dst = json_object_object_get_ex(m, "destination", &v)
					  ? json_object_get_string(v)
					  : NULL;
		bool bind = !strcmp(type ? type : "", "bind"), ro = false;
		struct json_object *opts;
		if (json_object_object_get_ex(m, "options", &opts) &&
		    json_object_is_type(opts, json_type_array))
			for (size_t k = 0; k < json_object_array_length(opts); k++) {
				const char *o = json_object_get_string(
					json_object_array_get_idx(opts, k));
				bind |= o && (!strcmp(o, "bind") || !strcmp(o, "rbind"));
				ro |= o && !strcmp(o, "ro");
			}
		if (!bind || !src || src[0] != '/' || !dst || dst[0] != '/')
			continue;
		static const char *const guest[] = { "/proc", "/dev", "/sys" };
		bool skip = false;
		for (size_t g = 0; g < 3; g++) {
			size_t gl = strlen(guest[g]);
			skip |= !strncmp(dst, guest[g], gl) && (dst[gl] == '/' || !dst[gl]);
		}
		if (skip)
			continue;
		if (shim_vm_bind(t->vm, ct->rootfs, t->pod_dir, ct->id, src, dst, ro, &err) < 0) {
			snprintf(msg, sizeof(msg), "%s", err.msg);
			*why = msg;
			return -EINVAL;
		}
	}
	return 0;
}

static void task_create(struct task *t, struct ttrpc_call call, const uint8_t *p, size_t len)
{
	struct mount_req mounts[MAX_MOUNTS] = { 0 };
	int n_mounts = 0;
	struct pb_reader r;
	struct pb_field f;
	struct proc *pr = NULL;
	struct ctr *ct = NULL;
	char *why = "malformed CreateTaskRequest";
	char *stdio[3] = { NULL, NULL, NULL }, *id = NULL, *bundle = NULL;
	struct json_object *cfg = NULL, *proc = NULL, *root = NULL, *rp, *an;
	struct shim_vm_config vc = { 0 };
	struct shim_config sc = { 0 };
	struct shim_err err = { 0 };
	char *opt_type = NULL, *config_path = NULL;
	const uint8_t *opt = NULL;
	size_t opt_len = 0;
	bool terminal = false;
	int n, code = TTRPC_INVALID_ARGUMENT;

	pb_reader_init(&r, p, len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 1)
			n = pb_field_str(&f, &id);
		else if (f.num == 2)
			n = pb_field_str(&f, &bundle);
		else if (f.num == 3) {
			if (n_mounts == MAX_MOUNTS || f.wire != PB_LEN)
				n = -E2BIG;
			else
				n = parse_mount(&f, &mounts[n_mounts++]);
		} else if (f.num == 4 && f.wire == PB_VARINT)
			terminal = f.v != 0;
		else if (f.num >= 5 && f.num <= 7)
			n = pb_field_str(&f, &stdio[f.num - 5]);
		else if (f.num == 10 && !opt_type)
			n = pb_field_any(&f, &opt_type, &opt, &opt_len);
		if (n < 0)
			break;
	}
	if (n < 0 || !id || !bundle)
		goto out;
	/* The runtime's options (containerd's config.toml): a settings file for every pod. */
	if (opt_type)
		n = shim_runtime_options(opt_type, opt, opt_len, &config_path, &why);
	if (n >= 0 && config_path)
		n = shim_config_load(config_path, &sc, &why);
	if (n < 0)
		goto out;
	vc = (struct shim_vm_config){
		.profile = sc.profile, .cpus = sc.cpus, .memory = sc.memory, .network = sc.network,
		.image = sc.image,
		.allow = sc.allow.v, .n_allow = sc.allow.n,
		.allow_cidr = sc.allow_cidr.v, .n_allow_cidr = sc.allow_cidr.n,
		.allow_domain = sc.allow_domain.v, .n_allow_domain = sc.allow_domain.n,
		.pool = sc.pool ? "true" : NULL,
	};
	if (!shim_id_ok(id)) {
		why = "bad container id (use 1-76 of [A-Za-z0-9_.-])";
		goto out;
	}
	if (ctr_find(t, id)) {
		code = TTRPC_ALREADY_EXISTS;
		why = "this pod already has a container of that id";
		goto out;
	}
	if (terminal) {
		why = "agentvm does not give containers a terminal yet; run without -t";
		goto out;
	}
	for (int i = 0; i < MAX_CTRS && !ct; i++)
		if (!t->ctrs[i].used)
			ct = &t->ctrs[i];
	if (!ct) {
		code = TTRPC_UNAVAILABLE;
		why = "too many containers in this pod";
		goto out;
	}
	*ct = (struct ctr){ .used = true, .id = id, .bundle = bundle };
	/* The process and root from the bundle's config.json. */
	char path[4096];
	snprintf(path, sizeof(path), "%s/config.json", bundle);
	cfg = json_object_from_file(path);
	if (!cfg || !json_object_object_get_ex(cfg, "process", &proc)) {
		why = "cannot read process from the bundle's config.json";
		goto out;
	}
	pr = proc_new(t, ct);
	if (!pr) {
		code = TTRPC_UNAVAILABLE;
		why = "too many processes";
		goto out;
	}
	const char *pj = json_object_to_json_string(proc);
	n = shim_oci_process(pj, strlen(pj), &pr->spec, &why);
	const char *rootp = "rootfs";
	if (json_object_object_get_ex(cfg, "root", &root) &&
	    json_object_object_get_ex(root, "path", &rp))
		rootp = json_object_get_string(rp);
	if (rootp[0] == '/')
		snprintf(ct->rootfs, sizeof(ct->rootfs), "%s", rootp);
	else
		snprintf(ct->rootfs, sizeof(ct->rootfs), "%s/%s", bundle, rootp);
	/* The VM's settings from the annotations (strings stay in cfg until the boot); only the
	 * first container of a pod boots the VM, a later one's io.agentvm.* are still checked. */
	if (n == 0 && json_object_object_get_ex(cfg, "annotations", &an) &&
	    json_object_is_type(an, json_type_object)) {
		json_object_object_foreach(an, key, val)
		{
			if (n == 0 && sc.no_annotations &&
			    !strncmp(key, SHIM_ANNOTATION_PREFIX, strlen(SHIM_ANNOTATION_PREFIX)))
				n = shim_err_set(&err, -EPERM,
						 "annotation '%s' refused: this runtime's config "
						 "sets \"annotations\": false",
						 key);
			if (n == 0 && json_object_is_type(val, json_type_string))
				n = shim_vm_config_set(&vc, key, json_object_get_string(val), &err);
		}
		if (n < 0) {
			static char msg[sizeof(err.msg)];
			snprintf(msg, sizeof(msg), "%s", err.msg);
			why = msg;
		}
	}
	if (n < 0)
		goto out;
	vc.netns = spec_netns(cfg);
	code = TTRPC_INTERNAL;
	if (n_mounts > 1) {
		why = "more than one rootfs mount is not supported yet";
		goto out;
	}
	if (n_mounts == 1) {
		mkdir(ct->rootfs, 0755);
		if ((n = do_mount(&mounts[0], ct->rootfs, &why)) < 0)
			goto out;
		ct->mounted = true;
	}
	/* Mount points for the guest's /proc, /dev and /sys (guest-init binds them), as runc
	 * makes its own; in the container's writable layer, never in the image. */
	static const char *const mps[] = { "proc", "dev", "sys" };
	for (size_t i = 0; i < sizeof(mps) / sizeof(mps[0]); i++) {
		char mp[4200];
		snprintf(mp, sizeof(mp), "%s/%s", ct->rootfs, mps[i]);
		mkdir(mp, 0555);
	}
	if (ctr_attach(t, ct, &vc, &why) < 0 || ctr_binds(t, ct, cfg, &why) < 0)
		goto out;
	id = bundle = NULL;
	for (int i = 0; i < 3; i++) {
		pr->stdio[i] = stdio[i];
		stdio[i] = NULL;
	}
	pr->terminal = terminal;
	code = TTRPC_OK;
out:
	if (code != TTRPC_OK) {
		shim_log("create failed: %s", why);
		if (ct)
			ctr_unattach(t, ct);
		if (ct && ct->mounted)
			umount2(ct->rootfs, MNT_DETACH);
		if (ct)
			*ct = (struct ctr){ 0 };
		if (pr)
			proc_free(pr);
		ttrpc_reply(t->srv, call, code, why, NULL);
	} else {
		struct pb_buf b = { 0 }, ev = { 0 }, io = { 0 };
		pb_put_varint(&b, 1, (uint32_t)getpid());
		ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
		pb_put_str(&ev, 1, ct->id);
		pb_put_str(&ev, 2, ct->bundle);
		for (int i = 0; i < 3; i++)
			pb_put_str(&io, i + 1, pr->stdio[i]);
		pb_put_msg(&ev, 4, &io);
		pb_put_varint(&ev, 6, (uint32_t)getpid());
		shim_publish(t->o, "/tasks/create", "containerd.events.TaskCreate", &ev);
		state_save(t);
		pb_buf_release(&b);
		pb_buf_release(&ev);
		pb_buf_release(&io);
	}
	json_object_put(cfg);
	shim_config_release(&sc);
	free(opt_type);
	free(config_path);
	for (int i = 0; i < n_mounts; i++)
		mount_release(&mounts[i]);
	for (int i = 0; i < 3; i++)
		free(stdio[i]);
	free(id);
	free(bundle);
}

static struct proc *lookup(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct ctr *ct = ctr_find(t, c->id);
	struct proc *p = ct ? proc_find(t, ct, c->exec_id) : NULL;

	if (!p)
		ttrpc_reply(t->srv, call, TTRPC_NOT_FOUND, "no such task or process", NULL);
	return p;
}

/*
 * The stdin FIFO: opened here without blocking (containerd may open its writer later, or may
 * have come and gone already), with a writer of our own so the process sees no end of input
 * before containerd's CloseIO; the helper gets the reader. Returns the reader or -1.
 */
static int start_stdin(struct proc *p)
{
	const char *path = p->stdio[0];
	int r, w;

	if (!path || !*path)
		return -1;
	r = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (r < 0)
		return -1;
	w = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (w < 0) {
		close(r);
		return -1;
	}
	fcntl(r, F_SETFL, fcntl(r, F_GETFL) & ~O_NONBLOCK);
	p->stdin_w = w + 1;
	return r;
}

/*
 * An output FIFO: opened read-write, which never blocks and never fails for want of a reader
 * (containerd's may come later, or be gone: `ctr run -d` exits after Start), as containerd's
 * own shims keep a reader of their own. Returns the fd or -1.
 */
static int open_output(const char *path)
{
	int fd;

	if (!path || !*path)
		return -1;
	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

static void task_start(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct proc *p = lookup(t, call, c);
	struct shim_err err = { 0 };
	struct pb_buf b = { 0 }, ev = { 0 };
	int fds[3], r;

	if (!p)
		return;
	if (p->status != ST_CREATED) {
		ttrpc_reply(t->srv, call, TTRPC_FAILED_PRECONDITION, "process already started", NULL);
		return;
	}
	fds[0] = start_stdin(p);
	fds[1] = open_output(p->stdio[1]);
	fds[2] = open_output(p->stdio[2]);
	r = shim_vm_spawn(t->vm, t->ctrs[p->c].guest_root, &p->spec, fds, t->exit_prefix, &p->pid,
			  &err);
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (r < 0) {
		close_stdin(p);
		ttrpc_reply(t->srv, call, TTRPC_INTERNAL, err.msg, NULL);
		return;
	}
	p->status = ST_RUNNING;
	p->start = shim_vm_proc_start(p->pid);
	state_save(t);
	pb_put_varint(&b, 1, (uint32_t)p->pid);
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
	pb_put_str(&ev, 1, ctr_id(t, p));
	if (p->exec_id) {
		pb_put_str(&ev, 2, p->exec_id);
		pb_put_varint(&ev, 3, (uint32_t)p->pid);
		shim_publish(t->o, "/tasks/exec-started", "containerd.events.TaskExecStarted", &ev);
	} else {
		pb_put_varint(&ev, 2, (uint32_t)p->pid);
		shim_publish(t->o, "/tasks/start", "containerd.events.TaskStart", &ev);
	}
	pb_buf_release(&b);
	pb_buf_release(&ev);
}

static void task_exec(struct task *t, struct ttrpc_call call, const uint8_t *data, size_t len)
{
	struct common_req c = { 0 };
	struct pb_reader r;
	struct pb_field f;
	char *stdio[3] = { NULL, NULL, NULL }, *type = NULL, *why = "malformed ExecProcessRequest";
	const uint8_t *spec = NULL;
	size_t spec_len = 0;
	struct proc *p = NULL;
	int n;

	pb_reader_init(&r, data, len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 1)
			n = pb_field_str(&f, &c.id);
		else if (f.num == 2)
			n = pb_field_str(&f, &c.exec_id);
		else if (f.num == 3 && f.wire == PB_VARINT && f.v)
			why = "agentvm does not give processes a terminal yet; exec without -t";
		else if (f.num >= 4 && f.num <= 6)
			n = pb_field_str(&f, &stdio[f.num - 4]);
		else if (f.num == 7)
			n = pb_field_any(&f, &type, &spec, &spec_len);
		if (n < 0)
			break;
	}
	if (n < 0 || !c.exec_id || !*c.exec_id || !spec || strstr(why, "terminal")) {
		ttrpc_reply(t->srv, call, TTRPC_INVALID_ARGUMENT, why, NULL);
		goto out;
	}
	/* containerd's own rule for ids; the pod's saved state holds no other. */
	if (!shim_id_ok(c.exec_id)) {
		ttrpc_reply(t->srv, call, TTRPC_INVALID_ARGUMENT,
			    "bad exec id (use 1-76 of [A-Za-z0-9_.-])", NULL);
		goto out;
	}
	struct ctr *ct = ctr_find(t, c.id);
	if (!ct) {
		ttrpc_reply(t->srv, call, TTRPC_NOT_FOUND, "no such task", NULL);
		goto out;
	}
	if (proc_find(t, ct, c.exec_id)) {
		ttrpc_reply(t->srv, call, TTRPC_ALREADY_EXISTS, "exec id already in use", NULL);
		goto out;
	}
	if (!(p = proc_new(t, ct))) {
		ttrpc_reply(t->srv, call, TTRPC_UNAVAILABLE, "too many processes", NULL);
		goto out;
	}
	if (shim_oci_process((const char *)spec, spec_len, &p->spec, &why) < 0) {
		proc_free(p);
		ttrpc_reply(t->srv, call, TTRPC_INVALID_ARGUMENT, why, NULL);
		goto out;
	}
	p->exec_id = c.exec_id;
	c.exec_id = NULL;
	for (int i = 0; i < 3; i++) {
		p->stdio[i] = stdio[i];
		stdio[i] = NULL;
	}
	/* Kept: containerd starts it with its own next call, maybe to a restarted shim. */
	state_save(t);
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, NULL);
	struct pb_buf ev = { 0 };
	pb_put_str(&ev, 1, ct->id);
	pb_put_str(&ev, 2, p->exec_id);
	shim_publish(t->o, "/tasks/exec-added", "containerd.events.TaskExecAdded", &ev);
	pb_buf_release(&ev);
out:
	common_release(&c);
	free(type);
	for (int i = 0; i < 3; i++)
		free(stdio[i]);
}

static void task_state(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct proc *p = lookup(t, call, c);
	struct pb_buf b = { 0 };

	if (!p)
		return;
	enum shim_status st = p->status == ST_RUNNING && t->paused ? ST_PAUSED : p->status;
	pb_put_str(&b, 1, ctr_id(t, p));
	pb_put_str(&b, 2, t->ctrs[p->c].bundle);
	/* Before Start the init's pid is the one Create answered: the shim's. */
	pb_put_varint(&b, 3, p->pid || p->exec_id ? (uint32_t)p->pid : (uint32_t)getpid());
	pb_put_varint(&b, 4, st);
	for (int i = 0; i < 3; i++)
		pb_put_str(&b, 5 + i, p->stdio[i]);
	pb_put_varint(&b, 8, p->terminal);
	pb_put_varint(&b, 9, p->exit_status);
	if (p->status == ST_STOPPED)
		pb_put_timestamp(&b, 10, p->exited_ns);
	pb_put_str(&b, 11, p->exec_id);
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
	pb_buf_release(&b);
}

static void task_wait(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct proc *p = lookup(t, call, c);

	if (!p)
		return;
	if (p->status == ST_STOPPED)
		reply_wait(t, p, call);
	else if (p->n_waiters == MAX_WAITERS)
		ttrpc_reply(t->srv, call, TTRPC_UNAVAILABLE, "too many waiters", NULL);
	else
		p->waiters[p->n_waiters++] = call;
}

static void task_kill(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct proc *p = lookup(t, call, c);
	int sig = (int)c->v3;

	if (!p)
		return;
	if (sig <= 0 || sig > 64) {
		ttrpc_reply(t->srv, call, TTRPC_INVALID_ARGUMENT, "bad signal number", NULL);
		return;
	}
	if (p->status == ST_CREATED && !p->exec_id) {
		/* Never started: it ends here, as if killed at once. */
		p->pid = 0;
		proc_exited(t, p, 128u + (uint32_t)sig);
	} else if (p->status == ST_RUNNING) {
		/* The guest sends it to the process group; with `all` every other process too. */
		shim_vm_signal(p->pid, sig);
		for (int i = 0; c->v4 && i < MAX_PROCS; i++)
			if (t->procs[i].used && &t->procs[i] != p && t->procs[i].c == p->c &&
			    t->procs[i].status == ST_RUNNING)
				shim_vm_signal(t->procs[i].pid, sig);
		/* A paused VM cannot deliver it; SIGKILL must still end the task. */
		if (t->paused && sig == SIGKILL)
			shim_vm_pause(t->vm, false, NULL), t->paused = false;
	} else {
		ttrpc_reply(t->srv, call, TTRPC_NOT_FOUND, "process already finished", NULL);
		return;
	}
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, NULL);
}

static void task_pause(struct task *t, struct ttrpc_call call, const struct common_req *c,
		       bool pause)
{
	struct shim_err err = { 0 };

	if (!lookup(t, call, c))
		return;
	/* The whole VM stops: with a pod, every container of it (CRI never pauses). */
	if (shim_vm_pause(t->vm, pause, &err) < 0) {
		ttrpc_reply(t->srv, call, TTRPC_INTERNAL, err.msg, NULL);
		return;
	}
	t->paused = pause;
	state_save(t);
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, NULL);
	if (pause)
		publish_id(t, c->id, "/tasks/paused", "containerd.events.TaskPaused");
	else
		publish_id(t, c->id, "/tasks/resumed", "containerd.events.TaskResumed");
}

/* A container goes: its processes, its root in the VM and on the host; the VM with the last. */
static void ctr_remove(struct task *t, struct ctr *ct)
{
	for (int i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &t->procs[i];
		if (!p->used || &t->ctrs[p->c] != ct)
			continue;
		/* (An earlier shim's helper only while it is still that process.) In a VM that
		 * stays (other containers), the guest's process is killed; else the helper. */
		if (p->status == ST_RUNNING && (!p->pidfd || shim_vm_proc_is(p->pid, p->start))) {
			if (n_ctrs(t) > 1)
				shim_vm_signal(p->pid, SIGKILL);
			else
				kill(p->pid, SIGKILL);
		}
		drop_pidfd(t, p);
		proc_free(p);
	}
	if (ct->attached && n_ctrs(t) > 1)
		shim_vm_detach_root(t->vm, t->pod_dir, ct->id);
	if (ct->mounted && umount2(ct->rootfs, MNT_DETACH) < 0)
		shim_log("cannot unmount %s: %s", ct->rootfs, strerror(errno));
	free(ct->id);
	free(ct->bundle);
	*ct = (struct ctr){ 0 };
	if (n_ctrs(t) == 0 && t->vm[0]) {
		/* The clones of the roots go with QEMU's mount namespace. */
		shim_vm_remove(t->vm, t->netns[0] ? t->netns : NULL);
		remove_pod_dir(t);
		t->vm[0] = '\0';
		t->paused = false;
	}
}

static void task_delete(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct proc *p = lookup(t, call, c);
	struct pb_buf b = { 0 }, ev = { 0 };

	if (!p)
		return;
	if (p->status == ST_RUNNING) {
		ttrpc_reply(t->srv, call, TTRPC_FAILED_PRECONDITION,
			    "process is running; kill it first", NULL);
		return;
	}
	if (p->status == ST_CREATED)
		p->exited_ns = shim_now_ns();
	pb_put_varint(&b, 1, (uint32_t)p->pid);
	pb_put_varint(&b, 2, p->exit_status);
	pb_put_timestamp(&b, 3, p->exited_ns);
	if (!p->exec_id) {
		pb_put_str(&ev, 1, ctr_id(t, p));
		pb_put_varint(&ev, 2, (uint32_t)p->pid);
		pb_put_varint(&ev, 3, p->exit_status);
		pb_put_timestamp(&ev, 4, p->exited_ns);
		ctr_remove(t, &t->ctrs[p->c]);
		shim_publish(t->o, "/tasks/delete", "containerd.events.TaskDelete", &ev);
	} else {
		proc_free(p);
	}
	state_save(t);
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
	pb_buf_release(&b);
	pb_buf_release(&ev);
}

static void task_pids(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct pb_buf b = { 0 };

	struct ctr *ct = ctr_find(t, c->id);

	if (!ct) {
		ttrpc_reply(t->srv, call, TTRPC_NOT_FOUND, "no such task", NULL);
		return;
	}
	for (int i = 0; i < MAX_PROCS; i++) {
		struct pb_buf pi = { 0 };
		if (!t->procs[i].used || &t->ctrs[t->procs[i].c] != ct ||
		    t->procs[i].status != ST_RUNNING)
			continue;
		pb_put_varint(&pi, 1, (uint32_t)t->procs[i].pid);
		pb_put_msg(&b, 1, &pi);
		pb_buf_release(&pi);
	}
	ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
	pb_buf_release(&b);
}

/*
 * Stats: containerd's cgroup v1 metrics (io.containerd.cgroups.v1.Metrics, what `ctr task
 * metrics` and the CRI plugin decode), filled with what agentvm measures of the VM: the pod's
 * VM as a whole (every container of a pod reports it), but the container's own process count.
 */
#define METRICS_V1 "io.containerd.cgroups.v1.Metrics"
static void task_stats(struct task *t, struct ttrpc_call call, const struct common_req *c)
{
	struct ctr *ct = ctr_find(t, c->id);
	struct shim_vm_usage u;
	struct shim_err err = { 0 };
	struct pb_buf m = { 0 }, pids = { 0 }, cpu = { 0 }, usage = { 0 }, mem = { 0 }, ent = { 0 },
		      net = { 0 }, any = { 0 }, b = { 0 };
	uint64_t n = 0;

	if (!ct) {
		ttrpc_reply(t->srv, call, TTRPC_NOT_FOUND, "no such task", NULL);
		return;
	}
	if (shim_vm_usage(t->vm, t->netns[0] ? t->netns : NULL, &u, &err) < 0) {
		ttrpc_reply(t->srv, call, TTRPC_UNAVAILABLE, err.msg, NULL);
		return;
	}
	for (int i = 0; i < MAX_PROCS; i++)
		n += t->procs[i].used && &t->ctrs[t->procs[i].c] == ct &&
		     t->procs[i].status == ST_RUNNING;
	pb_put_varint(&pids, 1, n);	      /* PidsStat.current */
	pb_put_varint(&usage, 1, u.cpu_ns); /* CPUUsage.total */
	pb_put_msg(&cpu, 1, &usage);	      /* CPUStat.usage */
	/* Memory: the guest's use of the VM's memory (its limit), else QEMU's resident set. */
	pb_put_varint(&ent, 1, u.have_guest ? u.guest_total : 0);
	pb_put_varint(&ent, 2, u.have_guest ? u.guest_total - u.guest_available : u.rss_bytes);
	pb_put_varint(&mem, 2, u.rss_bytes); /* MemoryStat.rss: what the VM costs the host */
	pb_put_msg(&mem, 33, &ent);	      /* MemoryStat.usage */
	pb_put_msg(&m, 2, &pids);
	pb_put_msg(&m, 3, &cpu);
	pb_put_msg(&m, 4, &mem);
	if (u.have_net) {
		pb_put_str(&net, 1, "eth0");
		pb_put_varint(&net, 2, u.rx_bytes);
		pb_put_varint(&net, 3, u.rx_packets);
		pb_put_varint(&net, 5, u.rx_dropped);
		pb_put_varint(&net, 6, u.tx_bytes);
		pb_put_varint(&net, 7, u.tx_packets);
		pb_put_varint(&net, 9, u.tx_dropped);
		pb_put_msg(&m, 7, &net);
	}
	pb_put_str(&any, 1, METRICS_V1);
	pb_put_bytes(&any, 2, m.data, m.len);
	pb_put_msg(&b, 1, &any); /* StatsResponse.stats */
	ttrpc_reply(t->srv, call, b.error ? TTRPC_INTERNAL : TTRPC_OK,
		    b.error ? "out of memory" : NULL, &b);
	struct pb_buf *all[] = { &m, &pids, &cpu, &usage, &mem, &ent, &net, &any, &b };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		pb_buf_release(all[i]);
}

static void handle(void *ctx, struct ttrpc_call call, const struct ttrpc_request *req)
{
	struct task *t = ctx;
	struct common_req c = { 0 };
	const char *m = req->method;

	if (t->o->debug)
		shim_log("call %s.%s", req->service, m);
	if (strcmp(req->service, SHIM_TASK_SERVICE) != 0) {
		ttrpc_reply(t->srv, call, TTRPC_UNIMPLEMENTED, "unknown service", NULL);
		return;
	}
	if (!strcmp(m, "Create")) {
		task_create(t, call, req->payload, req->len);
		return;
	}
	if (!strcmp(m, "Exec")) {
		task_exec(t, call, req->payload, req->len);
		return;
	}
	if (parse_common(req->payload, req->len, &c) < 0) {
		ttrpc_reply(t->srv, call, TTRPC_INVALID_ARGUMENT, "malformed request", NULL);
	} else if (!strcmp(m, "Start")) {
		task_start(t, call, &c);
	} else if (!strcmp(m, "State")) {
		task_state(t, call, &c);
	} else if (!strcmp(m, "Wait")) {
		task_wait(t, call, &c);
	} else if (!strcmp(m, "Kill")) {
		task_kill(t, call, &c);
	} else if (!strcmp(m, "Pause") || !strcmp(m, "Resume")) {
		task_pause(t, call, &c, m[0] == 'P');
	} else if (!strcmp(m, "Delete")) {
		task_delete(t, call, &c);
	} else if (!strcmp(m, "Stats")) {
		task_stats(t, call, &c);
	} else if (!strcmp(m, "Pids")) {
		task_pids(t, call, &c);
	} else if (!strcmp(m, "CloseIO")) {
		/* Our writer goes; with containerd's gone too the process reads EOF. */
		struct proc *p = lookup(t, call, &c);
		if (p) {
			if (c.v3)
				close_stdin(p);
			ttrpc_reply(t->srv, call, TTRPC_OK, NULL, NULL);
		}
	} else if (!strcmp(m, "Connect")) {
		struct pb_buf b = { 0 };
		struct ctr *ct = ctr_find(t, c.id);
		struct proc *p = ct ? proc_find(t, ct, NULL) : NULL;
		pb_put_varint(&b, 1, (uint32_t)getpid());
		pb_put_varint(&b, 2, p ? (uint32_t)p->pid : 0);
		pb_put_str(&b, 3, "agentvm-shim 1");
		ttrpc_reply(t->srv, call, TTRPC_OK, NULL, &b);
		pb_buf_release(&b);
	} else if (!strcmp(m, "Shutdown")) {
		/* containerd asks after every task's delete: a pod's shim stays while it has
		 * containers (as runc's grouping shim does). */
		ttrpc_reply(t->srv, call, TTRPC_OK, NULL, NULL);
		if (n_ctrs(t) == 0 || c.v2)
			ttrpc_server_stop(t->srv);
	} else {
		/* Update, ResizePty, Checkpoint: not yet. */
		ttrpc_reply(t->srv, call, TTRPC_UNIMPLEMENTED, "not implemented by agentvm", NULL);
	}
	common_release(&c);
}

int shim_serve(const struct shim_opts *o, int lfd)
{
	struct task t = { .o = o };
	sigset_t set;
	int sfd, r;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return -errno;
	r = ttrpc_server_from_fd(lfd, handle, &t, &t.srv);
	if (r == 0)
		r = ttrpc_server_watch(t.srv, sfd, on_sigchld, &t);
	if (r == 0) {
		char vm[24];
		shim_vm_name(o->ns, o->id, vm);
		shim_vm_work_path(vm, ".json", t.state_path, sizeof(t.state_path));
		shim_vm_work_path(vm, ".exit-", t.exit_prefix, sizeof(t.exit_prefix));
		state_load(&t);
	}
	if (r == 0)
		r = ttrpc_server_run(t.srv);
	/* Shutdown with the task still there (containerd gave up on it): leave nothing. */
	for (int i = 0; i < MAX_CTRS; i++)
		if (t.ctrs[i].used)
			ctr_remove(&t, &t.ctrs[i]);
	ttrpc_server_free(t.srv);
	close(sfd);
	return r;
}
