/* SPDX-License-Identifier: MIT */
/*
 * The agent's built-in file copy commands, run for `agentvm cp` as an EXEC with the BUILTIN
 * tag: the spawned child re-executes PID 1's own binary (/proc/self/exe) with argv[0] naming
 * the builtin, so a copy is an ordinary process with its own memory, killed, timed out and
 * flow-controlled (stdin queue, stdout pipe) like any command, and it needs no tar in the
 * guest's userland.
 *
 *   tar-out SRC NAME   write SRC (file, directory tree or symlink, never followed) as a tar
 *                      stream to stdout, its top entry named NAME
 *   tar-in DEST NAME   read a tar stream from stdin whose entries all sit under NAME: into
 *                      DEST/NAME when DEST is a directory, else as DEST itself (docker cp)
 *   tar-in DIR -       read any tar stream from stdin into the existing directory DIR
 */
#ifndef AGENTVM_INIT_TARCMD_H
#define AGENTVM_INIT_TARCMD_H

#include <stdbool.h>

#define TARCMD_OUT "tar-out"
#define TARCMD_IN "tar-in"

/* true when argv[0] names a builtin (and this is not PID 1). */
bool tarcmd_is_builtin(const char *argv0);
/* The builtin's main; returns its exit status (0 ok, 1 failed: one line on stderr). */
int tarcmd_main(int argc, char **argv);

#endif
