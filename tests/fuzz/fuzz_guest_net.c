/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the guest's network config parsers. The bytes go to netcfg_parse_sync() as
 * a SYNC payload and, NUL-terminated, to netcfg_parse_cmdline() as a kernel cmdline.
 * Invariants: no crash; every refusal says why; an accepted config is one the kernel can take
 * (prefix 1..32, a gateway only with an address and inside its subnet, a unicast MAC); a
 * refused network group leaves no network field behind; the hostname is NUL-terminated.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/netcfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_cfg(const struct net_cfg *c)
{
	if (strnlen(c->hostname, sizeof(c->hostname)) == sizeof(c->hostname))
		abort();
	if (c->has_addr && (c->prefix < 1 || c->prefix > 32))
		abort();
	if (c->has_gw) {
		uint32_t m = ~0u << (32 - c->prefix);

		if (!c->has_addr || c->gw.s_addr == c->addr.s_addr ||
		    (ntohl(c->gw.s_addr) & m) != (ntohl(c->addr.s_addr) & m))
			abort();
	}
	if (c->has_mac && (c->mac[0] & 1))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct net_cfg c;
	const char *why;
	char *line;

	why = NULL;
	if (netcfg_parse_sync(data, size, &c, &why) < 0) {
		if (!why || netcfg_has_net(&c))
			abort(); /* why becomes the ERROR frame's text */
	}
	check_cfg(&c);

	/* /proc/cmdline is at most a few KiB of text: the NUL-terminated bytes stand in for it. */
	line = malloc(size + 1);
	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	why = NULL;
	if (netcfg_parse_cmdline(line, &c, &why) < 0 && !why)
		abort();
	check_cfg(&c);
	free(line);
	return 0;
}
