/* SPDX-License-Identifier: MIT */
/*
 * Saving, listing and removing snapshots (the on-disk layout is snapshot.h's). A save stops the
 * VM, migrates it over QMP into a file QEMU gets with getfd (SCM_RIGHTS), copies its disk
 * overlays, resumes it, and renames the finished temp dir into place; then builds the
 * copy-on-write template so the first restore is as fast as the rest.
 */
#ifndef AGENTVM_SNAPSHOT_SAVE_H
#define AGENTVM_SNAPSHOT_SAVE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

/*
 * Save VM `vm` as snapshot `snap`. cancel_fd (-1: none) is an fd that turns readable to cancel
 * (the CLI's signalfd): the migration is cancelled, the VM resumed and nothing is kept, or, past
 * the rename, the snapshot is kept; either way -EINTR, kind INTERRUPTED, and the message says
 * which. A stop signal blocked and pending in the process also cancels the migration. Blocks
 * for the whole save (up to two minutes of migration).
 */
int snap_save(const char *vm, const char *snap, const char *desc, int cancel_fd,
	      struct avm_error *err);
/*
 * Remove the temp dirs (".NAME.tmp-XXXXXX") of saves that died: no saver holds their flock and
 * they are older than ten minutes.
 */
void snap_remove_stale_tmp(void);
/* The snapshot names, sorted (a NULL-terminated strv, caller frees); count or -errno. */
int snap_list(char ***out);
/* The live VMs restored from `snap`, space-separated into buf ("" = none). */
void snap_users(const char *snap, char *buf, size_t len);
/* Remove a snapshot; one still used by restored VMs only with force (else kind STATE). */
int snap_remove(const char *snap, bool force, struct avm_error *err);

#endif
