/* SPDX-License-Identifier: MIT */
/*
 * Disk config parsing. Strict like netcfg.c, but per word rather than all-or-nothing: disks are
 * independent of each other, and one typo must not cost the workspace that was spelled right.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "diskcfg.h"

#include <errno.h>
#include <string.h>

#define KEY "agentvm.disk"
#define ROOT_KEY "agentvm.root"

/* Pseudo filesystems that PID 1 mounts and needs; a disk on or under one would hide them. */
static const char *const reserved[] = { "/proc", "/sys", "/dev" };

static bool path_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == '-' || ch == '/';
}

bool diskcfg_dir_ok(const char *s, size_t len)
{
	size_t i = 0, start, clen;

	if (len < 2 || len > DISKCFG_DIR_MAX || s[0] != '/')
		return false;
	for (size_t k = 0; k < len; k++)
		if (!path_char(s[k]))
			return false;
	/* Each component: after a '/', non-empty, not "." or "..". This also refuses "/" and "a/". */
	while (i < len) {
		start = ++i; /* s[i - 1] is the '/' */
		while (i < len && s[i] != '/')
			i++;
		clen = i - start;
		if (clen == 0 || (clen == 1 && s[start] == '.') ||
		    (clen == 2 && s[start] == '.' && s[start + 1] == '.'))
			return false;
	}
	for (size_t r = 0; r < sizeof(reserved) / sizeof(reserved[0]); r++) {
		size_t rl = strlen(reserved[r]);

		if (len >= rl && memcmp(s, reserved[r], rl) == 0 && (len == rl || s[rl] == '/'))
			return false;
	}
	return true;
}

/* "avm-disk" and one digit 0..7: what the host gives QEMU as the virtio-blk serial. */
static bool serial_ok(const char *s, size_t len)
{
	size_t pl = strlen(DISKCFG_SERIAL_PREFIX);

	return len == DISKCFG_SERIAL_LEN && memcmp(s, DISKCFG_SERIAL_PREFIX, pl) == 0 &&
	       s[pl] >= '0' && s[pl] <= '7';
}

/* One value "SERIAL:DIR:MODE" into *e; a static message on failure. */
static const char *parse_value(const char *v, size_t vlen, struct disk_ent *e)
{
	const char *c1 = memchr(v, ':', vlen), *c2, *mode;
	size_t slen, dlen, mlen;

	if (!c1)
		return "agentvm.disk must be avm-disk<0-7>:<dir>:<rw|ro>";
	slen = (size_t)(c1 - v);
	c2 = memchr(c1 + 1, ':', vlen - slen - 1);
	if (!c2)
		return "agentvm.disk must be avm-disk<0-7>:<dir>:<rw|ro>";
	dlen = (size_t)(c2 - c1 - 1);
	mode = c2 + 1;
	mlen = vlen - (size_t)(mode - v);
	if (!serial_ok(v, slen))
		return "agentvm.disk serial must be avm-disk0..avm-disk7";
	if (!diskcfg_dir_ok(c1 + 1, dlen))
		return "agentvm.disk directory must be an absolute path of [A-Za-z0-9._/-], at most "
		       "255 chars, without empty, . or .. components, not / and not under /proc, "
		       "/sys or /dev";
	if (mlen != 2 || (memcmp(mode, "rw", 2) != 0 && memcmp(mode, "ro", 2) != 0))
		return "agentvm.disk mode must be rw or ro";
	memcpy(e->serial, v, slen);
	e->serial[slen] = '\0';
	memcpy(e->dir, c1 + 1, dlen);
	e->dir[dlen] = '\0';
	e->readonly = mode[1] == 'o';
	return NULL;
}

/* Why e cannot join the ones already accepted, or NULL. */
static const char *conflict(const struct disk_cfg *cfg, const struct disk_ent *e)
{
	if (strcmp(cfg->root, e->serial) == 0)
		return "agentvm.disk serial is the root image's";
	for (size_t i = 0; i < cfg->n; i++) {
		if (strcmp(cfg->disk[i].serial, e->serial) == 0)
			return "agentvm.disk serial given twice";
		if (strcmp(cfg->disk[i].dir, e->dir) == 0)
			return "agentvm.disk directory given twice";
	}
	if (cfg->n == DISKCFG_MAX)
		return "more than 8 agentvm.disk words";
	return NULL;
}

/* The value of one agentvm.root word: recorded in cfg->root, or why not. */
static const char *root_word(struct disk_cfg *cfg, const char *v, size_t vlen)
{
	if (!serial_ok(v, vlen))
		return "agentvm.root must be avm-disk0..avm-disk7";
	if (cfg->root[0])
		return "agentvm.root given twice";
	for (size_t i = 0; i < cfg->n; i++)
		if (strlen(cfg->disk[i].serial) == vlen && memcmp(cfg->disk[i].serial, v, vlen) == 0)
			return "agentvm.root names a workspace disk's serial";
	memcpy(cfg->root, v, vlen);
	cfg->root[vlen] = '\0';
	return NULL;
}

int diskcfg_parse_cmdline(const char *cmdline, struct disk_cfg *cfg, const char **why)
{
	static const char ws[] = " \t\n";
	const size_t kl = strlen(KEY), rl = strlen(ROOT_KEY "=");
	const char *w = cmdline, *msg;
	struct disk_ent e;
	size_t len;
	bool root;

	memset(cfg, 0, sizeof(*cfg));
	for (;; w += len) {
		w += strspn(w, ws);
		if (!*w)
			break;
		len = strcspn(w, ws);
		root = len > rl && memcmp(w, ROOT_KEY "=", rl) == 0;
		if (root)
			msg = root_word(cfg, w + rl, len - rl);
		else if (len < kl || memcmp(w, KEY, kl) != 0)
			continue;
		else if (len == kl) /* "agentvm.disk" alone: ours, but without a value */
			msg = "agentvm.disk needs a value";
		else if (w[kl] != '=')
			continue; /* a longer key such as agentvm.disks is someone else's */
		else if (!(msg = parse_value(w + kl + 1, len - kl - 1, &e)))
			msg = conflict(cfg, &e);
		if (msg) {
			if (cfg->rejected++ == 0) {
				*why = msg;
				cfg->bad = w;
				/* /proc/cmdline is a few KiB; a fuzzer's line may not be */
				cfg->bad_len = len > 4096 ? 4096 : (int)len;
			}
			continue;
		}
		if (!root)
			cfg->disk[cfg->n++] = e;
	}
	return cfg->rejected ? -EINVAL : 0;
}
