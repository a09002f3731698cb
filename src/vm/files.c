/* SPDX-License-Identifier: MIT */
#include "vm/files.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest-init/proto.h"
#include "vm/archive_dl.h"
#include "vm/files_internal.h"
#include "base/util.h"
#include "vm/vm.h"


/* The last path component as docker cp names the copy; NULL for "/", "." and "..". */
static char *entry_name(const char *path)
{
	char *dup = strdup(path), *b;
	char *out;

	if (!dup)
		return NULL;
	b = basename(dup);
	out = (!strcmp(b, "/") || !strcmp(b, ".") || !strcmp(b, "..") || !*b) ? NULL : strdup(b);
	free(dup);
	return out;
}

/* --- host -> guest: tar from the host's files ----------------------------------------------- */

/* In a child: write host_path as a tar stream to fd, top entry named name. Exit status. */
static int write_tar(int fd, const char *host_path, const char *name, bool progress)
{
	struct progress pg = { .on = progress, .t0 = now_us(), .verb = "copied" };
	struct archive *w = archive_write_new(), *d = archive_read_disk_new();
	struct archive_entry *e;
	char *dup = strdup(host_path), *buf = malloc(COPY_BUF);
	int r;

	if (!w || !d || !dup || !buf) {
		avm_log("agentvm: cp: out of memory\n");
		return 1;
	}
	if (chdir(dirname(dup)) < 0) {
		avm_log("agentvm: cp: %s: %s\n", host_path, strerror(errno));
		return 1;
	}
	archive_write_set_format_pax_restricted(w);
	archive_write_set_bytes_per_block(w, 64 * 1024);
	archive_write_set_bytes_in_last_block(w, 1);
	/* Symlinks as links, never followed; no xattrs, ACLs, flags or sparse maps (the guest's
	 * reader takes plain ustar + pax). */
	archive_read_disk_set_symlink_physical(d);
	archive_read_disk_set_behavior(d, ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
						  ARCHIVE_READDISK_NO_FFLAGS |
						  ARCHIVE_READDISK_NO_SPARSE);
	if (archive_write_open_fd(w, fd) != ARCHIVE_OK ||
	    archive_read_disk_open(d, name) != ARCHIVE_OK) {
		avm_log("agentvm: cp: %s: %s\n", host_path,
			archive_error_string(d) ? archive_error_string(d) : archive_error_string(w));
		return 1;
	}
	for (;;) {
		e = archive_entry_new();
		r = archive_read_next_header2(d, e);
		if (r == ARCHIVE_EOF) {
			archive_entry_free(e);
			break;
		}
		if (r < ARCHIVE_WARN) {
			avm_log("agentvm: cp: %s\n", archive_error_string(d));
			return 1;
		}
		archive_read_disk_descend(d);
		mode_t t = archive_entry_filetype(e);
		if (t != AE_IFREG && t != AE_IFDIR && t != AE_IFLNK) {
			avm_log("agentvm: cp: skipped %s: not a regular file, directory or "
					"symlink\n",
				archive_entry_pathname(e));
			archive_entry_free(e);
			continue;
		}
		archive_entry_set_uid(e, 0);
		archive_entry_set_gid(e, 0);
		archive_entry_set_uname(e, NULL);
		archive_entry_set_gname(e, NULL);
		archive_entry_unset_atime(e);
		archive_entry_unset_ctime(e);
		archive_entry_unset_birthtime(e);
		archive_entry_set_mtime(e, archive_entry_mtime(e), 0);
		if (archive_write_header(w, e) < ARCHIVE_WARN) {
			avm_log("agentvm: cp: %s: %s\n", archive_entry_pathname(e),
				archive_error_string(w));
			return 1;
		}
		if (t == AE_IFREG) {
			la_ssize_t n;
			while ((n = archive_read_data(d, buf, COPY_BUF)) > 0) {
				if (archive_write_data(w, buf, (size_t)n) != n) {
					avm_log("agentvm: cp: sending to the guest: %s\n",
						archive_error_string(w));
					return 1;
				}
				progress_tick(&pg, (size_t)n, false);
			}
			if (n < 0) {
				avm_log("agentvm: cp: %s: %s\n", archive_entry_pathname(e),
					archive_error_string(d));
				return 1;
			}
		}
		archive_entry_free(e);
	}
	if (archive_write_close(w) != ARCHIVE_OK) {
		avm_log("agentvm: cp: sending to the guest: %s\n", archive_error_string(w));
		return 1;
	}
	progress_tick(&pg, 0, true);
	archive_read_free(d);
	archive_write_free(w);
	return 0;
}

