/* SPDX-License-Identifier: MIT */
#include "vm/disk.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vm/host.h"
#include "base/util.h"

extern char **environ;

static const unsigned char qcow2_magic[4] = { 'Q', 'F', 'I', 0xfb };

int disk_image_format(const char *path, const char **fmt, struct avm_error *err)
{
	unsigned char m[4];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return avm_error_setx(err, -errno, "cannot open disk image %s", path);
	ssize_t n = pread(fd, m, sizeof(m), 0);
	if (n < 0)
		return avm_error_setx(err, -errno, "cannot read disk image %s", path);
	*fmt = n == (ssize_t)sizeof(m) && !memcmp(m, qcow2_magic, sizeof(m)) ? "qcow2" : "raw";
	return 0;
}

int disk_qcow2_backing(const char *path, char *buf, size_t len)
{
	unsigned char h[20];
	uint64_t off;
	uint32_t size;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	/* Header: magic, version (u32), backing_file_offset (u64), backing_file_size (u32). */
	if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || memcmp(h, qcow2_magic, 4))
		return -EINVAL;
	memcpy(&off, h + 8, 8);
	memcpy(&size, h + 16, 4);
	off = be64toh(off);
	size = be32toh(size);
	if (off == 0) {
		buf[0] = '\0';
		return 0;
	}
	if (size >= len || size > 1023)
		return -EINVAL;
	if (pread(fd, buf, size, (off_t)off) != (ssize_t)size)
		return -EINVAL;
	buf[size] = '\0';
	return 0;
}

int disk_overlay_path(char *buf, size_t len, const char *dir, size_t index)
{
	int n = snprintf(buf, len, "%s/disk%zu.qcow2", dir, index);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/*
 * Run qemu-img with args; on failure the error names what and the tool's last line. Its
 * output goes to a pipe: qemu-img prints little, so the pipe never fills before it exits.
 */
static int qemu_img(const char *const *args, const char *what, struct avm_error *err)
{
	_cleanup_free_ char *tool = NULL;
	char *argv[16], out[1024];
	posix_spawn_file_actions_t fa;
	int pfd[2], status, r;
	size_t n = 0, got = 0;
	pid_t pid;

	if ((r = host_find_tool("qemu-img", "AGENTVM_QEMU_IMG", "qemu-utils", &tool, err)) < 0)
		return r;
	argv[n++] = tool;
	for (; *args && n < ARRAY_SIZE(argv) - 1; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return avm_error_setx(err, -errno, "pipe");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	r = posix_spawn(&pid, tool, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (r != 0) {
		close(pfd[0]);
		return avm_error_set(err, -r, "%s: cannot run %s: %s", what, tool, strerror(r));
	}
	for (;;) {
		ssize_t k = read(pfd[0], out + got, sizeof(out) - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
		if (got == sizeof(out) - 1) { /* keep the tail: the error is the last line */
			memmove(out, out + got / 2, got - got / 2);
			got -= got / 2;
		}
	}
	close(pfd[0]);
	out[got] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == ' '))
		out[--got] = '\0';
	char *line = strrchr(out, '\n');
	return avm_error_set(err, -EIO, "%s: qemu-img failed: %s", what,
			     line ? line + 1 : out[0] ? out : "no message");
}

int disk_overlay_create(const char *base, const char *base_fmt, const char *overlay,
			struct avm_error *err)
{
	/* No size: qemu-img takes the base's. -F: QEMU 7.2 refuses to probe a backing format. */
	const char *args[] = { "create", "-q", "-f", "qcow2", "-F", base_fmt, "-b", base, overlay,
			       NULL };

	return qemu_img(args, "cannot create the disk overlay", err);
}

/* Copy [off, off + len) of in to out at the same offset with read/write. */
static int copy_range_rw(int in, int out, off_t off, off_t len)
{
	static char buf[1 << 16];

	while (len > 0) {
		ssize_t k = pread(in, buf, len < (off_t)sizeof(buf) ? (size_t)len : sizeof(buf), off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		if (pwrite(out, buf, (size_t)k, off) != k)
			return -errno ? -errno : -EIO;
		off += k;
		len -= k;
	}
	return 0;
}

/*
 * Copy src to a new file dst (0600), keeping holes: a qcow2 overlay is mostly unallocated
 * space. copy_file_range does the data extents in the kernel (a reflink where the file system
 * can) but refuses to cross file systems (EXDEV; the default state dir /run is tmpfs and the
 * snapshots live on disk), so read/write takes over then.
 */
static int copy_file(const char *src, const char *dst, struct avm_error *err)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int out = -1;
	struct stat st;
	bool use_cfr = true;
	off_t data = 0, hole;
	int r = 0;

	if (in < 0 || fstat(in, &st) < 0)
		return avm_error_setx(err, -errno, "cannot open %s", src);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return avm_error_setx(err, -errno, "cannot create %s", dst);
	if (ftruncate(out, st.st_size) < 0)
		return avm_error_setx(err, -errno, "cannot write %s", dst);
	while (r == 0 && data < st.st_size) {
		data = lseek(in, data, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO) /* only a hole is left */
				break;
			return avm_error_setx(err, -errno, "cannot read %s", src);
		}
		hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			return avm_error_setx(err, -errno, "cannot read %s", src);
		for (off_t off = data; r == 0 && off < hole;) {
			if (use_cfr) {
				loff_t i = off, o = off;
				ssize_t k = copy_file_range(in, &i, out, &o, (size_t)(hole - off), 0);
				if (k > 0) {
					off += k;
					continue;
				}
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0 && errno != EXDEV && errno != EOPNOTSUPP && errno != ENOSYS &&
				    errno != EINVAL)
					return avm_error_setx(err, -errno, "cannot copy %s to %s", src,
							      dst);
				use_cfr = false; /* k == 0 (short source) or unsupported: rw */
				continue;
			}
			r = copy_range_rw(in, out, off, hole - off);
			off = hole;
		}
		data = hole;
	}
	if (r < 0)
		return avm_error_setx(err, r, "cannot copy %s to %s", src, dst);
	if (fsync(out) < 0)
		return avm_error_setx(err, -errno, "cannot write %s", dst);
	return 0;
}

