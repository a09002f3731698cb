/* SPDX-License-Identifier: MIT */
/*
 * Bench helper: boot one VM through libagentvm, then run `true` N times in it and print each
 * exec round trip (EXEC sent -> EXIT received) in microseconds, one per line. Also prints the
 * boot-to-READY time on stderr. usage: exec-rtt KERNEL INITRD N
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "host.h"
#include "spec.h"
#include "vm.h"

int main(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct vm *vm = NULL;
	char *qemu = NULL;
	char *cmd[] = { "true", NULL };
	enum vm_accel accel;
	bool fell_back;
	int n, devnull, rc = 1;

	if (argc != 4) {
		fprintf(stderr, "usage: exec-rtt KERNEL INITRD N\n");
		return 2;
	}
	n = atoi(argv[3]);
	struct vm_spec *spec = vm_spec_new();
	if (!spec || host_find_qemu(&qemu, &err) < 0 ||
	    host_resolve_accel(VM_ACCEL_AUTO, &accel, &fell_back, &err) < 0)
		goto out;
	struct vm_launch_opts lo = {
		.spec = spec, .kernel = argv[1], .initrd = argv[2], .qemu = qemu, .accel = accel,
	};
	if (vm_launch(&lo, &vm, &err) < 0 || vm_wait_ready(vm, 60000, -1, &err) < 0)
		goto out;
	fprintf(stderr, "boot_to_ready_ms %llu\n", (unsigned long long)vm_boot_ms(vm));
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	for (int i = 0; i < n; i++) {
		struct vm_exec_request req = {
			.argv = cmd, .stdin_fd = -1, .stdout_fd = devnull, .stderr_fd = devnull,
			.sig_fd = -1,
		};
		struct vm_exec_result res;
		if (vm_exec(vm, &req, &res, &err) < 0)
			goto out;
		printf("%llu\n", (unsigned long long)res.round_trip_us);
	}
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "exec-rtt: %s\n", err.msg);
	vm_destroy(vm);
	vm_spec_free(spec);
	free(qemu);
	return rc;
}
