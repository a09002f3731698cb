/* SPDX-License-Identifier: MIT */
/*
 * tar-out and tar-in (see tarcmd.h). They run as the exec's user (root unless the host says
 * otherwise) in the guest, so the guest's own permissions apply. tar-in walks every path one
 * component at a time with O_NOFOLLOW, so neither ".." nor a symlink (already in DEST, or
 * planted by an earlier entry of the same stream) can make it write outside DEST; a regular
 * file is written under a temporary name and renamed into place once complete.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tarcmd.h"
#include "tar.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_BUF (128 * 1024)

/* The host forwards these lines to the user as they are. */
static const char *prog = "agentvm: cp: in the guest";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

bool tarcmd_is_builtin(const char *argv0)
{
	return argv0 && (!strcmp(argv0, TARCMD_OUT) || !strcmp(argv0, TARCMD_IN));
}

/* --- tar-out ---------------------------------------------------------------------------- */

struct out {
	uint8_t *buf;
	size_t len;
	int err;
};

static int out_flush(struct out *o)
{
	size_t off = 0;

	while (off < o->len && !o->err) {
		ssize_t n = write(STDOUT_FILENO, o->buf + off, o->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			o->err = n < 0 ? errno : EIO;
		else
			off += (size_t)n;
	}
	o->len = 0;
	return o->err ? -o->err : 0;
}

static int out_put(struct out *o, const void *p, size_t n)
{
	while (n > 0) {
		size_t k = IO_BUF - o->len < n ? IO_BUF - o->len : n;
		memcpy(o->buf + o->len, p, k);
		o->len += k;
		p = (const uint8_t *)p + k;
		n -= k;
		if (o->len == IO_BUF && out_flush(o) < 0)
			return -o->err;
	}
	return 0;
}

static int out_zeros(struct out *o, size_t n)
{
	static const uint8_t z[TAR_BLOCK];

	while (n > 0) {
		size_t k = n > sizeof(z) ? sizeof(z) : n;
		if (out_put(o, z, k) < 0)
			return -o->err;
		n -= k;
	}
	return 0;
}

static int emit(struct out *o, int dirfd, const char *name, char *tpath, size_t tlen,
		struct tar_entry *e, uint8_t *hdr);

static int emit_dir(struct out *o, int fd, char *tpath, size_t tlen, struct tar_entry *e,
		    uint8_t *hdr)
{
	DIR *d = fdopendir(fd);
	struct dirent *de;
	int r = 0;

	if (!d) {
		close(fd);
		return fail("cannot read directory %s: %s", tpath, strerror(errno));
	}
	while (r == 0 && (errno = 0, de = readdir(d))) {
		size_t nl = strlen(de->d_name);

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (tlen + 1 + nl >= TAR_PATH_MAX) {
			fprintf(stderr, "%s: skipped %s/%s: path too long\n", prog, tpath,
				de->d_name);
			continue;
		}
		tpath[tlen] = '/';
		memcpy(tpath + tlen + 1, de->d_name, nl + 1);
		r = emit(o, dirfd(d), de->d_name, tpath, tlen + 1 + nl, e, hdr);
		tpath[tlen] = '\0';
	}
	if (r == 0 && errno)
		r = fail("cannot read directory %s: %s", tpath, strerror(errno));
	closedir(d);
	return r;
}

static int emit(struct out *o, int dirfd, const char *name, char *tpath, size_t tlen,
		struct tar_entry *e, uint8_t *hdr)
{
	struct stat st;
	int fd = -1, n;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail("cannot copy %s: %s", tpath, strerror(errno));
	memset(e, 0, offsetof(struct tar_entry, path));
	memcpy(e->path, tpath, tlen + 1);
	e->link[0] = '\0';
	e->mode = st.st_mode & 07777;
	e->mtime = st.st_mtim.tv_sec;
	if (S_ISREG(st.st_mode)) {
		e->type = TAR_FILE;
		e->size = (uint64_t)st.st_size;
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fail("cannot read %s: %s", tpath, strerror(errno));
	} else if (S_ISDIR(st.st_mode)) {
		e->type = TAR_DIR;
		fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fail("cannot read directory %s: %s", tpath, strerror(errno));
	} else if (S_ISLNK(st.st_mode)) {
		e->type = TAR_SYMLINK;
		ssize_t k = readlinkat(dirfd, name, e->link, sizeof(e->link) - 1);
		if (k < 0)
			return fail("cannot read link %s: %s", tpath, strerror(errno));
		e->link[k] = '\0';
	} else {
		fprintf(stderr, "%s: skipped %s: not a regular file, directory or symlink\n", prog,
			tpath);
		return 0;
	}
	n = tar_header_encode(e, hdr);
	if (n < 0 || out_put(o, hdr, (size_t)n) < 0) {
		if (fd >= 0)
			close(fd);
		return n < 0 ? fail("cannot copy %s: name too long", tpath)
			     : fail("writing the stream: %s", strerror(o->err));
	}
	if (e->type == TAR_DIR)
		return emit_dir(o, fd, tpath, tlen, e, hdr);
	if (e->type != TAR_FILE)
		return 0;

	/* Exactly the size in the header: a file that shrinks is padded, one that grows cut. */
	uint64_t left = e->size;
	int r = 0;
	while (left > 0) {
		if (o->len == IO_BUF && out_flush(o) < 0)
			break;
		size_t want = IO_BUF - o->len < left ? IO_BUF - o->len : (size_t)left;
		ssize_t k = read(fd, o->buf + o->len, want);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = fail("reading %s: %s", tpath, strerror(errno));
			break;
		}
		if (k == 0) {
			fprintf(stderr, "%s: %s shrank while it was copied; padded with zeros\n", prog,
				tpath);
			r = out_zeros(o, (size_t)left);
			left = 0;
			break;
		}
		o->len += (size_t)k;
		left -= (uint64_t)k;
	}
	close(fd);
	if (r == 0 && !o->err)
		out_zeros(o, (TAR_BLOCK - e->size % TAR_BLOCK) % TAR_BLOCK);
	if (o->err)
		return fail("writing the stream: %s", strerror(o->err));
	return r;
}