/* --- the parent: children, exec, rename ----------------------------------------------------- */

static pid_t fork_child(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGPIPE, SIG_IGN);
	}
	return pid;
}

static int wait_child(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_builtin(struct vm *vm, const char *cmd, const char *path, const char *name,
		       int in, int out, const struct files_opts *o, struct avm_error *err)
{
	char *argv[] = { (char *)cmd, (char *)path, (char *)name, NULL };
	struct vm_exec_request req = { .argv = argv, .stdin_fd = in, .stdout_fd = out,
				       .stderr_fd = o->stderr_fd, .sig_fd = o->sig_fd,
				       .builtin = true };
	struct vm_exec_result res;
	int r = vm_exec(vm, &req, &res, err);

	if (r < 0)
		return r;
	if (res.info.kind == AVM_EXIT_START_FAILED)
		return avm_error_set(err, -res.info.code,
				     "the guest agent could not start the copy (%s); is the guest's "
				     "agent older than this agentvm?",
				     strerror(res.info.code));
	if (res.info.kind != AVM_EXIT_CODE || res.info.code != 0)
		return avm_error_set(err, -EIO, "nothing was copied (the guest's reason is above)");
	return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	remove(p);
	return 0;
}

int files_copy_in(struct vm *vm, const char *host_path, const char *guest_path,
		  const struct files_opts *o, struct avm_error *err)
{
	_cleanup_free_ char *name = NULL;
	char real[PATH_MAX];
	struct stat st;
	int p[2], r, code;
	pid_t pid;

	if (guest_path[0] != '/')
		return avm_error_set(err, -EINVAL, "the guest path '%s' must be absolute",
				     guest_path);
	if (!strcmp(host_path, "-"))
		return run_builtin(vm, "tar-in", guest_path, "-", o->stdin_fd, o->stderr_fd, o,
				   err);
	if (lstat(host_path, &st) < 0)
		return avm_error_set(err, -errno, "cannot copy '%s': %s", host_path,
				     strerror(errno));
	name = entry_name(host_path);
	if (!name) {
		if (!realpath(host_path, real) || !(name = entry_name(real)))
			return avm_error_set(err, -EINVAL,
					     "cannot copy '%s': name a file or directory below /",
					     host_path);
		host_path = real; /* "." and ".." become the directory they name */
	}
	/* Before the fork: the child writes the tar with it. */
	if ((r = archive_dl_load(err)) < 0)
		return r;
	if (pipe2(p, O_CLOEXEC) < 0)
		return avm_error_setx(err, -errno, "pipe");
	pid = fork_child();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return avm_error_setx(err, -errno, "fork");
	}
	if (pid == 0) {
		close(p[0]);
		_exit(write_tar(p[1], host_path, name, o->progress));
	}
	close(p[1]);
	r = run_builtin(vm, "tar-in", guest_path, name, p[0], o->stderr_fd, o, err);
	close(p[0]);
	code = wait_child(pid);
	if (r == 0 && code != 0)
		r = avm_error_set(err, -EIO, "reading '%s' on the host failed (see above)",
				  host_path);
	return r;
}

