/* SPDX-License-Identifier: MIT */
/* Shared by files.c (the copies) and files_untar.c (unpacking what the guest sent). */
#ifndef AGENTVM_FILES_INTERNAL_H
#define AGENTVM_FILES_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COPY_BUF (256 * 1024)
#define PROGRESS_EVERY_US 250000

/* A progress line on stderr ("copied 12.3 MiB (4.5 MB/s)"), at most every 250 ms. */
struct progress {
	bool on;
	uint64_t bytes, t0, last;
	const char *verb;
};
void progress_tick(struct progress *p, size_t n, bool final);

#endif
