/* SPDX-License-Identifier: MIT */
/* net gc (net_gc.h): taps, rules and leases of VMs that are gone. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "net.h"
#include "net_gc.h"
#include "statedir.h"
#include "vmstate.h"

static bool owner_alive(const char *owner, void *userdata)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), owner);
	return access(dir, F_OK) == 0 && vmstate_dir_may_be_live(dir);
}

/* Is `tap` the tap of a VM that may still use it? */
static bool tap_claimed(const char *tap, char **names, int n)
{
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX];
		struct vm_net net;
		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (net_load(&net, dir, NULL) == 0 && !strcmp(net.tap, tap))
			return vmstate_dir_may_be_live(dir);
	}
	return false;
}

int net_gc(struct strv *report, struct avm_error *err)
{
	struct nf_pool *pool = NULL;
	struct nf_nft *nft = NULL;
	struct avm_error nerr = { 0 };
	char **names = NULL, **taps = NULL;
	int n = statedir_list(&names), ntaps, removed = 0, r;

	/* 1: VMs that are gone but whose network was never torn down (killed supervisors). */
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX];
		struct vm_net net;
		snprintf(dir, sizeof(dir), "%s/%s", statedir_root(), names[i]);
		if (net_load(&net, dir, NULL) < 0 || net.torn_down || vmstate_dir_may_be_live(dir))
			continue;
		net_teardown_dir(dir);
		strv_addf(report, "removed the network of VM %s (tap %s)", names[i], net.tap);
		removed++;
	}
	/* 2: rules and taps no VM claims (a VM dir removed by hand, a crash mid-setup). */
	r = nf_nft_new(&nft, &nerr);
	ntaps = r < 0 ? r : nf_nft_vm_list(nft, &taps, &nerr);
	if (ntaps < 0) {
		nf_nft_free(nft);
		strv_free(names);
		return avm_error_kind(err, nerr.code == -EPERM ? AVM_ERR_HOST : AVM_ERR_INTERNAL,
				      avm_error_set(err, nerr.code,
						    "cannot read the firewall rules: %s", nerr.msg));
	}
	for (int i = 0; i < ntaps; i++) {
		/*
		 * Taps are not persistent: one whose link exists is held open by a live process,
		 * e.g. a VM between net_setup() and writing its net.json. Not an orphan.
		 */
		if (tap_claimed(taps[i], names, n) || nf_link_exists(taps[i], NULL) > 0)
			continue;
		/* Any never-leased address will do: the element delete is idempotent. */
		struct nf_vm v = { .tap = taps[i], .guest = { htonl(0xffffffffu) } };
		if (nf_nft_vm_del(nft, &v, &nerr) == 0)
			strv_addf(report, "removed the rules of orphaned tap %s", taps[i]);
		removed++;
	}
	/* 3: the table itself, and uplink forwarding, once no VM has rules left. */
	nf_strv_free(taps, (size_t)(ntaps > 0 ? ntaps : 0));
	nf_nft_free(nft);
	net_host_gc();
	/* 4: leases whose owner is gone. */
	if (net_pool_open(NULL, &pool, &nerr) == 0) {
		r = nf_pool_gc(pool, owner_alive, NULL, &nerr);
		if (r > 0) {
			strv_addf(report, "released %d lease%s", r, r == 1 ? "" : "s");
			removed += r;
		}
		nf_pool_free(pool);
	}
	strv_free(names);
	return removed;
}
