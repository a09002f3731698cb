/* SPDX-License-Identifier: MIT */
/*
 * Snapshots on disk: $AGENTVM_SNAPSHOT_DIR/<name>/ (default /var/lib/agentvm/snapshots for root,
 * else $XDG_DATA_HOME/agentvm/snapshots; persistent, unlike the state dir in /run) holding
 *   state      the QEMU migration stream (device state + guest RAM) of the source VM
 *   meta.json  name, description, created (RFC 3339, America/New_York), the VM spec, accel,
 *              network or not, and the inputs (kernel, initramfs, QEMU: path, size, mtime,
 *              sha256; QEMU's version) that a restore must find unchanged.
 *   disk<N>.qcow2  per workspace disk: a copy of the VM's overlay at the moment of the save,
 *              backed by the user's image (recorded in inputs.disk<N>; see disk.h)
 * The root file system is the initramfs unpacked into guest RAM, so the RAM in `state` holds
 * it; workspace disks are the only block devices.
 *
 * A snapshot directory appears atomically (written as .<name>.tmp-XXXXXX, then renamed), so a
 * failed save leaves nothing and a listed snapshot is always complete.
 */
#ifndef AGENTVM_SNAPSHOT_H
#define AGENTVM_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/error.h"
#include "spec/spec.h"
#include "state/file_input.h"
#include "state/paths.h"

#define SNAP_FORMAT 1
#define SNAP_MAX_NAME 63

/* The files of a snapshot dir (above; the disk copies are disk_overlay_path()'s, disk.h). */
#define SNAP_STATE_FILE "state"
#define SNAP_META_FILE PATHS_SNAPSHOT_META
/* The copy-on-write template a restore builds once: guest RAM and the device state. */
#define SNAP_COW_MEM_FILE "cow-mem"
#define SNAP_COW_DEVSTATE_FILE "cow-devstate"
/* A save's temp dir: ".NAME.tmp-XXXXXX" in the root (mkdtemp pattern into buf). */
int snap_tmp_pattern(char *buf, size_t len, const char *name);
/* Whether a root entry is a save's temp dir. */
bool snap_is_tmp_name(const char *entry);

struct snap_meta {
	char *name;
	char *description;
	char *created;   /* RFC 3339 with the New York offset */
	char *source_vm; /* the VM it was taken from */
	char accel[8];   /* kvm | tcg: a restore uses the same one (CPU state differs) */
	bool network;    /* the source VM had a NIC: clones need one too */
	unsigned cpus;
	unsigned memory_mib;
	char *profile;
	int64_t state_size; /* bytes of `state` */
	int64_t save_ms;
	struct file_input kernel, initrd, qemu;
	struct file_input disks[VM_SPEC_MAX_DISKS]; /* the user's images, one per spec disk */
	size_t n_disks;
	char qemu_version[32]; /* "7.2.22" */
	struct json_object *spec; /* the source VM's spec.json (owned) */
};

void snap_meta_release(struct snap_meta *m);
/* Parse and validate meta.json text (every field present and sane). */
int snap_meta_parse(const char *text, struct snap_meta *m, struct avm_error *err);
/* meta.json text (caller frees). */
char *snap_meta_to_string(const struct snap_meta *m);

/* Snapshot names: like VM names. */
int snap_validate_name(const char *name, struct avm_error *err);
/* <root>/<name> into buf. */
int snap_path(char *buf, size_t len, const char *name, const char *file);
/* Read and validate <root>/<name>/meta.json; checks that `state` exists with the recorded size. */
int snap_load(const char *name, struct snap_meta *m, struct avm_error *err);

/*
 * Record m's inputs as this host has them: QEMU, and the kernel and initramfs the VM was started
 * with (NULL: the default images, as `start` resolves them).
 */
int snap_record_inputs(struct snap_meta *m, const char *kernel, const char *initrd,
		       struct avm_error *err);
/* Record the user's image of each disk of spec into m->disks. */
int snap_record_disks(struct snap_meta *m, const struct vm_spec *spec, struct avm_error *err);
/*
 * Is the file at path still the one recorded? Size + mtime equal: yes without hashing; else the
 * sha256 decides. what names it in the message ("guest kernel").
 */
int snap_input_check(const struct file_input *in, const char *path, const char *what,
		     const char *snap, struct avm_error *err);

/* RFC 3339 local time of t in America/New_York, e.g. 2026-11-29T06:12:00-05:00. */
void snap_time_ny(time_t t, char *buf, size_t len);

/* A vm_spec for a clone of this snapshot (sizes, accel, images, network); caller frees. */
struct vm_spec *snap_spec_new(const struct snap_meta *m);

#endif
