/* SPDX-License-Identifier: MIT */
/*
 * The seccomp allowlist QEMU runs under, as libseccomp rules. It is compiled to BPF at build time
 * (src/gen/seccomp_gen.c writes $(B)/gen/jail_bpf.h) and loaded by jail_seccomp_load() (jail.h):
 * listed calls pass, a few an exploit would want kill the process (SIGSYS), anything else fails
 * with EPERM.
 */
#ifndef AGENTVM_JAIL_SECCOMP_H
#define AGENTVM_JAIL_SECCOMP_H

#include <seccomp.h>

/* The filter (without no_new_privs, which the jail sets itself); 0 or -errno. */
int jail_seccomp_ctx(scmp_filter_ctx *out);

#endif
