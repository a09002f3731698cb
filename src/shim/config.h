/* SPDX-License-Identifier: MIT */
/*
 * The shim's settings from containerd's config.toml. containerd 1.6 hands a runtime other than
 * runc the runtime's `options` table as the Any runtimeoptions.v1.Options {type_url = 1,
 * config_path = 2} in CreateTaskRequest.options (so only `ConfigPath` and `TypeUrl` mean
 * anything there, as for Kata): ConfigPath names a JSON file of agentvm settings for every pod
 * of that runtime handler (see README: containerd and Kubernetes).
 */
#ifndef AGENTVM_SHIM_CONFIG_H
#define AGENTVM_SHIM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHIM_RUNTIME_OPTIONS "runtimeoptions.v1.Options"
#define SHIM_CONFIG_MAX_ALLOW 32
#define SHIM_CONFIG_MAX_BYTES 65536

/* Every string owned; NULL = agentvm's default. */
struct shim_config {
	char *profile, *cpus, *memory, *network;
	char *image; /* an agentvm root image (name or id) for the pod VM itself */
	/* The egress policy (nat-filtered): agentvm's --allow, --allow-cidr, --allow-domain. */
	struct shim_config_list {
		char *v[SHIM_CONFIG_MAX_ALLOW];
		size_t n;
	} allow, allow_cidr, allow_domain;
	bool no_annotations; /* "annotations": false: pods may not set io.agentvm.* */
	bool pool;           /* "pool": true: pod VMs from the pool first (`serve --pool-pod`) */
};

/*
 * CreateTaskRequest.options (type and value of the Any): *config_path (caller frees; NULL when
 * the options name none). Another options type is refused with *why.
 */
int shim_runtime_options(const char *type, const uint8_t *val, size_t len, char **config_path,
			 char **why);

/*
 * The JSON settings file: {"profile": S, "cpus": N, "memory": N (MiB), "network": "isolated" |
 * "nat-filtered", "image": S, "allow": [S...], "allow_cidr": [S...], "allow_domain": [S...],
 * "annotations": bool, "pool": bool}. An unknown key, a wrong type or bad
 * JSON: -EINVAL and *why (static).
 */
int shim_config_parse(const char *json, size_t len, struct shim_config *c, char **why);
void shim_config_release(struct shim_config *c);
/* shim_config_parse() of the file at path (*why names it when it cannot be read). */
int shim_config_load(const char *path, struct shim_config *c, char **why);

#endif
