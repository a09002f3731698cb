/* SPDX-License-Identifier: MIT */
#include "vm/qemu_argv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/proto.h"
#include "vm/disk.h"

/*
 * One agentvm.disk=SERIAL:DIR:rw|ro word per workspace disk, for guest-init's mounts, and
 * agentvm.root=SERIAL for the root image it switches to first.
 */
char *qemu_guest_boot_words(const struct qemu_config *c)
{
	char *s = strdup(""), *t;

	for (size_t i = 0; s && i < c->n_disks; i++) {
		int n = c->disks[i].root
				? asprintf(&t, "%s agentvm.root=" DISK_SERIAL_PREFIX "%zu", s, i)
				: asprintf(&t, "%s agentvm.disk=" DISK_SERIAL_PREFIX "%zu:%s:%s", s,
					   i, c->disks[i].guest_dir,
					   c->disks[i].readonly ? "ro" : "rw");
		if (n < 0)
			t = NULL;
		free(s);
		s = t;
	}
	for (size_t i = 0; s && i < c->n_shares; i++) {
		if (asprintf(&t, "%s agentvm.share=" QEMU_SHARE_TAG_PREFIX "%zu:%s:%s", s, i,
			     c->shares[i].guest_dir, c->shares[i].readonly ? "ro" : "rw") < 0)
			t = NULL;
		free(s);
		s = t;
	}
	return s;
}

/* QEMU option values double a ',' (the option separator). */
static char *opt_escape(const char *v)
{
	char *o = malloc(strlen(v) * 2 + 1), *p = o;

	for (; o && *v; v++) {
		*p++ = *v;
		if (*v == ',')
			*p++ = ',';
	}
	if (o)
		*p = '\0';
	return o;
}

char *qemu_kernel_cmdline(const struct qemu_config *c)
{
	char *s = NULL, *disks = c->template_boot ? strdup(" agentvm.template=1")
						   : qemu_guest_boot_words(c);
	const char *extra = c->template_boot ? NULL : c->extra_cmdline;
	char tsc[64] = "";

	if (!disks)
		return NULL;

	/*
	 * Under TCG the minimal kernel hangs at TSC calibration in a large share of boots unless it
	 * is told the rate (tsc_early_khz) and skips the timer check; under KVM kvmclock makes both
	 * moot. tsc=reliable: TCG's TSC follows QEMU's virtual clock, so the clocksource watchdog
	 * only costs time, twice a second, and in every restored clone of a boot template too
	 * (~300 fresh translation blocks before its first command, bench/warm_tbs.sh). quiet: every console byte costs time under TCG. reboot=t + panic=-1 + QEMU's
	 * -no-reboot: a guest reboot or panic ends QEMU at once (acpi=off has no power-off).
	 */
	if (c->accel == VM_ACCEL_TCG && c->tsc_khz > 0)
		snprintf(tsc, sizeof(tsc), " no_timer_check tsc_early_khz=%lu tsc=reliable", c->tsc_khz);
	/*
	 * No ipv6.disable=1: that would remove AF_INET6 altogether, and userlands expect ::1 on lo
	 * (node tries it for "localhost"). The guest network is IPv4 only all the same: guest-init
	 * turns IPv6 off on eth0 and the host's filter drops IPv6 at the tap.
	 */
	if (asprintf(&s, "console=hvc0 quiet reboot=t panic=-1 rdinit=/init%s%s%s%s%s",
		     c->guest_debug ? " agentvm.debug=1" : "", tsc, extra && *extra ? " " : "",
		     extra ? extra : "", disks) < 0)
		s = NULL;
	free(disks);
	return s;
}

