/* SPDX-License-Identifier: MIT */
/* The QEMU command line: accelerator, sizes, fds, the TCG cmdline workarounds. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vm/qemu_argv.h"

static struct qemu_config base(enum vm_accel a)
{
	struct qemu_config c = {
		.qemu = "/usr/bin/qemu-system-x86_64",
		.kernel = "/k/vmlinux",
		.initrd = "/k/initramfs.cpio",
		.accel = a,
		.cpus = 2,
		.memory_mib = 512,
		.tsc_khz = 2096014,
		.qmp_fd = 5,
		.agent_fd = 6,
		.console_fd = 7,
		.sandbox = 1,
	};
	return c;
}

/* The value following flag `flag` (the n-th occurrence), or NULL. */
static const char *after(char **v, const char *flag, int nth)
{
	for (; *v; v++)
		if (!strcmp(*v, flag) && v[1] && nth-- == 0)
			return v[1];
	return NULL;
}

/* A restore loads no kernel: its memory comes from the stream or the template's file. */
static void test_restore_loads_no_kernel(void **state)
{
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };

	c.incoming = 1;
	c.mem_path = "/t/mem";
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_null(after(a.v, "-kernel", 0));
	assert_null(after(a.v, "-initrd", 0));
	assert_null(after(a.v, "-append", 0));
	assert_string_equal(after(a.v, "-incoming", 0), "defer");
	strv_release(&a);
}

static void test_tcg_line(void **state)
{
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };

	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_string_equal(a.v[0], "/usr/bin/qemu-system-x86_64");
	assert_non_null(strstr(after(a.v, "-M", 0), "microvm,accel=tcg,acpi=off"));
	assert_non_null(strstr(after(a.v, "-M", 0), "rtc=on"));
	assert_string_equal(after(a.v, "-cpu", 0), "max");
	assert_string_equal(after(a.v, "-smp", 0), "2");
	assert_string_equal(after(a.v, "-m", 0), "512");
	assert_string_equal(after(a.v, "-kernel", 0), "/k/vmlinux");
	assert_string_equal(after(a.v, "-initrd", 0), "/k/initramfs.cpio");
	const char *append = after(a.v, "-append", 0);
	assert_non_null(strstr(append, "tsc_early_khz=2096014"));
	assert_non_null(strstr(append, "no_timer_check"));
	/* No clocksource watchdog: every restored clone would run it (and translate it). */
	assert_non_null(strstr(append, "tsc=reliable"));
	assert_non_null(strstr(append, "reboot=t"));
	/* IPv6 stays in the kernel (lo's ::1); guest-init turns it off on eth0. */
	assert_null(strstr(append, "ipv6.disable"));
	assert_non_null(strstr(append, "console=hvc0"));
	assert_string_equal(after(a.v, "-chardev", 0), "socket,id=qmp0,fd=5");
	assert_string_equal(after(a.v, "-chardev", 2), "socket,id=agent0,fd=6");
	assert_non_null(strstr(after(a.v, "-device", 2), "name=org.agentvm.agent"));
	assert_non_null(after(a.v, "-sandbox", 0));
	/* Paused start and no reboot are what teardown and the launcher rely on. */
	int has_S = 0, has_noreboot = 0;
	for (char **p = a.v; *p; p++) {
		has_S |= !strcmp(*p, "-S");
		has_noreboot |= !strcmp(*p, "-no-reboot");
	}
	assert_true(has_S && has_noreboot);
	strv_release(&a);
}

/* A ',' in a state dir path is doubled in every option value: no option injection. */
static void test_paths_escaped(void **state)
{
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };
	struct qemu_disk d = { .overlay = "/s,x/disk0.qcow2", .guest_dir = "/w" };

	c.qmp_sock_path = "/s,server=off,x/qmp.sock";
	c.mem_path = "/s,share=on/mem";
	c.disks = &d;
	c.n_disks = 1;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_string_equal(after(a.v, "-chardev", 1),
			    "socket,id=qmp1,path=/s,,server=off,,x/qmp.sock,server=on,wait=off");
	assert_non_null(strstr(after(a.v, "-object", 0), "mem-path=/s,,share=on/mem,share=off"));
	assert_non_null(strstr(after(a.v, "-drive", 0), "file=/s,,x/disk0.qcow2,format=qcow2"));
	assert_string_equal(after(a.v, "-chardev", 2), "socket,id=con0,fd=7");
	strv_release(&a);
}

