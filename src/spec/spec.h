/* SPDX-License-Identifier: MIT */
/*
 * The VM spec: what a user asked for (from flags or, later, a file), validated, and serialised
 * to the state dir's spec.json. Pure data; knows nothing of QEMU or processes.
 */
#ifndef AGENTVM_SPEC_H
#define AGENTVM_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "state/statedir.h"

struct json_object;

enum vm_accel {
	VM_ACCEL_AUTO = 0, /* KVM when /dev/kvm opens, else TCG with a warning */
	VM_ACCEL_KVM,
	VM_ACCEL_TCG,
};

enum vm_net_mode {
	VM_NET_NAT_FILTERED = 0, /* default: tap, /30 lease, NAT + egress allowlist */
	VM_NET_ISOLATED,         /* no NIC in the guest */
	VM_NET_BRIDGE,           /* tap on an existing bridge, no filtering (advanced) */
};

#define VM_SPEC_MAX_CPUS 64
#define VM_SPEC_MAX_ALLOW 64
#define VM_SPEC_MIN_MEMORY_MIB 64
#define VM_SPEC_MAX_MEMORY_MIB (256 * 1024)
#define VM_SPEC_MAX_TIMEOUT_S (7 * 24 * 3600)
#define VM_SPEC_MAX_DISKS 6 /* see VM_VIRTIO_SLOTS */
/*
 * QEMU 7.2 microvm has 8 virtio-mmio transports; agentvm's serial port and RNG take 2 and a NIC
 * one more, so a VM holds at most 6 disks (5 with a network). vm_spec_validate() says so.
 */
#define VM_VIRTIO_SLOTS 8
#define VM_SPEC_MAX_GUEST_DIR 255
/* The profile `run` uses when none is given: the smallest one, because it boots fastest. */
#define VM_SPEC_DEFAULT_PROFILE "light"

struct vm_profile {
	const char *name;
	unsigned cpus;
	unsigned memory_mib;
	unsigned io_weight; /* QEMU's cgroup io weight (cgroup v2 scale 1-10000, host default 100) */
	const char *bandwidth; /* default --bandwidth each way (a host NIC is shared by all VMs) */
};
/* The io weight of custom sizes (and of processes outside any VM): the kernel's default. */
#define VM_IO_WEIGHT_DEFAULT 100
/* The bandwidth of custom sizes; `--bandwidth unlimited` turns any default off. */
#define VM_BANDWIDTH_DEFAULT "1gbit"
#define VM_BANDWIDTH_UNLIMITED "unlimited"

/*
 * A workspace disk: the user's image (raw or qcow2) is never written; each VM writes to a
 * qcow2 overlay of its own in its state dir (see disk.h), and guest-init mounts the disk
 * (ext4) at guest_dir. The guest finds it by the virtio serial "avm-disk<index>".
 */
struct vm_disk {
	char *file;      /* absolute path of the user's image */
	char *guest_dir; /* absolute mount point in the guest ("/" for the root image) */
	bool readonly;   /* the guest cannot write it at all */
	bool root;       /* the root image (--image): guest-init switches root to it */
};

/*
 * A live 9p share (--share, --workspace): a host directory exported by QEMU (virtio-9p, security
 * model mapped-xattr, see qemu_argv.c) and mounted by guest-init at guest_dir. Its mount tag
 * is "avm-share<index>".
 */
#define VM_SPEC_MAX_SHARES 6
struct vm_share {
	char *host_dir;  /* absolute, resolved (realpath) */
	char *guest_dir;
	bool readonly;   /* QEMU refuses every write (readonly=on), the guest's root's too */
	bool container_root; /* a container's root file system (the containerd shim): host
				owners, modes and symlinks as they are (security_model=none) */
};

