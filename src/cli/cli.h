/* SPDX-License-Identifier: MIT */
/* The agentvm command line: verbs, exit codes, and the words people read. */
#ifndef AGENTVM_CLI_H
#define AGENTVM_CLI_H

/*
 * Exit codes of agentvm itself. A command run in the guest passes its own code through
 * (0-255; 128+N when it died of signal N), so agentvm's own failures sit in the 12x range like
 * timeout(1), podman and docker, and each names one kind of failure.
 */
enum cli_exit {
	EXIT_HOST_MISSING = 120,  /* the host lacks something: QEMU, kernel image, /dev/kvm, rights */
	EXIT_BOOT_FAILED = 121,   /* the VM did not come up: QEMU died or the guest never got ready */
	EXIT_VM_LOST = 122,       /* the VM or its agent died or misbehaved while the command ran */
	EXIT_INTERNAL = 123,      /* anything else inside agentvm (out of memory, epoll, ...) */
	EXIT_TIMEOUT = 124,       /* --timeout expired: the command was killed */
	EXIT_USAGE = 125,         /* bad flags or arguments */
	EXIT_CANNOT_EXEC = 126,   /* the command exists in the guest but cannot be executed */
	EXIT_NOT_FOUND = 127,     /* the command does not exist in the guest */
	EXIT_INTERRUPTED = 130,   /* interrupted (Ctrl-C twice) before the command finished */
};

/* "agentvm: " + message to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#include <stdbool.h>

#include "base/error.h"
#include "spec/spec.h"
#include "control/vm_start.h"

#define CLI_DEFAULT_BOOT_TIMEOUT_S VM_BOOT_TIMEOUT_DEFAULT_S

/* Options common to run and start. */
#define CLI_MAX_COPIES 64
struct vm_args {
	struct vm_spec *spec;
	long boot_timeout_s;
	bool keep_state;
	bool cold; /* --cold: boot a kernel; no boot template is used or written */
	/* run only: --copy-in HOST:GUEST and --copy-out GUEST:HOST (pointers into argv) */
	const char *copy_in_host[CLI_MAX_COPIES], *copy_in_guest[CLI_MAX_COPIES];
	const char *copy_out_guest[CLI_MAX_COPIES], *copy_out_host[CLI_MAX_COPIES];
	size_t n_copy_in, n_copy_out;
};

/*
 * Parse VM flags into a->spec (the profile first, then sizes, whatever the order). Returns 0,
 * 1 for --help, or -errno with err filled. need_command: a CMD after the flags is required (run)
 * or refused (start).
 */
int cli_parse_vm_args(int argc, char **argv, struct vm_args *a, bool need_command,
		      struct avm_error *err);
/*
 * The network flags of restore and serve, which replace a snapshot's network: option-table
 * entries (short codes 'N', 'A', 'H', 'D', 'S') and applying one of them to `spec`.
 */
enum {
	CLI_OPT_ALLOW_CIDR = 0x4000, /* egress-by-destination flags, shared by every verb */
	CLI_OPT_ALLOW_DOMAIN,
	CLI_OPT_DOMAIN_TTL,
	CLI_OPT_CONN_LIMIT,
	CLI_OPT_CONN_RATE,
	CLI_OPT_BANDWIDTH,
};
#define CLI_EGRESS_OPTIONS                                                                         \
	{ "allow-cidr", required_argument, NULL, CLI_OPT_ALLOW_CIDR },                             \
		{ "allow-domain", required_argument, NULL, CLI_OPT_ALLOW_DOMAIN },                 \
		{ "domain-ttl", required_argument, NULL, CLI_OPT_DOMAIN_TTL },                     \
		{ "conn-limit", required_argument, NULL, CLI_OPT_CONN_LIMIT },                     \
		{ "conn-rate", required_argument, NULL, CLI_OPT_CONN_RATE },                       \
		{ "bandwidth", required_argument, NULL, CLI_OPT_BANDWIDTH }
/* Apply one of CLI_EGRESS_OPTIONS to spec: 1 applied, 0 not one of them, -errno (err filled). */
int cli_egress_flag(struct vm_spec *spec, int c, const char *arg, struct avm_error *err);
/* Usage lines of the egress flags (for --help of run, start, restore, serve, pool). */
#define CLI_EGRESS_USAGE                                                                           \
	"  --allow-cidr CIDR[:PROTO:PORT]  open a closed range (LAN, 10.x...) on the allowed ports or\n" \
	"                       on one port; repeatable\n"                                              \
	"  --allow-domain NAME  reach only the addresses these names resolve to (NAME and its\n"      \
	"                       subdomains; *.NAME: subdomains only); repeatable; needs dnsmasq\n"    \
	"  --domain-ttl S       how long a resolved address stays allowed after its last use\n"       \
	"                       (default 300)\n"                                                      \
	"  --conn-limit N       connections the VM may hold in the host's conntrack table\n"          \
	"                       (default 2048)\n"                                                     \
	"  --conn-rate N        new connections per second (default 200, burst twice that)\n"         \
	"  --bandwidth RATE[:BURST]|unlimited  limit each direction, e.g. 20mbit or 20mbit:256k\n"  \
	"                       (default from the profile: light 200mbit, standard 500mbit,\n"      \
	"                       intensive 1gbit)\n"
#define CLI_NET_OPTIONS                                                                            \
	{ "network", required_argument, NULL, 'N' }, { "allow", required_argument, NULL, 'A' },    \
		{ "allow-host", required_argument, NULL, 'H' },                                    \
		{ "deny-all-egress", no_argument, NULL, 'D' },                                     \
		{ "dns", required_argument, NULL, 'S' }, CLI_EGRESS_OPTIONS
struct cli_net_override {
	struct vm_spec *spec;
	bool mode_given;   /* --network */
	bool policy_given; /* --allow, --allow-host, --deny-all-egress, --dns, egress flags */
};
/* 1 when c was one of them (applied), 0 when not, -errno with err filled on a bad value. */
int cli_net_override_flag(struct cli_net_override *o, int c, const char *arg,
			  struct avm_error *err);

/* A library error as agentvm's exit code: the one table in exit.c (kind, then errno). */
int cli_exit_of(const struct avm_error *err);
/* Print err's message ("agentvm: ...") and return cli_exit_of(err). */
int cli_fail(const struct avm_error *err);
/* Block SIGINT/SIGTERM/SIGHUP/SIGQUIT and return a signalfd for them (-errno on failure). */
int cli_block_signals(void);


struct vm_exec_result;
/* CMD's result -> agentvm's exit code (printing a line for timeouts and start failures). */
int cli_exit_code_of(const struct vm_exec_result *res, const char *cmd, unsigned timeout_s);

int cmd_run(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_qmp(int argc, char **argv);
int cmd_net(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_reset(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_pool(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_stats(int argc, char **argv);

#endif
