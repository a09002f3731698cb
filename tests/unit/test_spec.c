/* SPDX-License-Identifier: MIT */
/* The VM spec from flags: profiles, limits, env names, error messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "snapshot/snapshot.h"
#include "spec/spec.h"

static void test_default_profile_is_light(void **state)
{
	struct vm_spec *s = vm_spec_new();

	assert_non_null(s);
	assert_string_equal(s->profile, "light");
	assert_int_equal(s->cpus, 1);
	assert_int_equal(s->memory_mib, 512);
	assert_int_equal(s->accel, VM_ACCEL_AUTO);
	vm_spec_free(s);
}

static void test_profiles_match_product_spec(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };

	assert_int_equal(vm_spec_set_profile(s, "standard", &err), 0);
	assert_int_equal(s->cpus, 2);
	assert_int_equal(s->memory_mib, 2048);
	assert_int_equal(vm_spec_set_profile(s, "intensive", &err), 0);
	assert_int_equal(s->cpus, 4);
	assert_int_equal(s->memory_mib, 4096);
	assert_int_equal(vm_spec_set_profile(s, "huge", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unknown profile 'huge'"));
	vm_spec_free(s);
}

static void test_sizes_override_and_limits(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };

	assert_int_equal(vm_spec_set_cpus(s, "3", &err), 0);
	assert_int_equal(s->cpus, 3);
	assert_string_equal(s->profile, "custom");
	assert_int_equal(vm_spec_set_cpus(s, "0", &err), -EINVAL);
	assert_int_equal(vm_spec_set_cpus(s, "65", &err), -EINVAL);
	assert_int_equal(vm_spec_set_cpus(s, "2x", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--cpus '2x'"));
	assert_int_equal(vm_spec_set_memory(s, "63", &err), -EINVAL);
	assert_int_equal(vm_spec_set_memory(s, "", &err), -EINVAL);
	assert_int_equal(vm_spec_set_memory(s, "1024", &err), 0);
	assert_int_equal(s->memory_mib, 1024);
	assert_int_equal(vm_spec_set_timeout(s, "-1", &err), -EINVAL);
	assert_int_equal(vm_spec_set_timeout(s, "30", &err), 0);
	assert_int_equal(s->timeout_s, 30);
	vm_spec_free(s);
}

static void test_env_validation(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };

	assert_int_equal(vm_spec_add_env(s, "FOO=bar=baz", &err), 0);
	assert_int_equal(vm_spec_add_env(s, "EMPTY=", &err), 0);
	assert_int_equal(vm_spec_add_env(s, "NOEQUALS", &err), -EINVAL);
	assert_int_equal(vm_spec_add_env(s, "=x", &err), -EINVAL);
	assert_int_equal(vm_spec_add_env(s, "1X=y", &err), -EINVAL);
	assert_int_equal(vm_spec_add_env(s, "A-B=y", &err), -EINVAL);
	assert_int_equal(s->n_env, 2);
	assert_string_equal(s->env[0], "FOO=bar=baz");
	assert_null(s->env[2]);
	vm_spec_free(s);
}

static void test_accel_and_workdir(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };

	assert_int_equal(vm_spec_set_accel(s, "kvm", &err), 0);
	assert_int_equal(s->accel, VM_ACCEL_KVM);
	assert_int_equal(vm_spec_set_accel(s, "tcg", &err), 0);
	assert_int_equal(s->accel, VM_ACCEL_TCG);
	assert_int_equal(vm_spec_set_accel(s, "xen", &err), -EINVAL);
	assert_int_equal(vm_spec_set_workdir(s, "relative", &err), -EINVAL);
	assert_int_equal(vm_spec_set_workdir(s, "/tmp", &err), 0);
	assert_string_equal(s->workdir, "/tmp");
	vm_spec_free(s);
}

static void test_command_required_and_json(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };
	char *argv[] = { "sh", "-c", "echo hi", NULL };

	assert_int_equal(vm_spec_validate(s, true, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no command given"));
	assert_int_equal(vm_spec_set_command(s, argv, 3, &err), 0);
	assert_int_equal(vm_spec_validate(s, true, &err), 0);
	assert_int_equal(s->argc, 3);

	struct json_object *o = vm_spec_to_json(s), *cmd, *cpus;
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "command", &cmd));
	assert_int_equal(json_object_array_length(cmd), 3);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(cmd, 2)), "echo hi");
	assert_true(json_object_object_get_ex(o, "cpus", &cpus));
	assert_int_equal(json_object_get_int(cpus), 1);
	json_object_put(o);
	vm_spec_free(s);
}

static void test_network_flags(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };
	struct json_object *o, *net, *mode;

	assert_int_equal(s->net_mode, VM_NET_NAT_FILTERED); /* the default */
	assert_int_equal(vm_spec_set_network(s, "isolated", &err), 0);
	assert_int_equal(s->net_mode, VM_NET_ISOLATED);
	assert_int_equal(vm_spec_set_network(s, "bridge:br0", &err), 0);
	assert_int_equal(s->net_mode, VM_NET_BRIDGE);
	assert_string_equal(s->bridge, "br0");
	assert_int_equal(vm_spec_set_network(s, "bridge:", &err), -EINVAL);
	assert_int_equal(vm_spec_set_network(s, "bridge:averyveryverylongname", &err), -EINVAL);
	assert_int_equal(vm_spec_set_network(s, "nat", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "nat-filtered, isolated or bridge:BRIDGE"));

	assert_int_equal(vm_spec_set_network(s, "nat-filtered", &err), 0);
	assert_int_equal(vm_spec_add_allow(s, "tcp:8080", &err), 0);
	assert_int_equal(vm_spec_add_allow(s, "udp:9999", &err), 0);
	assert_int_equal(vm_spec_add_allow(s, "tcp:0", &err), -EINVAL);
	assert_int_equal(vm_spec_add_allow(s, "tcp:65536", &err), -EINVAL);
	assert_int_equal(vm_spec_add_allow(s, "sctp:80", &err), -EINVAL);
	assert_int_equal(vm_spec_add_allow(s, "8080", &err), -EINVAL);
	assert_int_equal(s->n_allow, 2);
	assert_int_equal(vm_spec_set_dns(s, "192.0.2.53", &err), 0);
	assert_int_equal(vm_spec_set_dns(s, "dns.example", &err), -EINVAL);
	assert_int_equal(vm_spec_validate(s, false, &err), 0);

	o = vm_spec_to_json(s);
	assert_true(json_object_object_get_ex(o, "network", &net));
	assert_true(json_object_object_get_ex(net, "mode", &mode));
	assert_string_equal(json_object_get_string(mode), "nat-filtered");
	json_object_put(o);

	/* Filtering flags make no sense without a filtered NIC. */
	assert_int_equal(vm_spec_set_network(s, "isolated", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), -EINVAL);
	assert_int_equal(vm_spec_set_network(s, "bridge:br0", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), -EINVAL);
	vm_spec_free(s);
}

