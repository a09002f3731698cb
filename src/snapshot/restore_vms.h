/* SPDX-License-Identifier: MIT */
/*
 * The restore and reset verbs' logic on top of restore.h: open a snapshot with the failure
 * classified, restore N clones at once (all or nothing), and reset a clone to its snapshot.
 */
#ifndef AGENTVM_RESTORE_VMS_H
#define AGENTVM_RESTORE_VMS_H

#include <stddef.h>

#include "base/error.h"
#include "snapshot/restore.h"
#include "state/statedir.h"

/* restore_prepare with the error's kind set (USAGE, STATE, BOOT or HOST). */
int restore_open(const char *snap, struct restore *rs, struct avm_error *err);
/*
 * Restore count VMs named names[i] from rs, concurrently when more than one; all or nothing:
 * when one fails the others are removed. errs (count entries, or NULL) gets each VM's error;
 * err the first. cancel_fd (-1: none) turns readable to cancel: every VM started is removed
 * and the result is -EINTR (kind INTERRUPTED). Blocks until every VM is ready or failed.
 */
int restore_vms(const struct restore *rs, char (*names)[STATEDIR_MAX_NAME + 1], size_t count,
		long boot_timeout_s, int cancel_fd, struct avm_error *errs, struct avm_error *err);
/*
 * Replace VM `name` (restored from a snapshot) with a fresh clone of that snapshot, under the
 * same name and network policy; a pool VM keeps its markers. Kinds: USAGE, STATE, BOOT.
 */
int restore_reset(const char *name, long boot_timeout_s, struct avm_error *err);

#endif
