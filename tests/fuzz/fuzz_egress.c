/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the egress policy's parsers of what users and spec.json files give
 * (--allow-cidr, --allow-domain, --bandwidth), and the text they end up in (nft rules, the
 * dnsmasq configuration). Invariants: no crash; an accepted range has no host bits and prints back
 * to itself; an accepted name is lower case [a-z0-9_-] labels (with one leading "*.") and puts
 * exactly its two lines into the dnsmasq configuration (no injection); an accepted bandwidth is
 * at least 1000 bytes/s with a burst that fits 32 bits.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netfilter/nf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t count_lines(const char *t)
{
	size_t n = 0;

	for (; *t; t++)
		n += *t == '\n';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), out[256], back[NF_CIDR_STRLEN];
	struct nf_cidr c, c2;
	uint64_t rate, burst;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	if (nf_cidr_parse(s, &c, NULL) == 0) {
		uint32_t mask = c.plen ? htonl(~0u << (32 - c.plen)) : 0;

		if (c.plen > 32 || (c.net.s_addr & ~mask))
			abort();
		if (c.proto && c.proto != IPPROTO_TCP && c.proto != IPPROTO_UDP)
			abort();
		nf_cidr_string(&c, back, sizeof(back));
		if (nf_cidr_parse(back, &c2, NULL) != 0 || memcmp(&c, &c2, sizeof(c)) != 0)
			abort();
	}

	if (nf_domain_check(s, out, sizeof(out), NULL) == 0) {
		const char *p = strncmp(out, "*.", 2) == 0 ? out + 2 : out;
		const char *one[] = { s };
		struct nf_dns_conf conf = { .name = "vm", .tap = "avm-x", .domains = one,
					    .n_domains = 1, .ttl = 5 };
		char *base = NULL, *text = NULL;
		const char *ref[] = { "a.b" };

		for (; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
			      *p == '_' || *p == '.'))
				abort();
		inet_pton(AF_INET, "10.0.0.1", &conf.listen);
		inet_pton(AF_INET, "8.8.8.8", &conf.upstream);
		if (nf_dns_config(&conf, &text, NULL) != 0)
			abort();
		conf.domains = ref;
		if (nf_dns_config(&conf, &base, NULL) != 0 || count_lines(text) != count_lines(base))
			abort();
		free(text);
		free(base);
	}

	if (nf_rate_parse(s, &rate, &burst, NULL) == 0 &&
	    (rate < 1000 || burst == 0 || burst > UINT32_MAX))
		abort();
	free(s);
	return 0;
}
