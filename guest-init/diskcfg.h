/* SPDX-License-Identifier: MIT */
/*
 * The guest's workspace disks, parsed from the kernel cmdline. Pure functions only: nothing here
 * touches the system, so the parser can be unit-tested and fuzzed; disk.c mounts the result.
 *
 * Contract with the host, one word per disk (at most DISKCFG_MAX):
 *     agentvm.disk=avm-disk<N>:<DIR>:<rw|ro>
 * N is 0..7 and is also the disk's virtio-blk serial ("avm-disk<N>"), which is how the guest
 * finds it whatever vdX name the kernel gave it. DIR is where it is mounted (ext4).
 *
 * And at most one root image (--image), which guest-init mounts and switches root to before
 * the other disks are mounted inside it:
 *     agentvm.root=avm-disk<N>
 */
#ifndef AGENTVM_INIT_DISKCFG_H
#define AGENTVM_INIT_DISKCFG_H

#include <stdbool.h>
#include <stddef.h>

#define DISKCFG_MAX 8
#define DISKCFG_SERIAL_PREFIX "avm-disk"
#define DISKCFG_SERIAL_LEN 9 /* the prefix and one digit 0..7 */
#define DISKCFG_DIR_MAX 255

struct disk_ent {
	char serial[DISKCFG_SERIAL_LEN + 1];
	char dir[DISKCFG_DIR_MAX + 1];
	bool readonly;
};

struct disk_cfg {
	size_t n;
	struct disk_ent disk[DISKCFG_MAX]; /* in cmdline order */
	char root[DISKCFG_SERIAL_LEN + 1]; /* the root image's serial, "" for none */
	unsigned rejected;		   /* words refused (why names the first) */
	const char *bad;		   /* the first refused word, inside the cmdline */
	int bad_len;			   /* its length, for "%.*s" */
};

/*
 * A mount point the guest accepts: absolute, 2..DISKCFG_DIR_MAX of [A-Za-z0-9._/-], in canonical
 * form (no empty, "." or ".." component, no trailing '/'), so that comparing strings is
 * comparing directories. "/" itself and /proc, /sys, /dev and anything below them are refused:
 * covering what PID 1 and every command rely on would break the guest, not give it a disk.
 * s[0..len) need not be NUL-terminated.
 */
bool diskcfg_dir_ok(const char *s, size_t len);

/*
 * The agentvm.disk words of a kernel cmdline (whitespace-separated words; other words and
 * other agentvm.* keys are ignored). Each word stands alone: a malformed one, a repeated serial
 * or directory (the later word loses), or one beyond DISKCFG_MAX is refused and skipped, the
 * others still apply. A second agentvm.root word, or one naming a workspace disk's serial, is
 * refused the same way (the first root word wins); the
 * others still apply. Returns 0, or -EINVAL with *why set to a static message naming the first
 * refused word's problem, cfg->bad/bad_len pointing at that word and cfg->rejected counting
 * them all.
 */
int diskcfg_parse_cmdline(const char *cmdline, struct disk_cfg *cfg, const char **why);

#endif
