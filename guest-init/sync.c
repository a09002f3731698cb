/* SPDX-License-Identifier: MIT */
/*
 * SYNC: a restored or cloned VM learns who and when it is. Clones share RNG state and a stale
 * clock with their template, so fresh entropy must also force a CRNG reseed, not just be mixed
 * into the input pool.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agent.h"
#include "disk.h"
#include "exec.h"
#include "net.h"
#include "netcfg.h"
#include "proto.h"
#include "rootfs.h"
#include "sharecfg.h"
#include "sys.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define ENTROPY_MAX (64u * 1024u)
#define BOOT_ARGS_MAX 4096u

/* A boot template's clone that has not had its AVM_TAG_BOOT_ARGS yet (main.c). */
static bool boot_deferred;

static int urandom(void);

void sync_defer_boot(void)
{
	boot_deferred = true;
	urandom();
}

/*
 * The root image first, as a cold boot does (after a fresh probe of the disks: the template saw
 * only blank placeholders), so the hostname and resolv.conf land in it.
 */
static void finish_boot_root(const char *words, struct disk_cfg *disks)
{
	const char *why = NULL;
	bool any;

	any = diskcfg_parse_cmdline(words, disks, &why) < 0 || disks->n || disks->root[0];
	if (disks->rejected)
		log_msg("SYNC boot words: %.*s: %s; ignored (%u refused in all)", disks->bad_len,
			disks->bad, why, disks->rejected);
	disks->bad = NULL;
	/*
	 * A run without disks has a template without placeholders (the number of disks is in
	 * its shape): nothing to re-probe, and listing the driver's sysfs directory is a kernel
	 * path every clone would translate afresh.
	 */
	if (any && disk_rebind_all() < 0)
		log_msg("SYNC: the disks may show the template's placeholders");
	if (disks->root[0])
		rootfs_switch(disks->root);
}

/*
 * /dev/urandom for RNDADDENTROPY, opened once: a boot template opens it before it is saved
 * (sync_defer_boot()), so its clones skip the open and close paths on the way to their first
 * command. -1 until opened.
 */
static int urandom_fd = -1;

static int urandom(void)
{
	if (urandom_fd < 0)
		urandom_fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
	return urandom_fd;
}

static int add_entropy(const uint8_t *p, uint32_t len)
{
	struct rand_pool_info *info;
	int fd, r = 0;

	info = malloc(sizeof(*info) + len);
	if (!info)
		return -ENOMEM;
	info->entropy_count = (int)(len * 8);
	info->buf_size = (int)len;
	memcpy(info->buf, p, len);
	fd = urandom();
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, info) < 0)
		r = -errno;
	/* Make the CRNG use it now; older kernels without RNDRESEEDCRNG still got the bytes. */
	if (r == 0)
		(void)ioctl(fd, RNDRESEEDCRNG);
	explicit_bzero(info->buf, len);
	free(info);
	return r;
}

