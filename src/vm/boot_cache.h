/* SPDX-License-Identifier: MIT */
/*
 * Boot templates: `run` and `start` restore a copy-on-write clone of a VM saved right after its
 * guest said READY, instead of booting a kernel, whenever a template of the same boot shape is
 * in the cache. The first launch of a shape builds the template (a cold boot with its guest RAM
 * in a file, then the device state saved with x-ignore-shared: vm_restore.h) and then restores
 * from it; its cost over a cold boot is paid once.
 *
 * Layout: <cache dir>/templates/<key>/ (the cache dir as in snapshot.h: $AGENTVM_CACHE_DIR, ...)
 *   mem        guest RAM (sparse, memory size; never written once the template exists)
 *   devstate   the device state (x-ignore-shared migration stream, ~50 KB)
 *   meta.json  the shape (its text is what the key hashes), QEMU's version, sizes, mtimes and
 *              the device state's sha256: what a use checks before trusting the files
 *   used       its mtime is the last use (LRU and gc)
 *   lock       flock: shared while a QEMU opens the files, exclusive to remove the template
 * A template appears atomically (built in .tmp-<key>-XXXXXXXX, then renamed); .<key>.build is
 * the lock that lets one launch build it while the others boot cold.
 *
 * The shape is everything the guest saw at boot: agentvm's version and build, the QEMU binary,
 * kernel and initramfs (sha256), the accelerator (and the TSC rate TCG guests are told), vCPUs,
 * memory, a NIC or not, the number and kind of disks (root image or workspace, ro or rw) and
 * the number and kind of 9p shares (with the owner of the writable ones, whom a jailed QEMU
 * runs as), and the guest debug flag. Nothing per run is in a template:
 * the guest boots with agentvm.template=1 and no per-run word on its cmdline, never mounts a
 * disk or a share (the template's disks are blank placeholders, its shares empty 0555
 * directories), and each clone gets its name, network, disks (re-probed), shares and root
 * image in its first SYNC, with fresh entropy and the clock. The root image is a disk like any
 * other, so one template serves every image, and a share is a device like a disk: a clone's
 * QEMU exports the run's own directories under the template's fsdev ids and mount tags.
 */
#ifndef AGENTVM_BOOT_CACHE_H
#define AGENTVM_BOOT_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/error.h"
#include "vm/vm.h"

/* Defaults of the knobs AGENTVM_BOOT_CACHE_MAX_MB and AGENTVM_BOOT_CACHE_MAX_AGE_DAYS. */
#define BOOT_CACHE_DEFAULT_MAX_MB 2048
#define BOOT_CACHE_DEFAULT_MAX_AGE_DAYS 14
#define BOOT_CACHE_KEY_LEN 16

/* What a template is keyed by (see above); boot_cache_shape_text() makes it canonical. */
struct boot_shape {
	char agentvm[96]; /* version + sha256 of the running binary */
	char qemu[65], kernel[65], initrd[65]; /* sha256 */
	const char *accel;                     /* "kvm" | "tcg" */
	unsigned long tsc_khz;                 /* TCG only (on the guest's cmdline); 0 under KVM */
	unsigned cpus, memory_mib;
	bool nic;
	char disks[VM_SPEC_MAX_DISKS * 8 + 1]; /* "root-rw,work-ro", "" without any */
	char shares[VM_SPEC_MAX_SHARES * 8 + 1]; /* "rw,ro,rw-root" (container root), "" */
	long share_uid; /* owner of the writable shares QEMU runs as (jail.h), -1: none/rootless */
	bool guest_debug;
};

/* The canonical text of a shape (one "name value" line each) into buf; its key (hex) into key. */
int boot_cache_shape_text(const struct boot_shape *sh, char *buf, size_t len,
			  char key[BOOT_CACHE_KEY_LEN + 1]);

/* false when AGENTVM_BOOT_CACHE=0. */
bool boot_cache_enabled(void);
/* <cache dir>/templates. */
const char *boot_cache_dir(void);

struct boot_cache_opts {
	bool cold;           /* --cold: a real boot; no template is used or written */
	int boot_timeout_ms; /* for a cold boot, and a template's own */
	int sig_fd;          /* a signalfd (or -1): a signal aborts a template build */
	/* One line for a person (a template discarded or not saved); NULL: none. */
	void (*warn)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
};

/*
 * Starts a VM for o: vm_launch() + vm_wait_ready() (run), or supervisor_start() (start), giving
 * the guest timeout_ms to be ready: the boot timeout for a cold boot, at most
 * BOOT_CACHE_RESTORE_TIMEOUT_MS for a clone (which answers in well under a second: one that
 * does not is a damaged template, and the cold boot after it should not wait a boot timeout).
 */
typedef int (*boot_cache_start_fn)(const struct vm_launch_opts *o, int timeout_ms, void *ctx,
				   struct avm_error *err);
#define BOOT_CACHE_RESTORE_TIMEOUT_MS 20000

/*
 * Start o's VM through the cache: start() with o->incoming set to a clone of the template of
 * o's shape when there is one (built first when missing and no other launch is building it),
 * else with o as it is (a cold boot). A template that is damaged, truncated or foreign, or whose
 * clone fails to load or answer, is removed with one warning line and the VM boots cold; so does
 * a template that could not be built (a full disk leaves nothing behind). A VM with shares
 * (--share, --workspace, a shim's pod) restores too: QEMU 7.2 refuses to migrate only while the
 * guest has a 9p export mounted, and a template's guest never mounts one. Returns start()'s
 * result.
 */
int boot_cache_start(const struct vm_launch_opts *o, const struct boot_cache_opts *bo,
		     boot_cache_start_fn start, void *ctx, struct avm_error *err);

struct boot_cache_entry {
	char key[BOOT_CACHE_KEY_LEN + 1];
	char summary[128]; /* "tcg 1 vCPU 512 MiB nic disks=root-rw"; "damaged" when unreadable */
	char qemu_version[32];
	int64_t size;      /* bytes on disk */
	time_t created, last_use;
	int64_t build_ms;
};

/* Every template, most recently used first (*out: caller frees). */
int boot_cache_list(struct boot_cache_entry **out, size_t *n, struct avm_error *err);
/* Remove one template (waits while a launch is opening it); -ENOENT when there is none. */
int boot_cache_remove(const char *key, struct avm_error *err);
/*
 * gc: remove templates unused for AGENTVM_BOOT_CACHE_MAX_AGE_DAYS, leftovers of interrupted
 * builds, and the least recently used templates while the cache is over
 * AGENTVM_BOOT_CACHE_MAX_MB. Templates being opened are skipped. *removed counts templates.
 */
int boot_cache_gc(unsigned *removed, struct avm_error *err);

#endif
