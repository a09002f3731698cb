/* SPDX-License-Identifier: MIT */
/* files_untar(): unpacking a tar stream from the guest, which is hostile (see files.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vm/files.h"
#include "vm/archive_dl.h"
#include "vm/files_internal.h"
#include "base/util.h"

void progress_tick(struct progress *p, size_t n, bool final)
{
	uint64_t now;

	p->bytes += n;
	if (!p->on)
		return;
	now = now_us();
	if (!final && now - p->last < PROGRESS_EVERY_US)
		return;
	p->last = now;
	double s = (double)(now - p->t0) / 1e6;
	avm_log("\ragentvm: %s %.1f MiB (%.1f MB/s)%s", p->verb,
		(double)p->bytes / (1024.0 * 1024.0), s > 0 ? (double)p->bytes / 1e6 / s : 0.0,
		final ? "\n" : "   ");
}

/* --- guest -> host: unpack what the guest sent ---------------------------------------------- */

/* A path from the guest: relative, no "..", first component exactly name. */
static bool guest_path_ok(const char *p, const char *name)
{
	size_t nl = strlen(name);

	if (!p || p[0] == '/' || strncmp(p, name, nl) != 0 || (p[nl] != '\0' && p[nl] != '/'))
		return false;
	for (const char *c = p; c; c = strchr(c, '/')) {
		if (*c == '/')
			c++;
		if (!strncmp(c, "..", 2) && (c[2] == '/' || c[2] == '\0'))
			return false;
	}
	return true;
}

int files_untar(int fd, const char *dir, const char *name, bool progress, struct avm_error *err)
{
	struct progress pg = { .on = progress, .t0 = now_us(), .verb = "copied" };
	struct archive *a, *w;
	struct archive_entry *e;
	int r, x;

	if ((r = archive_dl_load(err)) < 0)
		return r;
	a = archive_read_new();
	w = archive_write_disk_new();
	if (!a || !w) {
		r = avm_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (chdir(dir) < 0) {
		r = avm_error_set(err, -errno, "%s: %s", dir, strerror(errno));
		goto out;
	}
	archive_read_support_format_tar(a);
	/*
	 * No OWNER (files are the caller's), no XATTR/ACL/FFLAGS; PERM with the mode cleaned
	 * below; the three SECURE flags refuse "..", absolute paths and any path through a
	 * symlink (one planted by an earlier entry included). NO_OVERWRITE: the temporary
	 * directory is fresh, so a second entry of the same name can only be a trick.
	 */
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
						  ARCHIVE_EXTRACT_SECURE_SYMLINKS |
						  ARCHIVE_EXTRACT_SECURE_NODOTDOT |
						  ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS |
						  ARCHIVE_EXTRACT_NO_OVERWRITE);
	if (archive_read_open_fd(a, fd, COPY_BUF) != ARCHIVE_OK) {
		r = avm_error_set(err, -EPROTO, "the guest's stream: %s", archive_error_string(a));
		goto out;
	}
	while ((x = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *p = archive_entry_pathname(e), *hl = archive_entry_hardlink(e);
		mode_t t = archive_entry_filetype(e);

		if (!guest_path_ok(p, name)) {
			r = avm_error_set(err, -EPERM,
					  "refused '%s' from the guest: not under '%s', absolute or "
					  "with '..'",
					  p ? p : "(no name)", name);
			goto out;
		}
		/*
		 * Device nodes, fifos, sockets: never made on the host. Hard links neither: the
		 * agent never sends them, and one whose target resolves through a symlink would
		 * link a host file from outside into the copy.
		 */
		if (hl || (t != AE_IFREG && t != AE_IFDIR && t != AE_IFLNK)) {
			avm_log("agentvm: cp: skipped %s: not a regular file, directory or "
					"symlink\n",
				p);
			continue;
		}
		/* No set-uid, set-gid or sticky bits; owners are never restored (no OWNER). */
		archive_entry_set_perm(e, archive_entry_perm(e) & 0777);
		archive_entry_set_uid(e, getuid());
		archive_entry_set_gid(e, getgid());
		archive_entry_set_uname(e, NULL);
		archive_entry_set_gname(e, NULL);
		archive_entry_xattr_clear(e);
		archive_entry_acl_clear(e);
		archive_entry_set_fflags(e, 0, 0);
		if (archive_write_header(w, e) != ARCHIVE_OK) {
			r = avm_error_set(err, -EPERM, "cannot unpack '%s': %s", p,
					  archive_error_string(w));
			goto out;
		}
		const void *buf;
		size_t len;
		la_int64_t off;
		while ((x = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
			if (archive_write_data_block(w, buf, len, off) != ARCHIVE_OK) {
				r = avm_error_set(err, -EIO, "writing '%s': %s", p,
						  archive_error_string(w));
				goto out;
			}
			progress_tick(&pg, len, false);
		}
		if (x != ARCHIVE_EOF) {
			r = avm_error_set(err, -EPROTO, "the guest's stream broke in '%s': %s", p,
					  archive_error_string(a));
			goto out;
		}
		if (archive_write_finish_entry(w) != ARCHIVE_OK) {
			r = avm_error_set(err, -EIO, "writing '%s': %s", p, archive_error_string(w));
			goto out;
		}
	}
	if (x != ARCHIVE_EOF) {
		r = avm_error_set(err, -EPROTO, "the guest's stream is not a valid tar archive: %s",
				  archive_error_string(a));
		goto out;
	}
	/* Directory modes and times are set last (a read-only directory still took its files). */
	if (archive_write_close(w) != ARCHIVE_OK)
		r = avm_error_set(err, -EIO, "finishing the copy: %s", archive_error_string(w));
	progress_tick(&pg, 0, true);
out:
	archive_read_free(a);
	archive_write_free(w);
	return r;
}

