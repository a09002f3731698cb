/* SPDX-License-Identifier: MIT */
/*
 * agentvm snapshot save|ls|rm, restore, reset: snapshots of detached VMs and new VMs from them.
 * The logic is the library's: snapshot_save.h (save, ls, rm) and restore_vms.h (restore, reset).
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "obs/audit.h"
#include "cli.h"
#include "vm/disk.h"
#include "vm/migrate.h"
#include "pool/pool.h"
#include "qmp/qmp.h"
#include "snapshot/restore_vms.h"
#include "snapshot/snapshot_save.h"
#include "snapshot/snapshot.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"
#include "vm/vm.h"
#include "state/vmstate.h"

static int cmd_snapshot_save(int argc, char **argv)
{
	const char *desc = NULL, *pos[2];
	int n = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--description") || !strcmp(argv[i], "-d")) {
			if (++i >= argc) {
				cli_error("--description needs a value");
				return EXIT_USAGE;
			}
			desc = argv[i];
		} else if (!strncmp(argv[i], "--description=", 14)) {
			desc = argv[i] + 14;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			puts("usage: agentvm snapshot save VM SNAPSHOT [--description TEXT]");
			return 0;
		} else if (argv[i][0] == '-' || n == 2) {
			cli_error("unexpected argument '%s'; usage: agentvm snapshot save VM SNAPSHOT "
				  "[--description TEXT]",
				  argv[i]);
			return EXIT_USAGE;
		} else {
			pos[n++] = argv[i];
		}
	}
	if (n != 2) {
		cli_error("usage: agentvm snapshot save VM SNAPSHOT [--description TEXT]");
		return EXIT_USAGE;
	}
	struct avm_error err = { 0 };
	/*
	 * A Ctrl-C, SIGTERM or SIGHUP waits in sig_fd: the save is aborted cleanly (the migration
	 * cancelled, the VM resumed, the temp dir removed) instead of leaving the VM paused and a
	 * RAM-sized temp dir behind.
	 */
	_cleanup_close_ int sig_fd = cli_block_signals();
	return snap_save(pos[0], pos[1], desc, sig_fd, &err) < 0 ? cli_fail(&err) : 0;
}

static int cmd_snapshot_ls(int argc, char **argv)
{
	bool json = argc >= 2 && !strcmp(argv[1], "--json");
	struct json_object *arr = json_object_new_array();
	char **names = NULL;
	int n;

	if (argc >= 2 && !json) {
		cli_error("usage: agentvm snapshot ls [--json]");
		return EXIT_USAGE;
	}
	n = snap_list(&names);
	if (!json)
		printf("%-24s %-25s %9s %6s %5s %-16s %s\n", "NAME", "CREATED", "SIZE", "ACCEL",
		       "DISKS", "VM", "DESCRIPTION");
	for (int i = 0; i < n; i++) {
		struct snap_meta m;
		struct avm_error err = { 0 };
		char path[PATH_MAX];
		_cleanup_free_ char *text = NULL;
		int ok = snap_load(names[i], &m, &err) == 0;

		if (json) {
			struct json_object *o = NULL;
			snap_path(path, sizeof(path), names[i], SNAP_META_FILE);
			if (ok && read_file(path, &text, 1 << 20) >= 0)
				o = json_tokener_parse(text);
			if (!o) {
				o = json_object_new_object();
				json_object_object_add(o, "name", json_object_new_string(names[i]));
			}
			json_object_object_add(o, "damaged", json_object_new_boolean(!ok));
			if (!ok)
				json_object_object_add(o, "error", json_object_new_string(err.msg));
			json_object_array_add(arr, o);
		} else if (ok) {
			printf("%-24s %-25s %8.1fM %6s %5zu %-16s %s\n", names[i], m.created,
			       (double)m.state_size / (1024.0 * 1024.0), m.accel, m.n_disks,
			       m.source_vm, m.description);
		} else {
			printf("%-24s %-25s %9s %6s %5s %-16s (damaged: %s)\n", names[i], "-", "-", "-",
			       "-", "-", err.msg);
		}
		if (ok)
			snap_meta_release(&m);
	}
	strv_free(names);
	if (json)
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_SPACED |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
	return 0;
}

static int cmd_snapshot_rm(int argc, char **argv)
{
	struct avm_error err = { 0 };
	bool force = argc == 3 && !strcmp(argv[1], "--force");

	if (argc != 2 && !force) {
		cli_error("usage: agentvm snapshot rm [--force] SNAPSHOT");
		return EXIT_USAGE;
	}
	return snap_remove(argv[argc - 1], force, &err) < 0 ? cli_fail(&err) : 0;
}

int cmd_snapshot(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "save"))
		return cmd_snapshot_save(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "ls"))
		return cmd_snapshot_ls(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "rm"))
		return cmd_snapshot_rm(argc - 1, argv + 1);
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		puts("usage: agentvm snapshot save VM SNAPSHOT [--description TEXT]\n"
		     "       agentvm snapshot ls [--json]\n"
		     "       agentvm snapshot rm [--force] SNAPSHOT");
		return 0;
	}
	cli_error("usage: agentvm snapshot save|ls|rm ...; see 'agentvm snapshot --help'");
	return EXIT_USAGE;
}

