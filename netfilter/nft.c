// SPDX-License-Identifier: MIT
/*
 * nft.c - applying rules.c's transactions through libnftables and reading counters back.
 *
 * libnftables prints to stdout/stderr unless told otherwise: both are buffered here, always, and
 * the error buffer is turned into an errno + one line. One nft_run_cmd_from_buffer() call is one
 * netlink batch, i.e. one atomic transaction: it all applies or none of it does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <json-c/json.h>
#include <nftables/libnftables.h>

#include "nf_internal.h"

struct nf_nft {
	struct nft_ctx *ctx;
	int sock_fd; /* the context's netlink socket, -1 when it could not be told apart */
};

/* Bitmap of the fds open now (the first 1024 are enough to spot what nft_ctx_new() adds). */
static void open_fds(uint8_t map[128])
{
	struct dirent *e;
	DIR *d = opendir("/proc/self/fd");

	memset(map, 0, 128);
	if (!d)
		return;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);

		/* The directory's own fd is free again afterwards: nft may get that number. */
		if (e->d_name[0] != '.' && fd >= 0 && fd < 1024 && fd != dirfd(d))
			map[fd / 8] |= (uint8_t)(1u << (fd % 8));
	}
	closedir(d);
}

/*
 * libnftables 1.0.6 opens its netlink socket inside nft_ctx_new() without SOCK_CLOEXEC, and exits
 * the whole process when that socket cannot be opened (no nfnetlink). So: probe the socket first,
 * and afterwards mark whatever fds nft_ctx_new() opened close-on-exec.
 */
static int ctx_new_cloexec(struct nft_ctx **out, int *sock_fd, struct avm_error *err)
{
	uint8_t before[128], after[128];
	struct nft_ctx *ctx;
	int probe;

	probe = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (probe < 0) {
		int e = errno;

		if (e == EPROTONOSUPPORT || e == EAFNOSUPPORT)
			return nf_set_error(err, -EPROTONOSUPPORT,
					    "nftables: nfnetlink/nf_tables is not available in this "
					    "kernel (CONFIG_NF_TABLES / modprobe nf_tables)");
		return nf_set_error(err, -e, "nftables: cannot open a netfilter netlink socket: %s",
				    strerror(e));
	}
	close(probe);
	open_fds(before);
	ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!ctx)
		return nf_set_error(err, -ENOMEM, "cannot create an nftables context");
	open_fds(after);
	*sock_fd = -1;
	for (int fd = 0, n = 0; fd < 1024; fd++) {
		if ((after[fd / 8] & ~before[fd / 8]) & (1u << (fd % 8))) {
			fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
			*sock_fd = n++ == 0 ? fd : -1; /* exactly one new fd, or we cannot tell */
		}
	}
	*out = ctx;
	return 0;
}

int nf_nft_new(struct nf_nft **out, struct avm_error *err)
{
	struct nf_nft *n = calloc(1, sizeof(*n));
	int r;

	*out = NULL;
	if (!n)
		return nf_set_error(err, -ENOMEM, "out of memory");
	r = ctx_new_cloexec(&n->ctx, &n->sock_fd, err);
	if (r < 0) {
		free(n);
		return r;
	}
	if (nft_ctx_buffer_output(n->ctx) || nft_ctx_buffer_error(n->ctx)) {
		nft_ctx_free(n->ctx);
		free(n);
		return nf_set_error(err, -ENOMEM, "cannot buffer nftables output");
	}
	*out = n;
	return 0;
}

int nf_nft_fd(const struct nf_nft *nft)
{
	return nft ? nft->sock_fd : -1;
}

void nf_nft_free(struct nf_nft *nft)
{
	if (!nft)
		return;
	nft_ctx_free(nft->ctx);
	free(nft);
}

/* The first line of nft's error text that says something ("Error: ..."), trimmed. */
static void first_error_line(const char *text, char *buf, size_t len)
{
	const char *p = strstr(text, "Error:");
	size_t n;

	if (!p)
		p = text;
	n = strcspn(p, "\n");
	if (n >= len)
		n = len - 1;
	memcpy(buf, p, n);
	buf[n] = '\0';
}

static int convert_error(const char *text, struct avm_error *err)
{
	char line[400];

	first_error_line(text ? text : "", line, sizeof(line));
	if (strstr(text, "Operation not permitted"))
		return nf_set_error(err, -EPERM, "nftables: needs root (CAP_NET_ADMIN): %s", line);
	if (strstr(text, "Protocol not supported") ||
	    strstr(text, "Address family not supported"))
		return nf_set_error(err, -EPROTONOSUPPORT,
				    "nftables: nf_tables is not available in this kernel "
				    "(CONFIG_NF_TABLES / modprobe nf_tables): %s", line);
	if (strstr(text, "No such file or directory"))
		return nf_set_error(err, -ENOENT, "nftables: %s", line);
	if (strstr(text, "syntax error") || strstr(text, "Could not process rule"))
		return nf_set_error(err, -EINVAL, "nftables: %s", line);
	return nf_set_error(err, -EIO, "nftables: %s", line[0] ? line : "unknown error");
}

