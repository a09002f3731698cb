/* SPDX-License-Identifier: MIT */
#include "state/paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *paths_snapshot_root(void)
{
	static char buf[PATH_MAX];
	const char *env = getenv("AGENTVM_SNAPSHOT_DIR");
	const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");

	if (env && *env)
		return env;
	if (geteuid() != 0) {
		if (xdg && *xdg)
			snprintf(buf, sizeof(buf), "%s/agentvm/snapshots", xdg);
		else
			snprintf(buf, sizeof(buf), "%s/.local/share/agentvm/snapshots",
				 home ? home : "/tmp");
		return buf;
	}
	return "/var/lib/agentvm/snapshots";
}

const char *paths_cache_root(void)
{
	static char buf[PATH_MAX];
	const char *env = getenv("AGENTVM_CACHE_DIR");
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

	if (env && *env)
		return env;
	if (geteuid() == 0)
		return "/var/cache/agentvm";
	if (xdg && *xdg)
		snprintf(buf, sizeof(buf), "%s/agentvm", xdg);
	else
		snprintf(buf, sizeof(buf), "%s/.cache/agentvm", home ? home : "/tmp");
	return buf;
}

static const char *cache_part(char *buf, size_t len, const char *part)
{
	snprintf(buf, len, "%s/%s", paths_cache_root(), part);
	return buf;
}

const char *paths_hash_cache_dir(void)
{
	static char buf[PATH_MAX];

	return cache_part(buf, sizeof(buf), "hashes");
}

const char *paths_image_store(void)
{
	static char buf[PATH_MAX];

	return cache_part(buf, sizeof(buf), "images");
}

const char *paths_template_dir(void)
{
	static char buf[PATH_MAX];

	return cache_part(buf, sizeof(buf), "templates");
}
