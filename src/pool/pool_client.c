/* SPDX-License-Identifier: MIT */
/* The pool's client side: one request line to <state root>/.pool.sock, one reply line back. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/sha256.h"
#include "pool/pool.h"
#include "state/statedir.h"
#include "base/util.h"
#include "vm/host.h"
#include "vm/vm.h"
#include "control/vm_start.h"
#include "control/vmctl.h"

/* A connection to the pool's socket into *fd; -ECONNREFUSED (err says how) when none serves. */
static int pool_connect(int *fd, struct avm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", statedir_root(), POOL_SOCK);
	*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*fd >= 0 && connect(*fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return 0;
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	return avm_error_set(err, -ECONNREFUSED,
			     "no pool is serving in %s; start one with 'agentvm serve --pool "
			     "SNAPSHOT ...'",
			     statedir_root());
}

/* One request line on fd and its reply line, without its '\n', into out. */
static int exchange(int fd, const char *req, char *out, size_t len, struct avm_error *err)
{
	size_t got = 0;
	ssize_t n;

	/* A full pool answers with one ERR line and closes before reading: the write may fail
	 * (EPIPE) with the answer waiting to be read, so read it before reporting the write. */
	int wr = write_all(fd, req, strlen(req));
	while (got < len - 1 && (n = read(fd, out + got, len - 1 - got)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return avm_error_setx(err, -errno, "reading from the pool");
		}
		got += (size_t)n;
		if (memchr(out, '\n', got))
			break;
	}
	out[got] = '\0';
	char *nl = strchr(out, '\n');
	if (!nl && wr < 0)
		return avm_error_setx(err, wr, "writing to the pool");
	if (!nl)
		return avm_error_set(err, -EPIPE, "the pool closed the connection");
	*nl = '\0';
	return 0;
}

int pool_request(const char *req, char *out, size_t len, struct avm_error *err)
{
	_cleanup_close_ int fd = -1;
	int r = pool_connect(&fd, err);

	return r < 0 ? r : exchange(fd, req, out, len, err);
}

int pool_sock_remove_stale(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", statedir_root(), POOL_SOCK) >=
	    (int)sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (lstat(sa.sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno != ECONNREFUSED)
		return 0;
	return unlink(sa.sun_path) < 0 ? -errno : 1;
}

/* A request and its reply; "ERR ..." as an error (kind STATE; "ERR TIMEOUT ...": -ETIMEDOUT). */
static int pool_call(const char *req, char *out, size_t len, struct avm_error *err)
{
	int r = pool_request(req, out, len, err);

	if (r < 0)
		return avm_error_kind(err, AVM_ERR_STATE, r);
	if (!strncmp(out, "ERR ", 4)) {
		bool to = !strncmp(out + 4, "TIMEOUT ", 8);
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_set(err, to ? -ETIMEDOUT : -EAGAIN, "%s",
						    out + (to ? 12 : 4)));
	}
	return 0;
}

int pool_acquire(long timeout_s, char *name, size_t len, struct avm_error *err)
{
	char req[64], buf[256];
	int r;

	snprintf(req, sizeof(req), "ACQUIRE %ld\n", timeout_s * 1000);
	if ((r = pool_call(req, buf, sizeof(buf), err)) < 0)
		return r;
	if (strncmp(buf, "OK ", 3) != 0 || snprintf(name, len, "%s", buf + 3) >= (int)len)
		return avm_error_kind(err, AVM_ERR_INTERNAL,
				      avm_error_set(err, -EPROTO, "the pool answered '%s'", buf));
	return 0;
}

int pool_release(const char *name, struct avm_error *err)
{
	char req[256], buf[256];
	int r;

	if ((r = statedir_validate_name(name, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	snprintf(req, sizeof(req), "RELEASE %s\n", name);
	return pool_call(req, buf, sizeof(buf), err);
}

int pool_status(char *out, size_t len, struct avm_error *err)
{
	return pool_call("STATUS\n", out, len, err);
}

void pool_metrics_query(struct metrics_pool *p)
{
	char line[65536];
	struct json_object *o;

	memset(p, 0, sizeof(*p));
	if (pool_request("STATUS\n", line, sizeof(line), NULL) < 0)
		return;
	o = json_tokener_parse(line);
	if (o && json_object_is_type(o, json_type_object)) {
		p->present = true;
		p->ready = (long)json_get_u64(o, "ready");
		p->starting = (long)json_get_u64(o, "starting");
		p->acquired = (long)json_get_u64(o, "leased");
		p->waiting = (long)json_get_u64(o, "waiting");
		p->refill_failures = json_get_u64(o, "refill_failures");
	}
	json_object_put(o);
}

int pool_run_key(const struct vm_spec *spec, char key[65], struct avm_error *err)
{
	/* A command's own, sent with its EXEC: they never shape the VM. */
	static const char *const per_command[] = { "name", "command", "env", "workdir",
						   "timeout_s" };
	enum vm_accel accel;
	struct json_object *o;
	struct sha256 h;
	uint8_t d[32];
	bool fell_back;
	const char *text;
	int r;

	_cleanup_free_ char *kernel = NULL, *initrd = NULL;

	if ((r = host_resolve_accel(spec->accel, &accel, &fell_back, err)) < 0)
		return r;
	/* The images a boot would use, wherever they came from (--kernel, AGENTVM_IMAGES, ...). */
	if ((r = host_guest_images(spec->kernel, spec->initrd, &kernel, &initrd, err)) < 0)
		return r;
	if (!(o = vm_spec_to_json(spec)))
		return avm_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < sizeof(per_command) / sizeof(per_command[0]); i++)
		json_object_object_del(o, per_command[i]);
	json_object_object_add(o, "accel", json_object_new_string(vm_accel_name(accel)));
	json_object_object_add(o, "kernel", json_object_new_string(kernel));
	json_object_object_add(o, "initrd", json_object_new_string(initrd));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	sha256_init(&h);
	sha256_update(&h, text, strlen(text));
	sha256_final(&h, d);
	json_object_put(o);
	for (int i = 0; i < 32; i++)
		snprintf(key + 2 * i, 3, "%02x", d[i]);
	return 0;
}

int pool_run_acquire(const struct vm_spec *spec, char *name, size_t len, int *lease_fd,
		     struct avm_error *err)
{
	/* A pool that does not answer at once is no help to a run that boots in 0.2 s. */
	struct timeval tv = { .tv_sec = 1 };
	char key[65], req[128], buf[256];
	const char *bc = getenv("AGENTVM_BOOT_CACHE");
	int fd, r;

	*lease_fd = -1;
	/* Like --cold: a real boot was asked for. */
	if (bc && !strcmp(bc, "0"))
		return 0;
	if (pool_connect(&fd, NULL) < 0)
		return 0;
	if ((r = pool_run_key(spec, key, err)) < 0) {
		close(fd);
		return r;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(req, sizeof(req), "ACQUIRE 0 %s\n", key);
	/* Any refusal (another spec, none ready, a pool of another kind) means: boot. */
	if (exchange(fd, req, buf, sizeof(buf), NULL) < 0 || strncmp(buf, "OK ", 3) != 0 ||
	    statedir_validate_name(buf + 3, NULL) < 0 || snprintf(name, len, "%s", buf + 3) >= (int)len) {
		close(fd);
		return 0;
	}
	*lease_fd = fd;
	return 1;
}

int pool_run_vm(struct vm_spec *spec, bool use_pool, long boot_timeout_s, bool cold,
		bool keep_state, int sig_fd, struct vm **vm, int *lease_fd, struct avm_error *err)
{
	char name[STATEDIR_MAX_NAME + 1];
	int r = use_pool && !cold && !keep_state && !spec->name
			? pool_run_acquire(spec, name, sizeof(name), lease_fd, err)
			: (*lease_fd = -1, 0);

	if (r < 0)
		return r;
	if (r > 0) {
		if (vm_connect(name, vm, NULL) == 0)
			return 0;
		/* Nothing ran in it: give it back, and boot. */
		close(*lease_fd);
		*lease_fd = -1;
	}
	return vm_boot(spec, boot_timeout_s, cold, keep_state, sig_fd, vm, err);
}
