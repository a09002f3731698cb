/* SPDX-License-Identifier: MIT */
/* Workspace disks: find each virtio-blk disk by its serial and mount it where the host said. */
#ifndef AGENTVM_INIT_DISK_H
#define AGENTVM_INIT_DISK_H

#include "diskcfg.h"

/*
 * Boot, before the first request: for each disk of cfg (parents before their subdirectories),
 * find /sys/block/vd* whose serial matches (waiting up to DISK_WAIT_MS for a late probe),
 * mkdir -p its directory (0755) and mount /dev/vdX there as ext4, read-only or noatime
 * read-write. Every failure is logged and skipped: a guest without its workspace still answers
 * the host, and the command that misses the files says so better than a dead PID 1.
 */
#define DISK_WAIT_MS 1000
void disk_mount_all(const struct disk_cfg *cfg);

#define DEV_NAME_MAX 32
/* The vdX name of the disk with this serial (waiting up to DISK_WAIT_MS): 0 or -ENODEV. */
int disk_find(const char *serial, char dev[DEV_NAME_MAX]);
/*
 * Why ext4 refused /dev node (read after a failed mount: EINVAL), in words that say what to do,
 * or NULL when the device cannot be read.
 */
const char *disk_explain(const char *node);

/*
 * Power-off, after every process was sent SIGKILL and sync(): wait (up to DISK_WAIT_MS) for
 * them to exit, then unmount what disk_mount_all() mounted, children first. sync() alone saves
 * the data, but leaves the journal marked for replay, and a replay is impossible when the disk
 * is next attached read-only; a clean unmount leaves a clean filesystem. Failures are logged.
 * Nothing to do, and no waiting, when no disk is mounted.
 */
void disk_unmount_all(void);

/*
 * A boot template's clone, before its disks are mounted: unbind and bind again every
 * virtio-blk device, so the kernel forgets what it read while probing the template's blank
 * placeholder disks (capacity, partition table, the first blocks in the page cache) and probes
 * this run's disks afresh. 0 or the first -errno (each failure is logged).
 */
int disk_rebind_all(void);

/* mkdir -p: every missing component, 0755. 0 or -1 with errno (of the component that failed). */
int disk_mkdir_p(const char *dir);

#endif
