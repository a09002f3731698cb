/* SPDX-License-Identifier: MIT */
/* libarchive through dlopen (archive_dl.h). Defines the pointers, so no archive_* macro here. */
#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>

#include "base/error.h"

#define ARCHIVE_DL_NO_MACROS
#include "vm/archive_dl.h"

struct archive_dl archive_dl;

int archive_dl_load(struct avm_error *err)
{
	static bool loaded;
	struct archive_dl a;
	void *h;

	if (loaded)
		return 0;
	h = dlopen(ARCHIVE_DL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return avm_error_set(err, -ENOENT,
				     "copying files needs " ARCHIVE_DL_SONAME
				     " (apt-get install libarchive13): %s",
				     dlerror());
#define ARCHIVE_DL_SYM(f)                                                                          \
	if (!(*(void **)&a.f = dlsym(h, #f))) {                                                    \
		dlclose(h);                                                                        \
		return avm_error_set(err, -ENOENT, ARCHIVE_DL_SONAME " has no " #f);               \
	}
	ARCHIVE_DL_FUNCS(ARCHIVE_DL_SYM)
#undef ARCHIVE_DL_SYM
	archive_dl = a;
	loaded = true;
	return 0;
}
