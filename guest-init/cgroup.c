/* SPDX-License-Identifier: MIT */
#include "cgroup.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define CG_ROOT "/sys/fs/cgroup"
#define CG_PENDING 64

static bool cg_on;
static uint32_t pending[CG_PENDING]; /* exec ids whose cgroup still had processes */
static size_t n_pending;

int cgroup_setup(void)
{
	int root;

	mkdir(CG_ROOT, 0755);
	if (mount("cgroup2", CG_ROOT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
	    errno != EBUSY)
		return -errno;
	root = open(CG_ROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -errno;
	/* One at a time: a controller the kernel lacks must not cost the others. */
	write_at_file(root, "cgroup.subtree_control", "+memory");
	write_at_file(root, "cgroup.subtree_control", "+pids");
	write_at_file(root, "cgroup.subtree_control", "+cpu");
	close(root);
	cg_on = true;
	return 0;
}

int cgroup_exec_create(uint32_t id)
{
	char path[64];
	int fd;

	if (!cg_on)
		return -1;
	snprintf(path, sizeof(path), CG_ROOT "/exec-%u", id);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -1;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -1 : fd;
}

int cgroup_exec_join(int dir_fd)
{
	return dir_fd < 0 ? 0 : write_at_file(dir_fd, "cgroup.procs", "0");
}

void cgroup_exec_signal(int dir_fd, int sig)
{
	char buf[4096];
	ssize_t n;
	int fd;

	if (dir_fd < 0)
		return;
	if (sig == SIGKILL && write_at_file(dir_fd, "cgroup.kill", "1") == 0)
		return;
	fd = openat(dir_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (char *p = buf, *end; *p; p = end) {
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 1)
			kill((pid_t)pid, sig);
	}
}

bool cgroup_exec_oom(int dir_fd)
{
	char buf[512];
	ssize_t n;
	int fd;

	if (dir_fd < 0)
		return false;
	fd = openat(dir_fd, "memory.events", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *k = strstr(buf, "oom_kill ");
	return k && strtol(k + 9, NULL, 10) > 0;
}

static bool remove_cg(uint32_t id)
{
	char path[64];

	snprintf(path, sizeof(path), CG_ROOT "/exec-%u", id);
	return rmdir(path) == 0 || errno == ENOENT;
}

void cgroup_exec_release(uint32_t id, int dir_fd)
{
	if (dir_fd < 0)
		return;
	close(dir_fd);
	if (!remove_cg(id) && n_pending < CG_PENDING)
		pending[n_pending++] = id;
}

void cgroup_gc(void)
{
	for (size_t i = 0; i < n_pending;)
		if (remove_cg(pending[i]))
			pending[i] = pending[--n_pending];
		else
			i++;
}
