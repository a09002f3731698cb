/* SPDX-License-Identifier: MIT */
/* VM options shared by run and start: flags -> spec, image/QEMU paths, signal set-up. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"
#include "vm/host.h"
#include "base/util.h"
#include "vm/vm.h"

enum {
	OPT_CPUS = 1000,
	OPT_MEMORY,
	OPT_PROFILE,
	OPT_TIMEOUT,
	OPT_KERNEL,
	OPT_INITRD,
	OPT_DISK,
	OPT_IMAGE,
	OPT_ACCEL,
	OPT_NAME,
	OPT_BOOT_TIMEOUT,
	OPT_KEEP_STATE,
	OPT_NETWORK,
	OPT_ALLOW,
	OPT_ALLOW_HOST,
	OPT_DENY_ALL_EGRESS,
	OPT_DNS,
	OPT_SHARE,
	OPT_WORKSPACE,
	OPT_COPY_IN,
	OPT_COPY_OUT,
	OPT_COLD,
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
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "image", required_argument, NULL, OPT_IMAGE },
	{ "accel", required_argument, NULL, OPT_ACCEL },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "boot-timeout", required_argument, NULL, OPT_BOOT_TIMEOUT },
	{ "keep-state", no_argument, NULL, OPT_KEEP_STATE },
	{ "cold", no_argument, NULL, OPT_COLD },
	{ "network", required_argument, NULL, OPT_NETWORK },
	{ "allow", required_argument, NULL, OPT_ALLOW },
	{ "allow-host", required_argument, NULL, OPT_ALLOW_HOST },
	{ "deny-all-egress", no_argument, NULL, OPT_DENY_ALL_EGRESS },
	{ "dns", required_argument, NULL, OPT_DNS },
	{ "share", required_argument, NULL, OPT_SHARE },
	{ "workspace", required_argument, NULL, OPT_WORKSPACE },
	{ "copy-in", required_argument, NULL, OPT_COPY_IN },
	{ "copy-out", required_argument, NULL, OPT_COPY_OUT },
	CLI_EGRESS_OPTIONS,
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};


/*
 * --copy-in HOSTPATH:GUESTPATH (split at the last ":/") and --copy-out GUESTPATH:HOSTPATH
 * (split at the first ':'). The host side of a copy-in must exist before anything boots.
 */
static int add_copy(struct vm_args *a, bool in, char *v, bool run, struct avm_error *err)
{
	const char *flag = in ? "--copy-in" : "--copy-out";
	char *split = NULL;

	if (!run)
		return avm_error_set(err, -EINVAL,
				     "%s is for run; copy to a started VM with 'agentvm cp'", flag);
	if ((in ? a->n_copy_in : a->n_copy_out) >= CLI_MAX_COPIES)
		return avm_error_set(err, -E2BIG, "too many %s values (at most %d)", flag,
				     CLI_MAX_COPIES);
	if (in) {
		for (char *p = strstr(v, ":/"); p; p = strstr(p + 1, ":/"))
			split = p;
	} else {
		split = v[0] == '/' ? strchr(v, ':') : NULL;
	}
	if (!split || split == v || !split[1])
		return avm_error_set(err, -EINVAL,
				     in ? "--copy-in '%s': use --copy-in HOSTPATH:/GUESTPATH"
					: "--copy-out '%s': use --copy-out /GUESTPATH:HOSTPATH",
				     v);
	*split = '\0';
	if (in) {
		if (access(v, F_OK) < 0)
			return avm_error_set(err, -errno, "--copy-in: cannot use '%s': %s", v,
					     strerror(errno));
		a->copy_in_host[a->n_copy_in] = v;
		a->copy_in_guest[a->n_copy_in++] = split + 1;
	} else {
		a->copy_out_guest[a->n_copy_out] = v;
		a->copy_out_host[a->n_copy_out++] = split + 1;
	}
	return 0;
}

/*
 * Flags -> spec. The profile is applied first whatever the order of flags, so --cpus and
 * --memory always override it.
 */
int cli_parse_vm_args(int argc, char **argv, struct vm_args *a, bool need_command,
		      struct avm_error *err)
{
	const char *profile = NULL, *cpus = NULL, *memory = NULL;
	int c, r = 0;