static void test_disk_flags(void **state)
{
	struct vm_spec *s = vm_spec_new(), *back = vm_spec_new();
	struct avm_error err = { 0 };
	char img[] = "/tmp/avm-unit-disk.XXXXXX", arg[256];
	int fd = mkstemp(img);
	struct json_object *o;

	assert_true(fd >= 0);
	close(fd);
	/* FILE alone: the first disk is /workspace, the next /mnt/disk1; rw unless :ro. */
	assert_int_equal(vm_spec_add_disk(s, img, &err), 0);
	assert_string_equal(s->disks[0].file, img);
	assert_string_equal(s->disks[0].guest_dir, "/workspace");
	assert_false(s->disks[0].readonly);
	snprintf(arg, sizeof(arg), "%s:ro", img);
	assert_int_equal(vm_spec_add_disk(s, arg, &err), 0);
	assert_string_equal(s->disks[1].guest_dir, "/mnt/disk1");
	assert_true(s->disks[1].readonly);
	snprintf(arg, sizeof(arg), "%s:/data/set-1:rw", img);
	assert_int_equal(vm_spec_add_disk(s, arg, &err), 0);
	assert_string_equal(s->disks[2].guest_dir, "/data/set-1");
	assert_false(s->disks[2].readonly);
	assert_int_equal(s->n_disks, 3);

	/* Rejected, each with a message, and nothing added. */
	snprintf(arg, sizeof(arg), "%s:/data/set-1", img);
	assert_int_equal(vm_spec_add_disk(s, arg, &err), -EINVAL); /* same dir twice */
	assert_non_null(strstr(err.msg, "own directory"));
	static const char *const bad_dirs[] = { "/", "/proc", "/dev/x", "/etc", "/a/../b", "/a/./b",
						"/a//b", "/a/", "/sp ace", "/semi;colon" };
	for (size_t i = 0; i < sizeof(bad_dirs) / sizeof(bad_dirs[0]); i++) {
		snprintf(arg, sizeof(arg), "%s:%s", img, bad_dirs[i]);
		assert_int_not_equal(vm_spec_add_disk(s, arg, &err), 0);
	}
	assert_int_equal(vm_spec_add_disk(s, "/nonexistent/img", &err), -ENOENT);
	assert_non_null(strstr(err.msg, "mkfs.ext4"));
	assert_int_equal(vm_spec_add_disk(s, "/tmp", &err), -EINVAL); /* a directory */
	assert_int_equal(vm_spec_add_disk(s, ":/workspace2", &err), -EINVAL);
	assert_int_equal(s->n_disks, 3);

	/* spec.json round trip (what snapshots and clones read back). */
	o = vm_spec_to_json(s);
	assert_int_equal(vm_spec_disks_from_json(back, o, &err), 0);
	assert_int_equal(back->n_disks, 3);
	assert_string_equal(back->disks[2].guest_dir, "/data/set-1");
	assert_true(back->disks[1].readonly);
	json_object_put(o);

	for (int i = 3; i < 6; i++) {
		snprintf(arg, sizeof(arg), "%s:/d%d", img, i);
		assert_int_equal(vm_spec_add_disk(s, arg, &err), 0);
	}
	assert_int_equal(vm_spec_add_disk(s, img, &err), -E2BIG);
	/* 8 virtio slots: serial + rng + NIC leave 5 disks, 6 without a network. */
	assert_int_equal(vm_spec_validate(s, false, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "at most 5 disks with a network"));
	assert_int_equal(vm_spec_set_network(s, "isolated", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), 0);
	unlink(img);
	vm_spec_free(s);
	vm_spec_free(back);
}

