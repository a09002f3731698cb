/* SPDX-License-Identifier: MIT */
/*
 * The pod's saved state, <state dir>/.pod-<vm>.json: what a new shim process for the same pod
 * takes back (task.c saves it after every change). The file is the shim's own, but it lives in
 * a directory others may reach and outlives the process that wrote it, so it is read like
 * agentvm's state files: a bounded read of a regular file of ours (no symlink, not writable by
 * group or others), then parsed here into plain values, every one checked (tests/fuzz).
 */
#ifndef AGENTVM_SHIM_PODSTATE_H
#define AGENTVM_SHIM_PODSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shim_vm.h"

#define SHIM_MAX_CTRS 16
#define SHIM_MAX_PROCS 64
/* 64 processes with their specs (an exec's args and env, containerd's FIFO paths) fit. */
#define SHIM_POD_STATE_MAX_BYTES (1024 * 1024)
#define SHIM_PATH_MAX 4096

/* Process states as containerd's Task service numbers them (task.v2 Status). */
enum shim_status { ST_UNKNOWN = 0, ST_CREATED = 1, ST_RUNNING = 2, ST_STOPPED = 3, ST_PAUSED = 4 };

struct pod_state_ctr {
	int i; /* its slot in the shim's table */
	char *id, *bundle, *rootfs;
	bool mounted, attached;
};

struct pod_state_proc {
	int c;         /* its container's slot */
	char *exec_id; /* NULL for the init process */
	char *stdio[3];
	pid_t pid;
	uint64_t start;
	enum shim_status status; /* created, running or stopped */
	uint32_t exit_status;
	int64_t exited_ns;
	bool has_spec; /* an exec added but not started: its process spec, kept */
	struct shim_proc spec;
};

struct pod_state {
	char vm[24];
	bool paused;
	char netns[SHIM_PATH_MAX]; /* "" for the host's */
	struct pod_state_ctr ctrs[SHIM_MAX_CTRS];
	size_t n_ctrs;
	struct pod_state_proc procs[SHIM_MAX_PROCS];
	size_t n_procs;
};

/* Ids containerd accepts ([A-Za-z0-9_.-], 1-76, not starting with '.'): safe directory names. */
bool shim_id_ok(const char *id);

/*
 * Parse the saved state (len bytes, not NUL-terminated). Anything out of bounds, of the wrong
 * type, or inconsistent (a process of no container, two containers in one slot) refuses the
 * whole file: -EINVAL and *why (static). out is the caller's; release it either way.
 */
int shim_pod_state_parse(const char *buf, size_t len, struct pod_state *out, const char **why);
void shim_pod_state_release(struct pod_state *s);

/*
 * Read a state file of the shim's (at most max bytes) into *buf (NUL-terminated, caller frees):
 * opened without following a symlink, a regular file owned by us and writable by nobody else.
 * -ENOENT when there is none; another refusal with *why.
 */
int shim_read_private(const char *path, size_t max, char **buf, size_t *len, const char **why);

#endif
