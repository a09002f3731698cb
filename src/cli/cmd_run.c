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
#include "host.h"
#include "spec.h"
#include "util.h"
#include "vm.h"

#define DEFAULT_BOOT_TIMEOUT_S 60

static void run_usage(FILE *f)
{
	fprintf(f,
		"usage: agentvm run [OPTIONS] -- CMD [ARG]...\n"
		"\n"
		"Boot a fresh microVM, run CMD in it with stdin/stdout/stderr attached, and exit with\n"
		"CMD's exit code (128+N if it died of signal N, 124 on --timeout).\n"
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
		"  --accel kvm|tcg      accelerator; default: kvm if /dev/kvm opens, else tcg with a\n"
		"                       warning\n"
		"  --name NAME          name of the VM (state dir); default: generated\n"
		"  --boot-timeout S     give up if the guest is not ready after S seconds (default %d)\n"
		"  --keep-state         keep the state dir (console.log, qemu.log) for debugging\n",
		DEFAULT_BOOT_TIMEOUT_S);
}

enum {
	OPT_CPUS = 1000,
	OPT_MEMORY,
	OPT_PROFILE,
	OPT_TIMEOUT,
	OPT_KERNEL,
	OPT_INITRD,
	OPT_ACCEL,
	OPT_NAME,
	OPT_BOOT_TIMEOUT,
	OPT_KEEP_STATE,
};

static const struct option run_opts[] = {
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "memory", required_argument, NULL, OPT_MEMORY },
	{ "profile", required_argument, NULL, OPT_PROFILE },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "env", required_argument, NULL, 'e' },
	{ "workdir", required_argument, NULL, 'w' },
	{ "kernel", required_argument, NULL, OPT_KERNEL },
	{ "initrd", required_argument, NULL, OPT_INITRD },
	{ "accel", required_argument, NULL, OPT_ACCEL },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "boot-timeout", required_argument, NULL, OPT_BOOT_TIMEOUT },
	{ "keep-state", no_argument, NULL, OPT_KEEP_STATE },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct run_args {
	struct vm_spec *spec;
	long boot_timeout_s;
	bool keep_state;
};

/*
 * Flags -> spec. The profile is applied first whatever the order of flags, so --cpus and
 * --memory always override it.
 */
static int parse_run_args(int argc, char **argv, struct run_args *a, struct avm_error *err)
{
	const char *profile = NULL, *cpus = NULL, *memory = NULL;
	int c, r = 0;

	a->boot_timeout_s = DEFAULT_BOOT_TIMEOUT_S;
	optind = 1;
	opterr = 0;
	/* '+': stop at the first non-option, so CMD's own flags are never ours. */
	while (r == 0 && (c = getopt_long(argc, argv, "+e:w:h", run_opts, NULL)) != -1) {
		switch (c) {
		case OPT_PROFILE:
			profile = optarg;
			break;
		case OPT_CPUS:
			cpus = optarg;
			break;
		case OPT_MEMORY:
			memory = optarg;
			break;
		case OPT_TIMEOUT:
			r = vm_spec_set_timeout(a->spec, optarg, err);
			break;
		case 'e':
			r = vm_spec_add_env(a->spec, optarg, err);
			break;
		case 'w':
			r = vm_spec_set_workdir(a->spec, optarg, err);
			break;
		case OPT_KERNEL:
			r = vm_spec_set_path(&a->spec->kernel, "--kernel", optarg, err);
			break;
		case OPT_INITRD:
			r = vm_spec_set_path(&a->spec->initrd, "--initrd", optarg, err);
			break;
		case OPT_ACCEL:
			r = vm_spec_set_accel(a->spec, optarg, err);
			break;
		case OPT_NAME:
			r = vm_spec_set_path(&a->spec->name, "--name", optarg, err);
			break;
		case OPT_BOOT_TIMEOUT:
			if (parse_long(optarg, 1, 3600, &a->boot_timeout_s) < 0)
				r = avm_error_set(err, -EINVAL,
						  "--boot-timeout '%s' is not a number of seconds from "
						  "1 to 3600",
						  optarg);
			break;
		case OPT_KEEP_STATE:
			a->keep_state = true;
			break;
		case 'h':
			return 1;
		case ':':
			return avm_error_set(err, -EINVAL, "option '%s' needs a value",
					     argv[optind - 1]);
		default:
			return avm_error_set(err, -EINVAL,
					     "unknown option '%s'; see 'agentvm run --help'",
					     argv[optind - 1]);
		}
	}
	if (r < 0)
		return r;
	if (profile && (r = vm_spec_set_profile(a->spec, profile, err)) < 0)
		return r;
	if (cpus && (r = vm_spec_set_cpus(a->spec, cpus, err)) < 0)
		return r;
	if (memory && (r = vm_spec_set_memory(a->spec, memory, err)) < 0)
		return r;
	r = vm_spec_set_command(a->spec, argv + optind, (size_t)(argc - optind), err);
	if (r < 0)
		return r;
	return vm_spec_validate(a->spec, true, err);
}

/* Every input file must exist before QEMU is asked to use it: a clear error beats QEMU's. */
static int resolve_paths(struct vm_spec *spec, char **qemu, char **kernel, char **initrd,
			 struct avm_error *err)
{
	_cleanup_free_ char *images = NULL;
	int r = host_find_qemu(qemu, err);