int qemu_build_argv(const struct qemu_config *c, struct strv *a, struct avm_error *err)
{
	char *cmdline;
	int kvm = c->accel == VM_ACCEL_KVM;

	if (c->accel != VM_ACCEL_KVM && c->accel != VM_ACCEL_TCG)
		return avm_error_set(err, -EINVAL, "internal: accelerator not resolved");
	cmdline = qemu_kernel_cmdline(c);
	if (!cmdline)
		return avm_error_set(err, -ENOMEM, "out of memory");
	/*
	 * x86 takes 2048 bytes of cmdline and silently cuts the rest, and QEMU appends its
	 * virtio_mmio.device= words (~45 bytes per device) after ours: a cut agentvm.* word would
	 * be a disk or network that quietly is not there.
	 */
	size_t mmio = 45 * (4 + (c->nic ? 1 : 0) + c->n_disks + c->n_shares);
	if (strlen(cmdline) + mmio >= QEMU_CMDLINE_MAX) {
		size_t n = strlen(cmdline);
		free(cmdline);
		return avm_error_set(err, -E2BIG,
				     "the guest kernel command line would be %zu bytes, over the "
				     "%d the kernel takes; use shorter --disk directories",
				     n + mmio, QEMU_CMDLINE_MAX);
	}

	strv_add(a, c->qemu);
	/*
	 * acpi=off selects qboot (faster than SeaBIOS) and makes QEMU append virtio_mmio.device=
	 * entries to the cmdline; no ISA serial or option ROMs. PIT and PIC stay:
	 * with pit=off,pic=off a 2-vCPU guest hung at boot under TCG (measured).
	 * rtc stays on: without it the kernel waits ~1 s under TCG.
	 */
	strv_addf(a, "-M");
	strv_addf(a,
		  "microvm,accel=%s,acpi=off,x-option-roms=off,isa-serial=off,"
		  "rtc=on",
		  kvm ? "kvm" : "tcg");
	strv_add(a, "-cpu");
	strv_add(a, kvm ? "host" : "max");
	strv_add(a, "-smp");
	strv_addf(a, "%u", c->cpus);
	strv_add(a, "-m");
	strv_addf(a, "%u", c->memory_mib);
	if (c->mem_path) {
		/* Guest RAM from a file (snapshot template or copy-on-write clone). The backend's id
		 * is the machine's default RAM id, so migration streams of ordinary VMs fit it. */
		char *mp = opt_escape(c->mem_path);
		strv_add(a, "-object");
		strv_addf(a, "memory-backend-file,id=microvm.ram,size=%uM,mem-path=%s,share=%s",
			  c->memory_mib, mp ? mp : "", c->mem_share ? "on" : "off");
		if (!mp)
			a->failed = true;
		free(mp);
		strv_add(a, "-M");
		strv_add(a, "memory-backend=microvm.ram");
	}
	if (c->incoming) {
		strv_add(a, "-incoming");
		strv_add(a, "defer");
	}
	if (c->name_tag) {
		char *n = opt_escape(c->name_tag);
		strv_add(a, "-name");
		strv_addf(a, "guest=%s", n ? n : "");
		if (!n)
			a->failed = true;
		free(n);
	}
	strv_add(a, "-nodefaults");
	strv_add(a, "-no-user-config");
	strv_add(a, "-nographic");
	strv_add(a, "-no-reboot");
	/* Paused until the launcher has negotiated QMP and says cont. */
	strv_add(a, "-S");
	if (c->sandbox) {
		strv_add(a, "-sandbox");
		strv_add(a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
	}
	/*
	 * A restore needs no kernel: the guest's memory (kernel, initramfs, cmdline included)
	 * comes from the stream or the template's file, and QEMU skips writing ROM blobs into
	 * RAM while it waits for one. Not loading them saves QEMU parsing the 17 MB vmlinux and
	 * reading the initramfs at every restore (~9 ms of its ~90 ms start-up here, measured),
	 * and the jail binds neither.
	 */
	if (!c->incoming) {
		strv_add(a, "-kernel");
		strv_add(a, c->kernel);
		strv_add(a, "-initrd");
		strv_add(a, c->initrd);
		strv_add(a, "-append");
		strv_add(a, cmdline);
	}
	free(cmdline);

	/* QMP over an inherited, pre-connected socket: no socket file, no connect race. */
	strv_add(a, "-chardev");
	strv_addf(a, "socket,id=qmp0,fd=%d", c->qmp_fd);
	strv_add(a, "-mon");
	strv_add(a, "chardev=qmp0,mode=control");
	if (c->qmp_sock_path) {
		/* For other CLI calls (pause, resume, qmp): events go to every monitor. */
		/* Every path inside an option value is escaped: a ',' in AGENTVM_STATE_DIR must not
		 * add options of its own. */
		char *qp = opt_escape(c->qmp_sock_path);
		strv_add(a, "-chardev");
		if (c->qmp_listen_fd > 0)
			strv_addf(a, "socket,id=qmp1,fd=%d,server=on,wait=off", c->qmp_listen_fd);
		else
			strv_addf(a, "socket,id=qmp1,path=%s,server=on,wait=off", qp ? qp : "");
		if (!qp)
			a->failed = true;
		free(qp);
		strv_add(a, "-mon");
		strv_add(a, "chardev=qmp1,mode=control");
	}

	/* One virtio-serial bus: port 0 the console (hvc0), port 1 the agent channel. */
	strv_add(a, "-device");
	strv_add(a, "virtio-serial-device,max_ports=2");
	strv_add(a, "-chardev");
	strv_addf(a, "socket,id=con0,fd=%d", c->console_fd);
	strv_add(a, "-device");
	strv_add(a, "virtconsole,chardev=con0,nr=0");
	strv_add(a, "-chardev");
	strv_addf(a, "socket,id=agent0,fd=%d", c->agent_fd);
	strv_add(a, "-device");
	strv_addf(a, "virtserialport,chardev=agent0,nr=1,name=%s,id=agent", AVM_AGENT_PORT_NAME);

	/*
	 * The NIC: a tap agentvm created and configured, inherited as an fd, so QEMU needs no
	 * privilege and never runs a helper script. vhost=off: there is no vhost-net here, and
	 * with it QEMU would need /dev/vhost-net (documented as the KVM-host speed-up).
	 */
	if (c->nic) {
		const unsigned char *m = c->mac;
		strv_add(a, "-netdev");
		strv_addf(a, "tap,id=net0,fd=%d,vhost=off", c->tap_fd);
		strv_add(a, "-device");
		strv_addf(a, "virtio-net-device,netdev=net0,mac=%02x:%02x:%02x:%02x:%02x:%02x", m[0],
			  m[1], m[2], m[3], m[4], m[5]);
	}

	/* Fresh entropy for the guest from the host's RNG. */
	strv_add(a, "-object");
	strv_add(a, "rng-random,id=rng0,filename=/dev/urandom");
	strv_add(a, "-device");
	strv_add(a, "virtio-rng-device,rng=rng0");

	/*
	 * Workspace disks last, so a VM without them keeps the device (and virtio-mmio slot)
	 * layout its snapshots were taken with. The serial is how guest-init finds each one.
	 * cache=unsafe would be faster but a snapshot copies the overlay after QEMU flushed it;
	 * writeback (the default) keeps that flush meaningful.
	 */
	for (size_t i = 0; i < c->n_disks; i++) {
		char *file = opt_escape(c->disks[i].overlay);
		strv_add(a, "-drive");
		strv_addf(a, "file=%s,format=qcow2,if=none,id=disk%zu,discard=unmap%s",
			  file ? file : "", i, c->disks[i].readonly ? ",readonly=on" : "");
		free(file);
		strv_add(a, "-device");
		strv_addf(a, "virtio-blk-device,drive=disk%zu,serial=" DISK_SERIAL_PREFIX "%zu", i,
			  i);
		if (!file)
			a->failed = true;
	}

	/*
	 * Shares. security_model=mapped-xattr: the guest's owners, modes, device nodes and
	 * symlinks are stored in user.virtfs.* attributes of ordinary files, never made real on
	 * the host, so the guest cannot plant a set-uid file, a device node, a file of another
	 * host user or a symlink out of the share (with passthrough/none and a root QEMU it could).
	 * Host files it creates are QEMU's user's, 0644 (dirs 0755: fmode/dmode) so the host user
	 * can read outputs. QEMU itself resolves every path under the export with O_NOFOLLOW at
	 * each step (its CVE-2016-9602 fix), so ".." and host symlinks cannot lead out either.
	 * readonly=on: QEMU refuses every write, whatever the guest's root does.
	 * A container's root file system (the containerd shim) is the exception: its files,
	 * owners, modes and symlinks are the image's, made real on the host by containerd's
	 * snapshotter, so it is exported with security_model=none (as runc's container writes its
	 * own rootfs); QEMU's O_NOFOLLOW path walk still keeps it inside.
	 */
	for (size_t i = 0; i < c->n_shares; i++) {
		char *dir = opt_escape(c->shares[i].host_dir);
		strv_add(a, "-fsdev");
		if (c->shares[i].container_root)
			strv_addf(a, "local,id=fs%zu,path=%s,security_model=none%s", i,
				  dir ? dir : "", c->shares[i].readonly ? ",readonly=on" : "");
		else
			strv_addf(a, "local,id=fs%zu,path=%s,security_model=mapped-xattr,fmode=0644,"
				  "dmode=0755%s",
				  i, dir ? dir : "", c->shares[i].readonly ? ",readonly=on" : "");
		free(dir);
		strv_add(a, "-device");
		strv_addf(a, "virtio-9p-device,fsdev=fs%zu,mount_tag=" QEMU_SHARE_TAG_PREFIX "%zu", i,
			  i);
		if (!dir)
			a->failed = true;
	}

	if (a->failed) {
		strv_release(a);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}
