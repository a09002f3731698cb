/* SPDX-License-Identifier: MIT */
/*
 * What the jail adds to a start: spawn /usr/bin/true N times through launch_spawn() with and
 * without a jail (jail_prepare + clone3 into new namespaces + the root + pivot_root + the user
 * + seccomp + the cgroups), interleaved, and print the medians in ms: up to the exec (what a VM
 * start waits for), and the whole cycle with the exit and the cgroups' removal (paid at stop).
 * usage: jail-cost DIR [N] (DIR: an empty directory of root's, like a state dir). Root only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jail/jail.h"
#include "jail/launcher.h"
#include "base/util.h"

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double one(const char *dir, bool jailed, double *start)
{
	char *argv[] = { "/usr/bin/true", NULL };
	struct jail j;
	struct avm_error err = { 0 };
	struct jail_opts o = { .name = "bench", .dir = dir, .cpus = 1, .memory_mib = 512,
			       .qemu = "/usr/bin/true" };
	struct launch_opts lo = { .argv = argv, .jail = jailed ? &j : NULL };
	pid_t pid;
	int pidfd;
	uint64_t t0 = now_us();

	if (jailed && jail_prepare(&j, &o, &err) < 0) {
		fprintf(stderr, "jail-cost: %s\n", err.msg);
		exit(1);
	}
	if (launch_spawn(&lo, &pid, &pidfd, &err) < 0) {
		fprintf(stderr, "jail-cost: %s\n", err.msg);
		exit(1);
	}
	*start = (double)(now_us() - t0) / 1000.0;
	waitpid(pid, NULL, 0);
	close(pidfd);
	if (jailed)
		jail_release(&j);
	return (double)(now_us() - t0) / 1000.0;
}

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 30;
	double *a = calloc((size_t)n, sizeof(double)), *b = calloc((size_t)n, sizeof(double));
	double *sa = calloc((size_t)n, sizeof(double)), *sb = calloc((size_t)n, sizeof(double));

	if (argc < 2 || !a || !b || !sa || !sb || n < 1) {
		fprintf(stderr, "usage: jail-cost DIR [N]\n");
		return 2;
	}
	for (int i = 0; i < n; i++) {
		a[i] = one(argv[1], false, &sa[i]);
		b[i] = one(argv[1], true, &sb[i]);
	}
	qsort(a, (size_t)n, sizeof(double), cmp);
	qsort(b, (size_t)n, sizeof(double), cmp);
	qsort(sa, (size_t)n, sizeof(double), cmp);
	qsort(sb, (size_t)n, sizeof(double), cmp);
	printf("spawn of /usr/bin/true to its exec, N=%d: plain %.2f ms, jailed %.2f ms, jail cost on "
	       "start %.2f ms (%.2f x); whole cycle with exit and cleanup: plain %.2f ms, jailed %.2f "
	       "ms, cost %.2f ms (medians)\n",
	       n, sa[n / 2], sb[n / 2], sb[n / 2] - sa[n / 2], sb[n / 2] / sa[n / 2], a[n / 2],
	       b[n / 2], b[n / 2] - a[n / 2]);
	return 0;
}