int disk_snapshot_copy(const char *overlay, const char *dst, struct avm_error *err)
{
	return copy_file(overlay, dst, err);
}

int disk_snapshot_rebase(const char *dst, const char *user_image, struct avm_error *err)
{
	char backing[1024];
	const char *fmt;
	int r;

	if (disk_qcow2_backing(dst, backing, sizeof(backing)) < 0)
		return avm_error_set(err, -EINVAL, "%s is not a qcow2 overlay", dst);
	if (!strcmp(backing, user_image))
		return 0;
	/* A clone: fold the other snapshot's changes in, on top of the user's image. */
	if ((r = disk_image_format(user_image, &fmt, err)) < 0)
		return r;
	const char *args[] = { "rebase", "-q", "-f", "qcow2", "-F", fmt, "-b", user_image, dst,
			       NULL };
	return qemu_img(args, "cannot rebase the disk copy", err);
}

static int identity_path(char *buf, size_t len, const char *dir, size_t index)
{
	int n = snprintf(buf, len, "%s/disk%zu.id", dir, index);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int disk_identity_record(const char *dir, size_t index, const char *image, const char *base,
			 struct avm_error *err)
{
	char path[PATH_MAX], text[256];
	struct stat i, b;
	int r;

	if (stat(image, &i) < 0 || stat(base, &b) < 0)
		return avm_error_setx(err, -errno, "cannot stat the disk image %s", image);
	snprintf(text, sizeof(text), "image %llu %llu %lld %lld.%09ld\nbase %llu %llu\n",
		 (unsigned long long)i.st_dev, (unsigned long long)i.st_ino, (long long)i.st_size,
		 (long long)i.st_mtim.tv_sec, i.st_mtim.tv_nsec, (unsigned long long)b.st_dev,
		 (unsigned long long)b.st_ino);
	if ((r = identity_path(path, sizeof(path), dir, index)) < 0 ||
	    (r = write_file_atomic(path, text, strlen(text))) < 0)
		return avm_error_setx(err, r, "cannot write %s/disk%zu.id", dir, index);
	return 0;
}

int disk_identity_check(const char *dir, size_t index, const char *image, struct avm_error *err)
{
	char path[PATH_MAX], overlay[PATH_MAX], backing[1024];
	unsigned long long idev, iino, bdev, bino;
	long long isize, isec;
	long insec;
	_cleanup_free_ char *text = NULL;
	struct stat i, b;

	if (identity_path(path, sizeof(path), dir, index) < 0 ||
	    disk_overlay_path(overlay, sizeof(overlay), dir, index) < 0)
		return avm_error_set(err, -ENAMETOOLONG, "path too long");
	if (read_file(path, &text, 512) < 0 ||
	    sscanf(text, "image %llu %llu %lld %lld.%ld base %llu %llu", &idev, &iino, &isize, &isec,
		   &insec, &bdev, &bino) != 7)
		return avm_error_set(err, -EBADMSG, "%s is missing or damaged", path);
	if (stat(image, &i) < 0 || i.st_dev != idev || i.st_ino != iino || i.st_size != isize ||
	    i.st_mtim.tv_sec != isec || i.st_mtim.tv_nsec != insec)
		return avm_error_set(err, -ESTALE,
				     "the disk image %s was changed or replaced while the VM ran; "
				     "its disk cannot be saved consistently (start a new VM from "
				     "the image)",
				     image);
	if (disk_qcow2_backing(overlay, backing, sizeof(backing)) < 0 || stat(backing, &b) < 0 ||
	    b.st_dev != bdev || b.st_ino != bino)
		return avm_error_set(err, -ESTALE,
				     "disk %zu is backed by %s, which was removed or replaced since "
				     "the VM was restored (was its snapshot removed?); restore a "
				     "new VM and save that",
				     index, backing[0] ? backing : "a file that is gone");
	return 0;
}
