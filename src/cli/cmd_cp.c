/* SPDX-License-Identifier: MIT */
/* agentvm cp: files and trees in and out of a running detached VM (docker cp's syntax). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vm/files.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/vm.h"
#include "control/vmctl.h"

static void cp_usage(FILE *f)
{
	fputs("usage: agentvm cp [-q] HOSTPATH NAME:GUESTPATH\n"
	      "       agentvm cp [-q] NAME:GUESTPATH HOSTPATH\n"
	      "\n"
	      "Copy a file, a directory tree or a symlink (copied as a link, never followed) into\n"
	      "or out of the running VM NAME: into the destination when it is a directory, else\n"
	      "as the destination. Modes and mtimes are kept; owners are not (root in the guest,\n"
	      "you on the host); set-uid/set-gid bits and device nodes never reach the host.\n"
	      "HOSTPATH '-': a tar stream on stdin (unpacked into the guest directory GUESTPATH)\n"
	      "or to stdout. A host path with ':' in it: write it as ./PATH.\n"
	      "\n"
	      "  -q, --quiet   no progress line (shown on a terminal only)\n",
	      f);
}

/* "NAME:/path" -> name and guest path; false for a host path. */
static bool split_vm(char *arg, char **name, char **path)
{
	char *c = strchr(arg, ':');

	if (!c || c == arg || arg[0] == '/' || arg[0] == '.' || memchr(arg, '/', (size_t)(c - arg)))
		return false;
	*c = '\0';
	*name = arg;
	*path = c + 1;
	return true;
}

int cmd_cp(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct avm_error err = { 0 };
	char *vm_name = NULL, *gpath = NULL, *dummy;
	_cleanup_close_ int sig_fd = -1;
	struct vm *vm = NULL;
	bool quiet = false, in;
	int c, r;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+qh", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			quiet = true;
			break;
		case 'h':
			cp_usage(stdout);
			return 0;
		default:
			cli_error("unknown option '%s'; see 'agentvm cp --help'", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		cli_error("cp takes a source and a destination, one of them NAME:PATH; e.g. agentvm "
			  "cp ./src myvm:/work");
		return EXIT_USAGE;
	}
	char *src = argv[optind], *dst = argv[optind + 1];
	bool src_vm = split_vm(src, &vm_name, &gpath);
	bool dst_vm = split_vm(dst, src_vm ? &dummy : &vm_name, src_vm ? &dummy : &gpath);
	if (src_vm == dst_vm) {
		cli_error(src_vm ? "cp copies between the host and a VM, not between two VMs"
				 : "cp needs one side as NAME:PATH (a VM path), e.g. agentvm cp "
				   "./src myvm:/work");
		return EXIT_USAGE;
	}
	in = dst_vm;
	if (gpath[0] != '/') {
		cli_error("the guest path '%s' must be absolute, e.g. %s:/root/%s", gpath, vm_name,
			  gpath);
		return EXIT_USAGE;
	}
	if ((r = vm_connect(vm_name, &vm, &err)) < 0)
		return cli_fail(&err);
	sig_fd = cli_block_signals();
	struct files_opts o = { .sig_fd = sig_fd, .progress = !quiet && isatty(STDERR_FILENO),
				.stdin_fd = STDIN_FILENO, .stdout_fd = STDOUT_FILENO,
				.stderr_fd = STDERR_FILENO };
	r = in ? files_copy_in(vm, src, gpath, &o, &err) : files_copy_out(vm, gpath, dst, &o, &err);
	vm_destroy(vm);
	if (r < 0) {
		/* A copy that fails is refused (1), whatever errno; an interrupt stays one. */
		if (err.kind == AVM_ERR_ERRNO)
			avm_error_kind(&err, AVM_ERR_STATE, r);
		avm_error_wrap(&err, "cp");
		return cli_fail(&err);
	}
	return 0;
}
