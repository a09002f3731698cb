/* SPDX-License-Identifier: MIT */
/*
 * Workspace disks on the host side: the per-VM qcow2 overlays and their copies in snapshots.
 *
 * The user's image (raw or qcow2) is only ever a read-only backing file. Each VM writes to
 * <state dir>/disk<N>.qcow2, an overlay created at launch and removed with the state dir, so a
 * sandbox never changes the image it was given and any number of VMs can share one image. A
 * snapshot keeps a copy of the overlay (disk<N>.qcow2 in the snapshot dir, backed by the user's
 * image); every clone of it gets a fresh overlay on top of that copy, which therefore never
 * changes while the snapshot exists.
 *
 * Overlays are made by qemu-img (qemu-utils), found like QEMU ($AGENTVM_QEMU_IMG, else PATH).
 */
#ifndef AGENTVM_DISK_H
#define AGENTVM_DISK_H

#include <stddef.h>

#include "base/error.h"

/* The virtio-blk serial of disk N, which guest-init looks up in /sys/block/vd* /serial. */
#define DISK_SERIAL_PREFIX "avm-disk"

/* "qcow2" when path starts with the qcow2 magic, else "raw". -errno when it cannot be read. */
int disk_image_format(const char *path, const char **fmt, struct avm_error *err);

/*
 * The backing file name recorded in a qcow2 header into buf ("" when it has none).
 * 0, or -EINVAL for a file that is not qcow2 / a header that does not fit.
 */
int disk_qcow2_backing(const char *path, char *buf, size_t len);

/* A new qcow2 overlay at overlay backed by base (format base_fmt), via qemu-img. */
int disk_overlay_create(const char *base, const char *base_fmt, const char *overlay,
			struct avm_error *err);

/* Copy a VM's overlay (QEMU stopped and flushed) to a new file dst (0600) for a snapshot. */
int disk_snapshot_copy(const char *overlay, const char *dst, struct avm_error *err);
/*
 * After the copy, with the VM running again: when the copy's backing is not the user's image
 * itself (the VM is a clone, backed by another snapshot's copy), rebase it onto the user's
 * image, so that a snapshot never depends on another one.
 */
int disk_snapshot_rebase(const char *copy, const char *user_image, struct avm_error *err);

/*
 * What a VM's overlay N stands on, recorded at launch in <dir>/disk<N>.id: the user's image
 * (device, inode, size, mtime) and the overlay's backing file (device, inode; the image
 * itself, or a snapshot's copy for a clone). A save checks both first: a disk copied from an
 * overlay whose image was rewritten or replaced, or whose snapshot was removed or re-saved
 * under the same name, would hold a corrupt file system and still pass every later check.
 */
int disk_identity_record(const char *dir, size_t index, const char *image, const char *base,
			 struct avm_error *err);
int disk_identity_check(const char *dir, size_t index, const char *image, struct avm_error *err);

/* <dir>/disk<N>.qcow2 into buf. */
int disk_overlay_path(char *buf, size_t len, const char *dir, size_t index);

#endif
