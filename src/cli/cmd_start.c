/* SPDX-License-Identifier: MIT */
/* agentvm start / exec: a detached VM owned by its supervisor, and commands run in it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/vm.h"
#include "control/vm_start.h"
#include "control/vmctl.h"

int cmd_start(int argc, char **argv)
{
	struct avm_error err = { 0 };
	struct vm_args a = { .spec = vm_spec_new() };
	int r;

	if (!a.spec)
		return EXIT_INTERNAL;
	r = cli_parse_vm_args(argc, argv, &a, false, &err);
	if (r > 0) {
		puts("usage: agentvm start [--name NAME] [--profile P] [--cpus N] [--memory MIB]\n"
		     "                     [--kernel PATH] [--initrd PATH] [--accel kvm|tcg]\n"
		     "                     [--image NAME] [--disk FILE[:DIR][:ro]]...\n"
		     "                     [--boot-timeout S] [--cold] [--network nat-filtered|isolated|bridge:BR]\n"
		     "                     [--allow PROTO:PORT]... [--allow-host PROTO:PORT]...\n"
		     "                     [--deny-all-egress] [--dns ADDR]\n"
		     "                     [--share HOSTDIR:GUESTDIR[:ro]]... [--workspace DIR]\n"
		     "                     [--allow-cidr CIDR[:PROTO:PORT]]... [--allow-domain NAME]...\n"
		     "                     [--domain-ttl S] [--conn-limit N] [--conn-rate N]\n"
		     "                     [--bandwidth RATE[:BURST]]   (see agentvm run --help)\n"
		     "Start a detached VM; prints its name once the guest is ready.");
		vm_spec_free(a.spec);
		return 0;
	}
	if (r < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(a.spec);
		return EXIT_USAGE;
	}
	if (vm_start_detached(a.spec, a.boot_timeout_s, a.cold, &err) < 0) {
		vm_spec_free(a.spec);
		return cli_fail(&err);
	}
	printf("%s\n", a.spec->name);
	vm_spec_free(a.spec);
	return 0;
}

int cmd_exec(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "env", required_argument, NULL, 'e' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct avm_error err = { 0 };
	struct vm_spec *spec = vm_spec_new();
	_cleanup_close_ int sig_fd = -1;
	struct vm *vm = NULL;
	int c, r = 0, code;

	if (!spec)
		return EXIT_INTERNAL;
	/* Both `exec NAME [OPTS] -- CMD` (as documented) and `exec [OPTS] NAME -- CMD`. */
	const char *name = NULL;
	if (argc >= 2 && argv[1][0] != '-') {
		name = argv[1];
		argc--;
		argv++; /* getopt skips argv[0], which is now NAME */
	}
	optind = 1;
	opterr = 0;
	while (r == 0 && (c = getopt_long(argc, argv, "+e:w:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			r = vm_spec_set_timeout(spec, optarg, &err);
			break;
		case 'e':
			r = vm_spec_add_env(spec, optarg, &err);
			break;
		case 'w':
			r = vm_spec_set_workdir(spec, optarg, &err);
			break;
		case 'h':
			puts("usage: agentvm exec NAME [--timeout S] [--env K=V]... [--workdir D] -- CMD [ARG]...");
			vm_spec_free(spec);
			return 0;
		default:
			r = avm_error_set(&err, -EINVAL, "unknown or incomplete option '%s'",
					  argv[optind - 1]);
		}
	}
	if (r == 0 && !name && optind >= argc)
		r = avm_error_set(&err, -EINVAL, "missing VM name; usage: agentvm exec NAME -- CMD");
	if (r == 0 && !name)
		name = argv[optind++];
	if (r == 0 && optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	if (r == 0)
		r = vm_spec_set_command(spec, argv + optind, (size_t)(argc - optind), &err);
	if (r == 0)
		r = vm_spec_validate(spec, true, &err);
	if (r < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(spec);
		return EXIT_USAGE;
	}
	if (vm_connect(name, &vm, &err) < 0) {
		vm_spec_free(spec);
		return cli_fail(&err);
	}
	sig_fd = cli_block_signals();
	struct vm_exec_request req = {
		.argv = spec->argv, .env = spec->env, .cwd = spec->workdir,
		.timeout_s = spec->timeout_s, .stdin_fd = STDIN_FILENO, .stdout_fd = STDOUT_FILENO,
		.stderr_fd = STDERR_FILENO, .sig_fd = sig_fd,
	};
	struct vm_exec_result res;
	r = vm_exec(vm, &req, &res, &err);
	if (r < 0) {
		vm_exec_failed(r, &res, &err);
		code = cli_fail(&err);
	} else {
		code = cli_exit_code_of(&res, spec->argv[0], spec->timeout_s);
	}
	vm_destroy(vm);
	vm_spec_free(spec);
	return code;
}
