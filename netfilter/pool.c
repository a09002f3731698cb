// SPDX-License-Identifier: MIT
/*
 * pool.c - /30 leases out of an IPv4 pool, one file per lease in a directory.
 *
 * A lease file is named after the /30's network address ("10.213.0.4") so that two pools sharing
 * a directory can never hand out the same addresses, and holds the owner's name and a newline.
 * Publishing is write-to-temp-then-link(2): link() is atomic and fails with EEXIST when the name
 * is taken, exactly like O_CREAT|O_EXCL, but a reader never sees a lease file without its owner
 * (with O_EXCL there is a window between create and write where gc could read an empty owner).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_internal.h"

#define TMP_PREFIX ".tmp."

struct nf_pool {
	uint32_t base;	/* host order */
	uint32_t count; /* number of /30s */
	unsigned prefixlen;
	char *dir;
};

static int parse_cidr(const char *cidr, uint32_t *base, unsigned *plen, struct avm_error *err)
{
	char buf[32], *slash, *end;
	struct in_addr a;
	unsigned long n;

	if (strlen(cidr) >= sizeof(buf))
		return nf_set_error(err, -EINVAL, "bad address pool '%.40s': too long", cidr);
	strcpy(buf, cidr);
	slash = strchr(buf, '/');
	if (!slash)
		return nf_set_error(err, -EINVAL, "bad address pool '%s': expected A.B.C.D/N", cidr);
	*slash = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1)
		return nf_set_error(err, -EINVAL, "bad address pool '%s': '%s' is not an IPv4 address",
				    cidr, buf);
	errno = 0;
	n = strtoul(slash + 1, &end, 10);
	if (!slash[1] || *end || errno || slash[1] == '-' || slash[1] == '+')
		return nf_set_error(err, -EINVAL, "bad address pool '%s': bad prefix length", cidr);
	if (n > 30)
		return nf_set_error(err, -EINVAL,
				    "bad address pool '%s': prefix /%lu is smaller than one /30", cidr,
				    n);
	if (n < 8)
		return nf_set_error(err, -EINVAL, "bad address pool '%s': prefix /%lu is too large",
				    cidr, n);
	*base = ntohl(a.s_addr);
	*plen = (unsigned)n;
	if (*base & ~(0xffffffffu << (32 - n)))
		return nf_set_error(err, -EINVAL, "bad address pool '%s': host bits are set", cidr);
	return 0;
}

int nf_pool_new(const char *cidr, const char *dir, struct nf_pool **out, struct avm_error *err)
{
	struct nf_pool *p;
	uint32_t base = 0;
	unsigned plen = 0;
	int r;

	*out = NULL;
	if (!cidr)
		cidr = NF_POOL_DEFAULT;
	r = parse_cidr(cidr, &base, &plen, err);
	if (r < 0)
		return r;
	if (!dir || !*dir)
		return nf_set_error(err, -EINVAL, "no lease directory given");
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return nf_set_error(err, -errno, "cannot create lease directory %s: %s", dir,
				    strerror(errno));
	p = calloc(1, sizeof(*p));
	if (!p || !(p->dir = strdup(dir))) {
		free(p);
		return nf_set_error(err, -ENOMEM, "out of memory");
	}
	p->base = base;
	p->prefixlen = plen;
	p->count = 1u << (30 - plen);
	*out = p;
	return 0;
}

void nf_pool_free(struct nf_pool *pool)
{
	if (!pool)
		return;
	free(pool->dir);
	free(pool);
}

uint32_t nf_pool_size(const struct nf_pool *pool)
{
	return pool->count;
}

int nf_pool_addr(const struct nf_pool *pool, uint32_t k, struct nf_lease *out, struct avm_error *err)
{
	uint32_t net;

	if (k >= pool->count)
		return nf_set_error(err, -ERANGE, "/30 number %u is outside the pool (%u)", k,
				    pool->count);
	memset(out, 0, sizeof(*out));
	net = pool->base + 4 * k;
	out->index = k;
	out->network.s_addr = htonl(net);
	out->host.s_addr = htonl(net + 1);
	out->guest.s_addr = htonl(net + 2);
	out->prefixlen = 30;
	return (int)k;
}

