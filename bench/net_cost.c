/* SPDX-License-Identifier: MIT */
/*
 * What each step of a VM's network set-up and teardown costs: net_setup() + net_save() +
 * net_setup_filter() (in vm.c it runs beside QEMU's start-up) +
 * net_ready() and net_teardown() of src/net/net.c, called as vm.c calls them when QEMU has ended
 * (rm --force, a guest that stopped; no QEMU here: this process holds the tap), N rounds per
 * policy, interleaved, with the steps net.c records in vm_net.trace. Prints a markdown table of
 * medians (us) per step and policy, and how long after teardown returned the tap was gone (the
 * deferred, off-path part).
 *   plain    --network nat-filtered, default policy
 *   domains  --allow-domain good.test --allow-domain *.example.test --allow-cidr 10.77.0.0/16
 *            (its dnsmasq started and waited for)
 *   bw       --bandwidth 8mbit (the tap's tbf qdisc)
 * usage: net-cost N [DNS]  (root, in a network namespace with a default route: bench/net.sh
 * runs it in tests/integration/netns.sh's host namespace; AGENTVM_STATE_DIR a scratch dir)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/net.h"
#include "spec/spec.h"
#include "state/statedir.h"
#include "base/util.h"

#define MAX_ROUNDS 200
#define MAX_STEPS  32
#define N_POL	   3

static const char *const pol_name[N_POL] = { "plain", "domains", "bw" };

struct col {
	const char *what[MAX_STEPS];
	uint32_t us[MAX_STEPS][MAX_ROUNDS];
	uint32_t faults[MAX_STEPS][MAX_ROUNDS];
	size_t n_steps;
};

static struct col cols[N_POL];
static uint32_t totals[N_POL][3][MAX_ROUNDS]; /* set-up, teardown, tap gone after teardown */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

static uint32_t median(const uint32_t *v, size_t n)
{
	uint32_t s[MAX_ROUNDS];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_u32);
	return n ? (n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : 0;
}

static void die(const char *what, const struct avm_error *err)
{
	fprintf(stderr, "net-cost: %s: %s\n", what, err ? err->msg : "");
	exit(1);
}

static size_t slot(struct col *c, const char *what)
{
	for (size_t i = 0; i < c->n_steps; i++)
		if (!strcmp(c->what[i], what))
			return i;
	if (c->n_steps == MAX_STEPS)
		die("too many steps", NULL);
	c->what[c->n_steps] = what;
	return c->n_steps++;
}

static void one(int pol, size_t round, const char *dns)
{
	struct avm_error err = { 0 };
	struct vm_spec *spec = vm_spec_new();
	struct vm_net n;
	char name[32], tap[IFNAMSIZ];
	char *dir = NULL;
	uint64_t t0, t1, t2;

	if (!spec)
		die("out of memory", NULL);
	snprintf(name, sizeof(name), "netcost-%d-%zu", pol, round);
	spec->net_mode = VM_NET_NAT_FILTERED;
	spec->dns = strdup(dns);
	if (pol == 1 && (vm_spec_add_allow_domain(spec, "good.test", &err) < 0 ||
			 vm_spec_add_allow_domain(spec, "*.example.test", &err) < 0 ||
			 vm_spec_add_allow_cidr(spec, "10.77.0.0/16", &err) < 0))
		die("spec", &err);
	if (pol == 2)
		spec->bandwidth = strdup("8mbit");
	if (statedir_create(name, &dir, &err) < 0)
		die("state dir", &err);
	net_init(&n, name);
	t0 = now_us();
	if (net_setup(&n, spec, &err) < 0)
		die("net_setup", &err);
	uint64_t ts = now_us();
	if (net_save(&n, dir) < 0)
		die("net_save", NULL);
	uint32_t save_us = (uint32_t)(now_us() - ts);
	if (net_setup_filter(&n, &err) < 0) /* vm.c: beside QEMU's start-up */
		die("net_setup_filter", &err);
	if (net_ready(&n, &err) < 0)
		die("net_ready", &err);
	t1 = now_us();
	cols[pol].us[slot(&cols[pol], "net.json (net_save)")][round] = save_us;
	/* The path of rm --force and of a VM that ended: QEMU is gone, vm_free() tears down. */
	snprintf(tap, sizeof(tap), "%s", n.tap);
	net_teardown(&n);
	t2 = now_us();
	while (nf_link_exists(tap, NULL) > 0 && now_us() - t2 < 2000000)
		usleep(200);
	totals[pol][0][round] = (uint32_t)(t1 - t0);
	totals[pol][1][round] = (uint32_t)(t2 - t1);
	totals[pol][2][round] = (uint32_t)(now_us() - t2);
	for (size_t i = 0; i < n.n_trace; i++) {
		size_t k = slot(&cols[pol], n.trace[i].what);
		cols[pol].us[k][round] = n.trace[i].us;
		cols[pol].faults[k][round] = n.trace[i].faults;
	}
	statedir_remove(dir);
	free(dir);
	vm_spec_free(spec);
}

int main(int argc, char **argv)
{
	size_t rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 10;
	const char *dns = argc > 2 ? argv[2] : "11.0.113.10";

	if (rounds < 1 || rounds > MAX_ROUNDS)
		die("N must be 1..200", NULL);
	for (int pol = 0; pol < N_POL; pol++)
		one(pol, 0, dns); /* warm-up, overwritten */
	for (size_t r = 0; r < rounds; r++)
		for (int k = 0; k < N_POL; k++)
			one((int)((k + r) % N_POL), r, dns); /* the order rotates: drift hits all */
	printf("| step (median us / page faults, N=%zu) |", rounds);
	for (int pol = 0; pol < N_POL; pol++)
		printf(" %s |", pol_name[pol]);
	printf("\n|---|");
	for (int pol = 0; pol < N_POL; pol++)
		printf("---|");
	printf("\n");
	/* Rows: every step any policy recorded, in the order first seen. */
	struct col all = { 0 };
	for (int pol = 0; pol < N_POL; pol++)
		for (size_t i = 0; i < cols[pol].n_steps; i++)
			slot(&all, cols[pol].what[i]);
	for (size_t i = 0; i < all.n_steps; i++) {
		printf("| %s |", all.what[i]);
		for (int pol = 0; pol < N_POL; pol++) {
			size_t k;
			for (k = 0; k < cols[pol].n_steps && strcmp(cols[pol].what[k], all.what[i]);
			     k++)
				;
			if (k == cols[pol].n_steps)
				printf(" - |");
			else
				printf(" %u / %u |", median(cols[pol].us[k], rounds),
				       median(cols[pol].faults[k], rounds));
		}
		printf("\n");
	}
	static const char *const tot[] = { "**set-up** (net_setup + net_save + net_ready)",
					   "**teardown** (net_teardown, QEMU gone)",
					   "tap gone, after teardown returned (off the path)" };
	for (int t = 0; t < 3; t++) {
		printf("| %s |", tot[t]);
		for (int pol = 0; pol < N_POL; pol++)
			printf(" %u |", median(totals[pol][t], rounds));
		printf("\n");
	}
	return 0;
}
