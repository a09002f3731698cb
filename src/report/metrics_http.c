/* SPDX-License-Identifier: MIT */
#include "report/metrics_http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"

struct metrics_http {
	struct MHD_Daemon *d;
	int listen_fd;
	metrics_http_render_fn render;
	void *ctx;
	char addr[80];
};

/*
 * libmicrohttpd is loaded when a metrics server starts, not linked: with it (and GnuTLS behind
 * it) every other agentvm process (run, exec, ls...) paid ~3-4 ms at start-up to load and
 * relocate libraries it never used (measured with empty programs linked both ways).
 */
#define MHD_SONAME "libmicrohttpd.so.12"
static struct {
	__typeof__(MHD_start_daemon) *start_daemon;
	__typeof__(MHD_stop_daemon) *stop_daemon;
	__typeof__(MHD_run) *run;
	__typeof__(MHD_get_daemon_info) *get_daemon_info;
	__typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
	__typeof__(MHD_add_response_header) *add_response_header;
	__typeof__(MHD_queue_response) *queue_response;
	__typeof__(MHD_destroy_response) *destroy_response;
} mhd;

static int mhd_load(struct avm_error *err)
{
	static void *lib;
	void *h;

	if (lib)
		return 0;
	h = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return avm_error_set(err, -ENOENT,
				     "the metrics server needs " MHD_SONAME
				     ": install it (apt-get install libmicrohttpd12)");
#define MHD_SYM(f)                                                  \
	if (!(*(void **)&mhd.f = dlsym(h, "MHD_" #f))) {            \
		dlclose(h);                                         \
		return avm_error_set(err, -ENOENT, MHD_SONAME " has no MHD_" #f); \
	}
	MHD_SYM(start_daemon)
	MHD_SYM(stop_daemon)
	MHD_SYM(run)
	MHD_SYM(get_daemon_info)
	MHD_SYM(create_response_from_buffer)
	MHD_SYM(add_response_header)
	MHD_SYM(queue_response)
	MHD_SYM(destroy_response)
#undef MHD_SYM
	lib = h;
	return 0;
}

static enum MHD_Result plain(struct MHD_Connection *c, unsigned status, const char *text,
			     const char *allow)
{
	struct MHD_Response *r = mhd.create_response_from_buffer(strlen(text), (void *)text,
								 MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	mhd.add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
	if (allow)
		mhd.add_response_header(r, "Allow", allow);
	ret = mhd.queue_response(c, status, r);
	mhd.destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct metrics_http *h = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	/* Read-only: nothing is ever taken from a body; a request carrying one is refused whole. */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return plain(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, HEAD");
	if (strcmp(url, "/metrics") != 0)
		return plain(c, MHD_HTTP_NOT_FOUND, "not found; the metrics are at /metrics\n", NULL);
	f = open_memstream(&buf, &len);
	if (!f)
		return plain(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
	int rr = h->render(f, h->ctx);
	if (fclose(f) != 0 || rr < 0) {
		free(buf);
		return plain(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot collect the metrics\n",
			     NULL);
	}
	r = mhd.create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(buf);
		return MHD_NO;
	}
	mhd.add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	ret = mhd.queue_response(c, MHD_HTTP_OK, r);
	mhd.destroy_response(r);
	return ret;
}

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sl)
{
	char host[64];
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hl;
	long port;
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM },
			*ai;

	if (!colon || parse_long(colon + 1, 0, 65535, &port) < 0)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		h = s + 1;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sl = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int metrics_http_check(const char *addr, struct avm_error *err)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (parse_listen(addr, &ss, &sl) < 0)
		return avm_error_set(err, -EINVAL,
				     "'%s' is not ADDR:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)",
				     addr);
	return 0;
}

int metrics_http_start(const char *addr, metrics_http_render_fn render, void *ctx,
		       struct metrics_http **out, struct avm_error *err)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct metrics_http *h;
	char host[INET6_ADDRSTRLEN], port[8];
	int one = 1;

	if (metrics_http_check(addr, err) < 0 || parse_listen(addr, &ss, &sl) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, -EINVAL);
	int lr = mhd_load(err);
	if (lr < 0)
		return avm_error_kind(err, AVM_ERR_STATE, lr);
	h = calloc(1, sizeof(*h));
	if (!h)
		return avm_error_set(err, -ENOMEM, "out of memory");
	h->render = render;
	h->ctx = ctx;
	h->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (h->listen_fd < 0) {
		free(h);
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_setx(err, -errno, "socket for %s", addr));
	}
	setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(h->listen_fd, (struct sockaddr *)&ss, sl) < 0 || listen(h->listen_fd, 64) < 0) {
		int r = -errno;
		close(h->listen_fd);
		free(h);
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_setx(err, r, "cannot listen on %s", addr));
	}
	sl = sizeof(ss);
	getsockname(h->listen_fd, (struct sockaddr *)&ss, &sl);
	getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(h->addr, sizeof(h->addr), ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
		 port);
	h->d = mhd.start_daemon(MHD_USE_EPOLL | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0,
				NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_CONNS,
				MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_PER_IP,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT_S,
				MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
				MHD_OPTION_END);
	if (!h->d) {
		close(h->listen_fd);
		free(h);
		return avm_error_set(err, -EIO, "libmicrohttpd cannot serve %s", addr);
	}
	*out = h;
	return 0;
}

int metrics_http_fd(const struct metrics_http *h)
{
	const union MHD_DaemonInfo *i = mhd.get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);

	return i ? i->epoll_fd : -1;
}

const char *metrics_http_address(const struct metrics_http *h)
{
	return h->addr;
}

void metrics_http_run(struct metrics_http *h)
{
	mhd.run(h->d);
}

void metrics_http_free(struct metrics_http *h)
{
	if (!h)
		return;
	mhd.stop_daemon(h->d); /* closes the listening socket it was given */
	free(h);
}
