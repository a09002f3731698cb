/* SPDX-License-Identifier: MIT */
/*
 * agentvm image build|import|ls|inspect|rm: the root image store (src/image/image.h does the work).
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image/image.h"
#include "base/util.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char image_usage[] =
	"usage: agentvm image build NAME [--from RECIPE] [--packages P,...] [--npm PKG,...]\n"
	"                          [--file SRC:DST]... [--run CMD]... [--warm CMD]...\n"
	"                          [--ca-cert FILE]...\n"
	"                          [--size SIZE] [--force]\n"
	"       agentvm image import NAME SOURCE   (OCI layout dir, OCI archive, docker save\n"
	"                                          tarball, or registry reference)\n"
	"       agentvm image ls [--json]\n"
	"       agentvm image inspect [--verify] NAME\n"
	"       agentvm image rm [--force] NAME...\n"
	"\n"
	"build: RECIPE is a built-in recipe (base, agent) or a recipe file; without --from, the\n"
	"built-in recipe called NAME, else base. The flags add to the recipe. A build whose inputs\n"
	"match NAME's current image is skipped (--force rebuilds).\n";

/* The store's error, classified by the store (image_error_classify), through the exit table. */
static int fail(struct avm_error *err, int r)
{
	if (!err->msg[0])
		avm_error_set(err, r, "%s", strerror(-r));
	image_error_classify(err);
	return cli_fail(err);
}

