/* SPDX-License-Identifier: MIT */
/*
 * Bench helper: boot one VM through libagentvm, then run `true` N times in it and print each
 * exec round trip (EXEC sent -> EXIT received) in microseconds, one per line. Also prints the
 * boot-to-READY time on stderr. usage: exec-rtt KERNEL INITRD N [--metrics-ab]
 *
 * --metrics-ab: the cost of metrics recording instead. 2N execs with recording on and off in
 * turn (on, off, off, on, ...: interleaved, so both see the same load and neither always
 * follows the other), printing "on US" / "off US": the wall time of vm_exec, which includes the
 * recording (a rewrite of the VM's metrics.json); then "record US" for 1000 calls of
 * metrics_record_exec alone.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vm/host.h"
#include "obs/metrics.h"
#include "spec/spec.h"
#include "base/util.h"
#include "vm/vm.h"

int main(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct vm *vm = NULL;
	char *qemu = NULL;
	char *cmd[] = { "true", NULL };
	enum vm_accel accel;
	bool fell_back;
	int n, devnull, rc = 1;

	bool ab = argc == 5 && !strcmp(argv[4], "--metrics-ab");
	if (argc != 4 && !ab) {
		fprintf(stderr, "usage: exec-rtt KERNEL INITRD N [--metrics-ab]\n");
		return 2;
	}
	n = atoi(argv[3]);
	if (ab)
		n *= 2;
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
		bool on = i % 4 == 0 || i % 4 == 3;
		if (ab)
			metrics_set_recording(on);
		uint64_t t0 = now_us();
		if (vm_exec(vm, &req, &res, &err) < 0)
			goto out;
		if (ab)
			printf("%s %llu\n", on ? "on" : "off", (unsigned long long)(now_us() - t0));
		else
			printf("%llu\n", (unsigned long long)res.round_trip_us);
	}
	metrics_set_recording(true);
	for (int i = 0; ab && i < 1000; i++) {
		uint64_t t0 = now_us();
		metrics_record_exec(vm_state_dir(vm), METRICS_EXEC_OK, 1000);
		printf("record %llu\n", (unsigned long long)(now_us() - t0));
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
