/* SPDX-License-Identifier: MIT */
/*
 * Mounting the workspace disks. The serial, not the vdX name, identifies a disk: the kernel
 * names disks in probe order, which is the host's -device order today but is no promise, and a
 * disk mounted on the wrong directory is worse than one not mounted at all.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "disk.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_NS (10 * NSEC_PER_MSEC)

/* ext2/3/4 superblock: 1024 bytes in, s_magic at offset 0x38 of it, little endian. */
#define EXT_SB_OFF 1024
#define EXT_MAGIC_OFF (EXT_SB_OFF + 0x38)
#define EXT_MAGIC 0xef53

/* What disk_mount_all() mounted, in mount order, for disk_unmount_all(). */
static char mounted[DISKCFG_MAX][DISKCFG_DIR_MAX + 1];
static size_t n_mounted;

/* The serial virtio-blk reports, trailing newline removed; "" when unreadable. */
static void read_serial(const char *dev, char *buf, size_t size)
{
	char path[64 + DEV_NAME_MAX];
	ssize_t n;
	int fd;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "/sys/block/%s/serial", dev);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

/*
 * One pass over /sys/block: fill dev[i] for every disk of cfg not found yet whose serial shows
 * up and whose /dev node exists (devtmpfs creates it as the disk is added; checked anyway, the
 * mount needs it). Returns how many of cfg's disks are now found.
 */
static size_t scan(const struct disk_cfg *cfg, char dev[][DEV_NAME_MAX])
{
	char serial[64], node[16 + DEV_NAME_MAX];
	struct dirent *de;
	size_t found = 0;
	DIR *d;

	d = opendir("/sys/block");
	if (d) {
		while ((de = readdir(d))) {
			if (strncmp(de->d_name, "vd", 2) != 0 || strlen(de->d_name) >= DEV_NAME_MAX)
				continue;
			read_serial(de->d_name, serial, sizeof(serial));
			snprintf(node, sizeof(node), "/dev/%s", de->d_name);
			for (size_t i = 0; i < cfg->n; i++) {
				if (dev[i][0] || strcmp(serial, cfg->disk[i].serial) != 0 ||
				    access(node, F_OK) < 0)
					continue;
				strcpy(dev[i], de->d_name);
			}
		}
		closedir(d);
	}
	for (size_t i = 0; i < cfg->n; i++)
		found += dev[i][0] != '\0';
	return found;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / NSEC_PER_SEC),
			       .tv_nsec = (long)(ns % NSEC_PER_SEC) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

#define VIRTIO_BLK_DRV "/sys/bus/virtio/drivers/virtio_blk"

int disk_rebind_all(void)
{
	char names[DISKCFG_MAX][32];
	size_t n = 0;
	struct dirent *de;
	DIR *d;
	int r = 0;

	d = opendir(VIRTIO_BLK_DRV);
	if (!d)
		return errno == ENOENT ? 0 : -errno; /* no disk was ever probed */
	while ((de = readdir(d)) && n < DISKCFG_MAX)
		if (!strncmp(de->d_name, "virtio", 6) && strlen(de->d_name) < sizeof(names[0]))
			strcpy(names[n++], de->d_name);
	closedir(d);
	/* Probe order is -device order: keep it, so vdX names stay what a cold boot gives. */
	for (size_t i = 0; i + 1 < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strlen(names[j]) < strlen(names[i]) ||
			    (strlen(names[j]) == strlen(names[i]) && strcmp(names[j], names[i]) < 0)) {
				char t[32];
				memcpy(t, names[i], sizeof(t));
				memcpy(names[i], names[j], sizeof(t));
				memcpy(names[j], t, sizeof(t));
			}
	for (size_t i = 0; i < n; i++) {
		int e = write_at_file(AT_FDCWD, VIRTIO_BLK_DRV "/unbind", names[i]);
		if (e == 0)
			e = write_at_file(AT_FDCWD, VIRTIO_BLK_DRV "/bind", names[i]);
		if (e < 0) {
			log_msg("disk %s: re-probe after the restore failed: %s", names[i],
				strerror(-e));
			r = r ? r : e;
		}
	}
	return r;
}

int disk_mkdir_p(const char *dir)
{
	char path[DISKCFG_DIR_MAX + 1];
	size_t len = strlen(dir);

	if (len >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(path, dir, len + 1);
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = c;
		if (!c)
			return 0;
	}
}

/*
 * Why ext4 refused the device, in words that say what to do. Only read after a failed mount,
 * so the good path costs no extra I/O.
 */