/* --- restore -------------------------------------------------------------------------------- */

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "count", required_argument, NULL, 'c' },
		{ "boot-timeout", required_argument, NULL, 'b' },
		CLI_NET_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct avm_error err = { 0 };
	struct restore rs;
	struct cli_net_override no = { .spec = vm_spec_new() };
	struct vm_spec *ov = no.spec;
	const char *name = NULL;
	long count = 1, boot_timeout_s = CLI_DEFAULT_BOOT_TIMEOUT_S;
	int c, code = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
			break;
		case 'c':
			if (parse_long(optarg, 1, 256, &count) < 0) {
				cli_error("--count '%s' is not a number from 1 to 256", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (parse_long(optarg, 1, 3600, &boot_timeout_s) < 0) {
				cli_error("--boot-timeout '%s' is not a number of seconds", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'N':
		case 'A':
		case 'H':
		case 'D':
		case 'S':
		case CLI_OPT_ALLOW_CIDR ... CLI_OPT_BANDWIDTH:
			if (cli_net_override_flag(&no, c, optarg, &err) < 0) {
				cli_error("%s", err.msg);
				vm_spec_free(ov);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			puts("usage: agentvm restore SNAPSHOT [--name NAME] [--count N] "
			     "[--boot-timeout S]\n"
			     "       [--network nat-filtered|bridge:BR|isolated] [--allow PROTO:PORT]...\n"
			     "       [--allow-host PROTO:PORT]... [--deny-all-egress] [--dns ADDR]\n"
			     "       [--allow-cidr CIDR[:PROTO:PORT]]... [--allow-domain NAME]...\n"
			     "       [--domain-ttl S] [--conn-limit N] [--conn-rate N] [--bandwidth R]\n"
			     "Start new VMs from a snapshot; prints their names once they are ready.\n"
			     "With --count N and --name NAME the VMs are NAME-1 .. NAME-N.\n"
			     "A clone keeps its snapshot's network policy unless the flags say "
			     "otherwise; a NIC can be neither added nor removed.");
			vm_spec_free(ov);
			return 0;
		default:
			cli_error("unknown or incomplete option '%s'; see 'agentvm restore --help'",
				  argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		cli_error("usage: agentvm restore SNAPSHOT [--name NAME] [--count N]");
		return EXIT_USAGE;
	}
	const char *snap = argv[optind];
	char (*names)[STATEDIR_MAX_NAME + 1] = calloc((size_t)count, sizeof(*names));
	if (!names)
		return EXIT_INTERNAL;
	for (long i = 0; i < count; i++) {
		if (name && count == 1)
			snprintf(names[i], sizeof(names[i]), "%s", name);
		else if (name && snprintf(names[i], sizeof(names[i]), "%s-%ld", name, i + 1) >=
					 (int)sizeof(names[i]))
			names[i][0] = '\0';
		else if (!name)
			statedir_random_name(names[i], sizeof(names[i]));
		if (statedir_validate_name(names[i], &err) < 0) {
			cli_error("%s", err.msg);
			return EXIT_USAGE;
		}
	}
	if (restore_check_flags(snap, ov, no.mode_given, no.policy_given, &err) < 0) {
		cli_error("%s", err.msg);
		vm_spec_free(ov);
		free(names);
		return EXIT_USAGE;
	}
	if (restore_open(snap, &rs, &err) < 0) {
		vm_spec_free(ov);
		free(names);
		return cli_fail(&err);
	}
	rs.net_override = ov;
	rs.net_mode_given = no.mode_given;
	rs.policy_given = no.policy_given;
	/*
	 * A Ctrl-C (SIGTERM, SIGHUP) from here waits in sig_fd, for us and for the children: a
	 * child killed halfway would leave a supervisor that goes on to start its VM. Once every
	 * restore has ended, an interrupt removes all the VMs they started.
	 */
	_cleanup_close_ int sig_fd = cli_block_signals();
	struct avm_error *errs = calloc((size_t)count, sizeof(*errs));
	if (!errs) {
		code = EXIT_INTERNAL;
		goto out;
	}
	if (restore_vms(&rs, names, (size_t)count, boot_timeout_s, sig_fd, errs, &err) < 0) {
		/* One line per VM that failed (with its name when there were several). */
		for (long i = 0; count > 1 && i < count; i++)
			if (errs[i].code)
				cli_error("%s: %s", names[i], errs[i].msg);
		if (count == 1 || err.kind == AVM_ERR_INTERRUPTED)
			cli_error("%s", err.msg);
		code = cli_exit_of(&err);
	} else {
		for (long i = 0; i < count; i++)
			printf("%s\n", names[i]);
	}
	free(errs);
out:
	restore_release(&rs);
	vm_spec_free(ov);
	free(names);
	return code;
}

int cmd_reset(int argc, char **argv)
{
	struct avm_error err = { 0 };

	if (argc != 2 || argv[1][0] == '-') {
		if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
			puts("usage: agentvm reset NAME\nRestore the VM from the snapshot it came from.");
			return 0;
		}
		cli_error("usage: agentvm reset NAME");
		return EXIT_USAGE;
	}
	return restore_reset(argv[1], CLI_DEFAULT_BOOT_TIMEOUT_S, &err) < 0 ? cli_fail(&err) : 0;
}