int files_copy_out(struct vm *vm, const char *guest_path, const char *host_path,
		   const struct files_opts *o, struct avm_error *err)
{
	_cleanup_free_ char *name = entry_name(guest_path), *parent = NULL, *final = NULL;
	char tmp[PATH_MAX], src[PATH_MAX + NAME_MAX + 2];
	struct avm_error cerr = { 0 };
	struct stat st;
	int p[2], ep[2], r, code;
	pid_t pid;

	if (guest_path[0] != '/')
		return avm_error_set(err, -EINVAL, "the guest path '%s' must be absolute",
				     guest_path);
	if (!name)
		return avm_error_set(err, -EINVAL,
				     "cannot copy '%s' out: name a file or directory below /",
				     guest_path);
	if (!strcmp(host_path, "-"))
		return run_builtin(vm, "tar-out", guest_path, name, -1, o->stdout_fd, o, err);

	if (stat(host_path, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (asprintf(&final, "%s/%s", host_path, name) < 0)
			return avm_error_set(err, -ENOMEM, "out of memory");
		parent = strdup(host_path);
	} else {
		char *d = strdup(host_path);
		final = strdup(host_path);
		parent = d ? strdup(dirname(d)) : NULL;
		free(d);
		if (parent && (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode))) {
			return avm_error_set(err, -ENOENT,
					     "cannot copy to '%s': its directory '%s' does not exist",
					     host_path, parent);
		}
	}
	if (!final || !parent)
		return avm_error_set(err, -ENOMEM, "out of memory");
	/* Next to the destination: same file system, so the final rename is atomic. */
	if (snprintf(tmp, sizeof(tmp), "%s/.agentvm-cp-XXXXXX", parent) >= (int)sizeof(tmp) ||
	    !mkdtemp(tmp))
		return avm_error_set(err, -errno, "cannot create a temporary directory in '%s': %s",
				     parent, strerror(errno));
	if (pipe2(p, O_CLOEXEC) < 0) {
		rmdir(tmp);
		return avm_error_setx(err, -errno, "pipe");
	}
	/* The child's reason comes back on ep: it only matters when the guest's side succeeded. */
	if (pipe2(ep, O_CLOEXEC) < 0) {
		r = avm_error_setx(err, -errno, "pipe");
		close(p[0]);
		close(p[1]);
		goto out;
	}
	pid = fork_child();
	if (pid < 0) {
		r = avm_error_setx(err, -errno, "fork");
		close(p[0]);
		close(p[1]);
		close(ep[0]);
		close(ep[1]);
		goto out;
	}
	if (pid == 0) {
		close(p[1]);
		close(ep[0]);
		if (files_untar(p[0], tmp, name, o->progress, &cerr) < 0) {
			(void)!write(ep[1], cerr.msg, strnlen(cerr.msg, sizeof(cerr.msg)));
			_exit(1);
		}
		_exit(0);
	}
	close(p[0]);
	close(ep[1]);
	r = run_builtin(vm, "tar-out", guest_path, name, -1, p[1], o, err);
	close(p[1]);
	code = wait_child(pid);
	ssize_t n = read(ep[0], cerr.msg, sizeof(cerr.msg) - 1);
	close(ep[0]);
	cerr.msg[n > 0 ? n : 0] = '\0';
	if (r == 0 && code != 0)
		r = avm_error_set(err, -EPROTO, "%s", n > 0 ? cerr.msg : "unpacking failed");
	if (r < 0)
		goto out;
	if (snprintf(src, sizeof(src), "%s/%s", tmp, name) >= (int)sizeof(src)) {
		r = avm_error_set(err, -ENAMETOOLONG, "path too long: %s/%s", tmp, name);
		goto out;
	}
	if (lstat(src, &st) < 0) {
		r = avm_error_set(err, -EPROTO, "the guest sent nothing for '%s'", guest_path);
		goto out;
	}
	if (rename(src, final) < 0) {
		int e = errno;
		r = avm_error_set(err, -e, "cannot put the copy at '%s': %s%s", final, strerror(e),
				  e == ENOTEMPTY || e == EEXIST || e == EISDIR || e == ENOTDIR
					  ? "; remove it first or copy to another name"
					  : "");
	}
out:
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return r;
}
