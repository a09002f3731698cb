/* SPDX-License-Identifier: MIT */
/*
 * Restoring VMs from a snapshot: a checked snapshot (struct restore) and the clones started
 * from it. Used by `restore`, `reset`, `snapshot save` (to build the template early) and the
 * pool's workers.
 */
#ifndef AGENTVM_RESTORE_H
#define AGENTVM_RESTORE_H

#include <limits.h>
#include <stdbool.h>

#include "base/error.h"
#include "snapshot/snapshot.h"
#include "spec/spec.h"

/* In a restored VM's state dir: the name of the snapshot it came from (where `reset` goes). */
#define RESTORE_ORIGIN_FILE "snapshot"

struct restore {
	struct snap_meta meta;
	char *qemu;
	char state_path[PATH_MAX]; /* the stream to load: the full one, or the CoW device state */
	char mem_path[PATH_MAX];   /* copy-on-write: the template's RAM file; "" = plain */
	char snap_dir[PATH_MAX];   /* its disk<N>.qcow2 back the clones' disk overlays */
	/* Network flags given to restore (borrowed; NULL = the snapshot's): net_mode when
	 * net_mode_given, the policy (allow, host_allow, deny_all_egress, dns) when policy_given. */
	const struct vm_spec *net_override;
	bool net_mode_given, policy_given;
	int pool_pidfd; /* the pool's workers: vm_launch_opts.pool_pidfd (0 = none) */
};

/*
 * Restore mode: "cow" (default) maps a template RAM file copy-on-write and loads only the
 * device state; "plain" loads the whole migration stream. AGENTVM_RESTORE_MODE chooses.
 */
bool restore_cow(void);

/*
 * Load and check the snapshot (meta.json, inputs unchanged, accel available) into *rs and, in
 * cow mode, build its template if there is none yet. rs is released on failure; on success the
 * caller releases it with restore_release().
 */
int restore_prepare(const char *snap, struct restore *rs, struct avm_error *err);
void restore_release(struct restore *rs);

/*
 * Do the network flags in rs fit the snapshot (a NIC cannot come or go; filter flags need a
 * filtered NIC)? The same check restore_one() makes, for callers that want to fail once, up
 * front (restore --count, serve), instead of once per VM.
 */
int restore_check_override(const struct restore *rs, struct avm_error *err);
/*
 * The same before restore_prepare(), from meta.json alone: a usage error must not wait for a
 * copy-on-write template build. 0 also when the snapshot cannot be loaded (prepare says why).
 */
int restore_check_flags(const char *snap, const struct vm_spec *ov, bool mode_given,
			bool policy_given, struct avm_error *err);

/*
 * Start one detached VM `name` from it; returns once the guest answered SYNC (or failed, with
 * nothing left). Records the snapshot in RESTORE_ORIGIN_FILE.
 */
int restore_one(const struct restore *rs, const char *name, long boot_timeout_s,
		struct avm_error *err);

#endif
