/* SPDX-License-Identifier: MIT */
#include "spec.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <json-c/json.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

#include "../netfilter/nf.h"
#include "strv.h"
#include "util.h"

/* Sizes from the product spec. */
const struct vm_profile vm_profiles[] = {
	{ "light", 1, 512 },
	{ "standard", 2, 2048 },
	{ "intensive", 4, 4096 },
	{ NULL, 0, 0 },
};

const struct vm_profile *vm_profile_find(const char *name)
{
	for (const struct vm_profile *p = vm_profiles; p->name; p++)
		if (!strcmp(p->name, name))
			return p;
	return NULL;
}

struct vm_spec *vm_spec_new(void)
{
	struct vm_spec *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (vm_spec_set_profile(s, VM_SPEC_DEFAULT_PROFILE, NULL) < 0) {
		free(s);
		return NULL;
	}
	return s;
}


void vm_spec_free(struct vm_spec *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->profile);
	strv_free(s->env);
	free(s->workdir);
	free(s->kernel);
	free(s->initrd);
	strv_free(s->argv);
	free(s->bridge);
	strv_free(s->allow);
	strv_free(s->host_allow);
	free(s->dns);
	free(s);
}

int vm_spec_set_profile(struct vm_spec *s, const char *name, struct avm_error *err)
{
	const struct vm_profile *p = vm_profile_find(name);
	char *copy;

	if (!p)
		return avm_error_set(err, -EINVAL,
				     "unknown profile '%s'; use light, standard or intensive", name);
	copy = strdup(p->name);
	if (!copy)
		return avm_error_set(err, -ENOMEM, "out of memory");
	free(s->profile);
	s->profile = copy;
	s->cpus = p->cpus;
	s->memory_mib = p->memory_mib;
	return 0;
}

/* Once a size is given by hand the spec no longer matches a named profile. */
static int mark_custom(struct vm_spec *s)
{
	char *c = strdup("custom");

	if (!c)
		return -ENOMEM;
	free(s->profile);
	s->profile = c;
	return 0;
}

int vm_spec_set_cpus(struct vm_spec *s, const char *value, struct avm_error *err)
{
	long v;

	if (parse_long(value, 1, VM_SPEC_MAX_CPUS, &v) < 0)
		return avm_error_set(err, -EINVAL, "--cpus '%s' is not a number from 1 to %d", value,
				     VM_SPEC_MAX_CPUS);
	s->cpus = (unsigned)v;
	return mark_custom(s);
}

int vm_spec_set_memory(struct vm_spec *s, const char *value, struct avm_error *err)
{
	long v;

	if (parse_long(value, VM_SPEC_MIN_MEMORY_MIB, VM_SPEC_MAX_MEMORY_MIB, &v) < 0)
		return avm_error_set(err, -EINVAL,
				     "--memory '%s' is not a size in MiB from %d to %d", value,
				     VM_SPEC_MIN_MEMORY_MIB, VM_SPEC_MAX_MEMORY_MIB);
	s->memory_mib = (unsigned)v;
	return mark_custom(s);
}

int vm_spec_set_timeout(struct vm_spec *s, const char *value, struct avm_error *err)
{
	long v;

	if (parse_long(value, 0, VM_SPEC_MAX_TIMEOUT_S, &v) < 0)
		return avm_error_set(err, -EINVAL,
				     "--timeout '%s' is not a whole number of seconds from 0 to %d",
				     value, VM_SPEC_MAX_TIMEOUT_S);
	s->timeout_s = (unsigned)v;
	return 0;
}

int vm_spec_set_accel(struct vm_spec *s, const char *value, struct avm_error *err)
{
	if (!strcmp(value, "kvm"))
		s->accel = VM_ACCEL_KVM;
	else if (!strcmp(value, "tcg"))
		s->accel = VM_ACCEL_TCG;
	else if (!strcmp(value, "auto"))
		s->accel = VM_ACCEL_AUTO;
	else
		return avm_error_set(err, -EINVAL, "--accel '%s' is unknown; use kvm, tcg or auto",
				     value);
	return 0;
}

