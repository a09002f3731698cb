/* SPDX-License-Identifier: MIT */
/*
 * The QEMU command line for one microvm. Pure: builds strings, touches nothing, so it is unit
 * tested line by line. Every choice below has a measured reason in QEMU-NOTES.md / README.
 */
#ifndef AGENTVM_QEMU_ARGV_H
#define AGENTVM_QEMU_ARGV_H

#include <stdbool.h>

#include "base/error.h"
#include "spec/spec.h"
#include "base/strv.h"

/* One workspace disk as QEMU sees it (see disk.h). */
struct qemu_disk {
	const char *overlay;   /* this VM's qcow2 overlay */
	const char *guest_dir; /* where guest-init mounts it */
	bool readonly;
	bool root; /* the root image: agentvm.root=, not agentvm.disk= */
};

/*
 * One 9p share. host_dir is the directory QEMU exports (-fsdev local,path=...): a jailed QEMU
 * must have it bind-mounted at the same path inside its root.
 */
struct qemu_share {
	const char *host_dir;
	const char *guest_dir;
	bool readonly;
	bool container_root; /* security_model=none (see qemu_argv.c) */
};
#define QEMU_SHARE_TAG_PREFIX "avm-share"

struct qemu_config {
	const char *qemu;   /* binary path */
	const char *kernel; /* PVH vmlinux */
	const char *initrd; /* initramfs (cpio) */
	enum vm_accel accel; /* resolved: KVM or TCG, never AUTO */
	unsigned cpus;
	unsigned memory_mib;
	unsigned long tsc_khz; /* host TSC kHz; used under TCG only; 0 = unknown */
	int qmp_fd;            /* fd QEMU inherits for its QMP monitor */
	int agent_fd;          /* fd QEMU inherits for the agent's virtio-serial port */
	int incoming;          /* nonzero: -incoming defer (a restore loads a migration stream) */
	const char *mem_path;  /* guest RAM from this file (snapshot clones), or NULL */
	int mem_share;         /* with mem_path: share=on (template) or off (copy-on-write) */
	int console_fd;            /* guest console (hvc0): a socket QEMU inherits (console.h) */
	const char *extra_cmdline; /* appended to the kernel cmdline; may be NULL */
	bool guest_debug;          /* agentvm.debug=1: guest-init logs its timings to the console */
	int sandbox;               /* nonzero: QEMU's own -sandbox (seccomp) */
	const char *qmp_sock_path; /* a second QMP monitor on this Unix socket (server), or NULL */
	const char *name_tag;      /* -name guest=...: the state dir, so `ps`/pgrep tell whose QEMU
				      it is (no path in the argv names it otherwise); or NULL */
	int qmp_listen_fd;         /* > 0: that monitor's socket, already listening (inherited:
				      a jailed QEMU cannot create files in the state dir) */
	bool nic;                  /* a virtio-net NIC backed by the inherited tap_fd */
	int tap_fd;
	const unsigned char *mac;  /* the NIC's MAC (6 bytes) */
	const struct qemu_disk *disks; /* virtio-blk devices, serial DISK_SERIAL_PREFIX<index> */
	size_t n_disks;
	const struct qemu_share *shares; /* virtio-9p devices, mount_tag avm-share<index> */
	size_t n_shares;
	/*
	 * A boot template or its clone (src/vm/boot_cache.h): agentvm.template=1 and no per-run word
	 * (extra_cmdline, disks, shares) on the cmdline; the clone's guest gets those words with
	 * SYNC instead (qemu_guest_boot_words()).
	 */
	bool template_boot;
};

/* The x86 kernel's COMMAND_LINE_SIZE: what is longer is cut without a word. */
#define QEMU_CMDLINE_MAX 2048

/* The guest kernel command line for this config (caller frees). */
char *qemu_kernel_cmdline(const struct qemu_config *c);
/* The agentvm.root/disk/share words of this config (caller frees; "" without any). */
char *qemu_guest_boot_words(const struct qemu_config *c);

/* Fill argv with the full command line. On failure argv is released and -errno returned. */
int qemu_build_argv(const struct qemu_config *c, struct strv *argv, struct avm_error *err);

#endif
