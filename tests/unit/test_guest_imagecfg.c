/* SPDX-License-Identifier: MIT */
/*
 * A root image's defaults (/etc/agentvm/env and exec) and how an EXEC request combines them
 * with its own env, cwd and ids and the agent's built-in defaults.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guest-init/exec.h"
#include "guest-init/imagecfg.h"
#include "guest-init/proto.h"

static int reset(void **state)
{
	memset(&imagecfg, 0, sizeof(imagecfg));
	return 0;
}

static const char *env_get(char **envp, const char *key)
{
	size_t kl = strlen(key);

	for (; *envp; envp++)
		if (strncmp(*envp, key, kl) == 0 && (*envp)[kl] == '=')
			return *envp + kl + 1;
	return NULL;
}

static size_t env_count(char **envp, const char *key)
{
	size_t n = 0, kl = strlen(key);

	for (; *envp; envp++)
		n += strncmp(*envp, key, kl) == 0 && (*envp)[kl] == '=';
	return n;
}

/* An EXEC payload: argv "true", then the given TLVs. */
static void parse_req(struct exec_req *req, const char *env, const char *cwd, int64_t uid)
{
	struct avm_buf b = { 0 };
	const char *why = NULL;

	assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_ARG, "true"), 0);
	if (env)
		assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_ENV, env), 0);
	if (cwd)
		assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_CWD, cwd), 0);
	if (uid >= 0)
		assert_int_equal(avm_tlv_put_u32(&b, AVM_TAG_UID, (uint32_t)uid), 0);
	assert_int_equal(exec_req_parse(b.data, b.len, req, &why), 0);
	avm_buf_release(&b);
}

static void test_env_file(void **state)
{
	const char text[] = "PATH=/usr/local/bin:/usr/bin:/bin\n"
			    "\n"
			    "LANG=C.UTF-8\n"
			    "not an entry\n"
			    "1BAD=x\n"
			    "=nokey\n"
			    "EMPTY=\n"
			    "PATH=/opt/bin:/usr/bin\n"
			    "LAST=no newline";

	assert_int_equal(imagecfg_parse_env(&imagecfg, text, sizeof(text) - 1), 0);
	assert_int_equal(imagecfg.n_env, 4);
	assert_string_equal(imagecfg.env[0], "PATH=/opt/bin:/usr/bin"); /* the later line wins */
	assert_string_equal(imagecfg.env[1], "LANG=C.UTF-8");
	assert_string_equal(imagecfg.env[2], "EMPTY=");
	assert_string_equal(imagecfg.env[3], "LAST=no newline");
	assert_int_equal(imagecfg.rejected, 3);
}

static void test_env_limits(void **state)
{
	size_t big = IMAGECFG_FILE_MAX + 1;
	char *text = malloc(big), *p;

	assert_non_null(text);
	memset(text, 'A', big);
	assert_int_equal(imagecfg_parse_env(&imagecfg, text, big), -E2BIG);
	assert_int_equal(imagecfg.n_env, 0);

	/* More keys than IMAGECFG_ENV_MAX: the rest are counted, not kept. */
	p = text;
	for (int i = 0; i < IMAGECFG_ENV_MAX + 10; i++)
		p += sprintf(p, "K%d=v\n", i);
	assert_int_equal(imagecfg_parse_env(&imagecfg, text, (size_t)(p - text)), 0);
	assert_int_equal(imagecfg.n_env, IMAGECFG_ENV_MAX);
	assert_int_equal(imagecfg.rejected, 10);

	/* A NUL inside a line would cut the value: refused. */
	assert_int_equal(imagecfg_parse_env(&imagecfg, "A=1\0x\nB=2\n", 10), 0);
	assert_int_equal(imagecfg.n_env, 1);
	assert_string_equal(imagecfg.env[0], "B=2");
	free(text);
}

static void test_exec_file(void **state)
{
	const char text[] = "workdir=/app\nuser=1000:100\nshell=/bin/zsh\nuser=-1:0\n"
			    "workdir=relative\nuser=4294967295:1\nuser=12\n";

	assert_int_equal(imagecfg_parse_exec(&imagecfg, text, sizeof(text) - 1), 0);
	assert_string_equal(imagecfg.workdir, "/app");
	assert_true(imagecfg.has_user);
	assert_int_equal(imagecfg.uid, 1000);
	assert_int_equal(imagecfg.gid, 100);
	assert_int_equal(imagecfg.rejected, 5);
}

