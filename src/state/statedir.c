/* SPDX-License-Identifier: MIT */
#include "state/statedir.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/strv.h"
#include "base/util.h"
#include "state/paths.h"

const char *statedir_root(void)
{
	static char buf[PATH_MAX];
	const char *env = getenv("AGENTVM_STATE_DIR");
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (env && *env)
		return env;
	if (geteuid() != 0 && xdg && *xdg) {
		snprintf(buf, sizeof(buf), "%s/agentvm", xdg);
		return buf;
	}
	return "/run/agentvm";
}

int statedir_validate_name(const char *name, struct avm_error *err)
{
	if (name_is_valid(name, STATEDIR_MAX_NAME))
		return 0;
	return avm_error_set(err, -EINVAL,
			     "invalid VM name '%s': use 1-%d letters, digits, '_', '.' or '-', "
			     "starting with a letter or digit",
			     name, STATEDIR_MAX_NAME);
}

int statedir_check_trust(const char *path, const char *env, struct avm_error *err)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : avm_error_setx(err, -errno, "cannot check %s", path);
	if (S_ISLNK(st.st_mode))
		return avm_error_set(err, -EPERM,
				     "%s is a symbolic link; agentvm only uses a real directory of "
				     "yours (set %s to its target or to another directory)",
				     path, env);
	if (!S_ISDIR(st.st_mode))
		return avm_error_set(err, -EPERM, "%s is not a directory (set %s elsewhere)", path,
				     env);
	if (st.st_uid != geteuid())
		return avm_error_set(err, -EPERM,
				     "%s belongs to uid %u, not to you (uid %u): another user could "
				     "plant files there; set %s to a directory of your own",
				     path, (unsigned)st.st_uid, (unsigned)geteuid(), env);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return avm_error_set(err, -EPERM,
				     "%s is writable by group or others, who could plant files there; "
				     "fix it with 'chmod go-w %s' (or set %s elsewhere)",
				     path, path, env);
	return 0;
}

int statedir_check_all_trust(struct avm_error *err)
{
	int r;

	if ((r = statedir_check_trust(statedir_root(), "AGENTVM_STATE_DIR", err)) < 0 ||
	    (r = statedir_check_trust(paths_snapshot_root(), "AGENTVM_SNAPSHOT_DIR", err)) < 0 ||
	    (r = statedir_check_trust(paths_cache_root(), "AGENTVM_CACHE_DIR", err)) < 0)
		return r;
	return 0;
}

int statedir_check_paths(const char *name, struct avm_error *err)
{
	struct sockaddr_un sa;
	const char *root = statedir_root();
	/* The longest socket file in a state dir: agent.sock (qmp.sock is as long). */
	size_t n = strlen(root) + 1 + (name ? strlen(name) : strlen("vm-00000000")) +
		   strlen("/agent.sock");

	if (n < sizeof(sa.sun_path))
		return 0;
	return avm_error_set(err, -ENAMETOOLONG,
			     "the state directory %s is too deep: its VM sockets would be %zu bytes, "
			     "over the %zu a Unix socket path takes; set AGENTVM_STATE_DIR to a "
			     "shorter path%s",
			     root, n, sizeof(sa.sun_path) - 1, name ? " or use a shorter --name" : "");
}

void statedir_random_name(char *buf, size_t len)
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)getpid() ^ (uint32_t)now_ns();
	snprintf(buf, len, "vm-%08x", r);
}

int statedir_file(char *buf, size_t len, const char *dir, const char *file)
{
	if (snprintf(buf, len, "%s/%s", dir, file) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int statedir_sockaddr(struct sockaddr_un *sa, const char *dir, const char *file)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	int n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s", dir, file);

	return n < 0 || (size_t)n >= sizeof(sa->sun_path) ? -ENAMETOOLONG : 0;
}

int statedir_open(const char *dir, const char *file, int flags, mode_t mode)
{
	_cleanup_close_ int dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0)
		return errno == ENOTDIR ? -ELOOP : -errno;
	return open_beneath(dfd, file, flags, mode);
}

int statedir_read(const char *dir, const char *file, char **out, size_t max)
{
	_cleanup_close_ int fd = statedir_open(dir, file, O_RDONLY, 0);

	if (fd < 0)
		return fd;
	return read_fd(fd, out, max);
}

int statedir_create(const char *name, char **path, struct avm_error *err)
{
	const char *root = statedir_root();
	char buf[PATH_MAX];
	int r = statedir_check_paths(name, err);

	if (r < 0)
		return r;
	r = mkdir_p(root, 0700);
	if (r < 0)
		return avm_error_setx(err, r,
				      "cannot create the state directory %s (set AGENTVM_STATE_DIR "
				      "to a writable place, or run as root)",
				      root);
	if (snprintf(buf, sizeof(buf), "%s/%s", root, name) >= (int)sizeof(buf))
		return avm_error_set(err, -ENAMETOOLONG, "state directory path too long");
	if (mkdir(buf, 0700) < 0) {
		r = -errno;
		if (r == -EEXIST)
			return avm_error_set(err, r,
					     "a VM named '%s' already exists; pick another name or "
					     "remove it with 'agentvm rm %s'",
					     name, name);
		return avm_error_setx(err, r, "cannot create %s", buf);
	}
	*path = strdup(buf);
	if (!*path) {
		rmdir(buf);
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

int statedir_remove(const char *dir)
{
	return remove_flat_dir(dir);
}

int statedir_find(const char *name, char **path, struct avm_error *err)
{
	char buf[PATH_MAX];
	struct stat st;
	int r = statedir_validate_name(name, err);

	if (r < 0)
		return r;
	if (snprintf(buf, sizeof(buf), "%s/%s", statedir_root(), name) >= (int)sizeof(buf))
		return avm_error_set(err, -ENAMETOOLONG, "state directory path too long");
	/* lstat: a symlink in the state root is nobody's VM, and is never followed. */
	if (lstat(buf, &st) < 0 || !S_ISDIR(st.st_mode))
		return avm_error_set(err, -ENOENT, "no VM named '%s' (see 'agentvm ls')", name);
	*path = strdup(buf);
	return *path ? 0 : avm_error_set(err, -ENOMEM, "out of memory");
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int statedir_list(char ***out)
{
	struct strv v = { 0 };
	DIR *d = opendir(statedir_root());
	struct dirent *e;

	*out = NULL;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)))
		if (statedir_validate_name(e->d_name, NULL) == 0)
			strv_add(&v, e->d_name);
	closedir(d);
	if (v.failed) {
		strv_release(&v);
		return -ENOMEM;
	}
	if (v.n)
		qsort(v.v, v.n, sizeof(v.v[0]), cmp_name);
	*out = v.v;
	return (int)v.n;
}
