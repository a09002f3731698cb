/* SPDX-License-Identifier: MIT */
/* The agent side of the channel: READY, and turning host frames into actions. */
#ifndef AGENTVM_INIT_AGENT_H
#define AGENTVM_INIT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Send READY (version, CLOCK_BOOTTIME). */
void agent_ready(void);

/*
 * Take in what the port has (stash first, then up to a budget of reads) and act on every
 * complete frame. Sets *readable to false once the port said EAGAIN or host-closed.
 */
void agent_pump(bool *readable);

/* true when agent_pump() has something to do right now (so the loop must not sleep). */
bool agent_has_work(bool readable);

/* SYNC: apply time, entropy, hostname and network identity. Returns 0 or -errno with *why set. */
int sync_apply(const uint8_t *p, size_t len, const char **why);
/*
 * This boot is a boot template's (agentvm.template=1): the first SYNC after a restore may carry
 * AVM_TAG_BOOT_ARGS, the per-run words (root image, disks, shares) a cold boot reads from the
 * cmdline; they are applied then, once, in a cold boot's order.
 */
void sync_defer_boot(void);

#endif
