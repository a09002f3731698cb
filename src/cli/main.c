/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define AGENTVM_VERSION "0.1.0"

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("agentvm: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;

	fputs("agentvm: warning: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fputs("usage: agentvm VERB [OPTIONS] ...\n"
	      "\n"
	      "verbs:\n"
	      "  run [OPTIONS] -- CMD [ARG]...   boot a fresh microVM, run CMD in it, tear it down\n"
	      "  version                         print the version\n"
	      "  help                            this text\n"
	      "\n"
	      "'agentvm VERB --help' shows a verb's options.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *verb = argv[1];
	if (!strcmp(verb, "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(verb, "version") || !strcmp(verb, "--version")) {
		printf("agentvm %s\n", AGENTVM_VERSION);
		return 0;
	}
	if (!strcmp(verb, "help") || !strcmp(verb, "--help") || !strcmp(verb, "-h")) {
		usage(stdout);
		return 0;
	}
	cli_error("unknown verb '%s'; see 'agentvm help'", verb);
	return EXIT_USAGE;
}
