/* SPDX-License-Identifier: MIT */
/*
 * pool_run_key(): a run takes a run pool's VM only when the key of its spec is the pool's. The
 * command's own parts (sent with its EXEC) must not change the key; everything the VM is made
 * of (size, network and its policy, disks, root image, accelerator) must.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/pool.h"
#include "spec/spec.h"

/* A guest image directory of our own (AGENTVM_IMAGES): the key names the images a boot uses. */
static char images[] = "/tmp/avm-test-pool-key.XXXXXX";

static int make_images(void **state)
{
	char path[sizeof(images) + 32];
	FILE *f;

	(void)state;
	if (!mkdtemp(images))
		return -1;
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", images, i ? "initramfs.cpio" : "vmlinux");
		if (!(f = fopen(path, "w")))
			return -1;
		fputs("x", f);
		fclose(f);
	}
	return setenv("AGENTVM_IMAGES", images, 1);
}

static int remove_images(void **state)
{
	char path[sizeof(images) + 32];

	(void)state;
	snprintf(path, sizeof(path), "%s/vmlinux", images);
	unlink(path);
	snprintf(path, sizeof(path), "%s/initramfs.cpio", images);
	unlink(path);
	return rmdir(images);
}

static struct vm_spec *base(void)
{
	struct avm_error err = { 0 };
	struct vm_spec *s = vm_spec_new();

	assert_non_null(s);
	/* tcg: the key resolves the accelerator, and auto would depend on this host's /dev/kvm */
	assert_int_equal(vm_spec_set_accel(s, "tcg", &err), 0);
	return s;
}

static void key_of(const struct vm_spec *s, char key[65])
{
	struct avm_error err = { 0 };

	assert_int_equal(pool_run_key(s, key, &err), 0);
	assert_int_equal(strlen(key), 64);
	assert_int_equal(strspn(key, "0123456789abcdef"), 64);
}

static void test_command_parts_do_not_count(void **state)
{
	char *const argv[] = { "sh", "-c", "exit 3", NULL };
	struct avm_error err = { 0 };
	struct vm_spec *a = base(), *b = base();
	char ka[65], kb[65];

	(void)state;
	assert_int_equal(vm_spec_set_command(b, argv, 3, &err), 0);
	assert_int_equal(vm_spec_add_env(b, "K=V", &err), 0);
	assert_int_equal(vm_spec_set_workdir(b, "/tmp", &err), 0);
	assert_int_equal(vm_spec_set_timeout(b, "30", &err), 0);
	assert_non_null(b->name = strdup("some-name"));
	key_of(a, ka);
	key_of(b, kb);
	assert_string_equal(ka, kb);
	vm_spec_free(a);
	vm_spec_free(b);
}

/* Each change to what the VM is: a key of its own. */
static void test_vm_parts_count(void **state)
{
	struct change {
		int (*set)(struct vm_spec *, const char *, struct avm_error *);
		const char *value;
	} changes[] = {
		{ vm_spec_set_memory, "256" },
		{ vm_spec_set_cpus, "2" },
		{ vm_spec_set_profile, "standard" },
		{ vm_spec_set_network, "isolated" },
		{ vm_spec_add_allow, "tcp:8080" },
		{ vm_spec_add_host_allow, "tcp:8000" },
		{ vm_spec_add_allow_cidr, "203.0.113.0/24" },
		{ vm_spec_add_allow_domain, "example.org" },
		{ vm_spec_set_bandwidth, "unlimited" },
		{ vm_spec_set_accel, "kvm" },
	};
	struct avm_error err = { 0 };
	struct vm_spec *a = base();
	char ka[65], kb[65];

	(void)state;
	key_of(a, ka);
	for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
		struct vm_spec *b = base();
		int r;

		assert_int_equal(changes[i].set(b, changes[i].value, &err), 0);
		r = pool_run_key(b, kb, &err);
		if (r == 0)
			assert_string_not_equal(ka, kb);
		else /* kvm on a host without it: no key, so no pool VM either */
			assert_ptr_equal(changes[i].set, vm_spec_set_accel);
		vm_spec_free(b);
	}
	/* Another guest kernel (--kernel) is another VM too. */
	struct vm_spec *b = base();
	char other[sizeof(images) + 32];
	snprintf(other, sizeof(other), "%s/initramfs.cpio", images);
	assert_int_equal(vm_spec_set_path(&b->kernel, "--kernel", other, &err), 0);
	key_of(b, kb);
	assert_string_not_equal(ka, kb);
	vm_spec_free(b);
	vm_spec_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_parts_do_not_count),
		cmocka_unit_test(test_vm_parts_count),
	};
	return cmocka_run_group_tests_name("pool_key", tests, make_images, remove_images);
}
