/* SPDX-License-Identifier: MIT */
/*
 * Guest root images: a content-addressed store of read-only ext4 root file systems in the
 * cache dir, built from recipes (mmdebstrap + npm) or imported from OCI images.
 *
 * Layout ($AGENTVM_CACHE_DIR, default /var/cache/agentvm):
 *     images/<id>/rootfs.ext4   the file system; never written after the build (0444)
 *     images/<id>/meta.json     {name, id, recipe, inputs, packages, npm, size, blocks,
 *                                created, env, workdir, user, source}
 *     images/names/<NAME>       the id NAME points at (one line), replaced atomically
 *     images/.build-*           work dirs of builds in progress (removed on failure)
 * <id> is the sha256 (hex) of rootfs.ext4. A VM never writes the image: it gets a qcow2
 * overlay of its own (see disk.h), so every VM on one image shares its page cache. The VM sees
 * it as one of its disks (vm_disk.root, serial avm-disk<N>, agentvm.root=avm-disk<N>).
 *
 * Inside every image, the defaults guest-init applies to every command (see
 * guest-init/rootfs.h): /etc/agentvm/env (KEY=VALUE lines: PATH, HOME, LANG, ...) and
 * /etc/agentvm/exec (lines "workdir=/dir", "user=UID:GID").
 */
#ifndef AGENTVM_IMAGE_H
#define AGENTVM_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/strv.h"

#define IMAGE_ID_LEN 64 /* hex sha256 */

struct image_info {
	char *name;   /* the name it was found by (or the id itself) */
	char *id;     /* hex sha256 of rootfs.ext4 */
	char *dir;    /* <cache>/images/<id> */
	char *rootfs; /* <dir>/rootfs.ext4 */
	uint64_t size;
};

/*
 * Find an image by name, by full id, or by a unique id prefix of at least 12 hex digits.
 * -ENOENT with "image NAME not found; build it with 'agentvm image build NAME' (see agentvm
 * image ls)" when missing; -EIO when its directory is incomplete (a half-built or damaged
 * image: the message names 'agentvm image rm' and a rebuild). Caller frees *out.
 */
int image_resolve(const char *name, struct image_info **out, struct avm_error *err);
void image_info_free(struct image_info *i);

/* <cache>/images: $AGENTVM_CACHE_DIR/images, else /var/cache/agentvm/images for root, else
 * $XDG_CACHE_HOME/agentvm/images or ~/.cache/agentvm/images. */
const char *image_store_dir(void);
/* Image names: 1..63 chars of [a-zA-Z0-9_.-] starting with a letter or digit, not 64 hex. */
int image_validate_name(const char *name, struct avm_error *err);
/* Point NAME at id (images/names/NAME replaced atomically: a reader sees the old or the new). */
int image_name_set(const char *name, const char *id, struct avm_error *err);
/* meta.json of a resolved image (a json-c object; caller puts it). */
struct json_object;
int image_meta_read(const struct image_info *i, struct json_object **out, struct avm_error *err);
/* Re-hash rootfs.ext4 and compare it with the id: -EIO with the fix when they differ. */
int image_verify(const struct image_info *i, struct avm_error *err);

/* One row of image_list: every named image, then images no name points at (name NULL). */
struct image_entry {
	char *name;
	char *id;
	struct json_object *meta; /* NULL when unreadable (damaged) */
	char *problem;            /* NULL when fine, else why it cannot be used */
};
int image_list(struct image_entry **out, size_t *n, struct avm_error *err);
void image_list_free(struct image_entry *e, size_t n);

/*
 * VMs (spec.json under the state dir) and snapshots whose spec names image id; a
 * NULL-terminated strv of "vm NAME" / "snapshot NAME" (caller strv_free), empty when none.
 */
int image_users(const char *id, char ***out);
/*
 * Remove NAME (or an id): the name, and the image dir when no other name points at it. Refuses
 * with -EBUSY while a VM or snapshot uses it unless force. Also removes what interrupted builds
 * of NAME left. *removed_id (optional, caller frees): the id whose dir went.
 */
int image_remove(const char *name, bool force, char **removed_id, struct avm_error *err);
/* Remove images/<id> when no name points at it and nothing uses it: 1 when removed, else 0. */
int image_prune(const char *id);
/* rm -rf (one file system, no links followed; mounts a killed builder left are detached). */
int image_remove_tree(const char *path);

