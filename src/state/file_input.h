/* SPDX-License-Identifier: MIT */
/*
 * A file a VM was made from (QEMU, a kernel, an initramfs, a disk image), recorded by identity
 * and content: snapshots and boot templates check that a restore still has the same one.
 */
#ifndef AGENTVM_FILE_INPUT_H
#define AGENTVM_FILE_INPUT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

struct file_input {
	char *path; /* resolved (realpath) */
	char sha256[65];
	int64_t size;
	int64_t mtime_ns;
};

/*
 * Record path's identity and sha256 into in. The hash comes from the hash cache
 * (paths_hash_cache_dir()) when the file has not changed for a few seconds.
 */
int file_input_record(struct file_input *in, const char *path, struct avm_error *err);
/* Whether s is 64 lower-case hex digits (a sha256 as recorded). */
bool file_input_hex_ok(const char *s);

#endif
