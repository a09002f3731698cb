/* SPDX-License-Identifier: MIT */
/*
 * A root image's defaults for every command: pure parsing (unit tested and fuzzed: an image is
 * the user's, but what it holds must never crash PID 1), nothing touches the system here.
 *
 * Two optional files in the image (written by `agentvm image build/import`, see src/image/image.h):
 *   /etc/agentvm/env    one KEY=VALUE per line (PATH, HOME, LANG, an OCI config's Env)
 *   /etc/agentvm/exec   "workdir=/abs/dir" and "user=UID:GID" lines (OCI WorkingDir, User)
 * No quoting, no comments; empty lines are skipped; a bad line is skipped and counted, the
 * others still apply. An EXEC's own env, cwd and uid/gid override these; these override the
 * agent's built-in defaults.
 */
#ifndef AGENTVM_INIT_IMAGECFG_H
#define AGENTVM_INIT_IMAGECFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAGECFG_FILE_MAX (64 * 1024) /* per file; longer is refused whole */
#define IMAGECFG_ENV_MAX 256
#define IMAGECFG_DIR_MAX 255
#define IMAGECFG_ENV_PATH "/etc/agentvm/env"
#define IMAGECFG_EXEC_PATH "/etc/agentvm/exec"

struct image_cfg {
	char text[IMAGECFG_FILE_MAX + 1]; /* the env file, cut into the strings env[] points at */
	const char *env[IMAGECFG_ENV_MAX];
	size_t n_env;
	char workdir[IMAGECFG_DIR_MAX + 1]; /* "" = not set */
	uint32_t uid, gid;
	bool has_user;
	unsigned rejected; /* lines skipped, in both files */
};

/* The defaults in force: all empty until imagecfg_load() succeeds (a VM without an image). */
extern struct image_cfg imagecfg;

/* true for "KEY=..." with KEY a valid environment name ([A-Za-z_][A-Za-z0-9_]*). */
bool imagecfg_env_entry_ok(const char *s, size_t len);

/*
 * The env file's contents (len bytes, need not be NUL-terminated) into c->env; repeated keys:
 * the later line wins. Returns 0, or -E2BIG for a file over IMAGECFG_FILE_MAX (nothing kept).
 */
int imagecfg_parse_env(struct image_cfg *c, const char *data, size_t len);
/* The exec file's contents into c->workdir and c->uid/gid. 0, or -E2BIG as above. */
int imagecfg_parse_exec(struct image_cfg *c, const char *data, size_t len);

#endif