/*
 * libnftables 1.0.6 writes "Operation not permitted (you must be root)" straight to stderr when
 * its netlink calls fail with EPERM, bypassing the buffered error. This module must never print,
 * so the capability is checked first and nft is not called at all without it.
 */
static int need_net_admin(struct avm_error *err)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2] = { 0 };

	if (syscall(SYS_capget, &h, d) < 0)
		return 0; /* unknown: let nft tell */
	if (d[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32)))
		return 0;
	return nf_set_error(err, -EPERM, "nftables: needs root (CAP_NET_ADMIN)");
}

int nf_nft_run(struct nf_nft *nft, const char *cmds, struct avm_error *err)
{
	int r = need_net_admin(err);

	if (r < 0)
		return r;
	nft_ctx_output_set_flags(nft->ctx, 0);
	r = nft_run_cmd_from_buffer(nft->ctx, cmds);
	if (r != 0)
		return convert_error(nft_ctx_get_error_buffer(nft->ctx), err);
	return 0;
}

/* A listing in JSON; the result points into the context's buffer (valid until the next run). */
static int run_json(struct nf_nft *nft, const char *cmd, json_object **out, struct avm_error *err)
{
	const char *text;
	int r = need_net_admin(err);

	if (r < 0)
		return r;
	nft_ctx_output_set_flags(nft->ctx, NFT_CTX_OUTPUT_JSON);
	r = nft_run_cmd_from_buffer(nft->ctx, cmd);
	nft_ctx_output_set_flags(nft->ctx, 0);
	if (r != 0)
		return convert_error(nft_ctx_get_error_buffer(nft->ctx), err);
	text = nft_ctx_get_output_buffer(nft->ctx);
	*out = json_tokener_parse(text ? text : "");
	if (!*out)
		return nf_set_error(err, -EBADMSG, "nftables: unparsable JSON output for '%s'", cmd);
	return 0;
}

int nf_nft_ensure_base(struct nf_nft *nft, struct avm_error *err)
{
	_nf_cleanup_free_ char *text = NULL;
	int r = nf_rules_base(&text, err);

	return r < 0 ? r : nf_nft_run(nft, text, err);
}

int nf_nft_vm_add(struct nf_nft *nft, const struct nf_vm *vm, struct avm_error *err)
{
	_nf_cleanup_free_ char *text = NULL;
	int r = nf_rules_vm_add(vm, &text, err);

	return r < 0 ? r : nf_nft_run(nft, text, err);
}

int nf_nft_vm_del(struct nf_nft *nft, const struct nf_vm *vm, struct avm_error *err)
{
	_nf_cleanup_free_ char *text = NULL;
	int r = nf_rules_vm_del(vm, &text, err);

	return r < 0 ? r : nf_nft_run(nft, text, err);
}

int nf_nft_table_delete(struct nf_nft *nft, struct avm_error *err)
{
	/* add-then-delete: succeeds whether or not the tables exist, in one transaction. */
	return nf_nft_run(nft,
			  "add table inet " NF_TABLE "\ndelete table inet " NF_TABLE "\n"
			  "add table arp " NF_TABLE "\ndelete table arp " NF_TABLE "\n",
			  err);
}

/* The "nftables" array of a JSON listing, or NULL. */
static json_object *nft_items(json_object *root)
{
	json_object *a;

	if (!json_object_object_get_ex(root, "nftables", &a) || !json_object_is_type(a, json_type_array))
		return NULL;
	return a;
}

static uint64_t get_u64(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	return (uint64_t)json_object_get_int64(v);
}

/* Fill the slots of the counters named <tap><suffix[k]> found in one JSON listing. */
static int take_counters(json_object *root, const char *tap, const char *const *suffix,
			 uint64_t *(*slots)[2], size_t n)
{
	json_object *items = nft_items(root);
	size_t tlen = strlen(tap);
	int found = 0;

	for (size_t i = 0; items && i < json_object_array_length(items); i++) {
		json_object *c, *name;
		const char *s;

		if (!json_object_object_get_ex(json_object_array_get_idx(items, i), "counter", &c) ||
		    !json_object_object_get_ex(c, "name", &name))
			continue;
		s = json_object_get_string(name);
		if (!s || strncmp(s, tap, tlen) != 0)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (strcmp(s + tlen, suffix[k]) == 0) {
				*slots[k][0] = get_u64(c, "packets");
				if (slots[k][1])
					*slots[k][1] = get_u64(c, "bytes");
				found++;
			}
		}
	}
	return found;
}

