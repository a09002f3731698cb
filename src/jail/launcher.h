/* SPDX-License-Identifier: MIT */
/*
 * Spawning a child (QEMU) with exactly the fds it is meant to have. Every fd in this process is
 * CLOEXEC; the child marks everything above stderr CLOEXEC with close_range(), then clears the
 * flag only on the named fds. It gets its own session (a terminal's Ctrl-C goes to agentvm, which
 * decides what to do), an empty signal mask, and PR_SET_PDEATHSIG so it dies with its parent.
 */
#ifndef AGENTVM_LAUNCHER_H
#define AGENTVM_LAUNCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

struct jail;

struct launch_opts {
	char *const *argv;
	const int *keep_fds; /* fds the child inherits at the same numbers */
	size_t n_keep;
	const char *log_path; /* the child's stdout+stderr go here (appended); NULL = /dev/null */
	struct jail *jail; /* the child's jail (jail.h; its cgroups are made here), or NULL */
	/*
	 * Without a jail only: the child borrows our memory until it execs (CLONE_VM|CLONE_VFORK,
	 * as posix_spawn does) instead of a fork's copy of the page tables, which marks all our
	 * memory copy-on-write: 6-40 ms, then hundreds of faults in the parent, on a host where a
	 * fault costs ~20 us (bench/RESULTS.md, egress2). We wait while it sets up and execs.
	 */
	bool vfork;
};

/*
 * Start the child. On success *pid is its pid and *pidfd a CLOEXEC pidfd for it (poll it for
 * exit; the caller owns and closes it). Fails with -errno when fork fails or exec fails (the
 * exec errno is reported back through a CLOEXEC pipe, so a missing binary is an error here, not
 * a mysterious early exit later).
 */
int launch_spawn(const struct launch_opts *o, pid_t *pid, int *pidfd, struct avm_error *err);

#endif
