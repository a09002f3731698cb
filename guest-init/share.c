/* SPDX-License-Identifier: MIT */
/*
 * Mounting the 9p shares. The host's QEMU enforces what the share may do (security model
 * mapped-xattr, readonly=on): the guest's mount options only make the guest's own view match,
 * so nothing here is a security boundary. nosuid,nodev all the same: a set-uid bit the guest's
 * root recorded in the share's metadata must not become a way up for the guest's other users.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "disk.h"
#include "sharecfg.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

/*
 * msize: the largest 9p message. The kernel's virtio transport takes up to ~512 KiB; 512 KiB
 * cut the round trips of a large read or write by 4x against the 128 KiB default under TCG.
 */
#define SHARE_MOUNT_OPTS "trans=virtio,version=9p2000.L,msize=524288"

void share_mount_words(const char *words)
{
	struct share_cfg cfg;
	const char *why = NULL;

	if (sharecfg_parse_cmdline(words, &cfg, &why) < 0)
		log_msg("kernel cmdline: %s; ignored (%u agentvm.share word%s refused)", why,
			cfg.rejected, cfg.rejected == 1 ? "" : "s");
	/* Shortest directory first: a parent is always shorter, so /a is mounted before /a/b. */
	size_t order[SHARECFG_MAX];
	for (size_t i = 0; i < cfg.n; i++) {
		size_t j = i;

		for (; j > 0 && strlen(cfg.share[order[j - 1]].dir) > strlen(cfg.share[i].dir); j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	for (size_t k = 0; k < cfg.n; k++) {
		const struct share_ent *e = &cfg.share[order[k]];
		unsigned long flags = MS_NOSUID | MS_NODEV | (e->readonly ? MS_RDONLY : 0);
		uint64_t t0 = mono_ns();

		if (disk_mkdir_p(e->dir) < 0) {
			log_msg("share %s: mkdir %s: %m; not mounted", e->tag, e->dir);
			continue;
		}
		if (mount(e->tag, e->dir, "9p", flags, SHARE_MOUNT_OPTS) < 0) {
			log_msg("share %s: mount 9p on %s: %m; not mounted", e->tag, e->dir);
			continue;
		}
		log_debug("share %s mounted on %s %s in %llu us", e->tag, e->dir,
			  e->readonly ? "ro" : "rw", (unsigned long long)(mono_ns() - t0) / 1000);
	}
}