/* Elements in set `name` now (0 when it does not exist). */
static uint64_t set_size(struct nf_nft *nft, const char *name)
{
	char cmd[128];
	json_object *root = NULL, *set, *elem;
	json_object *items;
	uint64_t n = 0;

	snprintf(cmd, sizeof(cmd), "list set inet " NF_TABLE " %s", name);
	if (run_json(nft, cmd, &root, NULL) < 0)
		return 0;
	items = nft_items(root);
	for (size_t i = 0; items && i < json_object_array_length(items); i++)
		if (json_object_object_get_ex(json_object_array_get_idx(items, i), "set", &set) &&
		    json_object_object_get_ex(set, "elem", &elem) &&
		    json_object_is_type(elem, json_type_array))
			n = json_object_array_length(elem);
	json_object_put(root);
	return n;
}

int nf_nft_vm_counters(struct nf_nft *nft, const char *tap, struct nf_counters *out,
		       struct avm_error *err)
{
	static const char *const suffix[] = { "-tx-ok",	 "-tx-drop", "-rx-ok",	  "-rx-drop",
					      "-closed", "-dns-drop", "-conn-drop" };
	static const char *const arp_suffix[] = { "-arp-drop" };
	uint64_t *slots[][2] = {
		{ &out->tx_ok_packets, &out->tx_ok_bytes },
		{ &out->tx_drop_packets, &out->tx_drop_bytes },
		{ &out->rx_ok_packets, &out->rx_ok_bytes },
		{ &out->rx_drop_packets, &out->rx_drop_bytes },
		{ &out->closed_drops, NULL },
		{ &out->dns_drops, NULL },
		{ &out->conn_drops, NULL },
	};
	uint64_t *arp_slots[][2] = { { &out->arp_drops, NULL } };
	json_object *root = NULL;
	char set[64];
	int r, found;

	memset(out, 0, sizeof(*out));
	r = nf_check_tap_name(tap, err);
	if (r < 0)
		return r;
	r = run_json(nft, "list counters table inet " NF_TABLE, &root, err);
	if (r == -ENOENT)
		return nf_set_error(err, -ENOENT, "no nftables rules for %s (table absent)", tap);
	if (r < 0)
		return r;
	found = take_counters(root, tap, suffix, slots, 4);
	take_counters(root, tap, suffix + 4, slots + 4, 3);
	json_object_put(root);
	if (found != 4)
		return nf_set_error(err, -ENOENT, "no nftables counters for %s", tap);
	if (run_json(nft, "list counters table arp " NF_TABLE, &root, NULL) == 0) {
		take_counters(root, tap, arp_suffix, arp_slots, 1);
		json_object_put(root);
	}
	snprintf(set, sizeof(set), "dom-%s", tap);
	out->domain_set_size = set_size(nft, set);
	return 0;
}

void nf_strv_free(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int nf_nft_vm_list(struct nf_nft *nft, char ***out, struct avm_error *err)
{
	json_object *root = NULL, *items, *map, *elem;
	char **v = NULL;
	size_t n = 0;
	int r;

	*out = NULL;
	r = run_json(nft, "list map inet " NF_TABLE " fwd_from_vm", &root, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	items = nft_items(root);
	for (size_t i = 0; items && i < json_object_array_length(items); i++) {
		if (!json_object_object_get_ex(json_object_array_get_idx(items, i), "map", &map))
			continue;
		if (!json_object_object_get_ex(map, "elem", &elem) ||
		    !json_object_is_type(elem, json_type_array))
			break;
		v = calloc(json_object_array_length(elem) + 1, sizeof(*v));
		if (!v) {
			json_object_put(root);
			return nf_set_error(err, -ENOMEM, "out of memory");
		}
		/* Each element is [key, verdict]: [ "avm-x", { "jump": { "target": ... } } ]. */
		for (size_t k = 0; k < json_object_array_length(elem); k++) {
			json_object *pair = json_object_array_get_idx(elem, k);
			const char *key;

			if (!json_object_is_type(pair, json_type_array) ||
			    json_object_array_length(pair) < 1)
				continue;
			key = json_object_get_string(json_object_array_get_idx(pair, 0));
			if (key && !(v[n] = strdup(key))) {
				nf_strv_free(v, n);
				json_object_put(root);
				return nf_set_error(err, -ENOMEM, "out of memory");
			}
			if (key)
				n++;
		}
		break;
	}
	json_object_put(root);
	*out = v;
	return (int)n;
}