const char *disk_explain(const char *node)
{
	unsigned char sb[EXT_MAGIC_OFF + 2], zero[sizeof(sb)] = { 0 };
	ssize_t n;
	int fd;

	fd = open(node, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = pread(fd, sb, sizeof(sb), 0);
	close(fd);
	if (n != (ssize_t)sizeof(sb))
		return "is smaller than an ext4 superblock; format it on the host with mkfs.ext4";
	if ((sb[EXT_MAGIC_OFF] | sb[EXT_MAGIC_OFF + 1] << 8) == EXT_MAGIC)
		return "has an ext2/3/4 superblock that ext4 refused (see the kernel log above); "
		       "check it on the host with e2fsck -f";
	if (memcmp(sb, zero, sizeof(sb)) == 0)
		return "has no filesystem (it is blank); format it on the host with mkfs.ext4";
	return "holds no ext4 filesystem; format it on the host with mkfs.ext4 (that erases it)";
}

static void mount_one(const struct disk_ent *e, const char *dev)
{
	unsigned long flags = MS_NOATIME | (e->readonly ? MS_RDONLY : 0);
	char node[16 + DEV_NAME_MAX];
	uint64_t t0 = mono_ns();
	const char *why;
	int err;

	snprintf(node, sizeof(node), "/dev/%s", dev);
	if (disk_mkdir_p(e->dir) < 0) {
		log_msg("disk %s (%s): mkdir %s: %m; not mounted", e->serial, node, e->dir);
		return;
	}
	if (mount(node, e->dir, "ext4", flags, NULL) == 0)
		goto mounted;
	err = errno;
	/*
	 * A read-only disk (QEMU readonly=on) whose journal needs replaying cannot be replayed: ext4
	 * says EROFS. Mounting without the journal shows the last checkpointed state, which is
	 * what a read-only input can offer; say so.
	 */
	if (err == EROFS && e->readonly &&
	    mount(node, e->dir, "ext4", flags, "norecovery") == 0) {
		log_msg("disk %s (%s): journal not replayed (the device is read-only); %s shows the "
			"state of its last clean unmount or checkpoint",
			e->serial, node, e->dir);
		goto mounted;
	}
	why = err == EINVAL ? disk_explain(node) : NULL;
	errno = err;
	if (why)
		log_msg("disk %s (%s) for %s %s; not mounted", e->serial, node, e->dir, why);
	else
		log_msg("disk %s (%s): mount ext4 on %s: %m; not mounted", e->serial, node, e->dir);
	return;
mounted:
	if (n_mounted < DISKCFG_MAX)
		strcpy(mounted[n_mounted++], e->dir);
	log_debug("disk %s: %s mounted on %s %s in %llu us", e->serial, node, e->dir,
		  e->readonly ? "ro" : "rw", (unsigned long long)(mono_ns() - t0) / 1000);
}

int disk_find(const char *serial, char dev[DEV_NAME_MAX])
{
	struct disk_cfg one = { .n = 1 };
	char found[1][DEV_NAME_MAX] = { { 0 } };
	uint64_t deadline = mono_ns() + DISK_WAIT_MS * NSEC_PER_MSEC;

	snprintf(one.disk[0].serial, sizeof(one.disk[0].serial), "%s", serial);
	while (scan(&one, found) < 1 && mono_ns() < deadline)
		sleep_ns(POLL_NS);
	if (!found[0][0])
		return -ENODEV;
	memcpy(dev, found[0], DEV_NAME_MAX);
	return 0;
}

void disk_mount_all(const struct disk_cfg *cfg)
{
	char dev[DISKCFG_MAX][DEV_NAME_MAX] = { { 0 } };
	size_t order[DISKCFG_MAX], found;
	uint64_t t0, deadline;

	if (cfg->n == 0)
		return; /* no disks: not even a look at /sys/block */
	t0 = mono_ns();
	deadline = t0 + DISK_WAIT_MS * NSEC_PER_MSEC;
	/* virtio probes synchronously during boot, so normally the first pass finds them all. */
	while ((found = scan(cfg, dev)) < cfg->n && mono_ns() < deadline)
		sleep_ns(POLL_NS);
	if (found < cfg->n || mono_ns() - t0 > POLL_NS)
		log_debug("disks: %zu of %zu found after %llu us", found, cfg->n,
			  (unsigned long long)(mono_ns() - t0) / 1000);

	/* Shortest directory first: a parent is always shorter, so /a is mounted before /a/b. */
	for (size_t i = 0; i < cfg->n; i++) {
		size_t j = i;

		for (; j > 0 && strlen(cfg->disk[order[j - 1]].dir) > strlen(cfg->disk[i].dir); j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	for (size_t k = 0; k < cfg->n; k++) {
		const struct disk_ent *e = &cfg->disk[order[k]];

		if (!dev[order[k]][0]) {
			log_msg("disk %s for %s: no virtio-blk disk with that serial after %d ms; "
				"not mounted",
				e->serial, e->dir, DISK_WAIT_MS);
			continue;
		}
		mount_one(e, dev[order[k]]);
	}
}

void disk_unmount_all(void)
{
	uint64_t t0, deadline;
	pid_t r;

	if (n_mounted == 0)
		return;
	t0 = mono_ns();
	deadline = t0 + DISK_WAIT_MS * NSEC_PER_MSEC;
	/*
	 * A killed process closes its files only as it exits, and until then the disk is busy.
	 * Every process of the guest is PID 1's child or was reparented to it, so once waitpid
	 * says ECHILD nothing holds a file open any more.
	 */
	while ((r = waitpid(-1, NULL, WNOHANG)) >= 0 && mono_ns() < deadline)
		if (r == 0)
			sleep_ns(NSEC_PER_MSEC);
	for (size_t k = n_mounted; k-- > 0;) {
		while (umount2(mounted[k], 0) < 0) {
			if (errno == EBUSY && mono_ns() < deadline) {
				sleep_ns(NSEC_PER_MSEC);
				continue;
			}
			log_msg("disk on %s: unmount: %m; its journal is replayed at the next "
				"read-write mount",
				mounted[k]);
			break;
		}
	}
	n_mounted = 0;
	log_debug("disks unmounted in %llu us", (unsigned long long)(mono_ns() - t0) / 1000);
}