struct vm_spec {
	char *name;    /* optional; NULL = generated */
	char *profile; /* the profile the sizes came from ("custom" when overridden) */
	unsigned cpus;
	unsigned memory_mib;
	unsigned timeout_s; /* 0 = no timeout */
	char **env;         /* NULL-terminated "KEY=VALUE" list */
	size_t n_env;
	char *workdir; /* NULL = the agent's default */
	char *kernel;  /* NULL = the default image */
	char *initrd;
	enum vm_accel accel;
	char **argv; /* NULL-terminated command */
	size_t argc;
	enum vm_net_mode net_mode;
	char *bridge;         /* VM_NET_BRIDGE only */
	char **allow;         /* extra egress ports, "tcp:8080" (validated), NULL-terminated */
	size_t n_allow;
	bool deny_all_egress; /* start from an empty allowlist instead of the default one */
	char **host_allow;    /* VM -> host ports on its gateway, "tcp:8000" (validated), NULL-
			       * terminated; not touched by deny_all_egress */
	size_t n_host_allow;
	char *dns;            /* resolver for the guest; NULL = the host's */
	/* Egress by destination (see netfilter/nf.h): all 0/NULL = the defaults. */
	char **allow_cidr;    /* "CIDR[:PROTO:PORT]" opened on purpose (validated) */
	size_t n_allow_cidr;
	char **allow_domain;  /* names (lower case) whose addresses the VM may reach; any = only */
	size_t n_allow_domain;
	unsigned domain_ttl;  /* s an address learnt from a name stays allowed; 0 = default */
	unsigned conn_limit;  /* conntrack entries; 0 = default */
	unsigned conn_rate;   /* new connections/s; 0 = default */
	char *bandwidth;      /* "RATE[:BURST]" or "unlimited"; NULL = the profile's default */
	struct vm_disk disks[VM_SPEC_MAX_DISKS]; /* the root image, when any, is one of them */
	size_t n_disks;
	char *image;    /* --image as given (a name or an id), NULL = the initramfs only */
	char *image_id; /* its content hash (src/image/image.h) */
	struct vm_share shares[VM_SPEC_MAX_SHARES]; /* disks and shares share the virtio slots */
	size_t n_shares;
};

/* The table of named profiles (light, standard, intensive), NULL-name terminated. */
extern const struct vm_profile vm_profiles[];
const struct vm_profile *vm_profile_find(const char *name);
/* The io weight of the named profile; VM_IO_WEIGHT_DEFAULT for "custom" or an unknown name. */
unsigned vm_profile_io_weight(const char *name);
/* The bandwidth a VM of this spec gets: --bandwidth, else its profile's default; NULL when
 * unlimited (`--bandwidth unlimited`). */
const char *vm_spec_bandwidth(const struct vm_spec *s);

/* A new spec with the default profile applied. Caller owns; free with vm_spec_free(). */
struct vm_spec *vm_spec_new(void);
void vm_spec_free(struct vm_spec *s);

int vm_spec_set_profile(struct vm_spec *s, const char *name, struct avm_error *err);
int vm_spec_set_cpus(struct vm_spec *s, const char *value, struct avm_error *err);
int vm_spec_set_memory(struct vm_spec *s, const char *value, struct avm_error *err);
int vm_spec_set_timeout(struct vm_spec *s, const char *value, struct avm_error *err);
int vm_spec_set_accel(struct vm_spec *s, const char *value, struct avm_error *err);
/* Adds one KEY=VALUE; KEY must be a valid environment name. Copies the string. */
int vm_spec_add_env(struct vm_spec *s, const char *kv, struct avm_error *err);
int vm_spec_set_workdir(struct vm_spec *s, const char *dir, struct avm_error *err);
int vm_spec_set_path(char **slot, const char *what, const char *path, struct avm_error *err);
/* "nat-filtered", "isolated" or "bridge:NAME". */
int vm_spec_set_network(struct vm_spec *s, const char *value, struct avm_error *err);
/* One "tcp:PORT" / "udp:PORT" for the egress allowlist. */
int vm_spec_add_allow(struct vm_spec *s, const char *value, struct avm_error *err);
/*
 * One --disk FILE[:GUEST_DIR][:ro]: FILE must exist (resolved to an absolute path); GUEST_DIR
 * (absolute, [A-Za-z0-9._/-], not a system dir) defaults to /workspace for the first disk and
 * /mnt/disk<N> after it. The split is at the last ":/", so FILE must not contain ":/".
 */
int vm_spec_add_disk(struct vm_spec *s, const char *value, struct avm_error *err);
/*
 * --image NAME: the root image from the image store (src/image/image.h), resolved now, becomes a disk
 * of its own (root = true, read-write through the VM's overlay, never written itself). At
 * most one; it takes one of the disk slots.
 */
