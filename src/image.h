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
 * overlay of its own (see disk.h), so every VM on one image shares its page cache.
 *
 * Inside every image, the defaults guest-init applies to every command (see
 * guest-init/rootfs.h): /etc/agentvm/env (KEY=VALUE lines: PATH, HOME, LANG, ...) and
 * /etc/agentvm/exec (lines "workdir=/dir", "user=UID:GID").
 */
#ifndef AGENTVM_IMAGE_H
#define AGENTVM_IMAGE_H

#include <stdint.h>

#include "error.h"

/* The virtio-blk serial of the root disk; guest-init looks for it (agentvm.root=...). */
#define IMAGE_ROOT_SERIAL "avm-root"
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

#endif