static void lease_name(const struct nf_pool *pool, uint32_t k, char *buf, size_t len)
{
	struct in_addr a = { .s_addr = htonl(pool->base + 4 * k) };

	inet_ntop(AF_INET, &a, buf, (socklen_t)len);
}

/* Map a directory entry to k; -1 when it is not a lease of this pool. */
static int64_t lease_index(const struct nf_pool *pool, const char *name)
{
	struct in_addr a;
	uint32_t v;

	if (inet_pton(AF_INET, name, &a) != 1)
		return -1;
	v = ntohl(a.s_addr);
	if (v < pool->base || (v - pool->base) % 4 || (v - pool->base) / 4 >= pool->count)
		return -1;
	return (v - pool->base) / 4;
}

static int read_owner(int dfd, const char *name, char *owner, size_t len)
{
	_nf_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, owner, len - 1);
	if (n < 0)
		return -errno;
	owner[n] = '\0';
	owner[strcspn(owner, "\n")] = '\0';
	return 0;
}

/* Bitmap of leased /30s (one byte each: simple, 16 KiB for the default pool). */
static int used_map(struct nf_pool *pool, uint8_t **out, struct avm_error *err)
{
	uint8_t *used = calloc(pool->count, 1);
	struct dirent *e;
	DIR *d;

	if (!used)
		return nf_set_error(err, -ENOMEM, "out of memory");
	d = opendir(pool->dir);
	if (!d) {
		free(used);
		return nf_set_error(err, -errno, "cannot read lease directory %s: %s", pool->dir,
				    strerror(errno));
	}
	while ((e = readdir(d))) {
		int64_t k = lease_index(pool, e->d_name);

		if (k >= 0)
			used[k] = 1;
	}
	closedir(d);
	*out = used;
	return 0;
}

int nf_pool_alloc(struct nf_pool *pool, const char *owner, struct nf_lease *out,
		  struct avm_error *err)
{
	static unsigned tmp_seq;
	_nf_cleanup_free_ uint8_t *used = NULL;
	_nf_cleanup_close_ int dfd = -1;
	char tmp[64], name[INET_ADDRSTRLEN], line[NF_OWNER_MAX + 2];
	size_t len;
	int r, fd;