int vm_spec_set_image(struct vm_spec *s, const char *name, struct avm_error *err);
/*
 * The "disks" array (and "image") of a spec.json object into s (what vm_spec_to_json wrote);
 * 0 or -EINVAL.
 */
int vm_spec_disks_from_json(struct vm_spec *s, struct json_object *spec, struct avm_error *err);
/*
 * One --share HOSTDIR:GUESTDIR[:ro]: HOSTDIR must be a directory on a file system with user
 * extended attributes (9p's mapped-xattr model keeps the guest's owners and modes there);
 * GUESTDIR as for --disk. The split is at the last ":/".
 */
int vm_spec_add_share(struct vm_spec *s, const char *value, struct avm_error *err);
/*
 * --workspace DIR: DIR/input read-only at /workspace/input, DIR/output and DIR/work writable at
 * /workspace/output and /workspace/work; DIR and the three are created (0755) when missing.
 */
int vm_spec_set_workspace(struct vm_spec *s, const char *dir, struct avm_error *err);
/* One "tcp:PORT" / "udp:PORT" the VM may reach on the host (its gateway address). */
int vm_spec_add_host_allow(struct vm_spec *s, const char *value, struct avm_error *err);
/* An IPv4 address. */
int vm_spec_set_dns(struct vm_spec *s, const char *value, struct avm_error *err);
/* --allow-cidr CIDR[:PROTO:PORT], --allow-domain NAME (repeatable; "*.example.com"). */
int vm_spec_add_allow_cidr(struct vm_spec *s, const char *value, struct avm_error *err);
int vm_spec_add_allow_domain(struct vm_spec *s, const char *value, struct avm_error *err);
/* --domain-ttl S (1..86400), --conn-limit N (1..1000000), --conn-rate N/s (1..100000). */
int vm_spec_set_domain_ttl(struct vm_spec *s, const char *value, struct avm_error *err);
int vm_spec_set_conn_limit(struct vm_spec *s, const char *value, struct avm_error *err);
int vm_spec_set_conn_rate(struct vm_spec *s, const char *value, struct avm_error *err);
/* --bandwidth RATE[:BURST] ("20mbit", "20mbit:256k"). */
int vm_spec_set_bandwidth(struct vm_spec *s, const char *value, struct avm_error *err);
/* The egress fields above from a spec.json "network" object (what vm_spec_to_json wrote). */
int vm_spec_egress_from_json(struct vm_spec *s, struct json_object *net);
/* Replace dst's egress fields above with copies of src's. */
int vm_spec_copy_egress(struct vm_spec *dst, const struct vm_spec *src);
/* Whether any egress field above is set (for "needs a network" checks). */
const char *vm_spec_egress_flag(const struct vm_spec *s);
const char *vm_net_mode_name(enum vm_net_mode m);
/* Copies argv[0..argc). */
int vm_spec_set_command(struct vm_spec *s, char *const *argv, size_t argc, struct avm_error *err);
/* Whole-spec checks that single setters cannot make (e.g. a command is present). */
int vm_spec_validate(const struct vm_spec *s, bool need_command, struct avm_error *err);

const char *vm_accel_name(enum vm_accel a);

/* A new json-c object describing the spec (caller puts it). */
struct json_object *vm_spec_to_json(const struct vm_spec *s);

/* --- spec.json, a VM's spec in its state dir (one writer, one reader: here) --- */
#define VM_SPEC_FILE STATEDIR_SPEC
/* Write spec (plus "name") as dir's spec.json, atomically. 0 or -errno. */
int vm_spec_write(const char *dir, const struct vm_spec *spec, const char *name);
/* dir's spec.json as a JSON object (caller puts it); -errno with err filled. */
int vm_spec_read(const char *dir, struct json_object **out, struct avm_error *err);
/* The network mode and policy of a spec.json object into s (nat-filtered when it has none). */
int vm_spec_net_from_json(struct vm_spec *s, struct json_object *spec);
/* The scalar fields of a spec.json object (strings borrowed from it). */
struct vm_spec_summary {
	const char *profile; /* "custom" when absent */
	const char *kernel, *initrd; /* NULL: the default images */
	unsigned cpus, memory_mib;
	size_t n_shares;
};
void vm_spec_summary_from_json(struct json_object *spec, struct vm_spec_summary *out);

#endif
