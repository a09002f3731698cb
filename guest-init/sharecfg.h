/* SPDX-License-Identifier: MIT */
/*
 * The guest's 9p shares (--share, --workspace), parsed from the kernel cmdline. Pure: the parser
 * is unit-tested and fuzzed; share.c mounts the result.
 *
 * Contract with the host, one word per share (at most SHARECFG_MAX):
 *     agentvm.share=avm-share<N>:<DIR>:<rw|ro>
 * N is 0..7 and "avm-share<N>" is also the virtio-9p mount_tag. DIR follows diskcfg_dir_ok().
 */
#ifndef AGENTVM_INIT_SHARECFG_H
#define AGENTVM_INIT_SHARECFG_H

#include <stdbool.h>
#include <stddef.h>

#include "diskcfg.h"

#define SHARECFG_MAX 8
#define SHARECFG_TAG_PREFIX "avm-share"
#define SHARECFG_TAG_LEN 10 /* the prefix and one digit 0..7 */

struct share_ent {
	char tag[SHARECFG_TAG_LEN + 1];
	char dir[DISKCFG_DIR_MAX + 1];
	bool readonly;
};

struct share_cfg {
	size_t n;
	struct share_ent share[SHARECFG_MAX];
	unsigned rejected; /* words refused; *why names the first */
};

/*
 * The agentvm.share words of a kernel cmdline; other words are ignored. A malformed word, a
 * repeated tag or directory, or one beyond SHARECFG_MAX is refused and skipped, the others
 * still apply. Returns 0, or -EINVAL with *why set (static) and cfg->rejected counting them.
 */
int sharecfg_parse_cmdline(const char *cmdline, struct share_cfg *cfg, const char **why);

/*
 * Mount the shares (9p over virtio) of the agentvm.share words in a string, after the disks:
 * the kernel cmdline sys_cmdline() read, or a boot template's first SYNC.
 */
void share_mount_words(const char *words);

#endif
