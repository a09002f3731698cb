/* SPDX-License-Identifier: MIT */
/*
 * Files in and out of a running VM (`agentvm cp`, run --copy-in/--copy-out): a tar stream
 * through the agent channel, made and unpacked on the host with libarchive and in the guest by
 * the agent's builtins (guest-init/tarcmd.h). Each direction runs an ordinary EXEC, so it gets
 * the channel's flow control (the guest's bounded stdin queue, pipe back-pressure): memory
 * stays flat whatever the size.
 *
 * Everything the guest sends is hostile: copy-out unpacks it in a child process into a fresh
 * temporary directory next to the destination, with libarchive's secure flags (no "..", no
 * absolute paths, no writing through symlinks), only regular files, directories and links, no
 * owners, no set-uid/set-gid/sticky bits, every entry under the one expected name; then
 * renames the result into place, so an interrupted copy never leaves a partial file under the
 * final name.
 */
#ifndef AGENTVM_FILES_H
#define AGENTVM_FILES_H

#include <stdbool.h>

#include "base/error.h"

struct vm;

struct files_opts {
	int sig_fd;    /* signalfd or -1: a signal stops the copy (see vm_exec) */
	bool progress; /* progress lines through avm_log (the caller checks it is a terminal) */
	/* The caller's stdio for the "-" streams and the guest tar's complaints (the library
	   has none of its own): usually STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO. */
	int stdin_fd, stdout_fd, stderr_fd;
};

/*
 * Copy host_path (a file, a directory tree or a symlink, never followed) into the guest, with
 * docker cp's rule: into guest_path/NAME when guest_path is a directory, else as guest_path.
 * host_path "-": a tar stream on stdin, unpacked into the existing guest directory guest_path.
 */
int files_copy_in(struct vm *vm, const char *host_path, const char *guest_path,
		  const struct files_opts *o, struct avm_error *err);

/*
 * Copy guest_path out: into host_path/NAME when host_path is a directory, else as host_path
 * (whose parent must exist). An existing file is replaced; an existing directory is not.
 * host_path "-": the tar stream itself to stdout.
 */
int files_copy_out(struct vm *vm, const char *guest_path, const char *host_path,
		   const struct files_opts *o, struct avm_error *err);

/*
 * Unpack the tar stream on fd into the existing, empty directory dir under the rules above
 * (every entry under `name`). Returns 0 or -errno with err filled. Exposed for the fuzz target.
 */
int files_untar(int fd, const char *dir, const char *name, bool progress, struct avm_error *err);

#endif