/* --allow-host: the same syntax and limits as --allow, its own list, nat-filtered only. */
static void test_allow_host(void **state)
{
	struct vm_spec *s = vm_spec_new(), *back = vm_spec_new();
	struct avm_error err = { 0 };
	struct json_object *o, *net, *ha;

	assert_int_equal(s->n_host_allow, 0);
	assert_int_equal(vm_spec_add_host_allow(s, "tcp:8000", &err), 0);
	assert_int_equal(vm_spec_add_host_allow(s, "udp:5353", &err), 0);
	assert_int_equal(vm_spec_add_host_allow(s, "tcp:0", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--allow-host: "));
	assert_int_equal(vm_spec_add_host_allow(s, "tcp:65536", &err), -EINVAL);
	assert_int_equal(vm_spec_add_host_allow(s, "icmp:1", &err), -EINVAL);
	assert_int_equal(vm_spec_add_host_allow(s, "tcp:http", &err), -EINVAL);
	assert_int_equal(vm_spec_add_host_allow(s, "8000", &err), -EINVAL);
	assert_int_equal(s->n_host_allow, 2);
	assert_string_equal(s->host_allow[0], "tcp:8000");
	assert_string_equal(s->host_allow[1], "udp:5353");
	assert_null(s->host_allow[2]);
	assert_int_equal(s->n_allow, 0); /* not the egress list */
	for (int i = 2; i < VM_SPEC_MAX_ALLOW; i++)
		assert_int_equal(vm_spec_add_host_allow(s, "tcp:9000", &err), 0);
	assert_int_equal(vm_spec_add_host_allow(s, "tcp:9000", &err), -E2BIG);
	assert_non_null(strstr(err.msg, "too many --allow-host values"));

	/* --deny-all-egress empties the egress list only. */
	s->deny_all_egress = true;
	assert_int_equal(vm_spec_validate(s, false, &err), 0);

	/* spec.json and back (what snapshots, restore and reset read). */
	o = vm_spec_to_json(s);
	assert_true(json_object_object_get_ex(o, "network", &net));
	assert_true(json_object_object_get_ex(net, "host_allow", &ha));
	assert_int_equal(json_object_array_length(ha), VM_SPEC_MAX_ALLOW);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(ha, 0)), "tcp:8000");
	assert_int_equal(vm_spec_net_from_json(back, o), 0);
	assert_int_equal(back->net_mode, VM_NET_NAT_FILTERED);
	assert_int_equal(back->n_host_allow, VM_SPEC_MAX_ALLOW);
	assert_string_equal(back->host_allow[1], "udp:5353");
	assert_true(back->deny_all_egress);
	assert_int_equal(back->n_allow, 0);
	json_object_put(o);

	/* A spec.json of an older agentvm has no host_allow: none. */
	o = json_tokener_parse("{\"network\":{\"mode\":\"nat-filtered\",\"allow\":[\"tcp:1\"]}}");
	vm_spec_free(back);
	back = vm_spec_new();
	assert_int_equal(vm_spec_net_from_json(back, o), 0);
	assert_int_equal(back->n_host_allow, 0);
	assert_null(back->host_allow);
	json_object_put(o);
	/* A bad port in a spec.json is an error, as for allow. */
	o = json_tokener_parse("{\"network\":{\"mode\":\"nat-filtered\",\"host_allow\":[\"tcp:0\"]}}");
	assert_int_equal(vm_spec_net_from_json(back, o), -EINVAL);
	json_object_put(o);

	/* Without a filtered NIC it is an error that names the flag. */
	s->deny_all_egress = false;
	assert_int_equal(vm_spec_set_network(s, "isolated", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), -EINVAL);
	assert_string_equal(err.msg, "--allow-host needs a network; --network isolated has none");
	assert_int_equal(vm_spec_set_network(s, "bridge:br0", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), -EINVAL);
	assert_string_equal(err.msg,
			    "--allow-host filters nat-filtered VMs only; a bridged VM is not filtered");
	assert_int_equal(vm_spec_set_network(s, "nat-filtered", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), 0);
	vm_spec_free(back);
	vm_spec_free(s);
}

