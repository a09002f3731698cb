/* SPDX-License-Identifier: MIT */
/*
 * Bench helper: pause/resume latency of a running detached VM. Connects to its qmp.sock and
 * prints, per round, the QMP round trip of `stop` and of `cont` in microseconds ("stop N" /
 * "cont N" lines). usage: qmp-rtt STATE_DIR/NAME/qmp.sock ROUNDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "qmp/qmp.h"
#include "base/util.h"

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct qmp_error qe = { 0 };
	struct qmp_client *q;
	int fd, n;

	if (argc != 3) {
		fprintf(stderr, "usage: qmp-rtt QMP_SOCKET ROUNDS\n");
		return 2;
	}
	n = atoi(argv[2]);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[1]);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror(argv[1]);
		return 1;
	}
	q = qmp_client_new(fd);
	if (!q || qmp_client_handshake(q, 10000, &qe) < 0) {
		fprintf(stderr, "qmp-rtt: handshake: %s\n", qe.desc);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		static const char *const cmds[] = { "stop", "cont" };
		for (int k = 0; k < 2; k++) {
			uint64_t t0 = now_us();
			if (qmp_client_execute(q, cmds[k], NULL, NULL, 0, NULL, 10000, &qe) < 0) {
				fprintf(stderr, "qmp-rtt: %s: %s\n", cmds[k], qe.desc);
				return 1;
			}
			printf("%s %llu\n", cmds[k], (unsigned long long)(now_us() - t0));
		}
	}
	qmp_client_free(q);
	return 0;
}
