// SPDX-License-Identifier: MIT
/*
 * dns.c - the configuration of a VM's DNS forwarder (Debian's dnsmasq, >= 2.87 for --nftset), as
 * text. Pure: the unit tests check every line; src/net/net.c runs and supervises the process.
 *
 * Why this shape:
 * - One dnsmasq per VM, listening on that VM's gateway address only (bind-interfaces): the set
 *   it fills is the VM's own, so one VM's lookups never open anything for another, and its
 *   lifetime is the VM's (measured cost in bench/RESULTS.md).
 * - Allowed names are forwarded to the upstream with server=/NAME/UPSTREAM and their A answers
 *   go into the VM's set with nftset=; every other name gets NXDOMAIN from address=/#/ (a
 *   definite "no such name": resolvers and tools stop there instead of retrying as they do on
 *   REFUSED or SERVFAIL).
 * - cache-size=0: every answer comes from upstream, so every lookup refreshes the set (dnsmasq
 *   adds to sets only for answers it receives, not for answers from its cache). max-ttl caps the
 *   TTL handed to the guest at the set's timeout, so a guest that caches re-asks before its
 *   address leaves the set.
 * - stop-dns-rebind: an allowed name answering with a private address is dropped (the filter
 *   closes those ranges anyway; this keeps them out of the set). domain-needed + bogus-priv:
 *   nothing about plain names or private reverse zones goes upstream.
 * - dns-forward-max bounds the queries in flight (with the cache off, memory is bounded by it);
 *   the rate of queries a guest may send is limited by the nft rules in front of it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_internal.h"

int nf_domain_check(const char *name, char *out, size_t len, struct avm_error *err)
{
	const char *p = name;
	size_t n, label = 0, labels = 1;

	if (!name || !*name)
		return nf_set_error(err, -EINVAL, "empty domain name");
	n = strlen(name);
	if (name[n - 1] == '.')
		n--; /* "example.com." is example.com */
	if (strncmp(p, "*.", 2) == 0)
		p += 2;
	if (n > 253 || n + 1 > len)
		return nf_set_error(err, -EINVAL, "domain '%s' is too long", name);
	for (const char *c = p; c < name + n; c++) {
		if (*c == '.') {
			if (label == 0)
				return nf_set_error(err, -EINVAL, "domain '%s' has an empty label",
						    name);
			label = 0;
			labels++;
			continue;
		}
		if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_')
			return nf_set_error(err, -EINVAL,
					    "domain '%s': only letters, digits, '-', '_' and a "
					    "leading '*.' are allowed",
					    name);
		if (++label > 63)
			return nf_set_error(err, -EINVAL, "domain '%s' has a label over 63 bytes",
					    name);
	}
	if (label == 0)
		return nf_set_error(err, -EINVAL, "domain '%s' has an empty label", name);
	if (labels < 2)
		return nf_set_error(err, -EINVAL,
				    "domain '%s' is a top-level domain; name one below it "
				    "(example.com, *.example.com)",
				    name);
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)name[i]);
	out[n] = '\0';
	return 0;
}

int nf_dns_config(const struct nf_dns_conf *c, char **out, struct avm_error *err)
{
	char listen[INET_ADDRSTRLEN], up[INET_ADDRSTRLEN], d[256];
	char *buf = NULL;
	size_t len;
	FILE *f;
	int r;

	*out = NULL;
	if (!c)
		return nf_set_error(err, -EINVAL, "no DNS configuration given");
	r = nf_check_tap_name(c->tap, err);
	if (r < 0)
		return r;
	r = nf_check_owner(c->name, err);
	if (r < 0)
		return r;
	if (!c->listen.s_addr || !c->upstream.s_addr)
		return nf_set_error(err, -EINVAL, "the DNS forwarder needs a listen address and an "
				    "upstream resolver");
	if (c->ttl == 0 || c->ttl > 86400)
		return nf_set_error(err, -EINVAL, "domain TTL must be 1..86400 s");
	if (c->n_domains == 0 || !c->domains)
		return nf_set_error(err, -EINVAL, "no allowed domain");
	for (size_t i = 0; i < c->n_domains; i++) {
		r = nf_domain_check(c->domains[i], d, sizeof(d), err);
		if (r < 0)
			return r;
	}
	inet_ntop(AF_INET, &c->listen, listen, sizeof(listen));
	inet_ntop(AF_INET, &c->upstream, up, sizeof(up));
	f = open_memstream(&buf, &len);
	if (!f)
		return nf_set_error(err, -ENOMEM, "out of memory");
	fprintf(f, "# agentvm: the DNS forwarder of VM %s (tap %s); generated, not read back\n",
		c->name, c->tap);
	fputs("keep-in-foreground\nno-resolv\nno-hosts\nno-dhcp-interface=\n", f);
	fputs("pid-file=\nlog-facility=-\n", f);
	fprintf(f, "listen-address=%s\nbind-interfaces\nport=53\n", listen);
	fputs("cache-size=0\n", f);
	fprintf(f, "max-ttl=%u\n", c->ttl);
	fputs("domain-needed\nbogus-priv\nstop-dns-rebind\n", f);
	fprintf(f, "dns-forward-max=%u\n", NF_DNS_FORWARD_MAX);
	for (size_t i = 0; i < c->n_domains; i++) {
		nf_domain_check(c->domains[i], d, sizeof(d), NULL);
		fprintf(f, "server=/%s/%s\n", d, up);
		/*
		 * dnsmasq 2.90 matches nftset= patterns without the "*." form (measured: an
		 * answer for a.example.com never reached a set named for *.example.com), so the set takes
		 * the parent; only subdomains are ever forwarded (server= above), so only their
		 * answers can reach it.
		 */
		fprintf(f, "nftset=/%s/4#inet#" NF_TABLE "#dom-%s\n",
			strncmp(d, "*.", 2) == 0 ? d + 2 : d, c->tap);
	}
	fputs("address=/#/\n", f);
	if (fclose(f) != 0) {
		free(buf);
		return nf_set_error(err, -ENOMEM, "out of memory");
	}
	*out = buf;
	return 0;
}
