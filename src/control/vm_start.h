/* SPDX-License-Identifier: MIT */
/*
 * Booting a VM from a spec, the way run and start do: the host's QEMU, kernel and initramfs
 * resolved and checked, then a boot (or a boot template restored: boot_cache.h), either owned
 * by the caller (run) or by a supervisor daemon (start).
 */
#ifndef AGENTVM_VM_START_H
#define AGENTVM_VM_START_H

#include <stdbool.h>

#include "base/error.h"
#include "spec/spec.h"

struct vm;

/* Seconds a guest has to be ready unless the caller says otherwise (run/start --boot-timeout). */
#define VM_BOOT_TIMEOUT_DEFAULT_S 60

/*
 * Resolve the accelerator (warning once through avm_warn when AUTO falls back to TCG) and the
 * QEMU, kernel and initrd paths, checking each is there (caller frees the strings). Kind HOST.
 */
int vm_host_prepare(struct vm_spec *spec, enum vm_accel *accel, char **qemu, char **kernel,
		    char **initrd, struct avm_error *err);
/*
 * Start a detached VM (a supervisor owns it) and wait until its guest is ready. spec->name is
 * generated when NULL. Kinds: USAGE (bad or taken name), HOST, BOOT.
 */
int vm_start_detached(struct vm_spec *spec, long boot_timeout_s, bool cold,
		      struct avm_error *err);
/*
 * Boot a VM owned by the caller (`run`; vm_destroy() ends it) and wait until it is ready.
 * sig_fd (or -1): a signalfd whose signals abort the boot. Kinds: USAGE, HOST, BOOT.
 */
int vm_boot(struct vm_spec *spec, long boot_timeout_s, bool cold, bool keep_state, int sig_fd,
	    struct vm **out, struct avm_error *err);

#endif
