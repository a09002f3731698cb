/* SPDX-License-Identifier: MIT */
/*
 * New VMs from a snapshot: check it (meta.json, unchanged inputs, the accelerator), build its
 * copy-on-write template once, and start supervised clones that load its state (vm_restore.c
 * has the QEMU side). Used by restore, reset and the pool.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "obs/audit.h"
#include "vm/host.h"
#include "snapshot/restore.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "vm/supervisor.h"
#include "base/util.h"
#include "vm/vm_restore.h"

bool restore_cow(void)
{
	const char *m = getenv("AGENTVM_RESTORE_MODE");
	return !(m && !strcmp(m, "plain"));
}

/*
 * Under the template lock, any cow-*.tmp-* is the (RAM-sized) leftover of a build that was
 * interrupted: remove it.
 */
static void remove_stale_cow_tmp(const char *snap)
{
	char dir[PATH_MAX];
	DIR *d;
	struct dirent *e;

	snap_path(dir, sizeof(dir), snap, NULL);
	d = opendir(dir);
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, "cow-", 4) && strstr(e->d_name, ".tmp-"))
			unlinkat(dirfd(d), e->d_name, 0);
	if (d)
		closedir(d);
}

/* Build <snap>/cow-mem + cow-devstate once (under a lock); point rs at them. */
static int ensure_cow(struct restore *rs, const char *snap, struct avm_error *err)
{
	char mem[PATH_MAX - 64], dev[PATH_MAX - 64], lockp[PATH_MAX], tmem[PATH_MAX], tdev[PATH_MAX];
	char name[32];
	_cleanup_close_ int lock = -1;
	int r;

	snap_path(mem, sizeof(mem), snap, SNAP_COW_MEM_FILE);
	snap_path(dev, sizeof(dev), snap, SNAP_COW_DEVSTATE_FILE);
	if (access(dev, R_OK) == 0 && access(mem, R_OK) == 0)
		goto done;
	snap_path(lockp, sizeof(lockp), snap, ".cow.lock");
	lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX) < 0)
		return avm_error_setx(err, -errno, "cannot lock %s", lockp);
	if (access(dev, R_OK) == 0 && access(mem, R_OK) == 0)
		goto done;
	remove_stale_cow_tmp(snap);
	statedir_random_name(name, sizeof(name));
	snprintf(tmem, sizeof(tmem), "%s.tmp-%s", mem, name + 3);
	snprintf(tdev, sizeof(tdev), "%s.tmp-%s", dev, name + 3);
	struct vm_spec *spec = snap_spec_new(&rs->meta);
	if (!spec)
		return avm_error_set(err, -ENOMEM, "out of memory");
	spec->name = strdup(name);
	memcpy(spec->name, "tm", 2); /* "tm-xxxxxxxx": a transient VM */
	struct vm_incoming in = {
		.state_path = rs->state_path, .mem_path = tmem, .mem_share = true,
		.stay_paused = true, .qemu_version = rs->meta.qemu_version,
		.disk_dir = rs->snap_dir,
	};
	struct vm_launch_opts lo = {
		.spec = spec, .kernel = rs->meta.kernel.path, .initrd = rs->meta.initrd.path,
		.qemu = rs->qemu, .accel = spec->accel, .incoming = &in,
	};
	r = vm_build_cow_template(&lo, tdev, err);
	vm_spec_free(spec);
	/* Guest RAM: as private as the migration stream (QEMU created it with its umask). */
	if (r == 0 && chmod(tmem, 0600) < 0)
		r = avm_error_setx(err, -errno, "chmod %s", tmem);
	if (r == 0 && (rename(tmem, mem) < 0 || rename(tdev, dev) < 0))
		r = avm_error_setx(err, -errno, "cannot rename the template files in %s", snap);
	if (r < 0) {
		unlink(tmem);
		unlink(tdev);
		return avm_error_wrap(err, "preparing copy-on-write restores of '%s'", snap);
	}
done:
	snprintf(rs->state_path, sizeof(rs->state_path), "%s", dev);
	snprintf(rs->mem_path, sizeof(rs->mem_path), "%s", mem);
	return 0;
}

/*
 * When disk i of the snapshot is its root image, say so: "disk image <path in the store>" is
 * not what a user knows an image by, nor is the fix the same as for a workspace disk.
 */
static void root_image_hint(const struct snap_meta *m, size_t i, const char *snap,
			    struct avm_error *err)
{
	struct vm_spec *s = err ? vm_spec_new() : NULL;

	if (s && vm_spec_disks_from_json(s, m->spec, NULL) == 0 && i < s->n_disks &&
	    s->disks[i].root)
		avm_error_set(err, err->code,
			      "snapshot '%s' runs in root image %s (%.12s), which was removed or "
			      "changed since; a snapshot keeps only the VM's own writes, so take a "
			      "new one (a rebuild gives the same id only from the same recipe and "
			      "package versions)",
			      snap, s->image, s->image_id);
	vm_spec_free(s);
}

