/* SPDX-License-Identifier: MIT */
/*
 * Copy-on-write restores. A template is built once per snapshot: a QEMU whose guest RAM is a
 * file (memory-backend-file, share=on) loads the full migration stream and, still paused, is
 * migrated again with x-ignore-shared, which writes only the device state (the RAM is in the
 * file). Clones then map that RAM file privately (share=off: copy-on-write, pages shared with
 * the page cache until the guest writes them) and load only the small device state.
 * The RAM file is never written after the template is built, as clones require.
 */
#ifndef AGENTVM_VM_RESTORE_H
#define AGENTVM_VM_RESTORE_H

#include "vm/vm.h"

/*
 * o->incoming must name the full stream, a mem_path that does not exist yet, mem_share and
 * stay_paused. Writes the device state to devstate_path. Nothing is left but the two files.
 */
int vm_build_cow_template(const struct vm_launch_opts *o, const char *devstate_path,
			  struct avm_error *err);

/*
 * The device state of vm (its guest RAM a share=on file) into devstate_path, with
 * x-ignore-shared: the RAM stays in its file. vm is stopped after it (QEMU's postmigrate) and
 * is the caller's to destroy. qemu_version (or NULL): QEMU's "major.minor.micro", which a
 * restore of the file must find.
 */
int vm_save_cow_state(struct vm *vm, const char *devstate_path, char qemu_version[32],
		      struct avm_error *err);

#endif
