/* SPDX-License-Identifier: MIT */
/*
 * libagentvm's calls for programs that run containers' processes in VMs (as the containerd shim
 * does), through the installed library only: a command with env, cwd, a user and a signalfd
 * (a queued signal reaches it: 143), a start failure told from an exit 127, VM stats, a
 * namespace fd of QEMU, and the argument checks of each. Built and run by test_library.sh:
 *
 *	./runtime STATE_DIR [ACCEL]
 */
#define _GNU_SOURCE /* sigqueue, signalfd */
#include <agentvm.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static struct agentvm_ctx *ctx;
static struct agentvm_error *err;

#define CHECK(call)                                                                        \
	do {                                                                               \
		if ((call) < 0) {                                                          \
			fprintf(stderr, "runtime: %s: %s\n", #call,                        \
				agentvm_error_message(err));                               \
			return 1;                                                          \
		}                                                                          \
	} while (0)
#define EXPECT(cond, ...)                                                                  \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "runtime: " __VA_ARGS__);                          \
			return 1;                                                          \
		}                                                                          \
	} while (0)

/* Run cmd in vm with its stdout into out; *status. */
static int run(const char *vm, struct agentvm_cmd *cmd, char *out, size_t len, int *status)
{
	int p[2];

	if (pipe(p) < 0)
		return -1;
	agentvm_cmd_set_stdio(cmd, -1, p[1], STDERR_FILENO);
	int r = agentvm_cmd_run(ctx, vm, cmd, status, err);
	close(p[1]);
	ssize_t n = read(p[0], out, len - 1);
	close(p[0]);
	out[n > 0 ? n : 0] = '\0';
	return r;
}

