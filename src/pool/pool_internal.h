/* SPDX-License-Identifier: MIT */
/* Inside the pool daemon (pool.c: loop and VM states; pool_conn.c: the socket protocol;
 * pool_vm.c: forked restores and removals, health probes). Not a public API. */
#ifndef AGENTVM_POOL_INTERNAL_H
#define AGENTVM_POOL_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pool/pool.h"
#include "snapshot/restore.h"
#include "state/statedir.h"

#define MAX_VMS POOL_MAX_VMS
#define MAX_CONNS 128
#define TAG_LISTEN 1u
#define TAG_SIG 2u
#define TAG_TIMER 3u
#define TAG_METRICS 4u /* the /metrics endpoint's epoll fd */
#define TAG_WORKER 0x10000u /* + vm slot */
#define TAG_CONN 0x20000u   /* + conn slot */

enum pvm_state { PVM_FREE = 0, PVM_STARTING, PVM_READY, PVM_LEASED };

struct pvm {
	enum pvm_state state;
	char name[STATEDIR_MAX_NAME + 1];
	uint64_t ready_ms; /* monotonic */
	pid_t worker;
	int worker_fd; /* pidfd of the restore worker */
};

/*
 * A worker's result message lives in memory shared with the daemon, not in a pipe: the
 * supervisor the worker forks would inherit a pipe and hold it open forever.
 */
#define MSG_LEN 1100

struct conn {
	bool used;
	int fd;
	char in[512];
	size_t in_len;
	bool waiting; /* an ACQUIRE waiting for a VM */
	bool run;     /* its ACQUIRE carried our run key: the connection is the lease */
	char lease[STATEDIR_MAX_NAME + 1]; /* the VM a run holds while connected, or "" */
	uint64_t deadline_ms;
	uint64_t since_ms;
};

struct pool {
	const char *snap; /* NULL: a pod pool (pod_spec) */
	struct restore rs;
	struct vm_spec *pod_spec; /* a pod or run pool's VMs (borrowed; a worker adds name and,
				     for a pod, its share) */
	bool run;                 /* a run pool (pod_spec without share, warmed up) */
	char run_key[65];         /* pool_run_key() of pod_spec, or "" */
	long min, max, ttl_s, boot_timeout_s;
	int ep, listen_fd, sig_fd, timer_fd;
	int self_pidfd; /* our own pidfd: every pool VM's supervisor inherits it (POOL_VM_FILE) */
	struct pvm vms[MAX_VMS];
	char (*worker_msgs)[MSG_LEN]; /* one per vm slot, MAP_SHARED */
	struct conn conns[MAX_CONNS];
	unsigned ping_rr;
	unsigned ticks;
	unsigned failures; /* consecutive restore failures: back off */
	uint64_t refill_failures; /* every restore that failed since serve started (metrics) */
	struct metrics_http *http; /* --metrics-listen, or NULL */
	uint64_t backoff_until_ms;
	bool stopping;
	char sock_path[PATH_MAX];
};

/* pool.c */
int pool_ep_add(int ep, int fd, uint32_t tag);
void pool_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pool_count(const struct pool *p, int *starting, int *ready, int *leased);
int pool_waiters(const struct pool *p);
void pool_refill(struct pool *p);
void pool_serve_waiters(struct pool *p);
void pool_drop_vm(struct pool *p, int i, const char *why);

/* pool_conn.c */
int pool_listen(struct pool *p, struct avm_error *err);
void pool_accept(struct pool *p);
void pool_conn_read(struct pool *p, int slot);
/* Send one line to the client and close its connection; 0, or -errno when it could not. */
int pool_reply(struct pool *p, int slot, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same, but the connection stays open (a run's lease). */
int pool_reply_keep(struct pool *p, int slot, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* pool_vm.c */
/* Fork a worker restoring a new VM into a free slot (PVM_STARTING); nothing when none is free. */
void pool_vm_spawn(struct pool *p);
/* Remove the VM in a forked child (reaped by the loop). */
void pool_vm_destroy(const struct pool *p, const char *name);
/* Its recorded state is "running" or "paused". */
bool pool_vm_alive(const char *name);
/* Write (atomically) or remove its POOL_ACQUIRED_FILE; 0 or -errno. */
int pool_vm_mark_acquired(const char *name, bool acquired);
/* At start: remove what earlier serves left unacquired, count their acquired VMs again. */
void pool_vm_adopt(struct pool *p);
/* Its agent answers PING within 500 ms (true also when we cannot even ask: our problem). */
bool pool_vm_ping(const char *name);
/* A pod or run pool: apply the shape and default network to p->pod_spec, check it (once). */
int pool_pod_prepare(struct pool *p, const struct pool_opts *o, struct avm_error *err);
/* A connection gone: a run's lease ends with it (the VM is removed, the pool refilled). */
void pool_lease_end(struct pool *p, const char *name);
/*
 * A pod pool: fork the janitor, which outlives a serve killed with -9 and then removes the pod
 * directories of the pool VMs the supervisors removed (they cannot know of them). 0 or -errno.
 */
int pool_pod_janitor(const struct pool *p);

#endif