	a->boot_timeout_s = CLI_DEFAULT_BOOT_TIMEOUT_S;
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
		case OPT_DISK:
			r = vm_spec_add_disk(a->spec, optarg, err);
			break;
		case OPT_IMAGE:
			r = vm_spec_set_image(a->spec, optarg, err);
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
		case OPT_COLD:
			a->cold = true;
			break;
		case OPT_NETWORK:
			r = vm_spec_set_network(a->spec, optarg, err);
			break;
		case OPT_ALLOW:
			r = vm_spec_add_allow(a->spec, optarg, err);
			break;
		case OPT_ALLOW_HOST:
			r = vm_spec_add_host_allow(a->spec, optarg, err);
			break;
		case OPT_DENY_ALL_EGRESS:
			a->spec->deny_all_egress = true;
			break;
		case OPT_DNS:
			r = vm_spec_set_dns(a->spec, optarg, err);
			break;
		case OPT_SHARE:
			r = vm_spec_add_share(a->spec, optarg, err);
			break;
		case OPT_WORKSPACE:
			r = vm_spec_set_workspace(a->spec, optarg, err);
			break;
		case OPT_COPY_IN:
		case OPT_COPY_OUT:
			r = add_copy(a, c == OPT_COPY_IN, optarg, need_command, err);
			break;
		case CLI_OPT_ALLOW_CIDR ... CLI_OPT_BANDWIDTH:
			r = cli_egress_flag(a->spec, c, optarg, err);
			r = r > 0 ? 0 : r;
			break;
		case 'h':
			return 1;
		case ':':
			return avm_error_set(err, -EINVAL, "option '%s' needs a value",
					     argv[optind - 1]);
		default:
			return avm_error_set(err, -EINVAL,
					     "unknown option '%s'; see 'agentvm help'",
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
	if (!need_command && optind < argc)
		return avm_error_set(err, -EINVAL, "unexpected argument '%s'", argv[optind]);
	r = vm_spec_set_command(a->spec, argv + optind, (size_t)(argc - optind), err);
	if (r < 0)
		return r;
	return vm_spec_validate(a->spec, need_command, err);
}

/* Every input file must exist before QEMU is asked to use it: a clear error beats QEMU's. */
int cli_egress_flag(struct vm_spec *spec, int c, const char *arg, struct avm_error *err)
{
	int r;

	switch (c) {
	case CLI_OPT_ALLOW_CIDR:
		r = vm_spec_add_allow_cidr(spec, arg, err);
		break;
	case CLI_OPT_ALLOW_DOMAIN:
		r = vm_spec_add_allow_domain(spec, arg, err);
		break;
	case CLI_OPT_DOMAIN_TTL:
		r = vm_spec_set_domain_ttl(spec, arg, err);
		break;
	case CLI_OPT_CONN_LIMIT:
		r = vm_spec_set_conn_limit(spec, arg, err);
		break;
	case CLI_OPT_CONN_RATE:
		r = vm_spec_set_conn_rate(spec, arg, err);
		break;
	case CLI_OPT_BANDWIDTH:
		r = vm_spec_set_bandwidth(spec, arg, err);
		break;
	default:
		return 0;
	}
	return r < 0 ? r : 1;
}

int cli_net_override_flag(struct cli_net_override *o, int c, const char *arg,
			  struct avm_error *err)
{
	int r;

	if (c >= CLI_OPT_ALLOW_CIDR && c <= CLI_OPT_BANDWIDTH) {
		if (!o->spec)
			return avm_error_set(err, -ENOMEM, "out of memory");
		r = cli_egress_flag(o->spec, c, arg, err);
		if (r > 0)
			o->policy_given = true;
		return r;
	}
	if (c != 'N' && c != 'A' && c != 'H' && c != 'D' && c != 'S')
		return 0;
	if (!o->spec)
		return avm_error_set(err, -ENOMEM, "out of memory");
	r = c == 'N'   ? vm_spec_set_network(o->spec, arg, err)
	    : c == 'A' ? vm_spec_add_allow(o->spec, arg, err)
	    : c == 'H' ? vm_spec_add_host_allow(o->spec, arg, err)
	    : c == 'S' ? vm_spec_set_dns(o->spec, arg, err)
		       : (o->spec->deny_all_egress = true, 0);
	if (r < 0)
		return r;
	o->mode_given |= c == 'N';
	o->policy_given |= c != 'N';
	return 1;
}

int cli_block_signals(void)
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


int cli_exit_code_of(const struct vm_exec_result *res, const char *cmd, unsigned timeout_s)
{
	const struct avm_exit_info *x = &res->info;

	if (res->stdin_dropped)
		cli_warn("'%s' did not read its stdin; the guest dropped the unread part", cmd);
	if (res->timed_out) {
		cli_error("'%s' timed out after %u s and was killed", cmd, timeout_s);
		return EXIT_TIMEOUT;
	}
	switch (x->kind) {
	case AVM_EXIT_CODE:
		return x->code & 0xff;
	case AVM_EXIT_SIGNAL:
		return 128 + (x->code & 0x7f);
	case AVM_EXIT_OOM:
		cli_error("'%s' was killed by the guest's OOM killer (out of memory; try a larger "
			  "--memory)",
			  cmd);
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