static void test_image_in_spec_json(void **state)
{
	/* What a snapshot's or a VM's spec.json says of a root image, read back. */
	const char *text = "{\"disks\": [{\"file\": \"/w.img\", \"mount\": \"/workspace\"},"
			   " {\"file\": \"/c/images/ab/rootfs.ext4\", \"mount\": \"/\","
			   " \"root\": true}], \"image\": {\"name\": \"agent\", \"id\": \"ab\"}}";
	struct json_object *o = json_tokener_parse(text), *again;
	struct vm_spec *s = vm_spec_new(), *back = vm_spec_new();
	struct avm_error err = { 0 };

	assert_non_null(o);
	assert_int_equal(vm_spec_disks_from_json(s, o, &err), 0);
	assert_int_equal(s->n_disks, 2);
	assert_false(s->disks[0].root);
	assert_true(s->disks[1].root);
	assert_string_equal(s->disks[1].guest_dir, "/");
	assert_string_equal(s->image, "agent");
	assert_string_equal(s->image_id, "ab");
	json_object_put(o);

	/* Round trip. */
	again = vm_spec_to_json(s);
	assert_int_equal(vm_spec_disks_from_json(back, again, &err), 0);
	assert_true(back->disks[1].root);
	assert_string_equal(back->image, "agent");
	json_object_put(again);
	vm_spec_free(back);
	vm_spec_free(s);

	/* A root disk without "image", an "image" without a root disk, two roots: refused. */
	static const char *const bad[] = {
		"{\"disks\": [{\"file\": \"/r\", \"mount\": \"/\", \"root\": true}]}",
		"{\"image\": {\"name\": \"a\", \"id\": \"b\"}}",
		"{\"disks\": [{\"file\": \"/r\", \"mount\": \"/\", \"root\": true},"
		" {\"file\": \"/q\", \"mount\": \"/\", \"root\": true}],"
		" \"image\": {\"name\": \"a\", \"id\": \"b\"}}",
		"{\"disks\": [{\"file\": \"/r\", \"mount\": \"/\", \"root\": true}],"
		" \"image\": {\"name\": 7}}",
		/* "/" is only ever the root image's */
		"{\"disks\": [{\"file\": \"/r\", \"mount\": \"/\"}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = vm_spec_new();
		o = json_tokener_parse(bad[i]);
		assert_non_null(o);
		assert_int_equal(vm_spec_disks_from_json(s, o, &err), -EINVAL);
		json_object_put(o);
		vm_spec_free(s);
	}
}

