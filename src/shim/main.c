/* SPDX-License-Identifier: MIT */
/*
 * containerd-shim-agentvm-v2: containerd's runtime v2 shim for agentvm (runtime
 * io.containerd.agentvm.v2). containerd runs it with the bundle as cwd:
 *   ... -namespace N -address A -publish-binary B -id ID [-debug] start
 *       spawn the long-running shim (listening on a unix socket), print its address, exit;
 *   ... delete
 *       clean up after a dead shim (its VM, its rootfs mount), print a DeleteResponse.
 * Without a subcommand (the spawned shim) it serves the Task service (task.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "include/agentvm.h"
#include <json-c/json.h>

#include "podstate.h"
#include "shim.h"
#include "shim_vm.h"

static int log_fd = -1;

void shim_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (log_fd < 0)
		return;
	n = snprintf(line, sizeof(line), "agentvm-shim[%d]: ", (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(log_fd, line, (size_t)n) < 0) {
		/* a full log FIFO: the line is lost, the shim goes on */
	}
}

/* The library's warnings and log lines (it never prints): into the shim's log, one per line. */
static void on_library_log(void *userdata, const char *text)
{
	size_t n = strcspn(text, "\n");

	shim_log("%.*s", (int)n, text);
}

int64_t shim_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void shim_publish(const struct shim_opts *o, const char *topic, const char *type,
		  const struct pb_buf *msg)
{
	struct pb_buf any = { 0 };
	int p[2];
	pid_t pid;

	if (!o->publish_binary || !*o->publish_binary || !o->address)
		return;
	/* stdin carries the google.protobuf.Any itself: {type_url = 1, value = 2}. */
	pb_put_str(&any, 1, type);
	pb_put_bytes(&any, 2, msg->data, msg->len);
	if (any.error || any.len > 65536 || pipe2(p, O_CLOEXEC) < 0) {
		pb_buf_release(&any);
		return;
	}
	/* Small enough for the pipe's buffer: written whole before the publisher starts. */
	if (write(p[1], any.data, any.len) != (ssize_t)any.len) {
		close(p[0]);
		close(p[1]);
		pb_buf_release(&any);
		return;
	}
	close(p[1]);
	pid = fork();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(p[0], 0);
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		if (log_fd >= 0)
			dup2(log_fd, 2);
		execl(o->publish_binary, o->publish_binary, "--address", o->address, "publish",
		      "--topic", topic, "--namespace", o->ns, (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		shim_log("cannot publish %s: %s", topic, strerror(errno));
	close(p[0]);
	pb_buf_release(&any);
}

int shim_delete_response(struct pb_buf *out, uint32_t pid, uint32_t exit_status, int64_t ns)
{
	pb_put_varint(out, 1, pid);
	pb_put_varint(out, 2, exit_status);
	pb_put_timestamp(out, 3, ns);
	return out->error;
}

/* The socket: <agentvm state root>/shim-<16 hex of sha256(ns/id)>.sock, short enough always. */
static void socket_path(const char *ns, const char *id, char *buf, size_t len)
{
	char name[24];

	shim_vm_name(ns, id, name);
	snprintf(buf, len, "%s/shim-%s.sock", shim_vm_state_root(), name + 4);
}

/*
 * containerd's CRI plugin marks a pod's containers (config.json annotations): a container of a
 * sandbox goes to the sandbox's shim, which runs it in the pod's VM. Returns the sandbox id for
 * such a container (owned by cfg), else NULL.
 */
#define CRI_TYPE "io.kubernetes.cri.container-type"
#define CRI_SANDBOX "io.kubernetes.cri.sandbox-id"
static const char *pod_sandbox(struct json_object *cfg, const char *id)
{
	struct json_object *an, *type, *sb;

	if (!cfg || !json_object_object_get_ex(cfg, "annotations", &an) ||
	    !json_object_object_get_ex(an, CRI_TYPE, &type) ||
	    !json_object_object_get_ex(an, CRI_SANDBOX, &sb) ||
	    strcmp(json_object_get_string(type), "container") != 0 ||
	    !json_object_get_string(sb) || !strcmp(json_object_get_string(sb), id))
		return NULL;
	return json_object_get_string(sb);
}

static void print_address(const char *path)
{
	/* containerd reads the address from our stdout; runc's shim also leaves it here. */
	FILE *f = fopen("address", "we");
	if (f) {
		fprintf(f, "unix://%s", path);
		fclose(f);
	}
	printf("unix://%s", path);
	fflush(stdout);
}

/* A container of a pod: the sandbox's shim serves it. */
static int start_in_pod(const struct shim_opts *o, const char *sandbox)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	socket_path(o->ns, sandbox, sa.sun_path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "agentvm-shim: the shim of sandbox %s is not running (%s); start "
				"the pod sandbox first\n", sandbox, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	close(fd);
	print_address(sa.sun_path);
	return 0;
}

static int cmd_start(const struct shim_opts *o, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[sizeof(sa.sun_path) + 64];
	int fd, devnull;
	pid_t pid;
	struct json_object *cfg = json_object_from_file("config.json");
	const char *sandbox = pod_sandbox(cfg, o->id);

	if (sandbox) {
		int r = start_in_pod(o, sandbox);
		json_object_put(cfg);
		return r;
	}
	json_object_put(cfg);
	socket_path(o->ns, o->id, path, sizeof(path));
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "agentvm-shim: socket path %s is too long; set AGENTVM_STATE_DIR "
				"to a shorter directory\n", path);
		return 1;
	}
	mkdir(shim_vm_state_root(), 0700);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		fprintf(stderr, "agentvm-shim: cannot listen on %s: %s\n", path, strerror(errno));
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "agentvm-shim: cannot fork: %s\n", strerror(errno));
		unlink(path);
		return 1;
	}
	if (pid == 0) {
		/* The shim proper: its own session, no tie to containerd's pipes (containerd
		 * waits for start's output to end), logging into the bundle's "log" FIFO. */
		setsid();
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		log_fd = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(log_fd >= 0 ? log_fd : devnull, 2);
		int r = shim_serve(o, fd);
		unlink(path);
		shim_log("shim exits (%d)", r);
		_exit(r < 0 ? 1 : 0);
	}
	close(fd);
	print_address(path);
	(void)argv;
	return 0;
}