static int tar_out(const char *src, const char *name)
{
	char *dup = strdup(src), *dup2 = strdup(src);
	static char tpath[TAR_PATH_MAX];
	struct tar_entry *e = malloc(sizeof(*e));
	uint8_t *hdr = malloc(TAR_HDR_MAX);
	struct out o = { .buf = malloc(IO_BUF) };
	int dfd, r;

	if (!dup || !dup2 || !e || !hdr || !o.buf)
		return fail("out of memory");
	if (strlen(name) == 0 || strlen(name) >= TAR_PATH_MAX || strchr(name, '/'))
		return fail("bad entry name");
	const char *dir = dirname(dup), *base = basename(dup2);
	if (!strcmp(base, "/"))
		base = ".";
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (dfd < 0 || fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail("cannot copy %s: %s", src, strerror(errno));
	strcpy(tpath, name);
	r = emit(&o, dfd, base, tpath, strlen(tpath), e, hdr);
	close(dfd);
	if (r == 0 && out_zeros(&o, 2 * TAR_BLOCK) == 0 && out_flush(&o) == 0)
		return 0;
	if (r == 0)
		r = fail("writing the stream: %s", strerror(o.err));
	return r;
}

/* --- tar-in ----------------------------------------------------------------------------- */

/*
 * stdin through a buffer: the reader asks for 512-byte headers, and a read() per header (each
 * a context switch to PID 1 when the pipe runs dry) made a tree of small files 5x slower
 * under TCG.
 */
static uint8_t in_buf[IO_BUF];
static size_t in_off, in_len;

static ssize_t read_stdin(void *ctx, void *buf, size_t n)
{
	(void)ctx;
	if (in_len == 0 && n >= sizeof(in_buf) / 2) {
		for (;;) { /* large reads go straight through */
			ssize_t k = read(STDIN_FILENO, buf, n);
			if (k < 0 && errno == EINTR)
				continue;
			return k < 0 ? -errno : k;
		}
	}
	while (in_len == 0) {
		ssize_t k = read(STDIN_FILENO, in_buf, sizeof(in_buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : 0;
		in_off = 0;
		in_len = (size_t)k;
	}
	if (n > in_len)
		n = in_len;
	memcpy(buf, in_buf + in_off, n);
	in_off += n;
	in_len -= n;
	return (ssize_t)n;
}

struct fixup {
	char *path; /* relative to the root, components joined by '/' */
	uint32_t mode;
	int64_t mtime;
};

struct in {
	int root;
	const char *name;   /* required first component, NULL = any */
	const char *newtop; /* what it becomes */
	struct fixup *fix;
	size_t n_fix, cap_fix;
	unsigned tmp_seq;
	/* The last parent directory walked to: entries of one directory come together in a
	 * stream, and walking again costs several openat()s per file (measurable under TCG). */
	int pfd;
	char pkey[TAR_PATH_MAX];
};

/*
 * Open the directory holding the last component, creating missing parents (0755), never
 * following a symlink. Returns an fd or -errno.
 */
static int walk_parent(int root, const char *const *comps, int n, bool create)
{
	int fd = dup(root);

	for (int i = 0; fd >= 0 && i < n - 1; i++) {
		int next = openat(fd, comps[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT && create && mkdirat(fd, comps[i], 0755) == 0)
			next = openat(fd, comps[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(fd);
		if (next < 0)
			return e == ELOOP || e == ENOTDIR ? -ELOOP : -e;
		fd = next;
	}
	return fd < 0 ? -errno : fd;
}

/* walk_parent(create) through the one-entry cache; the fd belongs to the cache. */
static int parent_fd(struct in *in, const char *const *comps, int n)
{
	char key[TAR_PATH_MAX];
	size_t len = 0;
	int fd;

	key[0] = '\0';
	for (int i = 0; i < n - 1; i++) {
		size_t cl = strlen(comps[i]);
		if (len + cl + 2 > sizeof(key))
			return walk_parent(in->root, comps, n, true); /* not cacheable: caller closes */
		memcpy(key + len, comps[i], cl);
		len += cl;
		key[len++] = '/';
		key[len] = '\0';
	}
	if (in->pfd >= 0 && !strcmp(key, in->pkey))
		return in->pfd;
	fd = walk_parent(in->root, comps, n, true);
	if (fd < 0)
		return fd;
	if (in->pfd >= 0)
		close(in->pfd);
	in->pfd = fd;
	memcpy(in->pkey, key, len + 1);
	return fd;
}

/* Split and map an archive path; 0 or a failure already reported. */
static int map_path(struct in *in, const char *path, char *buf, const char **comps, int *n)
{
	*n = tar_path_split(path, buf, comps);
	if (*n < 0)
		return fail("refused '%s' in the stream: absolute, empty or with '..'", path);
	if (in->name) {
		if (strcmp(comps[0], in->name) != 0)
			return fail("refused '%s' in the stream: it is not under '%s'", path,
				    in->name);
		comps[0] = in->newtop;
	}
	return 0;
}

static void set_times(int dfd, const char *name, int64_t mtime, int flags)
{
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = mtime } };

	utimensat(dfd, name, ts, flags);
}

static int copy_data(struct tar_reader *rd, int fd, const char *path, uint8_t *buf)
{
	const char *why = NULL;
	ssize_t k;

	while ((k = tar_read_data(rd, buf, IO_BUF, &why)) > 0) {
		for (ssize_t off = 0; off < k;) {
			ssize_t w = write(fd, buf + off, (size_t)(k - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return fail("writing %s: %s", path, strerror(errno));
			off += w;
		}
	}
	return k < 0 ? fail("the stream broke in %s: %s", path, why) : 0;
}

static int apply(struct in *in, struct tar_reader *rd, struct tar_entry *e, uint8_t *buf)
{
	static char pbuf[TAR_PATH_MAX], lbuf[TAR_PATH_MAX];
	static const char *comps[TAR_MAX_DEPTH], *lcomps[TAR_MAX_DEPTH];
	char tmp[64];
	struct stat st;
	int n, ln, dfd, r = 0;

	if (e->type == TAR_OTHER) {
		fprintf(stderr, "%s: skipped %s: not a regular file, directory or link\n", prog,
			e->path);
		return 0;
	}
	/* "./" (what `tar -C DIR -cf - .` starts with) is the destination itself: nothing to do. */
	if (!in->name && e->type == TAR_DIR && e->path[strspn(e->path, "./")] == '\0' &&
	    !strstr(e->path, ".."))
		return 0;
	if (map_path(in, e->path, pbuf, comps, &n))
		return 1;
	dfd = parent_fd(in, comps, n);
	if (dfd < 0)
		return fail("cannot create %s: %s", e->path,
			    dfd == -ELOOP ? "a parent is a symlink or not a directory"
					  : strerror(-dfd));
	const char *last = comps[n - 1];

	switch (e->type) {
	case TAR_DIR:
		if (mkdirat(dfd, last, 0700) < 0 &&
		    (errno != EEXIST || fstatat(dfd, last, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		     !S_ISDIR(st.st_mode))) {
			r = fail("cannot create directory %s: %s", e->path,
				 errno == EEXIST ? "something else exists there" : strerror(errno));
			break;
		}
		/* Its own mode and time once its content is in (a 0555 dir must take files). */
		if (in->n_fix == in->cap_fix) {
			size_t cap = in->cap_fix ? in->cap_fix * 2 : 64;
			struct fixup *f = realloc(in->fix, cap * sizeof(*f));
			if (!f) {
				r = fail("out of memory");
				break;
			}
			in->fix = f;
			in->cap_fix = cap;
		}
		char joined[TAR_PATH_MAX] = "";
		for (int i = 0; i < n; i++) {
			if (i)
				strcat(joined, "/");
			strcat(joined, comps[i]);
		}
		in->fix[in->n_fix++] = (struct fixup){ strdup(joined), e->mode, e->mtime };
		break;
	case TAR_FILE: {
		snprintf(tmp, sizeof(tmp), ".agentvm-cp.%d.%u", (int)getpid(), in->tmp_seq++);
		int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			r = fail("cannot create %s: %s", e->path, strerror(errno));
			break;
		}
		r = copy_data(rd, fd, e->path, buf);
		if (r == 0) {
			struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = e->mtime } };
			fchmod(fd, e->mode);
			futimens(fd, ts);
		}
		if (close(fd) < 0 && r == 0)
			r = fail("writing %s: %s", e->path, strerror(errno));
		if (r == 0 && renameat(dfd, tmp, dfd, last) < 0)
			r = fail("cannot create %s: %s", e->path,
				 errno == EISDIR ? "a directory exists there" : strerror(errno));
		if (r)
			unlinkat(dfd, tmp, 0);
		break;
	}
	case TAR_SYMLINK:
		if (unlinkat(dfd, last, 0) < 0 && errno != ENOENT) {
			r = fail("cannot replace %s: %s", e->path, strerror(errno));
			break;
		}
		if (symlinkat(e->link, dfd, last) < 0) {
			r = fail("cannot create link %s: %s", e->path, strerror(errno));
			break;
		}
		set_times(dfd, last, e->mtime, AT_SYMLINK_NOFOLLOW);
		break;
	case TAR_HARDLINK: {
		if (map_path(in, e->link, lbuf, lcomps, &ln)) {
			r = 1;
			break;
		}
		int tfd = walk_parent(in->root, lcomps, ln, false);
		if (tfd < 0) {
			r = fail("cannot link %s to %s: %s", e->path, e->link, strerror(-tfd));
			break;
		}
		if (unlinkat(dfd, last, 0) < 0 && errno != ENOENT)
			r = fail("cannot replace %s: %s", e->path, strerror(errno));
		else if (linkat(tfd, lcomps[ln - 1], dfd, last, 0) < 0)
			r = fail("cannot link %s to %s: %s", e->path, e->link, strerror(errno));
		close(tfd);
		break;
	}
	default:
		break;
	}
	if (dfd != in->pfd)
		close(dfd);
	return r;
}

static int tar_in(const char *dest, const char *name)
{
	struct in in = { .root = -1, .pfd = -1 };
	struct tar_reader rd;
	struct tar_entry *e = malloc(sizeof(*e));
	uint8_t *buf = malloc(IO_BUF);
	const char *why = NULL;
	char *d1 = strdup(dest), *d2 = strdup(dest);
	struct stat st;
	int r = 0, x;

	if (!e || !buf || !d1 || !d2)
		return fail("out of memory");
	if (!strcmp(name, "-")) {
		in.root = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (in.root < 0)
			return fail("cannot extract into %s: %s", dest,
				    errno == ENOTDIR ? "not a directory" : strerror(errno));
	} else if (stat(dest, &st) == 0 && S_ISDIR(st.st_mode)) {
		in.root = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		in.name = in.newtop = name;
	} else {
		const char *parent = dirname(d1);
		in.root = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (in.root < 0)
			return fail("cannot copy to %s: %s", dest,
				    errno == ENOENT ? "its parent directory does not exist"
						    : strerror(errno));
		in.name = name;
		in.newtop = basename(d2);
		if (!strcmp(in.newtop, "/") || !strcmp(in.newtop, ".") || !strcmp(in.newtop, ".."))
			return fail("cannot copy to %s", dest);
	}
	if (in.root < 0)
		return fail("cannot copy to %s: %s", dest, strerror(errno));
	tar_reader_init(&rd, read_stdin, NULL);
	while (r == 0 && (x = tar_next(&rd, e, &why)) > 0)
		r = apply(&in, &rd, e, buf);
	if (r == 0 && x < 0)
		r = fail("the stream is not a valid tar archive: %s", why);
	/* Deepest first: a parent's mode may forbid touching its children. */
	for (size_t i = in.n_fix; i-- > 0;) {
		const char *comps[TAR_MAX_DEPTH];
		char pb[TAR_PATH_MAX];
		int n = in.fix[i].path ? tar_path_split(in.fix[i].path, pb, comps) : -1;
		int dfd = n > 0 ? walk_parent(in.root, comps, n, false) : -1;

		if (dfd >= 0) {
			int fd = openat(dfd, comps[n - 1],
					O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0) {
				struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
							  { .tv_sec = in.fix[i].mtime } };
				fchmod(fd, in.fix[i].mode);
				futimens(fd, ts);
				close(fd);
			}
			close(dfd);
		}
		free(in.fix[i].path);
	}
	free(in.fix);
	/*
	 * After the end-of-archive blocks the host may still send record padding: read it, so
	 * the host never sees its stream refused. After a failure, exit at once instead: the
	 * agent then drops the rest of the stream.
	 */
	while (r == 0 && read_stdin(NULL, buf, IO_BUF) > 0)
		;
	return r;
}

int tarcmd_main(int argc, char **argv)
{
	if (argc != 3)
		return fail("usage: %s PATH NAME", argv[0]);
	if (!strcmp(argv[0], TARCMD_OUT))
		return tar_out(argv[1], argv[2]);
	return tar_in(argv[1], argv[2]);
}
