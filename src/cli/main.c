/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vm/host.h"
#include "state/statedir.h"
#include "obs/audit.h"

#define AGENTVM_VERSION "0.1.0"

static void usage(FILE *f)
{
	fputs("usage: agentvm VERB [OPTIONS] ...\n"
	      "\n"
	      "verbs:\n"
	      "  run [OPTIONS] -- CMD [ARG]...   boot a fresh microVM, run CMD in it, tear it down\n"
	      "  start [--name NAME] [OPTIONS]   start a detached VM; prints its name when ready\n"
	      "  exec NAME [OPTS] -- CMD...      run CMD in a detached VM\n"
	      "  cp SRC NAME:DST | cp NAME:SRC DST  copy files/trees in or out of a running VM\n"
	      "  ls [--json]                     list VMs and their state\n"
	      "  inspect NAME                    JSON: spec, state, pids, files, uptime, accel\n"
	      "  pause NAME | resume NAME        stop / continue the vCPUs (QMP)\n"
	      "  stop NAME [--grace S]           agent power-off, then ACPI, then kill\n"
	      "  kill NAME                       kill QEMU at once\n"
	      "  rm [--force] NAME               remove a stopped VM (--force: kill it first)\n"
	      "  wait NAME [--state S] [--timeout S]  wait for running|paused|stopped\n"
	      "  logs NAME [--follow]            the guest console\n"
	      "  gc                              remove VMs whose processes are gone (and long-unused\n"
	      "                                  boot templates)\n"
	      "  cache ls [--json] | cache rm KEY|--all  the boot templates run and start restore\n"
	      "  stats [NAME] [--json] [--follow]  CPU, memory, network, disk, uptime, execs\n"
	      "  metrics [--listen ADDR:PORT]    Prometheus metrics, printed once or served\n"
	      "  net ls [--json]                 taps, addresses, egress policies, counters\n"
	      "  net gc                          remove taps, rules, leases of VMs that are gone\n"
	      "  qmp NAME CMD ['{ARGS}']         any QMP command; prints the reply JSON\n"
	      "  qmp NAME --shell                one QMP command per line, events as they come\n"
	      "  events NAME [--follow] [--json] the VM's QMP events, past and live\n"
	      "  snapshot save VM SNAP [--description T]  snapshot a running VM (RAM + devices)\n"
	      "  snapshot ls [--json] | snapshot rm SNAP  list / remove snapshots\n"
	      "  restore SNAP [--name N] [--count N]      new VM(s) from a snapshot\n"
	      "  reset NAME                      back to the snapshot the VM came from\n"
	      "  serve --pool SNAP --pool-min N --pool-max M [--pool-ttl S] [--metrics-listen A:P]\n"
	      "                                  warm pool daemon (and /metrics endpoint)\n"
	      "  pool acquire [--timeout S] | release NAME | status [--json]\n"
	      "  image build NAME [--from RECIPE] [--packages P,..] [--npm PKG,..] [--file SRC:DST]\n"
	      "        [--run CMD] [--ca-cert FILE] [--size SIZE]  build a root image (Debian + npm)\n"
	      "  image import NAME SOURCE        an OCI image (layout dir, archive, docker save, ref)\n"
	      "  image ls [--json] | inspect [--verify] NAME | rm [--force] NAME  the image store\n"
	      "  audit [--vm NAME] [--since T] [--follow] [--json]  the audit log\n"
	      "  version                         print the version\n"
	      "  help                            this text\n"
	      "\n"
	      "'agentvm VERB --help' shows a verb's options.\n",
	      f);
}

/*
 * What was printed must have reached stdout: `agentvm ls > /dev/full` is a failure, not exit 0.
 * A reader that went away (EPIPE: `| head -1`) is not worth a message, like a shell pipeline.
 */
static int finish_stdout(int code)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return code;
	if (errno != EPIPE)
		cli_error("cannot write to standard output: %s", strerror(errno));
	return code ? code : 1;
}

/* The library's warnings, progress and daemon log, as they come: the CLI's stderr. */
static void cli_log(void *userdata, const char *text)
{
	fputs(text, stderr);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/*
 * Verbs that launch a VM grow the heap by a few MB (json-c, libnftables, the QMP client): one
 * page fault per fresh page, ~20 us each on a paravirtualised host like this one (measured:
 * ~550 of a `run`'s faults). One MADV_POPULATE_WRITE maps 2 MB up front at ~2 us a page, and a
 * high trim threshold keeps it mapped after frees. Best effort: older kernels just fault.
 */
static void prefault_heap(void)
{
	const size_t pad = 2u << 20;
	char *p, *end;

	mallopt(M_TRIM_THRESHOLD, 32 << 20);
	mallopt(M_TOP_PAD, (int)pad);
	p = malloc(64); /* the next sbrk now brings the pad */
	end = sbrk(0);
	if (p && end != (void *)-1) {
		uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
		if ((uintptr_t)end > a)
			(void)madvise((void *)a, (uintptr_t)end - a, MADV_POPULATE_WRITE);
	}
	free(p);
}

int main(int argc, char **argv)
{
	avm_log_set(cli_log, NULL);
	/* A peer that went away is an error to handle where it happens (EPIPE), not a silent death:
	 * `pool acquire` against a full serve died of SIGPIPE with no word. */
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *verb = argv[1];
	static const char *const launching[] = { "run", "start", "restore", "reset", "serve" };
	for (size_t i = 0; i < sizeof(launching) / sizeof(launching[0]); i++)
		if (!strcmp(verb, launching[i]))
			prefault_heap();
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} verbs[] = {
		{ "run", cmd_run },	    { "start", cmd_start },   { "exec", cmd_exec },
		{ "ls", cmd_ls },	    { "inspect", cmd_inspect }, { "pause", cmd_pause },
		{ "resume", cmd_resume }, { "stop", cmd_stop },     { "kill", cmd_kill },
		{ "rm", cmd_rm },	    { "wait", cmd_wait },     { "logs", cmd_logs },
		{ "gc", cmd_gc },	    { "qmp", cmd_qmp },	      { "events", cmd_events },
		{ "snapshot", cmd_snapshot }, { "restore", cmd_restore }, { "reset", cmd_reset },
		{ "serve", cmd_serve },   { "pool", cmd_pool },
		{ "audit", cmd_audit },
		{ "net", cmd_net },	    { "image", cmd_image },   { "cp", cmd_cp },
		{ "stats", cmd_stats },	    { "metrics", cmd_metrics },
		{ "cache", cmd_cache },
	};
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(verb, verbs[i].name) != 0)
			continue;
		struct avm_error err = { 0 };
		if (statedir_check_all_trust(&err) < 0 || audit_check_trust(&err) < 0) {
			cli_error("%s", err.msg);
			return EXIT_HOST_MISSING;
		}
		return finish_stdout(verbs[i].fn(argc - 1, argv + 1));
	}
	if (!strcmp(verb, "version") || !strcmp(verb, "--version")) {
		printf("agentvm %s\n", AGENTVM_VERSION);
		return finish_stdout(0);
	}
	if (!strcmp(verb, "help") || !strcmp(verb, "--help") || !strcmp(verb, "-h")) {
		usage(stdout);
		return finish_stdout(0);
	}
	cli_error("unknown verb '%s'; see 'agentvm help'", verb);
	return EXIT_USAGE;
}