/*
 * What an image store error means for a caller, from its errno (the store's calls leave it
 * AVM_ERR_ERRNO): a bad name, argument or recipe (EINVAL, ELOOP) is USAGE, out of memory or a
 * bad pointer INTERNAL, EINTR INTERRUPTED, anything else (missing, busy, damaged, a failed
 * build) STATE. A kind already set stays. Returns err->code.
 */
int image_error_classify(struct avm_error *err);
/* Remove the work dirs of builds that died (no builder holds their lock); returns the count. */
int image_clean_stale_builds(const char *name);

/* --- building ------------------------------------------------------------------------------ */
struct image_recipe {
	char *recipe;       /* the recipe's name or path ("base"), NULL for none */
	char *suite;        /* Debian suite, "bookworm" */
	struct strv packages, npm, runs, env;
	struct strv warms;  /* run after the clean-up: what they write stays in the image */
	struct strv files;  /* "SRC\tDST" with SRC absolute */
	struct strv ca_certs; /* absolute paths */
	char *workdir, *user;
	uint64_t size_mib;  /* 0: from the tree */
};
void image_recipe_release(struct image_recipe *r);
/* The dir of built-in recipes and build-rootfs.sh (like the kernel: $AGENTVM_RECIPES, next to
 * the binary, <exe>/../share/agentvm, AVM_DATADIR). */
int image_find_datadir(char **out, struct avm_error *err);
/*
 * Load recipe FROM (a built-in name or a file path) into r, following its "from" lines (at most
 * 8 deep). Lines: "from R", "suite S", "packages P...", "npm PKG...", "file SRC:DST", "run CMD", "warm CMD",
 * "ca-cert FILE", "env K=V", "workdir DIR", "user UID:GID", "size N[MG]"; '#' comments.
 */
int image_recipe_load(struct image_recipe *r, const char *from, struct avm_error *err);
/* The recipe a build of image name uses without --from: the built-in one called name when
   there is one ("agent", "base"), else "base". Returns name or a static string. */
const char *image_default_recipe(const char *name);
int image_recipe_parse(struct image_recipe *r, const char *text, const char *base_dir, int depth,
		       struct avm_error *err);
/* The inputs hash (hex) of a resolved recipe: every input, file contents and the builder. */
int image_recipe_inputs(const struct image_recipe *r, const char *builder, char hex[65],
			struct avm_error *err);
/* Parse "512M", "2G", "1024" (MiB) into MiB. */
int image_parse_size(const char *s, uint64_t *mib);

struct image_build_opts {
	bool force;   /* rebuild even when NAME is up to date */
	bool verbose; /* the builder's whole log on stderr */
};
/* Build NAME from r; prints progress on stderr. *id_out (optional): the image's id. */
int image_build(const char *name, const struct image_recipe *r, const struct image_build_opts *o,
		char **id_out, struct avm_error *err);
/* Import an OCI image (layout dir, OCI archive, docker save tarball, registry ref) as NAME. */
int image_import(const char *name, const char *source, const struct image_build_opts *o,
		 char **id_out, struct avm_error *err);

/* --- the defaults inside an image (/etc/agentvm) and OCI configs ----------------------------- */
#define IMAGE_DEFAULTS_MAX 65536
struct image_defaults {
	struct strv env; /* KEY=VALUE */
	char *workdir;   /* absolute, or NULL */
	char *user;      /* "UID:GID" numeric, or NULL */
};
void image_defaults_release(struct image_defaults *d);
/* The text of /etc/agentvm/env and /etc/agentvm/exec; -EINVAL with err for a bad entry. */
int image_defaults_render(const struct image_defaults *d, char **env_text, char **exec_text,
			  struct avm_error *err);
/* Write them under root (no symlink in the image is followed out of it). */
int image_defaults_write(const char *root, const struct image_defaults *d, struct avm_error *err);
/* An OCI image config (untrusted JSON): Env, WorkingDir, User (a name or id, unresolved). */
struct oci_config {
	struct strv env;
	char *workdir;
	char *user;
};
void oci_config_release(struct oci_config *c);
int oci_config_parse(const char *json, size_t len, struct oci_config *out, struct avm_error *err);
/*
 * Resolve an OCI User ("name", "uid", "name:group", "uid:gid", "") against root's /etc/passwd
 * and /etc/group into "UID:GID" (buf) and the user's home (home, "" when unknown).
 */
int oci_resolve_user(const char *root, const char *user, char *buf, size_t len, char *home,
		     size_t home_len, struct avm_error *err);
/* Same, from the passwd and group texts (for tests and fuzzing). */
int oci_resolve_user_text(const char *passwd, const char *group, const char *user, char *buf,
			  size_t len, char *home, size_t home_len, struct avm_error *err);

#endif
