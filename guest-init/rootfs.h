/* SPDX-License-Identifier: MIT */
/*
 * The root image (`--image`): PID 1 starts in the initramfs, then mounts the image's disk and
 * moves itself and every command into it, without exec'ing anything (guest-init stays PID 1
 * and the agent; the image needs no init and no agent of its own).
 */
#ifndef AGENTVM_INIT_ROOTFS_H
#define AGENTVM_INIT_ROOTFS_H

/*
 * After sys_setup_late() (whose mounts move along): find the virtio-blk disk with this serial,
 * mount it (ext4, read-write: the host gives every VM its own copy-on-write overlay), move
 * /dev, /proc, /sys, /tmp and /run into it, make it the root, and load the image's defaults
 * (imagecfg.h). Returns 0, or -errno after logging why; then the guest stays on the
 * initramfs and rootfs_error() says why to every EXEC, so nothing runs in the wrong system.
 */
int rootfs_switch(const char *serial);

/* NULL when no switch failed, else the message every EXEC is refused with. */
const char *rootfs_error(void);

/* Power-off: remount the image read-only so that its journal is clean (no-op without one). */
void rootfs_finish(void);

#endif
