/* SPDX-License-Identifier: MIT */
/*
 * Commands run for the host: one struct exec per EXEC id, from the request until its EXIT.
 *
 * Every exec, whatever happens, ends with an empty STDOUT frame, an empty STDERR frame and
 * then one EXIT frame (the EOFs may come earlier); EXIT waits until the process was reaped
 * and both output pipes reached EOF, so no output is lost. A request refused before anything
 * ran gets one ERROR frame instead.
 */
#ifndef AGENTVM_INIT_EXEC_H
#define AGENTVM_INIT_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A parsed, validated EXEC request. All strings live in one allocation, `mem`. */
struct exec_req {
	char **argv; /* argv[-1] is a spare slot for the "/bin/sh script" fallback */
	char **envp;
	const char *cwd;
	const char *root; /* chroot here first (AVM_TAG_ROOT); NULL = none */
	const char *path; /* PATH used to find argv[0] */
	uint32_t timeout_ms;
	uint32_t uid, gid;
	bool set_ids; /* uid/gid given: drop to them */
	bool stdin_pipe;
	bool builtin; /* argv[0] is an agent builtin (tarcmd.h): spawn re-executes PID 1's binary */
	void *mem;
};

/* Returns 0, or -errno with *why set to a static message. */
int exec_req_parse(const uint8_t *p, size_t len, struct exec_req *req, const char **why);
void exec_req_free(struct exec_req *req);

/*
 * Start the child (own session and process group, fds 0-2 from in/out/err, in the cgroup cg_fd
 * when >= 0). Returns its pid,
 * or -errno when it could not be started (clone failed, or chdir/setuid/execve failed in the
 * child, which is then already reaped).
 */
pid_t spawn_command(const struct exec_req *req, int in, int out, int err, int cg_fd);

/* Host requests. Each replies ERROR itself when the request is refused. */
void exec_start(uint32_t id, const uint8_t *p, size_t len);
/* Whether a command was ever started since boot (a template's clone: since its template's). */
bool exec_started(void);
void exec_stdin(uint32_t id, const uint8_t *p, size_t len);
void exec_signal(uint32_t id, const uint8_t *p, size_t len);

/* Event loop hooks (main.c registers them, loop.h); each fd has its own handler. */
void exec_reap(void);
/* Reap without sending anything: safe while a send is waiting (see exec_kill_expired()). */
void exec_reap_quiet(void);
/* ms until the next timer (timeout, grace, stalled stdin), -1 for none. */
int exec_next_timer_ms(void);
void exec_run_timers(void);
/*
 * For a send that waits on the host: ms until the next command timeout (-1 for none), and
 * exec_kill_expired() that only SIGKILLs commands whose timeout passed (no frames, no frees).
 */
int exec_next_kill_ms(void);
void exec_kill_expired(void);
/* true while some command's stdin queue is full: stop reading the port. */
bool exec_stdin_backlogged(void);
/* Free finished execs; call at the end of each loop iteration. */
void exec_gc(void);

#endif