static void test_share_and_workspace_flags(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };
	char dir[] = "/tmp/avm-unit-share.XXXXXX", arg[256], ws[300];
	struct json_object *o, *a;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(arg, sizeof(arg), "%s:/data:ro", dir);
	assert_int_equal(vm_spec_add_share(s, arg, &err), 0);
	assert_string_equal(s->shares[0].host_dir, dir);
	assert_string_equal(s->shares[0].guest_dir, "/data");
	assert_true(s->shares[0].readonly);
	/* Refused, each with a message, and nothing added. */
	snprintf(arg, sizeof(arg), "%s:/data", dir);
	assert_int_equal(vm_spec_add_share(s, arg, &err), -EINVAL); /* same dir twice */
	snprintf(arg, sizeof(arg), "%s:/etc", dir);
	assert_int_equal(vm_spec_add_share(s, arg, &err), -EINVAL); /* a system dir */
	snprintf(arg, sizeof(arg), "%s:/a/../b", dir);
	assert_int_equal(vm_spec_add_share(s, arg, &err), -EINVAL);
	assert_int_equal(vm_spec_add_share(s, dir, &err), -EINVAL); /* no guest dir */
	assert_non_null(strstr(err.msg, "HOSTDIR:GUESTDIR"));
	assert_int_equal(vm_spec_add_share(s, "/nonexistent/dir:/x", &err), -ENOENT);
	assert_int_equal(vm_spec_add_share(s, "/etc/hostname:/x", &err), -ENOTDIR);
	assert_int_equal(s->n_shares, 1);

	/* --workspace: three shares, the directories made when missing. */
	snprintf(ws, sizeof(ws), "%s/ws", dir);
	assert_int_equal(vm_spec_set_workspace(s, ws, &err), 0);
	assert_int_equal(s->n_shares, 4);
	assert_string_equal(s->shares[1].guest_dir, "/workspace/input");
	assert_true(s->shares[1].readonly);
	assert_string_equal(s->shares[2].guest_dir, "/workspace/output");
	assert_false(s->shares[2].readonly);
	assert_string_equal(s->shares[3].guest_dir, "/workspace/work");
	snprintf(arg, sizeof(arg), "%s/ws/work", dir);
	assert_int_equal(stat(arg, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* Disks and shares share the virtio slots: 4 shares + 2 disks > 5 with a network. */
	char img[] = "/tmp/avm-unit-sdisk.XXXXXX";
	int fd = mkstemp(img);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(vm_spec_add_disk(s, img, &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), 0);
	snprintf(arg, sizeof(arg), "%s:/d2", img);
	assert_int_equal(vm_spec_add_disk(s, arg, &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "virtio slots"));
	assert_int_equal(vm_spec_set_network(s, "isolated", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), 0);

	/* spec.json records them: snapshot save refuses a VM by this key. */
	o = vm_spec_to_json(s);
	assert_true(json_object_object_get_ex(o, "shares", &a));
	assert_int_equal(json_object_array_length(a), 4);
	json_object_put(o);
	vm_spec_free(s);
	unlink(img);
	for (const char *sub = "input"; sub; sub = !strcmp(sub, "input") ? "output" : !strcmp(sub, "output") ? "work" : NULL) {
		snprintf(arg, sizeof(arg), "%s/ws/%s", dir, sub);
		rmdir(arg);
	}
	rmdir(ws);
	rmdir(dir);
}

/* --bandwidth unlimited asks an isolated VM for nothing: not refused as an egress flag. */
static void test_bandwidth_unlimited_is_no_egress_flag(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };

	assert_int_equal(vm_spec_set_bandwidth(s, "unlimited", &err), 0);
	assert_null(vm_spec_egress_flag(s));
	assert_int_equal(vm_spec_set_bandwidth(s, "8mbit", &err), 0);
	assert_string_equal(vm_spec_egress_flag(s), "--bandwidth");
	vm_spec_free(s);
}

