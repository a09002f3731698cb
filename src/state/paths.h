/* SPDX-License-Identifier: MIT */
/*
 * The host directories agentvm keeps things in besides the state dir (statedir.h): the snapshot
 * root and the cache dir with its parts. One owner for each path, so no two modules spell it.
 *
 * snapshots: $AGENTVM_SNAPSHOT_DIR, else /var/lib/agentvm/snapshots for root, else
 *            $XDG_DATA_HOME/agentvm/snapshots (~/.local/share).
 * cache:     $AGENTVM_CACHE_DIR, else /var/cache/agentvm for root, else
 *            $XDG_CACHE_HOME/agentvm (~/.cache). Everything in it can be rebuilt.
 */
#ifndef AGENTVM_PATHS_H
#define AGENTVM_PATHS_H

/* Every snapshot dir holds its description here (snapshot.h, SNAP_META_FILE). */
#define PATHS_SNAPSHOT_META "meta.json"

/* Each returns a static buffer (not thread-safe across calls that change the environment). */
const char *paths_snapshot_root(void);
const char *paths_cache_root(void);
/* <cache>/hashes: sha256 of input files by identity (file_input.h). Safe to delete. */
const char *paths_hash_cache_dir(void);
/* <cache>/images: the root image store (image.h). */
const char *paths_image_store(void);
/* <cache>/templates: boot templates (boot_cache.h). */
const char *paths_template_dir(void);

#endif
