/* SPDX-License-Identifier: MIT */
/*
 * libagentvm: microVMs (QEMU -M microvm) to run commands in, from C.
 *
 *	#include <agentvm.h>      cc prog.c $(pkg-config --cflags --libs agentvm)
 *
 * Conventions
 *  - Every fallible call returns 0 (or a count) on success and a negative errno on failure, and
 *    then fills the caller's error object (may be NULL) with the errno, a kind (what failed, for
 *    choosing an exit code or a retry) and one line for people naming the cause and the fix.
 *  - Ownership: objects made by agentvm_*_new() are the caller's, freed with the matching
 *    agentvm_*_free() (NULL is fine). Strings passed in are copied or only read during the
 *    call. Arrays of strings handed out (agentvm_snapshot_list(), ...) are the caller's, freed
 *    with agentvm_strv_free(); other strings handed out are the caller's, freed with free().
 *    File descriptors passed in stay the caller's; the library never closes them.
 *  - Blocking: calls marked [blocks] wait for a VM: a boot (seconds under TCG, up to the boot
 *    timeout), a command (until it exits or times out), a save (up to two minutes), a stop (up
 *    to its grace). The others touch only files and sockets and return at once.
 *  - Threads: calls are not thread-safe; use the library from one thread at a time (several
 *    processes may share one state dir: each VM is guarded by a lock file). The directories
 *    and the log handler are process-wide.
 *  - Processes: a detached VM (agentvm_start, restore, reset, pool) is owned by a supervisor
 *    daemon that outlives the caller; run and exec fork helpers and reap only their own
 *    children, so do not set SIGCHLD to SIG_IGN or reap with waitpid(-1). Ignore SIGPIPE
 *    (signal(SIGPIPE, SIG_IGN)) if a command's output fd may be closed by its reader.
 *  - The library never prints and never exits: warnings and progress go to the log handler
 *    (agentvm_set_log; none by default: dropped).
 *  - Privileges: networking (the default nat-filtered mode) needs root (CAP_NET_ADMIN); as
 *    another user pass agentvm_spec_set_network(spec, "isolated").
 */
#ifndef AGENTVM_H
#define AGENTVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AGENTVM_EXPORT __attribute__((visibility("default")))

/* ---- errors ------------------------------------------------------------------------------- */

enum agentvm_error_kind {
	AGENTVM_ERR_ERRNO = 0,   /* nothing more than the errno says */
	AGENTVM_ERR_USAGE,       /* a bad name or argument, or a name that is taken */
	AGENTVM_ERR_STATE,       /* the VM/snapshot/pool is not in a state for this call */
	AGENTVM_ERR_HOST,        /* the host lacks something: QEMU, a kernel, an image, rights */
	AGENTVM_ERR_BOOT,        /* the VM did not come up */
	AGENTVM_ERR_VM_LOST,     /* the VM or its agent died or misbehaved during the call */
	AGENTVM_ERR_INTERNAL,    /* anything else (out of memory, a full disk, ...) */
	AGENTVM_ERR_INTERRUPTED, /* cancelled; the message says what was kept */
	AGENTVM_ERR_OUTPUT,      /* a command's output could not be written to its fd */
};

struct agentvm_error;
AGENTVM_EXPORT struct agentvm_error *agentvm_error_new(void);
AGENTVM_EXPORT void agentvm_error_free(struct agentvm_error *err);
/* The last failure's -errno (0: none), its kind, and its message ("" when none). */
AGENTVM_EXPORT int agentvm_error_code(const struct agentvm_error *err);
AGENTVM_EXPORT enum agentvm_error_kind agentvm_error_kind(const struct agentvm_error *err);
AGENTVM_EXPORT const char *agentvm_error_message(const struct agentvm_error *err);

/*
 * Where the library's warnings and progress lines go (text is one whole message, newline
 * included). Process-wide; NULL drops them (the default).
 */
typedef void (*agentvm_log_fn)(void *userdata, const char *text);
AGENTVM_EXPORT void agentvm_set_log(agentvm_log_fn fn, void *userdata);

/* Free a NULL-terminated array of strings handed out by the library. */
AGENTVM_EXPORT void agentvm_strv_free(char **v);

/* ---- context ------------------------------------------------------------------------------ */