	if (r < 0)
		return r;
	if (!spec->kernel || !spec->initrd) {
		r = host_find_images(&images, err);
		if (r < 0)
			return r;
	}
	if (asprintf(kernel, "%s", spec->kernel ? spec->kernel : "") < 0 ||
	    asprintf(initrd, "%s", spec->initrd ? spec->initrd : "") < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	if (!spec->kernel) {
		free(*kernel);
		if (asprintf(kernel, "%s/vmlinux", images) < 0)
			return avm_error_set(err, -ENOMEM, "out of memory");
	}
	if (!spec->initrd) {
		free(*initrd);
		if (asprintf(initrd, "%s/initramfs.cpio", images) < 0)
			return avm_error_set(err, -ENOMEM, "out of memory");
	}
	if (access(*kernel, R_OK) < 0)
		return avm_error_setx(err, -errno,
				      "guest kernel %s is not readable (build it with 'make images' "
				      "or pass --kernel PATH)",
				      *kernel);
	if (access(*initrd, R_OK) < 0)
		return avm_error_setx(err, -errno,
				      "guest initramfs %s is not readable (build it with 'make "
				      "images' or pass --initrd PATH)",
				      *initrd);
	return 0;
}

static int exit_code_of(const struct vm_exec_result *res, const char *cmd, unsigned timeout_s)
{
	const struct avm_exit_info *x = &res->info;

	if (res->timed_out) {
		cli_error("'%s' timed out after %u s and was killed", cmd, timeout_s);
		return EXIT_TIMEOUT;
	}
	switch (x->kind) {
	case AVM_EXIT_CODE:
		return x->code & 0xff;
	case AVM_EXIT_SIGNAL:
		return 128 + (x->code & 0x7f);
	case AVM_EXIT_START_FAILED:
		if (x->code == ENOENT) {
			cli_error("%s: command not found in the guest", cmd);
			return EXIT_NOT_FOUND;
		}
		cli_error("%s: cannot run in the guest: %s", cmd, strerror(x->code));
		return EXIT_CANNOT_EXEC;
	default:
		cli_error("the guest reported an unknown exit kind %u", x->kind);
		return EXIT_VM_LOST;
	}
}

static int setup_signals(void)
{
	sigset_t set;

	/* Ctrl-C and friends are forwarded to the command in the guest, not acted on here. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	/* A non-interactive shell starts background jobs with SIGINT ignored, and an ignored signal
	 * is discarded even while blocked: restore the default so the signalfd sees it. */
	signal(SIGINT, SIG_DFL);
	signal(SIGQUIT, SIG_DFL);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int boot_error_exit(int r)
{
	if (r == -EINTR)
		return EXIT_INTERRUPTED;
	if (r == -ENOENT || r == -EACCES || r == -EPERM || r == -ENODEV)
		return EXIT_HOST_MISSING;
	return EXIT_BOOT_FAILED;
}

int cmd_run(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct run_args a = { .spec = vm_spec_new() };
	_cleanup_free_ char *qemu = NULL, *kernel = NULL, *initrd = NULL;
	_cleanup_close_ int sig_fd = -1;
	struct vm *vm = NULL;
	enum vm_accel accel;
	bool fell_back;
	int r, code;
	/* AGENTVM_TRACE=1: one line of phase timings on stderr, for benchmarks and debugging. */
	bool trace = getenv("AGENTVM_TRACE") && *getenv("AGENTVM_TRACE") == '1';

	if (!a.spec) {
		cli_error("out of memory");
		return EXIT_INTERNAL;
	}
	r = parse_run_args(argc, argv, &a, &err);
	if (r != 0) {
		vm_spec_free(a.spec);
		if (r > 0) {
			run_usage(stdout);
			return 0;
		}
		cli_error("%s", err.msg);
		return EXIT_USAGE;
	}
	r = host_resolve_accel(a.spec->accel, &accel, &fell_back, &err);
	if (r == 0)
		r = resolve_paths(a.spec, &qemu, &kernel, &initrd, &err);
	if (r < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(a.spec);
		return EXIT_HOST_MISSING;
	}
	if (fell_back)
		cli_warn("/dev/kvm is not available, using TCG software emulation (much slower); "
			 "pass --accel tcg to silence this");
	sig_fd = setup_signals();
	if (sig_fd < 0) {
		cli_error("cannot set up signal handling: %s", strerror(-sig_fd));
		vm_spec_free(a.spec);
		return EXIT_INTERNAL;
	}

	struct vm_launch_opts lo = {
		.spec = a.spec,
		.kernel = kernel,
		.initrd = initrd,
		.qemu = qemu,
		.accel = accel,
		.keep_state = a.keep_state,
	};
	r = vm_launch(&lo, &vm, &err);
	if (r == 0)
		r = vm_wait_ready(vm, (int)a.boot_timeout_s * 1000, sig_fd, &err);
	if (r < 0) {
		cli_error("%s", err.msg);
		vm_destroy(vm);
		vm_spec_free(a.spec);
		return boot_error_exit(r);
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
		cli_error("%s", err.msg);
		code = r == -EINTR ? EXIT_INTERRUPTED : EXIT_VM_LOST;
	} else {
		code = exit_code_of(&res, a.spec->argv[0], a.spec->timeout_s);
	}
	uint64_t t_exec = now_us();
	vm_destroy(vm);
	if (trace)
		fprintf(stderr,
			"agentvm: trace: launch+boot to READY %llu ms, exec %llu us (in guest %llu us), teardown %llu us\n",
			(unsigned long long)boot_ms, (unsigned long long)res.round_trip_us, (unsigned long long)res.info.duration_us,
			(unsigned long long)(now_us() - t_exec));
	vm_spec_free(a.spec);
	return code;
}