static void test_request_without_image(void **state)
{
	struct exec_req req;

	parse_req(&req, NULL, NULL, -1);
	assert_string_equal(env_get(req.envp, "PATH"), "/bin:/sbin:/usr/bin:/usr/sbin");
	assert_string_equal(env_get(req.envp, "HOME"), "/root");
	assert_string_equal(req.cwd, "/root");
	assert_false(req.set_ids);
	exec_req_free(&req);
}

static void test_request_with_image(void **state)
{
	const char env[] = "PATH=/usr/local/bin:/usr/bin\nNODE_EXTRA_CA_CERTS=/etc/ca.crt\n"
			   "HOME=/home/app\n";
	const char exec[] = "workdir=/srv\nuser=1000:1000\n";
	struct exec_req req;

	assert_int_equal(imagecfg_parse_env(&imagecfg, env, sizeof(env) - 1), 0);
	assert_int_equal(imagecfg_parse_exec(&imagecfg, exec, sizeof(exec) - 1), 0);

	/* The image's defaults replace the agent's; keys the image lacks keep the agent's. */
	parse_req(&req, NULL, NULL, -1);
	assert_string_equal(env_get(req.envp, "PATH"), "/usr/local/bin:/usr/bin");
	assert_string_equal(req.path, "/usr/local/bin:/usr/bin");
	assert_string_equal(env_get(req.envp, "HOME"), "/home/app");
	assert_int_equal(env_count(req.envp, "HOME"), 1);
	assert_int_equal(env_count(req.envp, "PATH"), 1);
	assert_string_equal(env_get(req.envp, "NODE_EXTRA_CA_CERTS"), "/etc/ca.crt");
	assert_string_equal(env_get(req.envp, "LANG"), "C.UTF-8");
	assert_string_equal(req.cwd, "/srv");
	assert_true(req.set_ids);
	assert_int_equal(req.uid, 1000);
	assert_int_equal(req.gid, 1000);
	exec_req_free(&req);

	/* The request's own env, cwd and uid win over the image's. */
	parse_req(&req, "PATH=/x", "/tmp", 0);
	assert_string_equal(env_get(req.envp, "PATH"), "/x");
	assert_int_equal(env_count(req.envp, "PATH"), 1);
	assert_string_equal(req.path, "/x");
	assert_string_equal(req.cwd, "/tmp");
	assert_int_equal(req.uid, 0);
	assert_int_equal(req.gid, 0);
	exec_req_free(&req);
}

/* AVM_TAG_ROOT (the containerd shim): an absolute dir, once; kept apart from the cwd. */
static void test_request_root(void **state)
{
	struct avm_buf b = { 0 };
	struct exec_req req;
	const char *why = NULL;
	static const char *const bad[] = { "rel/dir", "/", "" };

	assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_ARG, "true"), 0);
	assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_ROOT, "/mnt/rootfs"), 0);
	assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_CWD, "/opt"), 0);
	assert_int_equal(exec_req_parse(b.data, b.len, &req, &why), 0);
	assert_string_equal(req.root, "/mnt/rootfs");
	assert_string_equal(req.cwd, "/opt");
	exec_req_free(&req);
	assert_int_equal(avm_tlv_put_str(&b, AVM_TAG_ROOT, "/mnt/other"), 0);
	assert_int_equal(exec_req_parse(b.data, b.len, &req, &why), -EINVAL);
	assert_string_equal(why, "duplicate root");
	avm_buf_release(&b);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct avm_buf c = { 0 };
		assert_int_equal(avm_tlv_put_str(&c, AVM_TAG_ARG, "true"), 0);
		assert_int_equal(avm_tlv_put_str(&c, AVM_TAG_ROOT, bad[i]), 0);
		assert_int_equal(exec_req_parse(c.data, c.len, &req, &why), -EINVAL);
		avm_buf_release(&c);
	}
	/* Without the tag: no chroot. */
	parse_req(&req, NULL, NULL, -1);
	assert_null(req.root);
	exec_req_free(&req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_request_root, reset),
		cmocka_unit_test_setup(test_env_file, reset),
		cmocka_unit_test_setup(test_env_limits, reset),
		cmocka_unit_test_setup(test_exec_file, reset),
		cmocka_unit_test_setup(test_request_without_image, reset),
		cmocka_unit_test_setup(test_request_with_image, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
