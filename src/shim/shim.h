/* SPDX-License-Identifier: MIT */
/* containerd-shim-agentvm-v2: shared between the entry point (main.c) and the Task service. */
#ifndef AGENTVM_SHIM_H
#define AGENTVM_SHIM_H

#include <stdbool.h>
#include <stdint.h>

#include "pb.h"
#include "ttrpc.h"

#define SHIM_TASK_SERVICE "containerd.task.v2.Task"

struct shim_opts {
	const char *ns;
	const char *address;        /* containerd's */
	const char *publish_binary;
	const char *id;
	const char *bundle;
	bool debug;
};

/* One line on the shim's log (containerd's "log" FIFO in the bundle, when open). */
void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run `publish_binary --address A publish --topic T --namespace N` with Any(type, msg) on
 * its stdin; asynchronous (the child is reaped by the SIGCHLD handling). */
void shim_publish(const struct shim_opts *o, const char *topic, const char *type,
		  const struct pb_buf *msg);

int64_t shim_now_ns(void);

/* Serve the Task service on the listening socket lfd until Shutdown. 0 or -errno. */
int shim_serve(const struct shim_opts *o, int lfd);

/* The `delete` subcommand's DeleteResponse for a dead shim's task, encoded. */
int shim_delete_response(struct pb_buf *out, uint32_t pid, uint32_t exit_status, int64_t ns);

/* Parse an OCI runtime process object (config.json's "process", Exec's spec). */
struct shim_proc;
int shim_oci_process(const char *json, size_t len, struct shim_proc *p, char **why);
void shim_proc_release(struct shim_proc *p);
/* p as such an object again (what shim_oci_process reads back); NULL when out of memory. */
struct json_object;
struct json_object *shim_proc_json(const struct shim_proc *p);

#endif
