/* SPDX-License-Identifier: MIT */
/* agentvm run: boot a fresh microVM, run one command with stdio attached, tear it down. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"
#include "vm/files.h"
#include "state/statedir.h"
#include "spec/spec.h"
#include "base/util.h"
#include "vm/vm.h"
#include "control/vm_start.h"
#include "control/vmctl.h"
#include "pool/pool.h"


static void run_usage(FILE *f)
{
	fprintf(f,
		"usage: agentvm run [OPTIONS] -- CMD [ARG]...\n"
		"\n"
		"Boot a fresh microVM, run CMD in it with stdin/stdout/stderr attached, and exit with\n"
		"CMD's exit code (128+N if it died of signal N, 124 on --timeout). With a run pool\n"
		"serving these very flags (agentvm serve --pool-run), take one of its ready VMs\n"
		"instead; every VM serves one run only.\n"
		"\n"
		"  --profile NAME       light (1 vCPU, 512 MiB; default), standard (2, 2048),\n"
		"                       intensive (4, 4096)\n"
		"  --cpus N             vCPUs (overrides the profile)\n"
		"  --memory MIB         guest RAM in MiB (overrides the profile)\n"
		"  --timeout SECONDS    kill CMD and tear the VM down after this long (exit 124)\n"
		"  -e, --env KEY=VALUE  set an environment variable for CMD (repeatable)\n"
		"  -w, --workdir DIR    working directory of CMD in the guest\n"
		"  --kernel PATH        guest kernel (PVH vmlinux); default: the built-in image\n"
		"  --initrd PATH        guest initramfs; default: the built-in image\n"
		"  --image NAME         run in this root image (agentvm image ls): a Debian or OCI\n"
		"                       userland on a per-VM copy-on-write overlay\n"
		"  --disk FILE[:DIR][:ro]  attach an image (raw or qcow2, ext4 inside) mounted at DIR\n"
		"                       (default /workspace); writes go to a per-VM overlay and FILE\n"
		"                       never changes (repeatable: up to 6, 5 with a network)\n"
		"  --accel kvm|tcg      accelerator; default: kvm if /dev/kvm opens, else tcg with a\n"
		"                       warning\n"
		"  --name NAME          name of the VM (state dir); default: generated\n"
		"  --boot-timeout S     give up if the guest is not ready after S seconds (default %d)\n"
		"  --keep-state         keep the state dir (console.log, qemu.log) for debugging\n"
		"  --cold               boot a kernel instead of restoring a cached boot template\n"
		"                       (and write none, and take no run pool's VM);\n"
		"                       AGENTVM_BOOT_CACHE=0 does it for all\n"
		"  --network MODE       nat-filtered (default: NAT + egress allowlist), isolated (no\n"
		"                       NIC), bridge:BRIDGE (tap on an existing bridge, unfiltered)\n"
		"  --allow PROTO:PORT   add to the egress allowlist (default: tcp:80 tcp:443 tcp:22\n"
		"                       tcp:9418; DNS goes to the resolver only unless udp:53/tcp:53\n"
		"                       are named), e.g. --allow tcp:5432 (repeatable)\n"
		"  --deny-all-egress    start from an empty allowlist (only --allow ports go out)\n"
		"  --allow-host PROTO:PORT\n"
		"                       let the VM reach this port of the host itself, on its gateway\n"
		"                       address (repeatable; default: none; nat-filtered only; not\n"
		"                       changed by --deny-all-egress), e.g. --allow-host tcp:8000\n"
		"  --dns ADDR           resolver for the guest; default: the host's first non-local\n"
		"                       nameserver\n"
		"  --share HOSTDIR:GUESTDIR[:ro]  a live 9p share of a host directory (repeatable);\n"
		"                       :ro is read-only to the guest's root too\n"
		"  --workspace DIR      DIR/input (read-only), DIR/output and DIR/work shared at\n"
		"                       /workspace/{input,output,work}; created when missing\n"
		"  --copy-in HOSTPATH:GUESTPATH   copy into the guest before CMD (repeatable)\n"
		"  --copy-out GUESTPATH:HOSTPATH  copy out after CMD, even when it failed or timed\n"
		"                       out (repeatable); the exit code stays CMD's (1 if CMD\n"
		"                       succeeded but a copy-out failed)\n"
		CLI_EGRESS_USAGE
		"Closed to every VM whatever the ports: private, CGNAT, link-local (cloud metadata),\n"
		"loopback, documentation, multicast and reserved ranges, and the host's addresses.\n",
		CLI_DEFAULT_BOOT_TIMEOUT_S);
}

int cmd_run(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct vm_args a = { .spec = vm_spec_new() };
	_cleanup_close_ int sig_fd = -1, lease_fd = -1;
	struct vm *vm = NULL;
	int r, code;
	/* AGENTVM_TRACE=1: one line of phase timings on stderr, for benchmarks and debugging. */
	bool trace = getenv("AGENTVM_TRACE") && *getenv("AGENTVM_TRACE") == '1';
	uint64_t t_main = now_us();

	if (!a.spec) {
		cli_error("out of memory");
		return EXIT_INTERNAL;
	}
	r = cli_parse_vm_args(argc, argv, &a, true, &err);
	if (r != 0) {
		vm_spec_free(a.spec);
		if (r > 0) {
			run_usage(stdout);
			return 0;
		}
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	/* Everything that can be checked is checked before the boot: a bad name, a command too
	 * large for one request, a state path too long for its sockets. */
	struct vm_exec_request chk = { .argv = a.spec->argv, .env = a.spec->env,
				       .cwd = a.spec->workdir, .timeout_s = a.spec->timeout_s };
	if ((a.spec->name && (r = statedir_validate_name(a.spec->name, &err)) < 0) ||
	    (r = statedir_check_paths(a.spec->name, &err)) < 0 ||
	    (r = vm_exec_check(&chk, &err)) < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(a.spec);
		return EXIT_USAGE;
	}
	sig_fd = cli_block_signals();
	if (sig_fd < 0) {
		cli_error("cannot set up signal handling: %s", strerror(-sig_fd));
		vm_spec_free(a.spec);
		return EXIT_INTERNAL;
	}
	/* A warm VM of a run pool (serve --pool-run) with these very flags, else a boot. */
	if (pool_run_vm(a.spec, !a.n_copy_in && !a.n_copy_out, a.boot_timeout_s, a.cold,
			a.keep_state, sig_fd, &vm, &lease_fd, &err) < 0) {
		vm_spec_free(a.spec);
		return cli_fail(&err);
	}
	if (lease_fd < 0)
		vm_monitor_start(vm, a.spec->cpus, a.spec->memory_mib);
	if (trace && lease_fd >= 0) {
		fprintf(stderr, "agentvm: trace: a run pool's VM, connected %.1f ms after main\n",
			(double)(now_us() - t_main) / 1000);
	} else if (trace) {
		char steps[256];
		vm_trace(vm, t_main, steps, sizeof(steps));
		fprintf(stderr, "agentvm: trace: ms after main: %s\n", steps);
	}

	struct files_opts fo = { .sig_fd = sig_fd, .progress = false, .stdin_fd = STDIN_FILENO,
				 .stdout_fd = STDOUT_FILENO, .stderr_fd = STDERR_FILENO };
	for (size_t i = 0; i < a.n_copy_in; i++) {
		r = files_copy_in(vm, a.copy_in_host[i], a.copy_in_guest[i], &fo, &err);
		if (r < 0) {
			/* A --copy-in that cannot be done is a bad argument of run. */
			if (err.kind == AVM_ERR_ERRNO)
				avm_error_kind(&err, AVM_ERR_USAGE, r);
			avm_error_wrap(&err, "--copy-in %s:%s", a.copy_in_host[i],
				       a.copy_in_guest[i]);
			vm_destroy(vm);
			vm_spec_free(a.spec);
			return cli_fail(&err);
		}
	}

	struct vm_exec_request req = {
		.argv = a.spec->argv,
		.env = a.spec->env,
		.cwd = a.spec->workdir,
		.timeout_s = a.spec->timeout_s,
		.stdin_fd = STDIN_FILENO,
		.stdout_fd = STDOUT_FILENO,
		.stderr_fd = STDERR_FILENO,
		.sig_fd = sig_fd,
	};
	struct vm_exec_result res;
	uint64_t boot_ms = vm_boot_ms(vm);
	r = vm_exec(vm, &req, &res, &err);
	if (r < 0) {
		vm_exec_failed(r, &res, &err);
		code = cli_fail(&err);
	} else {
		code = cli_exit_code_of(&res, a.spec->argv[0], a.spec->timeout_s);
	}
	/*
	 * Outputs come out whatever the command did (a failed or timed-out run's files are what
	 * people debug with); only a lost VM or a second Ctrl-C skips them. The exit code stays
	 * the command's, except that a command that succeeded but whose outputs could not be
	 * copied is not reported as a success.
	 */
	for (size_t i = 0; r >= 0 && i < a.n_copy_out; i++) {
		int c = files_copy_out(vm, a.copy_out_guest[i], a.copy_out_host[i], &fo, &err);
		if (c < 0) {
			cli_error("--copy-out %s:%s: %s", a.copy_out_guest[i], a.copy_out_host[i],
				  err.msg);
			if (code == 0)
				code = 1;
			if (c == -EINTR)
				break;
		}
	}
	uint64_t t_exec = now_us();
	vm_destroy(vm); /* a pooled VM: only our connection; closing the lease removes it */
	if (trace)
		fprintf(stderr,
			"agentvm: trace: launch+boot to READY %llu ms, exec %llu us (in guest %llu us), teardown %llu us\n",
			(unsigned long long)boot_ms, (unsigned long long)res.round_trip_us, (unsigned long long)res.info.duration_us,
			(unsigned long long)(now_us() - t_exec));
	vm_spec_free(a.spec);
	return code;
}