static void test_egress_flags(void **state)
{
	struct vm_spec *s = vm_spec_new(), *back = vm_spec_new(), *copy = vm_spec_new();
	struct avm_error err = { 0 };
	struct json_object *o, *net, *v;

	assert_int_equal(vm_spec_add_allow_cidr(s, "10.1.0.0/16", &err), 0);
	assert_int_equal(vm_spec_add_allow_cidr(s, "169.254.169.254:tcp:80", &err), 0);
	assert_string_equal(s->allow_cidr[1], "169.254.169.254/32:tcp:80"); /* normalised */
	assert_int_equal(vm_spec_add_allow_cidr(s, "10.1.0.1/16", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--allow-cidr: "));
	assert_non_null(strstr(err.msg, "host bits"));
	assert_int_equal(vm_spec_add_allow_domain(s, "API.Example.com.", &err), 0);
	assert_int_equal(vm_spec_add_allow_domain(s, "*.github.com", &err), 0);
	assert_string_equal(s->allow_domain[0], "api.example.com");
	assert_int_equal(vm_spec_add_allow_domain(s, "com", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--allow-domain: "));
	assert_int_equal(vm_spec_add_allow_domain(s, "a..b", &err), -EINVAL);
	assert_int_equal(vm_spec_add_allow_domain(s, "a/b.com", &err), -EINVAL);
	assert_int_equal(vm_spec_add_allow_domain(s, "*.*.b.com", &err), -EINVAL);
	assert_int_equal(vm_spec_set_domain_ttl(s, "0", &err), -EINVAL);
	assert_int_equal(vm_spec_set_domain_ttl(s, "30", &err), 0);
	assert_int_equal(vm_spec_set_conn_limit(s, "x", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--conn-limit 'x'"));
	assert_int_equal(vm_spec_set_conn_limit(s, "500", &err), 0);
	assert_int_equal(vm_spec_set_conn_rate(s, "50", &err), 0);
	assert_int_equal(vm_spec_set_bandwidth(s, "fast", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--bandwidth: "));
	assert_int_equal(vm_spec_set_bandwidth(s, "20mbit:256k", &err), 0);
	assert_int_equal(vm_spec_validate(s, false, &err), 0);

	/* spec.json and back (snapshots, restore, reset, the pool). */
	o = vm_spec_to_json(s);
	assert_true(json_object_object_get_ex(o, "network", &net));
	assert_true(json_object_object_get_ex(net, "allow_domain", &v));
	assert_int_equal(json_object_array_length(v), 2);
	assert_int_equal(vm_spec_net_from_json(back, o), 0);
	assert_int_equal(back->n_allow_cidr, 2);
	assert_string_equal(back->allow_cidr[0], "10.1.0.0/16");
	assert_int_equal(back->n_allow_domain, 2);
	assert_string_equal(back->allow_domain[1], "*.github.com");
	assert_int_equal(back->domain_ttl, 30);
	assert_int_equal(back->conn_limit, 500);
	assert_int_equal(back->conn_rate, 50);
	assert_string_equal(back->bandwidth, "20mbit:256k");
	json_object_put(o);
	/* The override of restore/serve copies all of it. */
	assert_int_equal(vm_spec_copy_egress(copy, back), 0);
	assert_int_equal(copy->n_allow_domain, 2);
	assert_string_equal(copy->allow_domain[0], "api.example.com");
	assert_string_equal(copy->bandwidth, "20mbit:256k");
	assert_int_equal(copy->conn_rate, 50);

	/* Older spec.json: none of it. */
	vm_spec_free(back);
	back = vm_spec_new();
	o = json_tokener_parse("{\"network\":{\"mode\":\"nat-filtered\"}}");
	assert_int_equal(vm_spec_net_from_json(back, o), 0);
	assert_int_equal(back->n_allow_domain, 0);
	assert_null(back->bandwidth);
	json_object_put(o);

	/* Without a filtered NIC: an error naming the flag. */
	assert_int_equal(vm_spec_set_network(copy, "isolated", &err), 0);
	assert_int_equal(vm_spec_validate(copy, false, &err), -EINVAL);
	assert_string_equal(err.msg, "--allow-cidr needs a network; --network isolated has none");
	vm_spec_free(copy);
	vm_spec_free(back);
	vm_spec_free(s);
}

/* Every VM has a bandwidth from its profile unless --bandwidth says otherwise (issue 16). */
static void test_bandwidth_defaults_from_profile(void **state)
{
	struct vm_spec *s = vm_spec_new();
	struct avm_error err = { 0 };

	assert_string_equal(vm_spec_bandwidth(s), "200mbit"); /* light, the default profile */
	assert_int_equal(vm_spec_set_profile(s, "standard", &err), 0);
	assert_string_equal(vm_spec_bandwidth(s), "500mbit");
	assert_int_equal(vm_spec_set_profile(s, "intensive", &err), 0);
	assert_string_equal(vm_spec_bandwidth(s), "1gbit");
	assert_int_equal(vm_spec_set_memory(s, "1024", &err), 0); /* custom size */
	assert_string_equal(vm_spec_bandwidth(s), VM_BANDWIDTH_DEFAULT);
	assert_int_equal(vm_spec_set_bandwidth(s, "20mbit:256k", &err), 0);
	assert_string_equal(vm_spec_bandwidth(s), "20mbit:256k");
	assert_int_equal(vm_spec_set_bandwidth(s, "unlimited", &err), 0);
	assert_null(vm_spec_bandwidth(s));
	assert_int_equal(vm_spec_set_bandwidth(s, "fast", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "or unlimited"));
	/* Every profile's default parses as a --bandwidth would. */
	for (const struct vm_profile *p = vm_profiles; p->name; p++)
		assert_int_equal(vm_spec_set_bandwidth(s, p->bandwidth, &err), 0);
	vm_spec_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_profile_is_light),
		cmocka_unit_test(test_profiles_match_product_spec),
		cmocka_unit_test(test_sizes_override_and_limits),
		cmocka_unit_test(test_env_validation),
		cmocka_unit_test(test_accel_and_workdir),
		cmocka_unit_test(test_command_required_and_json),
		cmocka_unit_test(test_network_flags),
		cmocka_unit_test(test_disk_flags),
		cmocka_unit_test(test_allow_host),
		cmocka_unit_test(test_image_in_spec_json),
		cmocka_unit_test(test_share_and_workspace_flags),
		cmocka_unit_test(test_egress_flags),
		cmocka_unit_test(test_bandwidth_unlimited_is_no_egress_flag),
		cmocka_unit_test(test_bandwidth_defaults_from_profile),
	};
	return cmocka_run_group_tests_name("spec", tests, NULL, NULL);
}