	r = nf_check_owner(owner, err);
	if (r < 0)
		return r;
	r = used_map(pool, &used, err);
	if (r < 0)
		return r;
	dfd = open(pool->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return nf_set_error(err, -errno, "cannot open lease directory %s: %s", pool->dir,
				    strerror(errno));

	snprintf(tmp, sizeof(tmp), TMP_PREFIX "%d.%u", (int)getpid(), tmp_seq++);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return nf_set_error(err, -errno, "cannot create a lease file in %s: %s", pool->dir,
				    strerror(errno));
	len = (size_t)snprintf(line, sizeof(line), "%s\n", owner);
	if (write(fd, line, len) != (ssize_t)len) {
		r = errno ? -errno : -EIO;
		close(fd);
		unlinkat(dfd, tmp, 0);
		return nf_set_error(err, r, "cannot write a lease file in %s: %s", pool->dir,
				    strerror(-r));
	}
	close(fd);

	/* The map is a hint: a racing allocator may take a free-looking k first; link() decides. */
	for (uint32_t k = 0; k < pool->count; k++) {
		if (used[k])
			continue;
		lease_name(pool, k, name, sizeof(name));
		if (linkat(dfd, tmp, dfd, name, 0) == 0) {
			unlinkat(dfd, tmp, 0);
			nf_pool_addr(pool, k, out, NULL);
			snprintf(out->owner, sizeof(out->owner), "%s", owner);
			return (int)k;
		}
		if (errno != EEXIST) {
			r = -errno;
			unlinkat(dfd, tmp, 0);
			return nf_set_error(err, r, "cannot create lease %s/%s: %s", pool->dir, name,
					    strerror(-r));
		}
	}
	unlinkat(dfd, tmp, 0);
	return nf_set_error(err, -ENOSPC, "address pool exhausted: all %u /30 networks are leased",
			    pool->count);
}

int nf_pool_release(struct nf_pool *pool, uint32_t k, struct avm_error *err)
{
	_nf_cleanup_free_ char *path = NULL;
	char name[INET_ADDRSTRLEN];

	if (k >= pool->count)
		return nf_set_error(err, -ERANGE, "/30 number %u is outside the pool (%u)", k,
				    pool->count);
	lease_name(pool, k, name, sizeof(name));
	if (asprintf(&path, "%s/%s", pool->dir, name) < 0)
		return nf_set_error(err, -ENOMEM, "out of memory");
	if (unlink(path) < 0)
		return nf_set_error(err, -errno, "cannot release lease %s: %s", path,
				    strerror(errno));
	return 0;
}

static int cmp_lease(const void *a, const void *b)
{
	const struct nf_lease *x = a, *y = b;

	return (x->index > y->index) - (x->index < y->index);
}

int nf_pool_list(struct nf_pool *pool, struct nf_lease **out, struct avm_error *err)
{
	struct nf_lease *v = NULL, *nv;
	size_t n = 0, cap = 0;
	struct dirent *e;
	DIR *d;
	int r = 0;

	*out = NULL;
	d = opendir(pool->dir);
	if (!d)
		return nf_set_error(err, -errno, "cannot read lease directory %s: %s", pool->dir,
				    strerror(errno));
	while ((e = readdir(d))) {
		int64_t k = lease_index(pool, e->d_name);
		struct nf_lease l;

		if (k < 0)
			continue;
		nf_pool_addr(pool, (uint32_t)k, &l, NULL);
		/* Released between readdir and open: not a lease any more. */
		if (read_owner(dirfd(d), e->d_name, l.owner, sizeof(l.owner)) < 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				r = nf_set_error(err, -ENOMEM, "out of memory");
				goto out;
			}
			v = nv;
		}
		v[n++] = l;
	}
	if (n) /* qsort(NULL, 0) is undefined behaviour (UBSan) */
		qsort(v, n, sizeof(*v), cmp_lease);
out:
	closedir(d);
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	return (int)n;
}

int nf_pool_find(struct nf_pool *pool, const char *owner, struct nf_lease *out,
		 struct avm_error *err)
{
	struct nf_lease *v;
	int n = nf_pool_list(pool, &v, err);

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		if (strcmp(v[i].owner, owner) == 0) {
			*out = v[i];
			free(v);
			return (int)out->index;
		}
	}
	free(v);
	return nf_set_error(err, -ENOENT, "no address lease for VM '%s'", owner);
}

/* A temp file of an allocator that died between create and unlink: its pid is gone. */
static bool stale_tmp(const char *name)
{
	long pid;
	char *end;

	if (strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
		return false;
	pid = strtol(name + strlen(TMP_PREFIX), &end, 10);
	if (pid <= 0 || *end != '.')
		return false;
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

int nf_pool_gc(struct nf_pool *pool, nf_is_alive_fn is_alive, void *userdata,
	       struct avm_error *err)
{
	struct nf_lease *v;
	int n, removed = 0;
	struct dirent *e;
	DIR *d;

	n = nf_pool_list(pool, &v, err);
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		if (is_alive(v[i].owner, userdata))
			continue;
		if (nf_pool_release(pool, v[i].index, NULL) == 0)
			removed++;
	}
	free(v);

	d = opendir(pool->dir);
	if (d) {
		while ((e = readdir(d)))
			if (stale_tmp(e->d_name))
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	return removed;
}
