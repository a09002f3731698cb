/* SPDX-License-Identifier: MIT */
/* agentvm cache ls|rm: the boot templates that run and start restore (src/vm/boot_cache.h). */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vm/boot_cache.h"
#include "cli.h"

static void usage(FILE *f)
{
	fputs("usage: agentvm cache ls [--json]\n"
	      "       agentvm cache rm KEY|--all\n"
	      "Boot templates: run and start restore a clone of one instead of booting a kernel\n"
	      "(the first launch of a boot shape builds it). Kept in $AGENTVM_CACHE_DIR/templates,\n"
	      "at most AGENTVM_BOOT_CACHE_MAX_MB (default 2048) on disk, least recently used first\n"
	      "out; agentvm gc removes those unused for AGENTVM_BOOT_CACHE_MAX_AGE_DAYS (14).\n",
	      f);
}

static void ago(time_t t, char *buf, size_t len)
{
	long s = (long)(time(NULL) - t);

	if (!t)
		snprintf(buf, len, "never");
	else if (s < 120)
		snprintf(buf, len, "%lds ago", s < 0 ? 0 : s);
	else if (s < 7200)
		snprintf(buf, len, "%ldm ago", s / 60);
	else if (s < 172800)
		snprintf(buf, len, "%ldh ago", s / 3600);
	else
		snprintf(buf, len, "%ldd ago", s / 86400);
}

static int cache_ls(bool json)
{
	struct avm_error err = { 0 };
	struct boot_cache_entry *v;
	size_t n;

	if (boot_cache_list(&v, &n, &err) < 0) {
		cli_error("%s", err.msg);
		return 1;
	}
	if (json) {
		struct json_object *a = json_object_new_array();
		for (size_t i = 0; i < n; i++) {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "key", json_object_new_string(v[i].key));
			json_object_object_add(o, "shape", json_object_new_string(v[i].summary));
			json_object_object_add(o, "qemu_version",
					       json_object_new_string(v[i].qemu_version));
			json_object_object_add(o, "size", json_object_new_int64(v[i].size));
			json_object_object_add(o, "created", json_object_new_int64(v[i].created));
			json_object_object_add(o, "last_use", json_object_new_int64(v[i].last_use));
			json_object_object_add(o, "build_ms", json_object_new_int64(v[i].build_ms));
			json_object_array_add(a, o);
		}
		puts(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY));
		json_object_put(a);
	} else {
		printf("%-16s %8s %-10s %s\n", "KEY", "SIZE", "LAST USE", "SHAPE");
		for (size_t i = 0; i < n; i++) {
			char when[32];
			ago(v[i].last_use, when, sizeof(when));
			printf("%-16s %7.1fM %-10s %s\n", v[i].key, (double)v[i].size / (1 << 20),
			       when, v[i].summary);
		}
	}
	free(v);
	return 0;
}

static int cache_rm(const char *key)
{
	struct avm_error err = { 0 };
	struct boot_cache_entry *v;
	size_t n;
	int rc = 0;

	if (strcmp(key, "--all") != 0) {
		if (boot_cache_remove(key, &err) < 0)
			return cli_fail(&err);
		return 0;
	}
	if (boot_cache_list(&v, &n, &err) < 0) {
		cli_error("%s", err.msg);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		if (boot_cache_remove(v[i].key, &err) < 0 && err.code != -ENOENT) {
			cli_error("%s", err.msg);
			rc = 1;
		}
	free(v);
	return rc;
}

int cmd_cache(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "ls") &&
	    (argc == 2 || (argc == 3 && !strcmp(argv[2], "--json"))))
		return cache_ls(argc == 3);
	if (argc == 3 && !strcmp(argv[1], "rm"))
		return cache_rm(argv[2]);
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return EXIT_USAGE;
}
