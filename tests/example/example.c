/* SPDX-License-Identifier: MIT */
/*
 * libagentvm in one page: start a VM, run a command in it, snapshot it, restore a clone, check
 * the clone has the file the command wrote, and clean everything up. Built against the
 * installed library only:
 *
 *	cc example.c $(pkg-config --cflags --libs agentvm) -o example
 *	./example STATE_DIR SNAPSHOT_DIR [ACCEL]
 *
 * tests/integration/test_library.sh builds and runs it. Exit 0 when everything checked out.
 */
#include <agentvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct agentvm_ctx *ctx;
static struct agentvm_error *err;

#define CHECK(call)                                                                        \
	do {                                                                               \
		if ((call) < 0) {                                                          \
			fprintf(stderr, "example: %s: %s (errno %d, kind %d)\n", #call,    \
				agentvm_error_message(err), -agentvm_error_code(err),      \
				(int)agentvm_error_kind(err));                             \
			return 1;                                                          \
		}                                                                          \
	} while (0)

static void log_line(void *userdata, const char *text)
{
	(void)userdata;
	fprintf(stderr, "example: library says: %s", text);
}

/* Run argv in VM `name`; its stdout into out (through a pipe: small outputs only). */
static int run_in(const char *name, const char *const *argv, char *out, size_t len, int *status)
{
	int p[2];

	if (pipe(p) < 0)
		return -1;
	int r = agentvm_exec(ctx, name, argv, NULL, NULL, 60, -1, p[1], STDERR_FILENO, status, err);
	close(p[1]);
	ssize_t n = read(p[0], out, len - 1);
	close(p[0]);
	out[n > 0 ? n : 0] = '\0';
	return r;
}

static int example(const char *state_dir, const char *snap_dir, const char *accel)
{
	struct agentvm_spec *spec = NULL;
	char vm[64], clone[64], out[256];
	char **snaps = NULL;
	int status = -1, found = 0;

	CHECK(agentvm_ctx_new(&ctx, err));
	CHECK(agentvm_ctx_set_state_dir(ctx, state_dir, err));
	CHECK(agentvm_ctx_set_snapshot_dir(ctx, snap_dir, err));

	CHECK(agentvm_spec_new(&spec, err));
	CHECK(agentvm_spec_set_name(spec, "example", err));
	CHECK(agentvm_spec_set_accel(spec, accel, err));
	CHECK(agentvm_spec_set_network(spec, "isolated", err));
	CHECK(agentvm_start(ctx, spec, vm, sizeof(vm), err));
	agentvm_spec_free(spec);
	printf("example: started %s\n", vm);

	const char *const hello[] = { "sh", "-c", "echo hello from $(uname -s); echo x >/tmp/mark; exit 3",
				      NULL };
	CHECK(run_in(vm, hello, out, sizeof(out), &status));
	if (strcmp(out, "hello from Linux\n") != 0 || status != 3) {
		fprintf(stderr, "example: exec said '%s' with status %d\n", out, status);
		return 1;
	}
	printf("example: exec printed '%.*s' and exited %d\n", (int)strcspn(out, "\n"), out, status);

	CHECK(agentvm_snapshot_save(ctx, vm, "example-snap", "made by tests/example", err));
	const char *const unmark[] = { "rm", "/tmp/mark", NULL };
	CHECK(run_in(vm, unmark, out, sizeof(out), &status));
	int n = agentvm_snapshot_list(ctx, &snaps, err);
	CHECK(n);
	for (int i = 0; i < n; i++)
		found |= !strcmp(snaps[i], "example-snap");
	agentvm_strv_free(snaps);
	if (!found) {
		fprintf(stderr, "example: the snapshot is not listed\n");
		return 1;
	}

	CHECK(agentvm_restore(ctx, "example-snap", "example-clone", clone, sizeof(clone), err));
	const char *const cat[] = { "cat", "/tmp/mark", NULL };
	CHECK(run_in(clone, cat, out, sizeof(out), &status));
	if (strcmp(out, "x\n") != 0 || status != 0) {
		fprintf(stderr, "example: the clone has '%s' (status %d), not the saved file\n", out,
			status);
		return 1;
	}
	printf("example: clone %s has the file written before the snapshot\n", clone);

	/* A bad call: -errno, a kind and a message. */
	if (agentvm_exec(ctx, "no-such-vm", cat, NULL, NULL, 0, -1, STDOUT_FILENO, STDERR_FILENO,
			 &status, err) >= 0 ||
	    agentvm_error_kind(err) != AGENTVM_ERR_USAGE || !agentvm_error_message(err)[0]) {
		fprintf(stderr, "example: exec in a missing VM did not fail as documented\n");
		return 1;
	}
	printf("example: a missing VM: %s\n", agentvm_error_message(err));

	CHECK(agentvm_rm(ctx, clone, true, err));
	CHECK(agentvm_stop(ctx, vm, 10, err));
	CHECK(agentvm_rm(ctx, vm, false, err));
	CHECK(agentvm_snapshot_rm(ctx, "example-snap", false, err));
	printf("example: ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: example STATE_DIR SNAPSHOT_DIR [ACCEL]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	agentvm_set_log(log_line, NULL);
	err = agentvm_error_new();
	if (!err)
		return 1;
	int rc = example(argv[1], argv[2], argc > 3 ? argv[3] : "auto");
	agentvm_error_free(err);
	agentvm_ctx_free(ctx);
	return rc;
}
