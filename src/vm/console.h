/* SPDX-License-Identifier: MIT */
/*
 * The guest console (hvc0), read by agentvm instead of written by QEMU to a file: QEMU writes to
 * a socket and the VM's owner copies into console.log, capped and rotated, so a guest that
 * floods its console (`cat /dev/zero > /dev/hvc0`) can fill neither the state dir nor memory.
 * While nobody reads the socket the guest's console writes wait (back-pressure, no loss until the
 * cap). At most CONSOLE_LOG_MAX bytes in console.log plus one rotated console.log.1.
 */
#ifndef AGENTVM_CONSOLE_H
#define AGENTVM_CONSOLE_H

#include <stdbool.h>
#include <stdint.h>

#define CONSOLE_LOG_MAX (1u << 20)
/* The guest kernel's panic line: the console is how a panic is told from a reboot. */
#define CONSOLE_PANIC_TEXT "Kernel panic - not syncing"

struct console {
	int fd;      /* our end of QEMU's console socket, non-blocking; -1: none */
	int dir_fd;  /* the state dir (O_PATH|O_DIRECTORY), for the log and its rotation */
	int log_fd;  /* console.log, O_APPEND */
	uint64_t written; /* bytes in the current console.log */
	uint64_t max;     /* CONSOLE_LOG_MAX unless AGENTVM_CONSOLE_LOG_MAX says less (tests) */
	bool panic_seen;
	int write_error;  /* the first failed write to the log (-errno; ENOSPC: state dir full) */
	char tail[32];    /* the last bytes seen, to find the panic line across reads */
	bool eof;
};

/* Take fd (our socket end) and create dir/console.log. -errno. */
int console_open(struct console *c, int fd, const char *dir);
/*
 * Copy what the guest wrote into the log (a bounded amount per call, so one flooding guest
 * cannot starve the owner's other work). 0: more may be waiting; 1: EOF (QEMU closed its end)
 * or a read error; 2: nothing left for now.
 */
int console_pump(struct console *c);
/* Read to EOF or EAGAIN (QEMU is gone), then close everything. Safe on a closed console. */
void console_close(struct console *c);

#endif
