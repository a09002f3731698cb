/* SPDX-License-Identifier: MIT */
#include "state/file_input.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/sha256.h"
#include "base/util.h"
#include "state/paths.h"

bool file_input_hex_ok(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
			return false;
	return true;
}

/*
 * Hashing a multi-GiB disk image on every save would cost seconds each time (~200 MB/s here),
 * so a hash is kept in the cache dir under a name made of the file's device, inode, size, mtime
 * and ctime: any write or replacement changes one of them, so a hit is the same content. A
 * cache, not snapshot data: it lives outside the snapshot root.
 */
static void hash_cache_name(char *buf, size_t len, const struct stat *st)
{
	snprintf(buf, len, "%s/%llx-%llx-%llx-%llx.%lx-%llx.%lx", paths_hash_cache_dir(),
		 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_size, (unsigned long long)st->st_mtim.tv_sec,
		 st->st_mtim.tv_nsec, (unsigned long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
}

static int hashed_file(const char *path, const struct stat *st, char hex[65])
{
	char cache[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	int r;

	/*
	 * File times tick with the kernel's coarse clock: a file changed within the last seconds
	 * could change again under the same times, so it is hashed and not cached ("racy git").
	 */
	bool settled = time(NULL) - st->st_mtim.tv_sec > 2 && time(NULL) - st->st_ctim.tv_sec > 2;

	hash_cache_name(cache, sizeof(cache), st);
	if (settled && read_file(cache, &text, 128) == 64 && file_input_hex_ok(text)) {
		memcpy(hex, text, 65);
		return 0;
	}
	if ((r = sha256_file(path, hex)) < 0 || !settled)
		return r;
	if (mkdir_p(paths_hash_cache_dir(), 0700) == 0) /* best effort: a miss only costs time */
		write_file_atomic(cache, hex, 64);
	return 0;
}

int file_input_record(struct file_input *in, const char *path, struct avm_error *err)
{
	struct stat st;
	char real[PATH_MAX];
	int r;

	if (!realpath(path, real))
		return avm_error_setx(err, -errno, "cannot resolve %s", path);
	if (stat(real, &st) < 0)
		return avm_error_setx(err, -errno, "cannot stat %s", real);
	r = hashed_file(real, &st, in->sha256);
	if (r < 0)
		return avm_error_setx(err, r, "cannot read %s", real);
	free(in->path);
	in->path = strdup(real);
	in->size = st.st_size;
	in->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	return in->path ? 0 : avm_error_set(err, -ENOMEM, "out of memory");
}
