/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rootfs.h"
#include "disk.h"
#include "imagecfg.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define NEWROOT "/newroot"

static char failure[512];
static int switched;

/* The API file systems PID 1 mounted in the initramfs, moved (with what is below them). */
static const struct {
	const char *dir;
	mode_t mode;
} moved[] = {
	{ "/dev", 0755 }, { "/proc", 0555 }, { "/sys", 0555 }, { "/tmp", 01777 }, { "/run", 0755 },
};

const char *rootfs_error(void)
{
	return failure[0] ? failure : NULL;
}

/* Record and log why the switch failed (printf-style); returns r. */
static int fail(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(failure, sizeof(failure), fmt, ap);
	va_end(ap);
	log_msg("%s", failure);
	return r;
}

/* A whole small file into buf; its length, or -errno. Files over max are refused (-E2BIG). */
static ssize_t read_small(const char *path, char *buf, size_t max)
{
	ssize_t n, total = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf + total, max + 1 - (size_t)total)) > 0)
		if ((size_t)(total += n) > max)
			break;
	close(fd);
	if (n < 0)
		return -errno;
	return (size_t)total > max ? -E2BIG : total;
}

static void load_defaults(void)
{
	static char buf[IMAGECFG_FILE_MAX + 1];
	ssize_t n;

	n = read_small(IMAGECFG_ENV_PATH, buf, IMAGECFG_FILE_MAX);
	if (n >= 0)
		imagecfg_parse_env(&imagecfg, buf, (size_t)n);
	else if (n != -ENOENT)
		log_msg("%s: %s; the image's environment is not applied", IMAGECFG_ENV_PATH,
			strerror((int)-n));
	n = read_small(IMAGECFG_EXEC_PATH, buf, IMAGECFG_FILE_MAX);
	if (n >= 0)
		imagecfg_parse_exec(&imagecfg, buf, (size_t)n);
	else if (n != -ENOENT)
		log_msg("%s: %s; the image's workdir and user are not applied", IMAGECFG_EXEC_PATH,
			strerror((int)-n));
	if (imagecfg.rejected)
		log_msg("/etc/agentvm: %u malformed line%s skipped", imagecfg.rejected,
			imagecfg.rejected == 1 ? "" : "s");
}

int rootfs_switch(const char *serial)
{
	char dev[DEV_NAME_MAX], node[16 + DEV_NAME_MAX], dir[64];
	uint64_t t0 = mono_ns();
	int r;

	if (disk_find(serial, dev) < 0)
		return fail(-ENODEV, "root image: no virtio-blk disk with serial %s after %d ms; "
				     "nothing can run (the host's QEMU command line lacks it)",
			    serial, DISK_WAIT_MS);
	snprintf(node, sizeof(node), "/dev/%s", dev);
	if (mkdir(NEWROOT, 0755) < 0 && errno != EEXIST)
		return fail(-errno, "root image: mkdir " NEWROOT ": %m");
	if (mount(node, NEWROOT, "ext4", MS_NOATIME, NULL) < 0) {
		r = -errno;
		return fail(r, "root image (%s) cannot be mounted: %s; the image file is damaged or "
			       "not ext4: check it with 'agentvm image inspect --verify NAME', then "
			       "remove it with 'agentvm image rm NAME' and build or import it again",
			    node, strerror(-r));
	}
	for (size_t i = 0; i < ARRAY_SIZE(moved); i++) {
		snprintf(dir, sizeof(dir), NEWROOT "%s", moved[i].dir);
		if (mkdir(dir, moved[i].mode) < 0 && errno != EEXIST)
			log_msg("root image: mkdir %s: %m", dir);
		if (mount(moved[i].dir, dir, NULL, MS_MOVE, NULL) < 0) {
			const char *what = moved[i].dir;

			r = -errno;
			/* Put back what moved, so the initramfs guest still works. */
			while (i-- > 0) {
				snprintf(dir, sizeof(dir), NEWROOT "%s", moved[i].dir);
				mount(dir, moved[i].dir, NULL, MS_MOVE, NULL);
			}
			umount2(NEWROOT, MNT_DETACH);
			return fail(r, "root image: moving %s into it: %s", what, strerror(-r));
		}
	}
	/* What switch_root(8) does, minus deleting the initramfs (a few MiB of guest RAM). */
	if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
	    chdir("/") < 0)
		/* Half-way there is no way back: say so to every EXEC. */
		return fail(-errno, "root image: switching root: %m");
	switched = 1;
	load_defaults();
	log_debug("root image %s mounted and entered in %llu us (%zu env defaults%s%s)", node,
		  (unsigned long long)(mono_ns() - t0) / 1000, imagecfg.n_env,
		  imagecfg.workdir[0] ? ", workdir " : "", imagecfg.workdir);
	return 0;
}

void rootfs_finish(void)
{
	if (switched && mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
		log_msg("root image: remount read-only: %m");
}