static void test_kvm_line_has_no_tsc_workaround(void **state)
{
	struct qemu_config c = base(VM_ACCEL_KVM);
	struct strv a = { 0 };

	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_non_null(strstr(after(a.v, "-M", 0), "accel=kvm"));
	assert_string_equal(after(a.v, "-cpu", 0), "host");
	assert_null(strstr(after(a.v, "-append", 0), "tsc_early_khz"));
	strv_release(&a);
}

static void test_unresolved_accel_rejected(void **state)
{
	struct qemu_config c = base(VM_ACCEL_AUTO);
	struct strv a = { 0 };
	struct avm_error err = { 0 };

	assert_int_equal(qemu_build_argv(&c, &a, &err), -EINVAL);
	assert_null(a.v);
}

static void test_cmdline_extra_and_unknown_tsc(void **state)
{
	struct qemu_config c = base(VM_ACCEL_TCG);
	c.tsc_khz = 0;
	c.extra_cmdline = "agentvm.test=1";
	char *s = qemu_kernel_cmdline(&c);

	assert_non_null(s);
	assert_null(strstr(s, "tsc_early_khz"));
	assert_non_null(strstr(s, " agentvm.test=1"));
	free(s);
}

static void test_nic_only_when_asked(void **state)
{
	static const unsigned char mac[6] = { 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e };
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };

	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_null(after(a.v, "-netdev", 0));
	strv_release(&a);

	c.nic = true;
	c.tap_fd = 9;
	c.mac = mac;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_string_equal(after(a.v, "-netdev", 0), "tap,id=net0,fd=9,vhost=off");
	bool found = false;
	for (int i = 0; after(a.v, "-device", i); i++)
		found |= !strcmp(after(a.v, "-device", i),
				 "virtio-net-device,netdev=net0,mac=02:aa:bb:cc:dd:0e");
	assert_true(found);
	strv_release(&a);
}

static void test_disks_last_with_serials_and_cmdline(void **state)
{
	static const struct qemu_disk d[2] = {
		{ .overlay = "/run/agentvm/x/disk0.qcow2", .guest_dir = "/workspace" },
		{ .overlay = "/run/a,b/disk1.qcow2", .guest_dir = "/data", .readonly = true },
	};
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };
	int n;

	c.disks = d;
	c.n_disks = 2;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_string_equal(after(a.v, "-drive", 0), "file=/run/agentvm/x/disk0.qcow2,format=qcow2,"
						      "if=none,id=disk0,discard=unmap");
	/* A ',' in a path is doubled (QEMU's option escape); ro disks are read-only to QEMU. */
	assert_string_equal(after(a.v, "-drive", 1),
			    "file=/run/a,,b/disk1.qcow2,format=qcow2,if=none,id=disk1,"
			    "discard=unmap,readonly=on");
	for (n = 0; after(a.v, "-device", n); n++)
		;
	/* Last, so VMs without disks keep the device layout of their snapshots. */
	assert_string_equal(after(a.v, "-device", n - 2),
			    "virtio-blk-device,drive=disk0,serial=avm-disk0");
	assert_string_equal(after(a.v, "-device", n - 1),
			    "virtio-blk-device,drive=disk1,serial=avm-disk1");
	const char *append = after(a.v, "-append", 0);
	assert_non_null(strstr(append, " agentvm.disk=avm-disk0:/workspace:rw"));
	assert_non_null(strstr(append, " agentvm.disk=avm-disk1:/data:ro"));
	strv_release(&a);

	/* Eight long directories would overflow the kernel's 2048 bytes: refused, not cut. */
	static char dir[8][256];
	struct qemu_disk many[8];
	struct avm_error err = { 0 };
	for (int i = 0; i < 8; i++) {
		memset(dir[i], 'a', 250);
		dir[i][0] = '/';
		dir[i][1] = (char)('0' + i);
		many[i] = (struct qemu_disk){ .overlay = "/o", .guest_dir = dir[i] };
	}
	c.disks = many;
	c.n_disks = 8;
	assert_int_equal(qemu_build_argv(&c, &a, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "shorter --disk directories"));
	c.n_disks = 5; /* 5 x ~280 bytes still fits */
	assert_int_equal(qemu_build_argv(&c, &a, &err), 0);
	strv_release(&a);

	c.n_disks = 0;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_null(after(a.v, "-drive", 0));
	assert_null(strstr(after(a.v, "-append", 0), "agentvm.disk"));
	strv_release(&a);
}