const char *vm_accel_name(enum vm_accel a)
{
	switch (a) {
	case VM_ACCEL_KVM:
		return "kvm";
	case VM_ACCEL_TCG:
		return "tcg";
	default:
		return "auto";
	}
}

/* Append a copy of s to a NULL-terminated vector through the shared strv helper. */
static int strv_append(char ***v, size_t *n, const char *s)
{
	struct strv sv = { .v = *v, .n = *n };

	strv_add(&sv, s);
	if (sv.failed)
		return -ENOMEM;
	*v = sv.v;
	*n = sv.n;
	return 0;
}

int vm_spec_add_env(struct vm_spec *s, const char *kv, struct avm_error *err)
{
	const char *eq = strchr(kv, '=');

	if (!eq || eq == kv)
		return avm_error_set(err, -EINVAL, "--env '%s' must look like KEY=VALUE", kv);
	for (const char *p = kv; p < eq; p++) {
		if (!(isalnum((unsigned char)*p) || *p == '_') || (p == kv && isdigit((unsigned char)*p)))
			return avm_error_set(err, -EINVAL,
					     "--env '%s': the name must be letters, digits and _ "
					     "and not start with a digit",
					     kv);
	}
	if (s->n_env >= 4096)
		return avm_error_set(err, -E2BIG, "too many --env values (at most 4096)");
	if (strv_append(&s->env, &s->n_env, kv) < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

int vm_spec_set_workdir(struct vm_spec *s, const char *dir, struct avm_error *err)
{
	if (dir[0] != '/')
		return avm_error_set(err, -EINVAL,
				     "--workdir '%s' must be an absolute path inside the guest", dir);
	return vm_spec_set_path(&s->workdir, "--workdir", dir, err);
}

int vm_spec_set_path(char **slot, const char *what, const char *path, struct avm_error *err)
{
	char *copy;

	if (!*path)
		return avm_error_set(err, -EINVAL, "%s needs a path", what);
	copy = strdup(path);
	if (!copy)
		return avm_error_set(err, -ENOMEM, "out of memory");
	free(*slot);
	*slot = copy;
	return 0;
}

int vm_spec_set_command(struct vm_spec *s, char *const *argv, size_t argc, struct avm_error *err)
{
	char **v = NULL;
	size_t n = 0;

	if (argc > 4096)
		return avm_error_set(err, -E2BIG, "the command has too many arguments (at most 4096)");
	for (size_t i = 0; i < argc; i++) {
		if (strv_append(&v, &n, argv[i]) < 0) {
			strv_free(v);
			return avm_error_set(err, -ENOMEM, "out of memory");
		}
	}
	strv_free(s->argv);
	s->argv = v;
	s->argc = n;
	return 0;
}

const char *vm_net_mode_name(enum vm_net_mode m)
{
	switch (m) {
	case VM_NET_ISOLATED:
		return "isolated";
	case VM_NET_BRIDGE:
		return "bridge";
	default:
		return "nat-filtered";
	}
}

int vm_spec_set_network(struct vm_spec *s, const char *value, struct avm_error *err)
{
	if (!strcmp(value, "nat-filtered") || !strcmp(value, "isolated")) {
		s->net_mode = value[0] == 'n' ? VM_NET_NAT_FILTERED : VM_NET_ISOLATED;
		return 0;
	}
	if (!strncmp(value, "bridge:", 7)) {
		const char *br = value + 7;
		if (!*br || strlen(br) >= IFNAMSIZ || strchr(br, '/') || strchr(br, ' '))
			return avm_error_set(err, -EINVAL,
					     "--network '%s': the bridge name must be 1..%d "
					     "characters without '/' or spaces",
					     value, IFNAMSIZ - 1);
		s->net_mode = VM_NET_BRIDGE;
		return vm_spec_set_path(&s->bridge, "--network bridge:", br, err);
	}
	return avm_error_set(err, -EINVAL,
			     "--network '%s' is not a mode; use nat-filtered, isolated or "
			     "bridge:BRIDGE",
			     value);
}

/* One validated port for a list of at most VM_SPEC_MAX_ALLOW; `flag` names it in errors. */
static int add_port(char ***v, size_t *n, const char *flag, const char *value,
		    struct avm_error *err)
{
	struct nf_port port;
	struct nf_error nerr = { 0 };

	if (nf_port_parse(value, &port, &nerr) < 0)
		return avm_error_set(err, -EINVAL, "%s: %s", flag, nerr.msg);
	if (*n >= VM_SPEC_MAX_ALLOW)
		return avm_error_set(err, -E2BIG, "too many %s values (at most %d)", flag,
				     VM_SPEC_MAX_ALLOW);
	if (strv_append(v, n, value) < 0)
		return avm_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

int vm_spec_add_allow(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return add_port(&s->allow, &s->n_allow, "--allow", value, err);
}

int vm_spec_add_host_allow(struct vm_spec *s, const char *value, struct avm_error *err)
{
	return add_port(&s->host_allow, &s->n_host_allow, "--allow-host", value, err);
}

int vm_spec_set_dns(struct vm_spec *s, const char *value, struct avm_error *err)
{
	struct in_addr a;

	if (inet_pton(AF_INET, value, &a) != 1)
		return avm_error_set(err, -EINVAL, "--dns '%s' is not an IPv4 address", value);
	return vm_spec_set_path(&s->dns, "--dns", value, err);
}

int vm_spec_validate(const struct vm_spec *s, bool need_command, struct avm_error *err)
{
	/* The first filter flag given, for the message. */
	const char *filter = s->n_allow		? "--allow"
			     : s->n_host_allow	? "--allow-host"
			     : s->deny_all_egress ? "--deny-all-egress"
						  : NULL;

	if (s->net_mode == VM_NET_ISOLATED && (filter || s->dns))
		return avm_error_set(err, -EINVAL,
				     "%s needs a network; --network isolated has none",
				     filter ? filter : "--dns");
	if (s->net_mode == VM_NET_BRIDGE && filter)
		return avm_error_set(err, -EINVAL,
				     "%s filters nat-filtered VMs only; a bridged VM is not filtered",
				     filter);
	if (need_command && (s->argc == 0 || !s->argv[0][0]))
		return avm_error_set(err, -EINVAL,
				     "no command given; put it after --, e.g. agentvm run -- uname -a");
	return 0;
}

static struct json_object *strv_to_json(char **v)
{
	struct json_object *a = json_object_new_array();

	for (char **p = v; p && *p; p++)
		json_object_array_add(a, json_object_new_string(*p));
	return a;
}

struct json_object *vm_spec_to_json(const struct vm_spec *s)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	if (s->name)
		json_object_object_add(o, "name", json_object_new_string(s->name));
	json_object_object_add(o, "profile", json_object_new_string(s->profile));
	json_object_object_add(o, "cpus", json_object_new_int((int)s->cpus));
	json_object_object_add(o, "memory_mib", json_object_new_int((int)s->memory_mib));
	json_object_object_add(o, "timeout_s", json_object_new_int((int)s->timeout_s));
	json_object_object_add(o, "accel", json_object_new_string(vm_accel_name(s->accel)));
	if (s->kernel)
		json_object_object_add(o, "kernel", json_object_new_string(s->kernel));
	if (s->initrd)
		json_object_object_add(o, "initrd", json_object_new_string(s->initrd));
	if (s->workdir)
		json_object_object_add(o, "workdir", json_object_new_string(s->workdir));
	json_object_object_add(o, "env", strv_to_json(s->env));
	json_object_object_add(o, "command", strv_to_json(s->argv));
	struct json_object *net = json_object_new_object();
	json_object_object_add(net, "mode", json_object_new_string(vm_net_mode_name(s->net_mode)));
	if (s->bridge)
		json_object_object_add(net, "bridge", json_object_new_string(s->bridge));
	json_object_object_add(net, "allow", strv_to_json(s->allow));
	json_object_object_add(net, "deny_all_egress", json_object_new_boolean(s->deny_all_egress));
	json_object_object_add(net, "host_allow", strv_to_json(s->host_allow));
	if (s->dns)
		json_object_object_add(net, "dns", json_object_new_string(s->dns));
	json_object_object_add(o, "network", net);
	return o;
}
