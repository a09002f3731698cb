/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cgroup.h"
#include "sys.h"
#include "disk.h"
#include "rootfs.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

struct mnt {
	const char *src, *dir, *type;
	unsigned long flags;
	const char *data;
	mode_t mode; /* of the mount point, when it has to be created */
};

/*
 * Before READY only what finding the port needs: /dev and /sys, and /proc for the cmdline (a
 * boot template says READY only after its setup: see main.c). The kernel does not automount
 * devtmpfs for an initramfs (CONFIG_DEVTMPFS_MOUNT only applies to a real root).
 */
static const struct mnt early_mounts[] = {
	{ "devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755 },
	{ "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555 },
	{ "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555 },
};

/*
 * /dev/pts gets its own instance so ptys inside the guest never see another devpts.
 * The tmpfs mounts are sized so that together they cannot take the guest's RAM: at the kernel's
 * default (50% each) filling /tmp and /dev/shm left nothing the OOM killer could free and the
 * guest kernel panicked. 30% + 10% + 5% leaves the rest for the kernel, the agent and commands.
 */
static const struct mnt late_mounts[] = {
	{ "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620",
	  0755 },
	{ "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=10%", 01777 },
	{ "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=30%", 01777 },
	{ "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=5%", 0755 },
};

/* What shells and language runtimes expect under /dev that devtmpfs does not provide. */
static const struct {
	const char *target, *path;
} dev_links[] = {
	{ "/proc/self/fd", "/dev/fd" },
	{ "/proc/self/fd/0", "/dev/stdin" },
	{ "/proc/self/fd/1", "/dev/stdout" },
	{ "/proc/self/fd/2", "/dev/stderr" },
	{ "pts/ptmx", "/dev/ptmx" },
};

static void do_mounts(const struct mnt *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (mkdir(m[i].dir, m[i].mode) < 0 && errno != EEXIST)
			log_msg("mkdir %s: %m", m[i].dir);
		/* EBUSY: already mounted (the kernel may have done /dev itself). */
		if (mount(m[i].src, m[i].dir, m[i].type, m[i].flags, m[i].data) < 0 &&
		    errno != EBUSY)
			log_msg("mount %s on %s: %m", m[i].type, m[i].dir);
	}
}

/*
 * Without /dev/console in the initramfs the kernel starts init with fds 0-2 closed, and the
 * first open() of PID 1 would silently become its stdin. Fill the gaps with /dev/null; the
 * console is opened only if something is ever logged (opening hvc0 costs milliseconds).
 */
static void fix_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR | O_NOCTTY);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
}

void sys_setup_early(void)
{
	umask(022);
	do_mounts(early_mounts, ARRAY_SIZE(early_mounts));
	fix_std_fds();
}

void sys_setup_late(void)
{
	struct rlimit rl;

	do_mounts(late_mounts, ARRAY_SIZE(late_mounts));
	for (size_t i = 0; i < ARRAY_SIZE(dev_links); i++) {
		/* devtmpfs has a ptmx node for the initial devpts instance: replace it. */
		if (strcmp(dev_links[i].path, "/dev/ptmx") == 0)
			unlink(dev_links[i].path);
		if (symlink(dev_links[i].target, dev_links[i].path) < 0 && errno != EEXIST)
			log_msg("symlink %s: %m", dev_links[i].path);
	}

	/* The kernel hands init HOME=/ TERM=linux and any unknown cmdline key=value: drop them. */
	clearenv();
	setenv("PATH", SYS_DEFAULT_PATH, 1);
	setenv("HOME", "/root", 1);

	if (sethostname(SYS_HOSTNAME, strlen(SYS_HOSTNAME)) < 0)
		log_msg("sethostname: %m");
	if (chdir("/") < 0)
		log_msg("chdir /: %m");

	/* Each running command costs PID 1 three or four fds; 1024 would cap concurrency. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	/* Last, in the final root: one cgroup per command (cgroup.c). */
	if (cgroup_setup() < 0)
		log_msg("cgroup2: %m; commands run without their own cgroup");
}

int sys_signals(void)
{
	sigset_t set;
	int fd;

	/* Init only receives signals it has handlers for; SIGPIPE must still not kill us. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

bool sys_cmdline(struct net_cfg *net, struct disk_cfg *disks, char *raw, size_t raw_len)
{
	bool template = false;
	char buf[4096], *tok, *save = NULL;
	const char *why = NULL;
	ssize_t n;
	int fd;

	memset(net, 0, sizeof(*net));
	memset(disks, 0, sizeof(*disks));
	raw[0] = '\0';
	fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	snprintf(raw, raw_len, "%s", buf); /* for the shares, mounted later (share_mount_words) */
	/* Before strtok_r cuts buf up. Always logged: a guest without its network is no detail. */
	if (netcfg_parse_cmdline(buf, net, &why) < 0)
		log_msg("kernel cmdline: %s; ignored", why);
	if (diskcfg_parse_cmdline(buf, disks, &why) < 0)
		log_msg("kernel cmdline: %.*s: %s; ignored (%u agentvm.disk word%s refused in all)",
			disks->bad_len, disks->bad, why, disks->rejected,
			disks->rejected == 1 ? "" : "s");
	disks->bad = NULL; /* it points into buf */
	/* Quoting is not handled: agentvm.* values never contain spaces. */
	for (tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (strcmp(tok, "agentvm.debug=1") == 0)
			log_debug_enabled = true;
		if (strcmp(tok, "agentvm.template=1") == 0)
			template = true;
	}
	return template;
}

void sys_poweroff(void)
{
	log_debug("power-off");
	/* SIGKILL to -1 reaches every process but PID 1 itself. */
	kill(-1, SIGKILL);
	sync();
	disk_unmount_all();
	rootfs_finish();
	/*
	 * acpi=off: RB_POWER_OFF would do nothing. With reboot=t the reboot is a triple fault, and
	 * QEMU's -no-reboot turns that into an immediate exit.
	 */
	reboot(RB_AUTOBOOT);
	log_msg("reboot: %m");
}
