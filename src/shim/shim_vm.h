/* SPDX-License-Identifier: MIT */
/*
 * Every call the containerd shim makes into agentvm, in one place, through the public libagentvm
 * (agentvm.h) only, as any outside program would (the shim links libagentvm.a; test_library.sh
 * checks it uses nothing else of it). A task's VM is a detached VM (its own supervisor owns
 * QEMU, as for `agentvm start`), so it outlives the shim process; each container process runs in
 * a helper process of the shim that attaches to the VM and runs it to completion.
 */
#ifndef AGENTVM_SHIM_VM_H
#define AGENTVM_SHIM_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The shim's errors: the errno (negative) and one line for containerd's client. */
struct shim_err {
	int code;
	char msg[512];
};
/* Fill e (may be NULL) and return code; setx appends ": strerror(-code)". */
int shim_err_set(struct shim_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int shim_err_setx(struct shim_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* agentvm's state dir (the library's; sockets and work files of the shim live there too). */
const char *shim_vm_state_root(void);

/* Where the container's root file system (a 9p share) is mounted in the guest. */
#define SHIM_GUEST_ROOT "/mnt/rootfs"

/* The VM name for a container: "ctr-" and 16 hex digits of sha256(namespace "/" id). */
void shim_vm_name(const char *ns, const char *id, char out[24]);

/*
 * The VM's settings from the container's OCI annotations (NULL = default): io.agentvm.profile,
 * io.agentvm.cpus, io.agentvm.memory (MiB) and io.agentvm.network (isolated, the default, or
 * nat-filtered), with agentvm's own syntax and checks; io.agentvm.pool (true or false).
 */
#define SHIM_ANNOTATION_PREFIX "io.agentvm."
struct shim_vm_config {
	const char *profile;
	const char *cpus;
	const char *memory;
	const char *network;
	/* An agentvm root image (agentvm image ls) the VM boots into; NULL: the initramfs. */
	const char *image;
	/* "true": take the pod's VM from the warm pool first (shim_vm_pool_acquire). */
	const char *pool;
	/* The egress policy (the runtime's config file): --allow, --allow-cidr, --allow-domain. */
	char *const *allow, *const *allow_cidr, *const *allow_domain;
	size_t n_allow, n_allow_cidr, n_allow_domain;
	/* The pod's network namespace (a CNI plugin's, the spec's linux.namespaces "network"
	 * path): the VM's tap, nft table and NAT are made in it, so the VM's traffic leaves
	 * through the pod's interface. NULL: the shim's own (the host's). */
	const char *netns;
};
/* One annotation into c; -EINVAL (err names it and the known ones) for an unknown io.agentvm.*. */
int shim_vm_config_set(struct shim_vm_config *c, const char *key, const char *value,
		       struct shim_err *err);

/*
 * A pod is one VM. Its 9p share is the pod directory (empty at boot, shared read-write at
 * SHIM_GUEST_ROOT); each container's root file system is attached beneath it afterwards,
 * in QEMU's own mount namespace (see shim_vm_attach_root), because microvm has no hotplug
 * for a new 9p device and the jail's mounts are private (no propagation from the host).
 */
int shim_vm_boot(const char *name, const char *pod_dir, const struct shim_vm_config *c,
		 unsigned boot_timeout_s, struct shim_err *err);

/*
 * A pod VM from the warm pool (`agentvm serve --pool-pod`), waiting up to SHIM_POOL_WAIT_S: its
 * name into name. The pool's VMs are pod VMs with their pod directory (shim_vm_work_path "")
 * already shared at SHIM_GUEST_ROOT, made (and removed) by the pool; one without it (a snapshot
 * pool's) is released again and refused. The pool's settings (shape, network) are the VM's.
 */
#define SHIM_POOL_WAIT_S 1
int shim_vm_pool_acquire(char *name, size_t len, struct shim_err *err);

/*
 * The shim's work files of VM `name`: <state root>/.pod-<name><suffix>: the pod directory (""),
 * the pod's saved state (".json": a new shim process re-attaches from it) and a process
 * helper's exit status (".exit-PID", read when the helper is not the reader's child).
 */
int shim_vm_work_path(const char *name, const char *suffix, char *buf, size_t len);
/* True while VM `name`'s QEMU runs. */
bool shim_vm_alive(const char *name);
/* A process's start time (0: none), and whether (pid, start) is still that process. */
uint64_t shim_vm_proc_start(pid_t pid);
bool shim_vm_proc_is(pid_t pid, uint64_t start);

/* The pod directory of VM `name`: <state root>/.pod-<name>, made (empty) here. */
int shim_vm_pod_dir(const char *name, char *buf, size_t len, struct shim_err *err);
/* Remove it, the mount points beneath it (nothing is mounted there on the host) and the other
 * work files. */
void shim_vm_pod_dir_remove(const char *name);

/*
 * Mount (a recursive clone of) the host mount at host_root on pod_dir/sub inside the mount
 * namespace of VM `name`'s QEMU: the guest sees it at SHIM_GUEST_ROOT/sub. Nothing is mounted
 * on the host; the clone goes with QEMU's namespace at the latest.
 */
int shim_vm_attach_root(const char *name, const char *host_root, const char *pod_dir,
			const char *sub, struct shim_err *err);
/*
 * A bind mount of the container spec (Kubernetes' /etc/hosts, resolv.conf, volumes): host path
 * src (a file or directory) at dest inside the container root pod_dir/sub, in QEMU's namespace
 * (read-only with ro). dest is resolved inside the container root (its symlinks stay in it,
 * openat2 RESOLVE_IN_ROOT); its mount point is made in host_root (the container's writable
 * layer), as runc makes its own.
 */
int shim_vm_bind(const char *name, const char *host_root, const char *pod_dir, const char *sub,
		 const char *src, const char *dest, bool ro, struct shim_err *err);

/* Unmount pod_dir/sub in QEMU's namespace (a gone VM is fine). */
void shim_vm_detach_root(const char *name, const char *pod_dir, const char *sub);

struct shim_proc {
	char **argv; /* NULL-terminated */
	char **env;  /* NULL-terminated KEY=VALUE or NULL */
	char *cwd;   /* inside the container root; NULL = "/" */
	uint32_t uid, gid;
};

/*
 * Fork a helper that runs p chrooted into the guest directory root of VM `name` with stdio from fds
 * (-1 = none). The helper keeps no other fd of the caller. Its exit status is the process's:
 * its code, 128+N for signal N, 127 when it could not start, 255 when the VM was lost (the
 * reason goes to its stderr). With status_path, the helper also writes that status (decimal
 * text) before it exits to status_path followed by its pid (shim_vm_work_path ".exit-").
 */
int shim_vm_spawn(const char *name, const char *root, const struct shim_proc *p,
		  const int fds[3], const char *status_path, pid_t *pid, struct shim_err *err);
/* Send any signal to the process run by helper `pid` (in the guest, to its process group). */
int shim_vm_signal(pid_t pid, int sig);
/* What agentvm measures of a VM (stats.c), for Task.Stats. */
struct shim_vm_usage {
	uint64_t cpu_ns;    /* QEMU's host CPU time: the whole VM */
	uint64_t rss_bytes; /* QEMU's resident memory on the host */
	bool have_guest;    /* the guest agent answered: */
	uint64_t guest_total, guest_available;
	bool have_net;      /* nat-filtered (and the shim may read nft counters): */
	uint64_t rx_bytes, rx_packets, rx_dropped, tx_bytes, tx_packets, tx_dropped;
};
int shim_vm_usage(const char *name, const char *netns, struct shim_vm_usage *u,
		  struct shim_err *err);

/* Pause (QMP stop) or resume (cont) the VM. */
int shim_vm_pause(const char *name, bool pause, struct shim_err *err);
/* Kill the VM's QEMU and supervisor and remove its state dir (its network torn down in netns,
 * when it still exists); a missing VM is fine. A VM from the pool (not named by shim_vm_name)
 * is released to it (it removes the VM and its pod directory), or removed here without one. */
void shim_vm_remove(const char *name, const char *netns);

#endif