static void test_root_image_disk(void **state)
{
	/* The root image is a disk like the others on QEMU's side; only the cmdline word differs. */
	static const struct qemu_disk d[2] = {
		{ .overlay = "/s/disk0.qcow2", .guest_dir = "/workspace" },
		{ .overlay = "/s/disk1.qcow2", .guest_dir = "/", .root = true },
	};
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };

	c.disks = d;
	c.n_disks = 2;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_string_equal(after(a.v, "-device", 5), "virtio-blk-device,drive=disk1,serial=avm-disk1");
	const char *append = after(a.v, "-append", 0);
	assert_non_null(strstr(append, " agentvm.disk=avm-disk0:/workspace:rw"));
	assert_non_null(strstr(append, " agentvm.root=avm-disk1"));
	assert_null(strstr(append, "agentvm.disk=avm-disk1"));
	strv_release(&a);
}

static void test_shares_9p_mapped_xattr(void **state)
{
	static const struct qemu_share sh[2] = {
		{ .host_dir = "/home/u/ws/input", .guest_dir = "/workspace/input", .readonly = true },
		{ .host_dir = "/home/u/a,b", .guest_dir = "/workspace/output" },
	};
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };

	(void)state;
	c.shares = sh;
	c.n_shares = 2;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	/* mapped-xattr: the guest's modes, owners and special files never become real ones. */
	assert_string_equal(after(a.v, "-fsdev", 0),
			    "local,id=fs0,path=/home/u/ws/input,security_model=mapped-xattr,"
			    "fmode=0644,dmode=0755,readonly=on");
	assert_string_equal(after(a.v, "-fsdev", 1),
			    "local,id=fs1,path=/home/u/a,,b,security_model=mapped-xattr,"
			    "fmode=0644,dmode=0755");
	assert_non_null(strstr(after(a.v, "-device", 4), "virtio-9p-device,fsdev=fs0,"
							   "mount_tag=avm-share0"));
	const char *append = after(a.v, "-append", 0);
	assert_non_null(strstr(append, " agentvm.share=avm-share0:/workspace/input:ro"));
	assert_non_null(strstr(append, " agentvm.share=avm-share1:/workspace/output:rw"));
	strv_release(&a);
}

/* The containerd shim's container root: the image's real owners, modes and symlinks. */
static void test_share_container_root(void **state)
{
	static const struct qemu_share sh[1] = {
		{ .host_dir = "/b/rootfs", .guest_dir = "/mnt/rootfs", .container_root = true },
	};
	struct qemu_config c = base(VM_ACCEL_TCG);
	struct strv a = { 0 };

	(void)state;
	c.shares = sh;
	c.n_shares = 1;
	assert_int_equal(qemu_build_argv(&c, &a, NULL), 0);
	assert_string_equal(after(a.v, "-fsdev", 0), "local,id=fs0,path=/b/rootfs,security_model=none");
	strv_release(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_root_image_disk),
		cmocka_unit_test(test_tcg_line), cmocka_unit_test(test_paths_escaped),
		cmocka_unit_test(test_restore_loads_no_kernel),
		cmocka_unit_test(test_kvm_line_has_no_tsc_workaround),
		cmocka_unit_test(test_unresolved_accel_rejected),
		cmocka_unit_test(test_cmdline_extra_and_unknown_tsc),
		cmocka_unit_test(test_nic_only_when_asked),
		cmocka_unit_test(test_disks_last_with_serials_and_cmdline),
		cmocka_unit_test(test_shares_9p_mapped_xattr),
		cmocka_unit_test(test_share_container_root),
	};
	return cmocka_run_group_tests_name("qemu_argv", tests, NULL, NULL);
}
