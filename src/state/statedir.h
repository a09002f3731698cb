/* SPDX-License-Identifier: MIT */
/*
 * The per-VM state directory ($AGENTVM_STATE_DIR/<name>/): how every CLI call finds a VM without
 * a daemon. Holds spec.json, state.json, qemu.pid, console.log and qemu.log.
 */
#ifndef AGENTVM_STATEDIR_H
#define AGENTVM_STATEDIR_H

#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

#define STATEDIR_MAX_NAME 63

/* The files of a VM's state dir. */
#define STATEDIR_SPEC "spec.json"            /* spec.h reads and writes it (VM_SPEC_FILE) */
#define STATEDIR_LOCK "lock"             /* flock: one caller acts on the VM at a time */
#define STATEDIR_STATE "state.json"      /* vmstate.h */
#define STATEDIR_NET "net.json"          /* net.h: the VM has a NIC exactly when it exists */
#define STATEDIR_QMP_SOCK "qmp.sock"     /* a detached VM's QMP */
#define STATEDIR_AGENT_SOCK "agent.sock" /* the supervisor's end of the guest agent */
#define STATEDIR_CONSOLE_LOG "console.log"
#define STATEDIR_QEMU_LOG "qemu.log"
#define STATEDIR_EVENTS "events.jsonl"
#define STATEDIR_POOL_VM "pool"           /* pool.h: the markers of a pool VM */
#define STATEDIR_POOL_ACQUIRED "acquired"

/* The root: $AGENTVM_STATE_DIR, else /run/agentvm for root, else $XDG_RUNTIME_DIR/agentvm. */
const char *statedir_root(void);

/* Names: 1..63 chars of [a-zA-Z0-9_.-], starting with a letter or digit. */
/*
 * Whether the state dir of a VM named name (NULL: the longest generated name) keeps its socket
 * paths within a Unix socket's 107 bytes. Checked before a boot; -ENAMETOOLONG with the fix.
 */
int statedir_check_paths(const char *name, struct avm_error *err);

/*
 * Whether a directory agentvm keeps things in (the state root, the snapshot root, the cache dir)
 * can be trusted: absent (created 0700 later), or a real directory (not a symlink) owned by the
 * caller and writable by nobody else. Another local user who can write in it could plant
 * symlinks, pids or interface names for a root agentvm to act on. env names the variable that
 * moves it, for the one-line fix. 0 or -EPERM.
 */
int statedir_check_trust(const char *path, const char *env, struct avm_error *err);
/* statedir_check_trust() of the state root, the snapshot root and the cache dir (the audit
   directory is audit_check_trust()'s). */
int statedir_check_all_trust(struct avm_error *err);

int statedir_validate_name(const char *name, struct avm_error *err);

/* A fresh unique name "vm-<8 hex>" written into buf. */
void statedir_random_name(char *buf, size_t len);

/* Create <root>/<name> (0700). -EEXIST when a VM of that name exists. *path: caller frees. */
int statedir_create(const char *name, char **path, struct avm_error *err);

/* The state dir of an existing VM (caller frees); -ENOENT with a message when there is none. */
int statedir_find(const char *name, char **path, struct avm_error *err);

/* Path of a file inside a state dir, in buf. */
int statedir_file(char *buf, size_t len, const char *dir, const char *file);
struct sockaddr_un;
/* A unix socket address for dir/file (STATEDIR_QMP_SOCK, ...); -ENAMETOOLONG when it won't fit. */
int statedir_sockaddr(struct sockaddr_un *sa, const char *dir, const char *file);

/*
 * Open file in the state dir dir: dir itself must be no symlink, and nothing beneath it is
 * followed (open_beneath: openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS). A file planted as a
 * symlink is -ELOOP. fd or -errno.
 */
int statedir_open(const char *dir, const char *file, int flags, mode_t mode);
/* read_file() of a file in a state dir through statedir_open(). Length or -errno. */
int statedir_read(const char *dir, const char *file, char **out, size_t max);

/* Names of every VM under the root, sorted; *out is a NULL-terminated strv (strv_free). */
int statedir_list(char ***out);
/*
 * Remove the directory and everything in it; 0 when it is gone. A VM's removal goes through
 * vm_dir_remove() (vm.h), which also retires its metrics and audits it.
 */
int statedir_remove(const char *dir);

#endif
