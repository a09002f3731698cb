/* SPDX-License-Identifier: MIT */
/*
 * A small tar reader and header writer for `agentvm cp` (ustar, with pax 'x' records and GNU
 * 'L'/'K' long names on the read side). Pure: no file system, so it is unit-tested and fuzzed;
 * tarcmd.c applies entries to the guest's files.
 *
 * The reader trusts nothing: checksums are verified, every number is range-checked, pax and
 * long-name records are bounded (TAR_META_MAX), and a stream that ends mid-entry is an error,
 * never a short file reported as complete. Paths are returned as they are in the archive: the
 * caller decides what a safe path is (tar_path_split()).
 */
#ifndef AGENTVM_INIT_TAR_H
#define AGENTVM_INIT_TAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TAR_BLOCK 512
#define TAR_PATH_MAX 4096
/* Largest pax or GNU long-name record accepted. */
#define TAR_META_MAX (64u * 1024u)
/* Largest header tar_header_encode() writes: a pax block + its data + the ustar block. */
#define TAR_HDR_MAX (2 * TAR_BLOCK + 2 * TAR_PATH_MAX + 1024)

enum tar_type {
	TAR_FILE,
	TAR_DIR,
	TAR_SYMLINK,
	TAR_HARDLINK,
	TAR_OTHER, /* devices, fifos, sparse, ...: the caller skips them */
};

struct tar_entry {
	enum tar_type type;
	char typeflag;
	char path[TAR_PATH_MAX];
	char link[TAR_PATH_MAX]; /* symlink target or hard-link name */
	uint32_t mode;		 /* permission bits (07777) */
	uint64_t size;		 /* data bytes that follow */
	int64_t mtime;
};

/* read() as a callback: bytes read (0 at end of stream) or -errno. */
typedef ssize_t (*tar_read_fn)(void *ctx, void *buf, size_t n);

struct tar_reader {
	tar_read_fn read;
	void *ctx;
	uint64_t left; /* data bytes of the current entry not yet read */
	uint64_t pad;  /* padding after them */
	bool end;
};

void tar_reader_init(struct tar_reader *r, tar_read_fn fn, void *ctx);
/*
 * The next entry (skipping what is left of the current one). 1 with *e filled, 0 at the end of
 * the archive (two zero blocks, or one zero block then end of stream), -errno with *why (static).
 */
int tar_next(struct tar_reader *r, struct tar_entry *e, const char **why);
/* Up to n bytes of the current entry's data: > 0, 0 when it is all read, -errno with *why. */
ssize_t tar_read_data(struct tar_reader *r, void *buf, size_t n, const char **why);

/*
 * Split an archive path into components, refusing what could lead out of the destination:
 * an absolute path, a ".." component, or nothing at all ("." components and repeated '/' are
 * dropped). comps[] point into buf, a copy the function makes. Returns the number of
 * components (>= 1) or -EINVAL.
 */
#define TAR_MAX_DEPTH 512
int tar_path_split(const char *path, char buf[TAR_PATH_MAX], const char *comps[TAR_MAX_DEPTH]);

/*
 * Encode the header(s) of e into out[TAR_HDR_MAX]: a pax 'x' record first when the path or
 * link is longer than ustar holds or the size needs more than 11 octal digits. Returns the
 * byte count (a multiple of TAR_BLOCK) or -ENAMETOOLONG.
 */
int tar_header_encode(const struct tar_entry *e, uint8_t *out);

#endif