static int runtime(const char *state_dir, const char *accel)
{
	struct agentvm_spec *spec = NULL;
	struct agentvm_cmd *cmd = NULL;
	char vm[64], out[256], *dir = NULL;
	int status = -1, fd = -1;

	CHECK(agentvm_ctx_new(&ctx, err));
	CHECK(agentvm_ctx_set_state_dir(ctx, state_dir, err));
	CHECK(agentvm_ctx_get_state_dir(ctx, &dir, err));
	EXPECT(!strcmp(dir, state_dir), "state dir '%s', not '%s'\n", dir, state_dir);
	free(dir);
	EXPECT(agentvm_ctx_set_netns(ctx, "relative", err) < 0 &&
		       agentvm_error_kind(err) == AGENTVM_ERR_USAGE,
	       "a relative netns path was taken\n");

	CHECK(agentvm_spec_new(&spec, err));
	EXPECT(agentvm_spec_add_root_share(spec, "/no/such/dir:/mnt/x", err) < 0 &&
		       agentvm_error_kind(err) == AGENTVM_ERR_USAGE,
	       "a share of a missing directory was taken\n");
	EXPECT(agentvm_spec_add_allow_cidr(spec, "10.0.0.0/33", err) < 0,
	       "a bad CIDR was taken\n");
	CHECK(agentvm_spec_set_name(spec, "runtime", err));
	CHECK(agentvm_spec_set_accel(spec, accel, err));
	CHECK(agentvm_spec_set_network(spec, "isolated", err));
	CHECK(agentvm_start(ctx, spec, vm, sizeof(vm), err));
	agentvm_spec_free(spec);

	/* env, cwd and a user; stdout through a pipe. */
	const char *const id[] = { "sh", "-c", "echo $(id -u):$(id -g) $PWD $GREETING", NULL };
	CHECK(agentvm_cmd_new(&cmd, id, err));
	CHECK(agentvm_cmd_add_env(cmd, "GREETING=hi", err));
	EXPECT(agentvm_cmd_add_env(cmd, "=x", err) < 0, "env '=x' was taken\n");
	CHECK(agentvm_cmd_set_cwd(cmd, "/tmp", err));
	EXPECT(agentvm_cmd_set_root(cmd, "rel", err) < 0, "a relative root was taken\n");
	agentvm_cmd_set_user(cmd, 1000, 1001);
	CHECK(agentvm_cmd_check(cmd, err));
	CHECK(run(vm, cmd, out, sizeof(out), &status));
	EXPECT(!strcmp(out, "1000:1001 /tmp hi\n") && status == 0, "cmd said '%s' (%d)\n", out,
	       status);
	agentvm_cmd_free(cmd);
	printf("runtime: cmd with env, cwd and user: %.*s\n", (int)strcspn(out, "\n"), out);

	/* A command that is not there, and one that exits 127 itself. */
	const char *const missing[] = { "/no/such/cmd", NULL }, *const e127[] = { "sh", "-c",
										 "exit 127", NULL };
	CHECK(agentvm_cmd_new(&cmd, missing, err));
	CHECK(run(vm, cmd, out, sizeof(out), &status));
	EXPECT(status == 127 && agentvm_cmd_start_error(cmd) == ENOENT,
	       "missing command: status %d, start error %d\n", status,
	       agentvm_cmd_start_error(cmd));
	agentvm_cmd_free(cmd);
	CHECK(agentvm_cmd_new(&cmd, e127, err));
	CHECK(run(vm, cmd, out, sizeof(out), &status));
	EXPECT(status == 127 && agentvm_cmd_start_error(cmd) == 0,
	       "exit 127: status %d, start error %d\n", status, agentvm_cmd_start_error(cmd));
	agentvm_cmd_free(cmd);

	/* A signal queued on the command's signalfd (SIGRTMIN, value 15) ends it: 128 + 15. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int up[2];
	if (pipe(up) < 0)
		return 1;
	pid_t child = fork();
	if (child == 0) {
		const char *const sleeper[] = { "sh", "-c", "echo up; exec sleep 60", NULL };
		int sfd = signalfd(-1, &set, SFD_CLOEXEC);
		close(up[0]);
		if (sfd < 0 || agentvm_cmd_new(&cmd, sleeper, err) < 0)
			_exit(200);
		agentvm_cmd_set_signal_fd(cmd, sfd);
		agentvm_cmd_set_stdio(cmd, -1, up[1], STDERR_FILENO);
		_exit(agentvm_cmd_run(ctx, vm, cmd, &status, err) < 0 ? 201 : status);
	}
	close(up[1]);
	/* Once it runs (its first line), the signal. */
	ssize_t got = read(up[0], out, sizeof(out) - 1);
	close(up[0]);
	EXPECT(got == 3 && !strncmp(out, "up\n", 3), "the sleeper said %zd bytes\n", got);
	union sigval v = { .sival_int = SIGTERM };
	EXPECT(sigqueue(child, SIGRTMIN, v) == 0, "sigqueue: %s\n", strerror(errno));
	int ws;
	waitpid(child, &ws, 0);
	EXPECT(WIFEXITED(ws) && WEXITSTATUS(ws) == 143, "the signalled command: wait status %#x\n",
	       ws);
	printf("runtime: a queued SIGTERM ended the command: 143\n");

	/* Stats: the whole struct, and a smaller (older) one filled only as far as its size. */
	struct agentvm_stats st = { .size = sizeof(st) };
	CHECK(agentvm_stats(ctx, vm, &st, err));
	EXPECT(st.live && st.cpu_ns > 0 && st.rss_bytes > 0 && st.have_guest &&
		       st.guest_mem_total > 0 && !st.have_net && st.execs >= 1,
	       "stats: live %d cpu %llu rss %llu guest %d/%llu net %d execs %llu\n", st.live,
	       (unsigned long long)st.cpu_ns, (unsigned long long)st.rss_bytes, st.have_guest,
	       (unsigned long long)st.guest_mem_total, st.have_net, (unsigned long long)st.execs);
	struct agentvm_stats small;
	memset(&small, 0xee, sizeof(small));
	small.size = offsetof(struct agentvm_stats, rss_bytes);
	CHECK(agentvm_stats(ctx, vm, &small, err));
	EXPECT(small.live && small.cpu_ns > 0 && small.rss_bytes == 0xeeeeeeeeeeeeeeeeull,
	       "a smaller stats struct was not filled to its size only\n");
	small.size = 1;
	EXPECT(agentvm_stats(ctx, vm, &small, err) < 0, "a 1-byte stats struct was taken\n");

	/* QEMU's mount namespace (not ours: QEMU is jailed); a bad type refused. */
	CHECK(agentvm_open_ns(ctx, vm, "mnt", &fd, err));
	EXPECT(fd >= 0, "no fd\n");
	close(fd);
	EXPECT(agentvm_open_ns(ctx, vm, "../mnt", &fd, err) < 0 && fd == -1,
	       "a bad namespace type was taken\n");
	EXPECT(agentvm_open_ns(ctx, "no-such-vm", "mnt", &fd, err) < 0 &&
		       agentvm_error_kind(err) == AGENTVM_ERR_USAGE,
	       "a missing VM's namespace did not fail as documented\n");
	printf("runtime: stats cpu %.2f s, guest memory %llu MiB; QEMU's mount namespace opened\n",
	       (double)st.cpu_ns / 1e9, (unsigned long long)(st.guest_mem_total >> 20));

	CHECK(agentvm_rm(ctx, vm, true, err));
	printf("runtime: ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: runtime STATE_DIR [ACCEL]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	err = agentvm_error_new();
	if (!err)
		return 1;
	int rc = runtime(argv[1], argc > 2 ? argv[2] : "auto");
	agentvm_error_free(err);
	agentvm_ctx_free(ctx);
	return rc;
}