/*
 * A context names the directories the library works in. Unset, each has the CLI's default
 * (and honours the same AGENTVM_* environment variables): state /run/agentvm (as root) or
 * $XDG_RUNTIME_DIR/agentvm, cache /var/cache/agentvm or ~/.cache/agentvm, snapshots
 * /var/lib/agentvm/snapshots or ~/.local/share/agentvm/snapshots, images (vmlinux and
 * initramfs.cpio) next to the program or in the installed data dir. The setters apply
 * process-wide (the supervisors the library forks inherit them): one set of directories per
 * process; set them before the first VM call.
 */
struct agentvm_ctx;
AGENTVM_EXPORT int agentvm_ctx_new(struct agentvm_ctx **out, struct agentvm_error *err);
AGENTVM_EXPORT void agentvm_ctx_free(struct agentvm_ctx *ctx);
AGENTVM_EXPORT int agentvm_ctx_set_state_dir(struct agentvm_ctx *ctx, const char *dir,
					     struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_ctx_set_cache_dir(struct agentvm_ctx *ctx, const char *dir,
					     struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_ctx_set_snapshot_dir(struct agentvm_ctx *ctx, const char *dir,
						struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_ctx_set_images_dir(struct agentvm_ctx *ctx, const char *dir,
					      struct agentvm_error *err);
/* The state dir in effect (set, from AGENTVM_STATE_DIR, or the default; caller frees). */
AGENTVM_EXPORT int agentvm_ctx_get_state_dir(struct agentvm_ctx *ctx, char **dir,
					     struct agentvm_error *err);
/*
 * The network namespace (a path such as /run/netns/NAME: a Kubernetes pod's, made by its CNI
 * plugin) that this context's VMs have their network in. agentvm_run and agentvm_start make the
 * VM's tap, nftables table and NAT inside it (the VM's supervisor lives in it), so the VM's
 * traffic leaves through that namespace's interfaces and routes; agentvm_stats reads the VM's
 * counters and agentvm_rm tears its network down there. The calling thread enters it for the
 * duration of those calls only. NULL: the caller's own (the default). Unlike the directories,
 * this is the context's own; it needs CAP_SYS_ADMIN (setns).
 */
AGENTVM_EXPORT int agentvm_ctx_set_netns(struct agentvm_ctx *ctx, const char *path,
					 struct agentvm_error *err);

/* ---- VM spec ------------------------------------------------------------------------------ */

/*
 * What to boot. Values are strings as the CLI's flags take them (the same checks, the same
 * messages): profile light|standard|intensive, cpus "2", memory MiB "1024", accel
 * auto|kvm|tcg, network nat-filtered|isolated|bridge:BR, allow "tcp:443", disk
 * "FILE[:DIR][:ro]", image a root image name, timeout seconds (for run's command).
 */
struct agentvm_spec;
AGENTVM_EXPORT int agentvm_spec_new(struct agentvm_spec **out, struct agentvm_error *err);
AGENTVM_EXPORT void agentvm_spec_free(struct agentvm_spec *spec);
AGENTVM_EXPORT int agentvm_spec_set_name(struct agentvm_spec *spec, const char *name,
					 struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_profile(struct agentvm_spec *spec, const char *profile,
					    struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_cpus(struct agentvm_spec *spec, const char *cpus,
					 struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_memory(struct agentvm_spec *spec, const char *mib,
					   struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_accel(struct agentvm_spec *spec, const char *accel,
					  struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_image(struct agentvm_spec *spec, const char *image,
					  struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_kernel(struct agentvm_spec *spec, const char *path,
					   struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_initrd(struct agentvm_spec *spec, const char *path,
					   struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_network(struct agentvm_spec *spec, const char *mode,
					    struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_add_allow(struct agentvm_spec *spec, const char *proto_port,
					  struct agentvm_error *err);
/* --allow-cidr CIDR[:PROTO[:PORT]] and --allow-domain NAME: more of the egress policy. */
AGENTVM_EXPORT int agentvm_spec_add_allow_cidr(struct agentvm_spec *spec, const char *value,
					       struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_add_allow_domain(struct agentvm_spec *spec, const char *domain,
						 struct agentvm_error *err);
/* --share HOSTDIR:GUESTDIR[:ro]: a host directory, live in the guest (9p, agentvm's mapping of
 * owners and modes: the guest's files are the host user's). */
AGENTVM_EXPORT int agentvm_spec_add_share(struct agentvm_spec *spec, const char *value,
					  struct agentvm_error *err);
/*
 * The same syntax, for a directory that holds (or will hold, see agentvm_open_ns) container
 * images' root file systems: their owners, modes and symlinks reach the guest as they are on
 * the host (9p security model none), as a container runtime needs (the containerd shim).
 */
AGENTVM_EXPORT int agentvm_spec_add_root_share(struct agentvm_spec *spec, const char *value,
					       struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_add_disk(struct agentvm_spec *spec, const char *disk,
					 struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_add_env(struct agentvm_spec *spec, const char *key_value,
					struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_workdir(struct agentvm_spec *spec, const char *dir,
					    struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_spec_set_timeout(struct agentvm_spec *spec, const char *seconds,
					    struct agentvm_error *err);
/* Seconds the guest has to be ready (default 60); a cold boot instead of a boot template. */
AGENTVM_EXPORT int agentvm_spec_set_boot_timeout(struct agentvm_spec *spec, long seconds,
						 struct agentvm_error *err);
AGENTVM_EXPORT void agentvm_spec_set_cold(struct agentvm_spec *spec, bool cold);

/* ---- VMs ---------------------------------------------------------------------------------- */

/*
 * Exit status of a command: its exit code (0-255), 128+N when it died of signal N, 124 when its
 * timeout killed it, 127 when it does not exist in the guest, 126 when it cannot be executed.
 * stdin_fd may be -1 (the command reads /dev/null); stdout_fd and stderr_fd receive its output.
 */

/*
 * [blocks] Boot a fresh VM from spec, run argv (NULL-terminated) in it, tear it down. When a run
 * pool (`agentvm serve --pool-run`) serves in the state dir with VMs of exactly this spec and
 * one is ready, the command runs in that VM instead (never with a context of its own network
 * namespace, or a cold spec), which the pool then removes: no VM serves two runs.
 */
AGENTVM_EXPORT int agentvm_run(struct agentvm_ctx *ctx, const struct agentvm_spec *spec,
			       const char *const *argv, int stdin_fd, int stdout_fd,
			       int stderr_fd, int *status, struct agentvm_error *err);
/*
 * [blocks] Start a detached VM (a supervisor owns it until agentvm_stop/kill/rm) and wait until
 * it is ready. Its name (the spec's, or a generated one) goes into name (len bytes; 64 do).
 */
AGENTVM_EXPORT int agentvm_start(struct agentvm_ctx *ctx, const struct agentvm_spec *spec,
				 char *name, size_t len, struct agentvm_error *err);
/*
 * [blocks] Run argv in detached VM `name`. env (NULL-terminated KEY=VALUE, or NULL), cwd (or
 * NULL) and timeout_s (0: none) apply to this command only.
 */
AGENTVM_EXPORT int agentvm_exec(struct agentvm_ctx *ctx, const char *name,
				const char *const *argv, const char *const *env, const char *cwd,
				unsigned timeout_s, int stdin_fd, int stdout_fd, int stderr_fd,
				int *status, struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_pause(struct agentvm_ctx *ctx, const char *name,
				 struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_resume(struct agentvm_ctx *ctx, const char *name,
				  struct agentvm_error *err);
/* [blocks] Power off cleanly, waiting up to grace_s, then kill. Stopped already: 0. */
AGENTVM_EXPORT int agentvm_stop(struct agentvm_ctx *ctx, const char *name, long grace_s,
				struct agentvm_error *err);
AGENTVM_EXPORT int agentvm_kill(struct agentvm_ctx *ctx, const char *name,
				struct agentvm_error *err);
/*
 * Remove a VM: its processes (a live VM's only with force; one whose supervisor died is not
 * live), its network, cgroups and state dir.
 */
AGENTVM_EXPORT int agentvm_rm(struct agentvm_ctx *ctx, const char *name, bool force,
			      struct agentvm_error *err);
/* The VMs in the state dir (names, sorted); their count. */
AGENTVM_EXPORT int agentvm_list(struct agentvm_ctx *ctx, char ***names, struct agentvm_error *err);
/* A VM's state: created, starting, running, paused, stopping, stopped or crashed (caller frees). */
AGENTVM_EXPORT int agentvm_state(struct agentvm_ctx *ctx, const char *name, char **state,
				 struct agentvm_error *err);

/*
 * What agentvm measures of a VM (`agentvm stats`). The caller sets size to
 * sizeof(struct agentvm_stats); the library fills only that much (fields are only ever added at
 * the end), so a program built against an older header keeps working.
 */
struct agentvm_stats {
	size_t size;
	bool live;                    /* QEMU runs; nothing below is set otherwise */
	uint64_t cpu_ns;              /* QEMU's user + system CPU time: the whole VM */
	uint64_t rss_bytes, pss_bytes; /* QEMU's memory on the host */
	bool have_guest;              /* the guest agent answered: */
	uint64_t guest_mem_total, guest_mem_available;
	bool have_net;                /* nat-filtered, and the caller may read nftables: */
	uint64_t rx_bytes, rx_packets, rx_drop_packets, tx_bytes, tx_packets, tx_drop_packets;
	double uptime_s;              /* since the guest was ready */
	uint64_t execs;               /* commands run in it */
};
/* [blocks] up to 2 s for the guest's answer. A VM that is not running: 0, live false. */
AGENTVM_EXPORT int agentvm_stats(struct agentvm_ctx *ctx, const char *name,
				 struct agentvm_stats *stats, struct agentvm_error *err);
/*
 * A file descriptor (O_CLOEXEC, the caller's to close) of namespace `type` ("mnt", "net", ... as
 * in /proc/PID/ns/) of running VM `name`'s QEMU process, checked to be that QEMU still. For
 * changing a live VM from outside: e.g. mounting a tree beneath one of its shares (setns(2)
 * into the mount namespace, then move_mount(2)), since QEMU's jail makes its mounts private and
 * a host mount made after the start never reaches it. Kinds: USAGE (no such VM), STATE.
 */
AGENTVM_EXPORT int agentvm_open_ns(struct agentvm_ctx *ctx, const char *name, const char *type,
				   int *fd, struct agentvm_error *err);

/* ---- commands in detached VMs, with every option ----------------------------------------- */

/*
 * A command for agentvm_cmd_run: argv (NULL-terminated, copied) and its options, which default
 * to agentvm_exec's: no extra env, the agent's cwd, no timeout, stdin none (/dev/null in the
 * guest), stdout and stderr the caller's fds 1 and 2, the image's user, no chroot.
 */
struct agentvm_cmd;
AGENTVM_EXPORT int agentvm_cmd_new(struct agentvm_cmd **out, const char *const *argv,
				   struct agentvm_error *err);
AGENTVM_EXPORT void agentvm_cmd_free(struct agentvm_cmd *cmd);
/* One more KEY=VALUE of the command's environment. */
AGENTVM_EXPORT int agentvm_cmd_add_env(struct agentvm_cmd *cmd, const char *key_value,
				       struct agentvm_error *err);
/* Its working directory (absolute; inside the root when there is one). */
AGENTVM_EXPORT int agentvm_cmd_set_cwd(struct agentvm_cmd *cmd, const char *dir,
				       struct agentvm_error *err);
/* Chroot it into dir (absolute, in the guest: e.g. a container root beneath a root share);
 * the guest's /proc, /dev and /sys are bound on dir's own when it has those directories. */
AGENTVM_EXPORT int agentvm_cmd_set_root(struct agentvm_cmd *cmd, const char *dir,
					struct agentvm_error *err);
/* Run it as uid:gid instead of the image's user. */
AGENTVM_EXPORT void agentvm_cmd_set_user(struct agentvm_cmd *cmd, unsigned uid, unsigned gid);
AGENTVM_EXPORT void agentvm_cmd_set_timeout(struct agentvm_cmd *cmd, unsigned seconds);
/* Its stdio (stdin -1: none); the fds stay the caller's. */
AGENTVM_EXPORT void agentvm_cmd_set_stdio(struct agentvm_cmd *cmd, int stdin_fd, int stdout_fd,
					  int stderr_fd);
/*
 * A signalfd(2) of the caller's (-1: none) that agentvm_cmd_run watches while the command runs.
 * A signal queued with a value (sigqueue(3), SI_QUEUE, sival_int N from 1 to 64) sends signal N
 * to the command's process group in the guest, as often as it comes (a container runtime's
 * kill); a plain SIGINT, SIGTERM or SIGHUP on it is forwarded once and a second one aborts the
 * call (-EINTR, kind INTERRUPTED), as for Ctrl-C at a terminal.
 */
AGENTVM_EXPORT void agentvm_cmd_set_signal_fd(struct agentvm_cmd *cmd, int fd);
/* Whether cmd fits one request to the guest (what agentvm_cmd_run checks first): kind USAGE. */
AGENTVM_EXPORT int agentvm_cmd_check(const struct agentvm_cmd *cmd, struct agentvm_error *err);
/* [blocks] Run cmd in detached VM `name`; *status as for agentvm_exec. */
AGENTVM_EXPORT int agentvm_cmd_run(struct agentvm_ctx *ctx, const char *name,
				   struct agentvm_cmd *cmd, int *status, struct agentvm_error *err);
/* After agentvm_cmd_run: the errno (> 0) the guest gave for a command it could not start (then
 * *status was 127 or 126), else 0: tells such a failure from a command exiting 127 itself. */
AGENTVM_EXPORT int agentvm_cmd_start_error(const struct agentvm_cmd *cmd);

/* ---- snapshots ---------------------------------------------------------------------------- */

/* [blocks] Save running or paused VM `vm` as snapshot `snap`; the VM goes on as it was. */
AGENTVM_EXPORT int agentvm_snapshot_save(struct agentvm_ctx *ctx, const char *vm,
					 const char *snap, const char *description,
					 struct agentvm_error *err);
/* The snapshots' names, sorted; their count. */
AGENTVM_EXPORT int agentvm_snapshot_list(struct agentvm_ctx *ctx, char ***names,
					 struct agentvm_error *err);
/* Remove a snapshot; one that restored VMs still use only with force. */
AGENTVM_EXPORT int agentvm_snapshot_rm(struct agentvm_ctx *ctx, const char *snap, bool force,
				       struct agentvm_error *err);
/*
 * [blocks] A new detached VM from snapshot `snap`, named `name` (NULL: generated), ready when
 * this returns; its name goes into name_out (len bytes; 64 do). It keeps the snapshot's network.
 */
AGENTVM_EXPORT int agentvm_restore(struct agentvm_ctx *ctx, const char *snap, const char *name,
				   char *name_out, size_t len, struct agentvm_error *err);
/* [blocks] Replace a restored VM with a fresh clone of its snapshot, under the same name. */
AGENTVM_EXPORT int agentvm_reset(struct agentvm_ctx *ctx, const char *name,
				 struct agentvm_error *err);

/* ---- warm pool (served by `agentvm serve --pool SNAPSHOT`) ------------------------------- */
/*
 * A pod pool (`agentvm serve --pool-pod`) hands out VMs started for containers instead: each has
 * an empty directory <state dir>/.pod-NAME (mode 0555, made and removed with the VM by the pool)
 * shared as a container root share (agentvm_spec_add_root_share) at /mnt/rootfs in the guest;
 * mount container roots beneath it with agentvm_open_ns.
 */

/* [blocks] Take a ready VM from the pool, waiting up to timeout_s; its name into name. */
AGENTVM_EXPORT int agentvm_pool_acquire(struct agentvm_ctx *ctx, long timeout_s, char *name,
					size_t len, struct agentvm_error *err);
/* Give an acquired VM back (the pool removes it and starts a fresh one). */
AGENTVM_EXPORT int agentvm_pool_release(struct agentvm_ctx *ctx, const char *name,
					struct agentvm_error *err);

/* ---- network ------------------------------------------------------------------------------ */

/* Every live VM's network as JSON text (`agentvm net ls --json`; caller frees). */
AGENTVM_EXPORT int agentvm_net_list_json(struct agentvm_ctx *ctx, char **json,
					 struct agentvm_error *err);
/* Remove taps, rules and leases of VMs that are gone; how many things were removed. */
AGENTVM_EXPORT int agentvm_net_gc(struct agentvm_ctx *ctx, struct agentvm_error *err);

#ifdef __cplusplus
}
#endif

#endif