int restore_prepare(const char *snap, struct restore *rs, struct avm_error *err)
{
	_cleanup_free_ char *qemu = NULL;
	int r;

	memset(rs, 0, sizeof(*rs));
	r = snap_load(snap, &rs->meta, err);
	if (r < 0)
		return r;
	if (!strcmp(rs->meta.accel, "kvm") && !host_kvm_usable()) {
		r = avm_error_set(err, -ENODEV,
				  "snapshot '%s' was taken under KVM and /dev/kvm cannot be opened "
				  "here; restore it on a KVM host or take a TCG snapshot",
				  snap);
		goto fail;
	}
	if ((r = host_find_qemu(&qemu, err)) < 0 ||
	    (r = snap_input_check(&rs->meta.qemu, qemu, "QEMU binary", snap, err)) < 0 ||
	    (r = snap_input_check(&rs->meta.kernel, rs->meta.kernel.path, "guest kernel", snap,
				  err)) < 0 ||
	    (r = snap_input_check(&rs->meta.initrd, rs->meta.initrd.path, "guest initramfs", snap,
				  err)) < 0)
		goto fail;
	for (size_t i = 0; i < rs->meta.n_disks; i++)
		if ((r = snap_input_check(&rs->meta.disks[i], rs->meta.disks[i].path, "disk image",
					  snap, err)) < 0) {
			root_image_hint(&rs->meta, i, snap, err);
			goto fail;
		}
	rs->qemu = TAKE_PTR(qemu);
	snap_path(rs->snap_dir, sizeof(rs->snap_dir), snap, NULL);
	snap_path(rs->state_path, sizeof(rs->state_path), snap, SNAP_STATE_FILE);
	if (restore_cow() && (r = ensure_cow(rs, snap, err)) < 0)
		goto fail;
	return 0;
fail:
	restore_release(rs);
	return r;
}

void restore_release(struct restore *rs)
{
	snap_meta_release(&rs->meta);
	free(rs->qemu);
	rs->qemu = NULL;
}

/* restore's network flags over the snapshot's network (the NIC itself cannot come or go). */
static int apply_net_override(struct vm_spec *s, const struct restore *rs,
			      struct avm_error *err)
{
	const struct vm_spec *o = rs->net_override;
	int r = 0;

	if (!o)
		return 0;
	if (rs->net_mode_given) {
		bool nic = o->net_mode != VM_NET_ISOLATED;
		if (nic != rs->meta.network)
			return avm_error_set(err, -EINVAL,
					     "snapshot '%s' %s a network device and microvm cannot %s "
					     "one; restore it %s",
					     rs->meta.name, rs->meta.network ? "has" : "has no",
					     rs->meta.network ? "remove" : "add",
					     rs->meta.network ? "with --network nat-filtered or "
								"bridge:BRIDGE"
							      : "with --network isolated (the default "
								"for it)");
		s->net_mode = o->net_mode;
		free(s->bridge);
		s->bridge = o->bridge ? strdup(o->bridge) : NULL;
	}
	if (rs->policy_given) {
		strv_free(s->allow);
		s->allow = NULL;
		s->n_allow = 0;
		for (size_t i = 0; r == 0 && i < o->n_allow; i++)
			r = vm_spec_add_allow(s, o->allow[i], err);
		strv_free(s->host_allow);
		s->host_allow = NULL;
		s->n_host_allow = 0;
		for (size_t i = 0; r == 0 && i < o->n_host_allow; i++)
			r = vm_spec_add_host_allow(s, o->host_allow[i], err);
		s->deny_all_egress = o->deny_all_egress;
		free(s->dns);
		s->dns = o->dns ? strdup(o->dns) : NULL;
		if (r == 0 && vm_spec_copy_egress(s, o) < 0)
			r = avm_error_set(err, -ENOMEM, "out of memory");
	}
	return r < 0 ? r : vm_spec_validate(s, false, err);
}

int restore_check_override(const struct restore *rs, struct avm_error *err)
{
	struct vm_spec *spec = snap_spec_new(&rs->meta);
	int r;

	if (!spec)
		return avm_error_set(err, -ENOMEM, "out of memory");
	r = apply_net_override(spec, rs, err);
	vm_spec_free(spec);
	return r;
}

int restore_check_flags(const char *snap, const struct vm_spec *ov, bool mode_given,
			bool policy_given, struct avm_error *err)
{
	struct restore rs = { .net_override = ov, .net_mode_given = mode_given,
			      .policy_given = policy_given };
	int r;

	if (!ov || snap_load(snap, &rs.meta, NULL) < 0)
		return 0; /* restore_prepare() reports a bad snapshot, with its own message */
	r = restore_check_override(&rs, err);
	snap_meta_release(&rs.meta);
	return r;
}

int restore_one(const struct restore *rs, const char *name, long boot_timeout_s,
		    struct avm_error *err)
{
	struct vm_spec *spec = snap_spec_new(&rs->meta);
	_cleanup_free_ char *dir = NULL;
	char path[PATH_MAX];
	pid_t sup;
	int r;

	if (!spec)
		return avm_error_set(err, -ENOMEM, "out of memory");
	spec->name = strdup(name);
	if ((r = apply_net_override(spec, rs, err)) < 0) {
		vm_spec_free(spec);
		return r;
	}
	struct vm_incoming in = {
		.state_path = rs->state_path,
		.mem_path = rs->mem_path[0] ? rs->mem_path : NULL,
		.qemu_version = rs->meta.qemu_version,
		.disk_dir = rs->snap_dir,
	};
	struct vm_launch_opts lo = {
		.spec = spec, .kernel = rs->meta.kernel.path, .initrd = rs->meta.initrd.path,
		.qemu = rs->qemu, .accel = spec->accel, .detached = true, .incoming = &in,
		.pool_pidfd = rs->pool_pidfd,
	};
	r = spec->name ? supervisor_start(&lo, (int)boot_timeout_s * 1000, &sup, err)
		       : avm_error_set(err, -ENOMEM, "out of memory");
	vm_spec_free(spec);
	if (r < 0)
		return r;
	/* Where `reset` goes back to. */
	if (statedir_find(name, &dir, NULL) == 0 &&
	    statedir_file(path, sizeof(path), dir, RESTORE_ORIGIN_FILE) == 0)
		write_file_atomic(path, rs->meta.name, strlen(rs->meta.name));
	audit_vm_str("snapshot.restore", name, "snapshot", rs->meta.name);
	return 0;
}

