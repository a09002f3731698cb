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

int cmd_run(int argc, char **argv);

#endif
