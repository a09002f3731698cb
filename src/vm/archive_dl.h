/* SPDX-License-Identifier: MIT */
/*
 * libarchive, loaded on first use. Only copies (cp, --copy-in/--copy-out) need it, but linking it
 * makes every agentvm process load it and the 13 libraries it pulls in (libxml2, ICU, libstdc++,
 * the compressors): ~7 ms of start-up on every run, measured with empty programs linked both
 * ways. Include this instead of <archive.h>: the archive_* calls below it go through pointers
 * that archive_dl_load() fills (the same pattern as src/obs/metrics_http.c for libmicrohttpd).
 */
#ifndef AGENTVM_VM_ARCHIVE_DL_H
#define AGENTVM_VM_ARCHIVE_DL_H

#include <archive.h>
#include <archive_entry.h>

#include "base/error.h"

#define ARCHIVE_DL_SONAME "libarchive.so.13"

#define ARCHIVE_DL_FUNCS(X)                                                                        \
	X(archive_entry_acl_clear) X(archive_entry_filetype) X(archive_entry_free)                 \
	X(archive_entry_hardlink) X(archive_entry_mtime) X(archive_entry_new)                      \
	X(archive_entry_pathname) X(archive_entry_perm) X(archive_entry_set_fflags)                \
	X(archive_entry_set_gid) X(archive_entry_set_gname) X(archive_entry_set_mtime)             \
	X(archive_entry_set_perm) X(archive_entry_set_uid) X(archive_entry_set_uname)              \
	X(archive_entry_unset_atime) X(archive_entry_unset_birthtime)                              \
	X(archive_entry_unset_ctime) X(archive_entry_xattr_clear) X(archive_error_string)          \
	X(archive_read_data) X(archive_read_data_block) X(archive_read_disk_descend)               \
	X(archive_read_disk_new) X(archive_read_disk_open) X(archive_read_disk_set_behavior)       \
	X(archive_read_disk_set_symlink_physical) X(archive_read_free) X(archive_read_new)         \
	X(archive_read_next_header) X(archive_read_next_header2) X(archive_read_open_fd)           \
	X(archive_read_support_format_tar) X(archive_write_close) X(archive_write_data)            \
	X(archive_write_data_block) X(archive_write_disk_new) X(archive_write_disk_set_options)    \
	X(archive_write_finish_entry) X(archive_write_free) X(archive_write_header)                \
	X(archive_write_new) X(archive_write_open_fd) X(archive_write_set_bytes_in_last_block)     \
	X(archive_write_set_bytes_per_block) X(archive_write_set_format_pax_restricted)

struct archive_dl {
#define ARCHIVE_DL_PTR(f) __typeof__(f) *f;
	ARCHIVE_DL_FUNCS(ARCHIVE_DL_PTR)
#undef ARCHIVE_DL_PTR
};
extern struct archive_dl archive_dl;

/* Load the library once (later calls return at once). 0, or -ENOENT with err naming the fix. */
int archive_dl_load(struct avm_error *err);

/* From here on an archive_*() call is a call through archive_dl (archive_dl.c fills it). */
#ifndef ARCHIVE_DL_NO_MACROS
#define archive_entry_acl_clear archive_dl.archive_entry_acl_clear
#define archive_entry_filetype archive_dl.archive_entry_filetype
#define archive_entry_free archive_dl.archive_entry_free
#define archive_entry_hardlink archive_dl.archive_entry_hardlink
#define archive_entry_mtime archive_dl.archive_entry_mtime
#define archive_entry_new archive_dl.archive_entry_new
#define archive_entry_pathname archive_dl.archive_entry_pathname
#define archive_entry_perm archive_dl.archive_entry_perm
#define archive_entry_set_fflags archive_dl.archive_entry_set_fflags
#define archive_entry_set_gid archive_dl.archive_entry_set_gid
#define archive_entry_set_gname archive_dl.archive_entry_set_gname
#define archive_entry_set_mtime archive_dl.archive_entry_set_mtime
#define archive_entry_set_perm archive_dl.archive_entry_set_perm
#define archive_entry_set_uid archive_dl.archive_entry_set_uid
#define archive_entry_set_uname archive_dl.archive_entry_set_uname
#define archive_entry_unset_atime archive_dl.archive_entry_unset_atime
#define archive_entry_unset_birthtime archive_dl.archive_entry_unset_birthtime
#define archive_entry_unset_ctime archive_dl.archive_entry_unset_ctime
#define archive_entry_xattr_clear archive_dl.archive_entry_xattr_clear
#define archive_error_string archive_dl.archive_error_string
#define archive_read_data archive_dl.archive_read_data
#define archive_read_data_block archive_dl.archive_read_data_block
#define archive_read_disk_descend archive_dl.archive_read_disk_descend
#define archive_read_disk_new archive_dl.archive_read_disk_new
#define archive_read_disk_open archive_dl.archive_read_disk_open
#define archive_read_disk_set_behavior archive_dl.archive_read_disk_set_behavior
#define archive_read_disk_set_symlink_physical archive_dl.archive_read_disk_set_symlink_physical
#define archive_read_free archive_dl.archive_read_free
#define archive_read_new archive_dl.archive_read_new
#define archive_read_next_header archive_dl.archive_read_next_header
#define archive_read_next_header2 archive_dl.archive_read_next_header2
#define archive_read_open_fd archive_dl.archive_read_open_fd
#define archive_read_support_format_tar archive_dl.archive_read_support_format_tar
#define archive_write_close archive_dl.archive_write_close
#define archive_write_data archive_dl.archive_write_data
#define archive_write_data_block archive_dl.archive_write_data_block
#define archive_write_disk_new archive_dl.archive_write_disk_new
#define archive_write_disk_set_options archive_dl.archive_write_disk_set_options
#define archive_write_finish_entry archive_dl.archive_write_finish_entry
#define archive_write_free archive_dl.archive_write_free
#define archive_write_header archive_dl.archive_write_header
#define archive_write_new archive_dl.archive_write_new
#define archive_write_open_fd archive_dl.archive_write_open_fd
#define archive_write_set_bytes_in_last_block archive_dl.archive_write_set_bytes_in_last_block
#define archive_write_set_bytes_per_block archive_dl.archive_write_set_bytes_per_block
#define archive_write_set_format_pax_restricted archive_dl.archive_write_set_format_pax_restricted
#endif

#endif
