/* SPDX-License-Identifier: MIT */
/* The pool's client side: one request line to <state root>/.pool.sock, one reply line back. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "pool.h"
#include "statedir.h"
#include "util.h"

int pool_request(const char *req, char *out, size_t len, struct avm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t got = 0;
	ssize_t n;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", statedir_root(), POOL_SOCK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return avm_error_set(err, -ECONNREFUSED,
				     "no pool is serving in %s; start one with 'agentvm serve --pool "
				     "SNAPSHOT ...'",
				     statedir_root());
	if (write_all(fd, req, strlen(req)) < 0)
		return avm_error_setx(err, -errno, "writing to the pool");
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
	if (!nl)
		return avm_error_set(err, -EPIPE, "the pool closed the connection");
	*nl = '\0';
	return 0;
}
