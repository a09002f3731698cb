/* SPDX-License-Identifier: MIT */
/*
 * The jail QEMU runs in (agentvm as root): the unprivileged system user agentvm-qemu (created by
 * `make deps`/`make install`; one user for every VM, so the files one QEMU creates, such as a
 * snapshot's RAM file, can be opened by the next, while the namespaces keep VMs apart), no
 * capabilities, no_new_privs, its own mount, pid, ipc and uts namespaces with a minimal root
 * (pivot_root into a tmpfs holding /usr read-only, a few /dev nodes, a fresh /proc, and each file
 * the QEMU command line and the qcow2 backing chains name, bound at its own absolute path:
 * read-only unless QEMU writes it), a seccomp filter installed before exec in addition to QEMU's
 * own -sandbox (an allowlist: see jail_seccomp_load), and a cgroup per VM (v2 when the host has a unified hierarchy, else the v1
 * cpu, memory and pids controllers) with a CPU quota from --cpus, a memory limit of guest RAM +
 * JAIL_MEM_OVERHEAD_MIB, a pids limit and the profile's io weight (where the host's block layer
 * offers one: io.cost or BFQ).
 *
 * Rootless (agentvm not root): the same namespaces, root, no_new_privs, empty capability sets
 * and seccomp, inside a new user namespace that maps only the caller's uid and gid; QEMU runs as
 * the caller. No cgroups (nothing is delegated to a user here).
 *
 * Whatever the host lacks (no unprivileged user namespaces, no agentvm-qemu user, no writable
 * cgroup) is skipped with one warning line naming it; AGENTVM_JAIL=0 turns the jail off
 * (debugging).
 */
#ifndef AGENTVM_JAIL_H
#define AGENTVM_JAIL_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "base/error.h"

#define JAIL_USER "agentvm-qemu"
/* QEMU's own memory beyond guest RAM (TCG translation cache, device state, libraries): 256 MiB
 * covers TCG's 32-128 MiB code buffer and QEMU's ~60 MiB RSS with margin (measured ~150 MiB). */
#define JAIL_MEM_OVERHEAD_MIB 256
#define JAIL_PIDS_MAX 256
#define JAIL_MAX_PATHS 32
#define JAIL_MAX_CGROUPS 4
/* In the VM's state dir: the cgroup dirs of its QEMU, one a line (see jail_release_dir). */
#define JAIL_CGROUPS_FILE "cgroups"

struct jail_path {
	char path[PATH_MAX];
	bool rw;
	bool dir; /* a shared directory (9p), bound whole */
};

struct jail {
	bool on;            /* namespaces + user + root + seccomp */
	bool userns;        /* rootless: all of it inside a user namespace of the caller's */
	uid_t uid;
	gid_t gid;
	gid_t kvm_gid;      /* supplementary group for /dev/kvm, or (gid_t)-1 */
	bool kvm;
	char root[PATH_MAX]; /* mount point of the jail's tmpfs root (in the state dir) */
	struct jail_path paths[JAIL_MAX_PATHS];
	size_t n_paths;
	char cgroups[JAIL_MAX_CGROUPS][PATH_MAX]; /* cgroup dirs QEMU joins (removed at teardown) */
	size_t n_cgroups;
	bool cgroup_v2;
	/* What jail_attach makes the cgroups from (after the fork: see there). */
	bool cg_want;
	char cg_name[64];
	char cg_dir[PATH_MAX];
	unsigned cg_cpus, cg_memory_mib, cg_io_weight;
};

/* What the jail of one VM holds. */
struct jail_opts {
	const char *name;    /* the VM (cgroup names) */
	const char *dir;     /* its state dir (the root's mount point lives there) */
	unsigned cpus;
	unsigned memory_mib;
	unsigned io_weight;  /* cgroup v2 scale (1-10000, 100 the host's default); 0: not set */
	bool kvm;
	const char *qemu;    /* the binary (bound when it is outside /usr) */
	const char *ro[8];   /* files QEMU reads (kernel, initrd, ...); NULL ends */
	const char *rw[8];   /* files QEMU writes (overlays, guest RAM); NULL ends */
	/*
	 * 9p shares: directories QEMU reads (ro) or writes (rw); NULL ends. With a writable share
	 * QEMU runs as the share's owner instead of agentvm-qemu (still without capabilities, in
	 * the namespaces, under seccomp), so that what the guest writes there is the owner's.
	 */
	const char *dirs_ro[8];
	const char *dirs_rw[8];
};

/*
 * Prepare the jail in the parent: find the user, create and limit the cgroups, add the qcow2
 * backing chains of the rw/ro images, hand the files QEMU writes to its user. A host that lacks
 * a part gets one warning (per process) and a jail without it; 0 or -errno with err.
 */
int jail_prepare(struct jail *j, const struct jail_opts *o, struct avm_error *err);
/*
 * Between fork (clone3 with jail_clone_flags()) and exec, in the child: build the root, pivot
 * into it, drop to the user, no_new_privs, seccomp. Returns 0 or -errno; only calls that are
 * safe in a forked child of a single-threaded process.
 */
int jail_enter(const struct jail *j);
/*
 * In the parent, while the child runs jail_enter: make the VM's cgroups and move the child
 * (pid) into them. The child execs only after this returns (launcher.c waits for it), so QEMU
 * runs counted from its first instruction, and the cgroups' cost (v1: mkdir of a memory
 * cgroup, a migration per hierarchy) overlaps the child's mounts. A failure is one warning.
 */
void jail_attach(struct jail *j, pid_t pid);
/* Whether jail_attach has work (the launcher then holds the child before exec). */
bool jail_wants_attach(const struct jail *j);
/* The namespaces the child is created in (0 when the jail is off). */
unsigned long jail_clone_flags(const struct jail *j);
/*
 * Load the seccomp allowlist QEMU runs under (jail_seccomp.h; compiled at build time) into the
 * calling thread (no_new_privs must be set or the caller privileged): listed calls pass, a few
 * an exploit would want kill the process (SIGSYS), anything else fails with EPERM. 0 or -errno.
 */
int jail_seccomp_load(void);
/*
 * The value to write into a cgroup io weight file (io.weight, io.bfq.weight, blkio.bfq.weight,
 * blkio.weight) for a weight on io.weight's scale: each file has its own range and default.
 */
unsigned jail_io_weight_for(const char *file, unsigned weight);
/* Remove the VM's cgroups (QEMU gone). */
void jail_release(struct jail *j);
/*
 * Remove the cgroups a VM's state dir records (its supervisor was killed before jail_release):
 * only agentvm-* dirs under /sys/fs/cgroup, and only empty ones (the kernel refuses the rest).
 */
void jail_release_dir(const char *dir);

#endif
