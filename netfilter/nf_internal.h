/* SPDX-License-Identifier: MIT */
/* nf_internal.h - helpers shared by the netfilter/ sources; not part of the API. */
#ifndef AGENTVM_NF_INTERNAL_H
#define AGENTVM_NF_INTERNAL_H

#include <stdlib.h>
#include <unistd.h>

#include "nf.h"

#define _nf_cleanup_(f) __attribute__((cleanup(f)))

static inline void nf_freep(void *p)
{
	free(*(void **)p);
}

static inline void nf_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

#define _nf_cleanup_free_  _nf_cleanup_(nf_freep)
#define _nf_cleanup_close_ _nf_cleanup_(nf_closep)

#define NF_TAKE_FD(fd)                 \
	({                             \
		int _fd_ = (fd);       \
		(fd) = -1;             \
		_fd_;                  \
	})

/* Fill err (if any) and return code (a -errno). */
int nf_set_error(struct avm_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