static int cmd_image_build(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "from", required_argument, NULL, 'f' },   { "packages", required_argument, NULL, 'p' },
		{ "npm", required_argument, NULL, 'n' },    { "file", required_argument, NULL, 'F' },
		{ "run", required_argument, NULL, 'r' },    { "ca-cert", required_argument, NULL, 'c' },
		{ "warm", required_argument, NULL, 'w' },
		{ "size", required_argument, NULL, 's' },   { "force", no_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },         { 0 },
	};
	struct image_recipe rc = { 0 };
	struct image_build_opts o = { 0 };
	struct avm_error err = { 0 };
	const char *from = NULL;
	struct strv extra = { 0 }; /* recipe lines from the flags, applied after the recipe */
	_cleanup_free_ char *id = NULL, *text = NULL;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		/* A flag's value on one line: a newline would smuggle in another recipe line. */
		if (optarg && strchr(optarg, '\n')) {
			cli_error("a flag's value must be one line: '%.40s...'", optarg);
			strv_release(&extra);
			return EXIT_USAGE;
		}
		switch (c) {
		case 'f':
			from = optarg;
			break;
		case 'p':
			strv_addf(&extra, "packages %s", optarg);
			break;
		case 'n':
			strv_addf(&extra, "npm %s", optarg);
			break;
		case 'F':
			strv_addf(&extra, "file %s", optarg);
			break;
		case 'r':
			strv_addf(&extra, "run %s", optarg);
			break;
		case 'w':
			strv_addf(&extra, "warm %s", optarg);
			break;
		case 'c':
			strv_addf(&extra, "ca-cert %s", optarg);
			break;
		case 's':
			strv_addf(&extra, "size %s", optarg);
			break;
		case 'x':
			o.force = true;
			break;
		case 'h':
			fputs(image_usage, stdout);
			strv_release(&extra);
			return 0;
		default:
			strv_release(&extra);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		cli_error("usage: agentvm image build NAME [--from RECIPE] [flags]; see agentvm "
			  "image --help");
		strv_release(&extra);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	if ((r = image_validate_name(name, &err)) < 0) {
		strv_release(&extra);
		return fail(&err, r);
	}
	if (!from)
		from = image_default_recipe(name);
	if ((r = image_recipe_load(&rc, from, &err)) < 0)
		goto out;
	if (extra.failed) {
		r = avm_error_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	if (extra.n) {
		text = strv_join(extra.v, "\n");
		/* Paths in flags are relative to the current dir. */
		if (!text || (r = image_recipe_parse(&rc, text, ".", 0, &err)) < 0) {
			if (!text)
				r = avm_error_set(&err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	r = image_build(name, &rc, &o, &id, &err);
	if (r == 0)
		printf("%s\n", id);
out:
	strv_release(&extra);
	image_recipe_release(&rc);
	return r < 0 ? fail(&err, r) : 0;
}

static int cmd_image_import(int argc, char **argv)
{
	struct image_build_opts o = { 0 };
	struct avm_error err = { 0 };
	_cleanup_free_ char *id = NULL;
	int r;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(image_usage, stdout);
		return 0;
	}
	if (argc != 3) {
		cli_error("usage: agentvm image import NAME SOURCE (an OCI layout dir, an OCI or "
			  "docker save archive, or a registry reference)");
		return EXIT_USAGE;
	}
	if ((r = image_import(argv[1], argv[2], &o, &id, &err)) < 0)
		return fail(&err, r);
	printf("%s\n", id);
	return 0;
}

static const char *jget(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (o && json_object_object_get_ex(o, k, &v) && !json_object_is_type(v, json_type_null))
		return json_object_get_string(v);
	return NULL;
}

static int cmd_image_ls(int argc, char **argv)
{
	bool json = argc == 2 && !strcmp(argv[1], "--json");
	struct image_entry *e = NULL;
	struct avm_error err = { 0 };
	size_t n = 0;
	int r;

	if (argc > 2 || (argc == 2 && !json)) {
		cli_error("usage: agentvm image ls [--json]");
		return EXIT_USAGE;
	}
	if ((r = image_list(&e, &n, &err)) < 0)
		return fail(&err, r);
	struct json_object *arr = json_object_new_array();
	if (!json)
		printf("%-20s %-12s %-10s %9s %9s %-20s %s\n", "NAME", "ID", "RECIPE", "SIZE",
		       "ALLOC", "CREATED", "STATUS");
	for (size_t i = 0; i < n; i++) {
		struct json_object *m = e[i].meta, *v;
		if (json) {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "name", e[i].name ? json_object_new_string(e[i].name)
								    : NULL);
			json_object_object_add(o, "id", json_object_new_string(e[i].id));
			const char *keys[] = { "recipe", "source", "created" };
			for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
				json_object_object_add(o, keys[k],
						       jget(m, keys[k]) ? json_object_new_string(
										  jget(m, keys[k]))
									: NULL);
			const char *ikeys[] = { "size", "allocated" };
			for (size_t k = 0; k < ARRAY_SIZE(ikeys); k++)
				json_object_object_add(
					o, ikeys[k],
					m && json_object_object_get_ex(m, ikeys[k], &v)
						? json_object_new_int64(json_object_get_int64(v))
						: NULL);
			json_object_object_add(o, "problem",
					       e[i].problem ? json_object_new_string(e[i].problem)
							    : NULL);
			json_object_array_add(arr, o);
			continue;
		}
		int64_t size = 0, alloc = 0;
		if (m && json_object_object_get_ex(m, "size", &v))
			size = json_object_get_int64(v);
		if (m && json_object_object_get_ex(m, "allocated", &v))
			alloc = json_object_get_int64(v);
		const char *recipe = jget(m, "recipe") ? jget(m, "recipe")
						       : (jget(m, "source") ? "(import)" : "-");
		printf("%-20s %-12.12s %-10.10s %8.1fM %8.1fM %-20s %s\n",
		       e[i].name ? e[i].name : "-", e[i].id, recipe, size / 1048576.0,
		       alloc / 1048576.0, jget(m, "created") ? jget(m, "created") : "-",
		       e[i].problem ? e[i].problem : "ok");
	}
	if (json)
		puts(json_object_to_json_string_ext(arr, JSON_FLAGS));
	json_object_put(arr);
	image_list_free(e, n);
	return 0;
}

static int cmd_image_inspect(int argc, char **argv)
{
	struct image_info *i = NULL;
	struct json_object *meta = NULL;
	struct avm_error err = { 0 };
	bool verify = false;
	const char *name = NULL;
	int r;

	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "--verify"))
			verify = true;
		else if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
			fputs(image_usage, stdout);
			return 0;
		} else if (!name && argv[k][0] != '-')
			name = argv[k];
		else
			name = NULL, k = argc;
	}
	if (!name) {
		cli_error("usage: agentvm image inspect [--verify] NAME");
		return EXIT_USAGE;
	}
	if ((r = image_resolve(name, &i, &err)) < 0 || (r = image_meta_read(i, &meta, &err)) < 0 ||
	    (verify && (r = image_verify(i, &err)) < 0)) {
		image_info_free(i);
		if (meta)
			json_object_put(meta);
		return fail(&err, r);
	}
	json_object_object_add(meta, "path", json_object_new_string(i->rootfs));
	if (verify)
		json_object_object_add(meta, "verified", json_object_new_boolean(1));
	puts(json_object_to_json_string_ext(meta, JSON_FLAGS));
	json_object_put(meta);
	image_info_free(i);
	return 0;
}

static int cmd_image_rm(int argc, char **argv)
{
	struct avm_error err = { 0 };
	bool force = false;
	int k = 1, rc = 0, r;

	for (; k < argc && argv[k][0] == '-'; k++) {
		if (!strcmp(argv[k], "--force") || !strcmp(argv[k], "-f"))
			force = true;
		else {
			cli_error("usage: agentvm image rm [--force] NAME...");
			return EXIT_USAGE;
		}
	}
	if (k == argc) {
		cli_error("usage: agentvm image rm [--force] NAME...");
		return EXIT_USAGE;
	}
	for (; k < argc; k++) {
		_cleanup_free_ char *id = NULL;
		memset(&err, 0, sizeof(err));
		if ((r = image_remove(argv[k], force, &id, &err)) < 0)
			rc = fail(&err, r);
	}
	return rc;
}

int cmd_image(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} sub[] = {
		{ "build", cmd_image_build }, { "import", cmd_image_import }, { "ls", cmd_image_ls },
		{ "inspect", cmd_image_inspect }, { "rm", cmd_image_rm },
	};

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(image_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(sub); i++)
		if (!strcmp(argv[1], sub[i].name))
			return sub[i].fn(argc - 1, argv + 1);
	cli_error("unknown image verb '%s'; use build, import, ls, inspect or rm", argv[1]);
	return EXIT_USAGE;
}
