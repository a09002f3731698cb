/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: files_untar(), the host's unpacking of what a (hostile) guest sends for
 * `agentvm cp` out of a VM. The bytes are unpacked into a fresh directory `dest` inside a
 * scratch root. Invariants: no crash; nothing ever appears in the scratch root beside `dest`;
 * inside dest only "N" may exist at the top; no set-uid/set-gid file, no device node, fifo or
 * socket anywhere under it.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm/files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64];

static int rm_one(const char *p, const struct stat *st, int f, struct FTW *w)
{
	(void)st;
	(void)f;
	(void)w;
	if (w->level > 0)
		chmod(p, 0700);
	return remove(p);
}

static int check(const char *p, const struct stat *st, int f, struct FTW *w)
{
	(void)p;
	(void)f;
	(void)w;
	if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode))
		abort();
	if (!S_ISLNK(st->st_mode) && (st->st_mode & 07000))
		abort();
	return 0;
}

static size_t count(const char *dir, const char *only)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	if (!d)
		abort();
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			if (only && strcmp(de->d_name, only))
				abort();
			n++;
		}
	closedir(d);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dest[128];
	struct avm_error err = { 0 };
	int cwd = open(".", O_RDONLY | O_DIRECTORY);
	/* A memfd, not a pipe: no writer process per input, so the fuzzer runs fast. */
	int fd = memfd_create("untar", MFD_CLOEXEC);

	strcpy(root, "/tmp/avm-fuzz-untar-XXXXXX");
	if (!mkdtemp(root) || fd < 0 || write(fd, data, size) != (ssize_t)size ||
	    lseek(fd, 0, SEEK_SET) != 0)
		abort();
	snprintf(dest, sizeof(dest), "%s/dest", root);
	mkdir(dest, 0755);
	files_untar(fd, dest, "N", false, &err);
	close(fd);
	if (fchdir(cwd) < 0)
		abort();
	close(cwd);
	if (count(root, "dest") != 1)
		abort();
	count(dest, "N");
	nftw(dest, check, 16, FTW_PHYS);
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