static int apply(const uint8_t *p, size_t len, const char **why)
{
	const uint8_t *time_v = NULL, *ent = NULL, *host = NULL, *boot = NULL;
	uint32_t ent_len = 0, host_len = 0, boot_len = 0;
	char words[BOOT_ARGS_MAX + 1];
	struct disk_cfg disks = { 0 };
	struct avm_tlv_iter it;
	const uint8_t *val;
	uint32_t vlen;
	uint16_t tag;
	uint64_t ns = 0, t[7]; /* step times for the debug line: start, clock, entropy, root,
				   hostname, network, mounts */
	struct net_cfg net;
	int r;

	/* Validate everything before changing anything. */
	if ((r = netcfg_parse_sync(p, len, &net, why)) < 0)
		return r;
	avm_tlv_iter_init(&it, p, len);
	while ((r = avm_tlv_next(&it, &tag, &val, &vlen)) > 0) {
		switch (tag) {
		case AVM_TAG_TIME_NS:
			if (avm_tlv_u64(val, vlen, &ns) < 0 || ns > (uint64_t)INT64_MAX) {
				*why = "time must be a u64 of nanoseconds";
				return -EINVAL;
			}
			time_v = val;
			break;
		case AVM_TAG_ENTROPY:
			if (vlen == 0 || vlen > ENTROPY_MAX) {
				*why = "entropy must be 1..65536 bytes";
				return -EINVAL;
			}
			ent = val;
			ent_len = vlen;
			break;
		case AVM_TAG_HOSTNAME:
			if (!netcfg_hostname_ok((const char *)val, vlen)) {
				*why = "hostname must be 1..64 of [A-Za-z0-9._-]";
				return -EINVAL;
			}
			host = val;
			host_len = vlen;
			break;
		case AVM_TAG_BOOT_ARGS:
			if (!boot_deferred) {
				*why = "boot words sent to a guest that is no boot template's clone";
				return -EINVAL;
			}
			if (boot || vlen > BOOT_ARGS_MAX || !mem_nul_free(val, vlen)) {
				*why = "boot words must be one record of at most 4096 bytes, no NUL";
				return -EINVAL;
			}
			boot = val;
			boot_len = vlen;
			break;
		default:
			break; /* network identity: netcfg_parse_sync(); newer hosts may send more */
		}
	}
	if (r < 0) {
		*why = "truncated TLV record";
		return -EBADMSG;
	}
	/* An isolated VM has no NIC: refuse before the clock or anything else moved. */
	if (netcfg_has_net(&net) && (r = net_eth_index()) < 0) {
		*why = r == -ENODEV ? "network identity sent but the VM has no network interface"
				    : "listing network links failed";
		return r;
	}

	t[0] = boottime_ns();
	if (time_v) {
		struct timespec ts = { .tv_sec = (time_t)(ns / NSEC_PER_SEC),
				       .tv_nsec = (long)(ns % NSEC_PER_SEC) };
		if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
			*why = "clock_settime failed";
			return -errno;
		}
	}
	t[1] = boottime_ns();
	if (ent && (r = add_entropy(ent, ent_len)) < 0) {
		*why = "RNDADDENTROPY failed";
		return r;
	}
	t[2] = boottime_ns();
	if (boot) {
		memcpy(words, boot, boot_len);
		words[boot_len] = '\0';
		finish_boot_root(words, &disks);
		if (!host && disks.root[0])
			net_set_hostname(SYS_HOSTNAME, strlen(SYS_HOSTNAME));
	}
	t[3] = boottime_ns();
	if (host && (r = net_set_hostname((const char *)host, host_len)) < 0) {
		*why = "setting the hostname failed";
		return r;
	}
	t[4] = boottime_ns();
	if (netcfg_has_net(&net)) {
		if ((r = net_reidentify(&net, why)) < 0)
			return r;
	}
	t[5] = boottime_ns();
	if (boot) {
		/* As a cold boot: the workspace disks, then the shares (one may sit in a disk). */
		disk_mount_all(&disks);
		share_mount_words(words);
		boot_deferred = false;
	}
	t[6] = boottime_ns();
	log_debug("SYNC in %llu us: clock %llu, entropy %llu, root %llu, hostname %llu, "
		  "network %llu, mounts %llu",
		  (unsigned long long)(t[6] - t[0]) / 1000, (unsigned long long)(t[1] - t[0]) / 1000,
		  (unsigned long long)(t[2] - t[1]) / 1000, (unsigned long long)(t[3] - t[2]) / 1000,
		  (unsigned long long)(t[4] - t[3]) / 1000, (unsigned long long)(t[5] - t[4]) / 1000,
		  (unsigned long long)(t[6] - t[5]) / 1000);
	return 0;
}

int sync_apply(const uint8_t *p, size_t len, const char **why)
{
	int r;

	/* A template's clone before its first command (net_set_fresh()). */
	net_set_fresh(boot_deferred && !exec_started());
	r = apply(p, len, why);
	net_set_fresh(false);
	return r;
}