/*
 * The pod's network namespace from its saved state (podstate.h) into netns ("" for the host's,
 * or when there is no state to read).
 */
static void saved_netns(const char *vm, char *netns, size_t len)
{
	struct pod_state *s = calloc(1, sizeof(*s));
	char path[4200], *buf = NULL;
	const char *why;
	size_t n;

	netns[0] = '\0';
	if (s && shim_vm_work_path(vm, ".json", path, sizeof(path)) == 0 &&
	    shim_read_private(path, SHIM_POD_STATE_MAX_BYTES, &buf, &n, &why) == 0 &&
	    shim_pod_state_parse(buf, n, s, &why) == 0 && !strcmp(s->vm, vm))
		snprintf(netns, len, "%s", s->netns);
	if (s)
		shim_pod_state_release(s);
	free(s);
	free(buf);
}

static int cmd_delete(const struct shim_opts *o)
{
	struct pb_buf b = { 0 };
	char name[24], path[4096], netns[SHIM_PATH_MAX];

	/* The shim is gone: nothing else will remove its VM or unmount its root. */
	shim_vm_name(o->ns, o->id, name);
	/* The VM's network was made in the pod's namespace, if it had one: torn down there (its
	 * supervisor may have died with the shim). A namespace already gone took it along. */
	saved_netns(name, netns, sizeof(netns));
	shim_vm_remove(name, netns[0] ? netns : NULL);
	shim_vm_pod_dir_remove(name);
	snprintf(path, sizeof(path), "%s/rootfs", o->bundle ? o->bundle : ".");
	umount2(path, MNT_DETACH);
	socket_path(o->ns, o->id, path, sizeof(path));
	unlink(path);
	if (shim_delete_response(&b, 0, 128 + SIGKILL, shim_now_ns()) < 0)
		return 1;
	if (fwrite(b.data, 1, b.len, stdout) != b.len)
		return 1;
	pb_buf_release(&b);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: containerd-shim-agentvm-v2 -namespace NS -address ADDR -publish-binary "
		   "BIN -id ID [-bundle DIR] [-debug] start|delete\n"
		   "containerd's runtime v2 shim for agentvm (runtime io.containerd.agentvm.v2);\n"
		   "containerd runs it, see agentvm's README.\n");
}

int main(int argc, char **argv)
{
	struct shim_opts o = { .ns = "default" };
	const char *cmd = NULL;

	agentvm_set_log(on_library_log, NULL);

	/* Go's flag syntax: -name value, --name value, -name=value; bools alone. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		if (a[0] != '-') {
			if (cmd) {
				fprintf(stderr, "agentvm-shim: unexpected argument '%s'\n", a);
				return 2;
			}
			cmd = a;
			continue;
		}
		a += a[1] == '-' ? 2 : 1;
		char key[32];
		const char *eq = strchr(a, '=');
		size_t kl = eq ? (size_t)(eq - a) : strlen(a);
		if (kl >= sizeof(key)) {
			fprintf(stderr, "agentvm-shim: unknown flag '%s'\n", argv[i]);
			return 2;
		}
		memcpy(key, a, kl);
		key[kl] = '\0';
		if (!strcmp(key, "debug") || !strcmp(key, "v") || !strcmp(key, "help") ||
		    !strcmp(key, "h")) {
			if (!strcmp(key, "debug"))
				o.debug = true;
			else if (key[0] == 'v') {
				puts("containerd-shim-agentvm-v2 (agentvm)");
				return 0;
			} else {
				usage(stdout);
				return 0;
			}
			continue;
		}
		if (eq)
			v = eq + 1;
		else if (i + 1 < argc)
			v = argv[++i];
		if (!v) {
			fprintf(stderr, "agentvm-shim: flag -%s needs a value\n", key);
			return 2;
		}
		if (!strcmp(key, "namespace"))
			o.ns = v;
		else if (!strcmp(key, "address"))
			o.address = v;
		else if (!strcmp(key, "publish-binary"))
			o.publish_binary = v;
		else if (!strcmp(key, "id"))
			o.id = v;
		else if (!strcmp(key, "bundle"))
			o.bundle = v;
		else if (!strcmp(key, "socket")) {
			/* accepted and ignored: containerd 1.7 may pass it */
		} else {
			fprintf(stderr, "agentvm-shim: unknown flag '-%s'\n", key);
			usage(stderr);
			return 2;
		}
	}
	if (!cmd || (strcmp(cmd, "start") && strcmp(cmd, "delete"))) {
		fprintf(stderr, "agentvm-shim: missing subcommand (start or delete)\n");
		usage(stderr);
		return 2;
	}
	if (!o.id || !*o.id) {
		fprintf(stderr, "agentvm-shim: missing -id\n");
		return 2;
	}
	if (!strcmp(cmd, "start"))
		return cmd_start(&o, argv);
	return cmd_delete(&o);
}
