/* SPDX-License-Identifier: MIT */
#include "net/net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <glob.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "obs/audit.h"
#include "jail/launcher.h"
#include "state/statedir.h"
#include "base/util.h"

static void audit_policy(const struct vm_net *n);

#define NET_JSON STATEDIR_NET
/*
 * Serialises "add a VM" against "remove the table once it holds no VM", so a VM that starts
 * while the last one stops never loses its rules. One lock for the host: it is held ~1 ms.
 */
#define NET_NFT_LOCK "/run/agentvm-nft.lock"

static int nft_lock(void)
{
	int fd = open(NET_NFT_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd >= 0 && flock(fd, LOCK_EX) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void nft_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/*
 * Forwarding agentvm switched on for an uplink is switched off again by the last VM out, so a
 * host is left as it was found. A marker per network namespace (keyed by its inode) and uplink
 * remembers that it was off. Both run under the nft lock.
 */
static int fwd_marker(char *buf, size_t len, const char *ifname)
{
	struct stat st;

	if (stat("/proc/self/ns/net", &st) < 0)
		return -errno;
	snprintf(buf, len, "/run/agentvm-forwarding.%lu.%s", (unsigned long)st.st_ino, ifname);
	return 0;
}

static int uplink_forwarding_on(const char *ifname, struct avm_error *nerr)
{
	char path[96], marker[PATH_MAX];
	_cleanup_free_ char *cur = NULL;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/forwarding", ifname);
	if (read_file(path, &cur, 16) > 0 && cur[0] == '1')
		return 0; /* on already: someone else's setting, not ours to undo */
	/* Without the marker the last VM out could not undo it: then do not do it either. */
	if (fwd_marker(marker, sizeof(marker), ifname) < 0 ||
	    write_file_atomic(marker, "", 0) < 0) {
		nerr->code = -EIO;
		snprintf(nerr->msg, sizeof(nerr->msg),
			 "cannot record the forwarding state of %s in /run", ifname);
		return nerr->code;
	}
	return nf_if_forwarding(ifname, true, nerr);
}

static void uplink_forwarding_restore(void)
{
	char pattern[PATH_MAX], prefix[PATH_MAX];
	glob_t g;

	if (fwd_marker(prefix, sizeof(prefix), "") < 0 ||
	    fwd_marker(pattern, sizeof(pattern), "*") < 0 || glob(pattern, 0, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		/* After the prefix, not after the last dot: uplinks like eth0.100 have dots. */
		const char *ifname = g.gl_pathv[i] + strlen(prefix);
		nf_if_forwarding(ifname, false, NULL);
		unlink(g.gl_pathv[i]);
	}
	globfree(&g);
}

static bool last_vm_out(struct nf_nft *nft, const char *but);

/* Record that step `what` ended now (its cost: since the previous step ended). */
static uint64_t faults_now(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)(ru.ru_minflt + ru.ru_majflt) : 0;
}

/* Start timing steps from now. */
static void steps_begin(struct vm_net *n)
{
	n->t_step = now_us();
	n->faults_step = faults_now();
}

static void step(struct vm_net *n, const char *what)
{
	uint64_t t = now_us(), f = faults_now();

	if (n->t_step && n->n_trace < ARRAY_SIZE(n->trace))
		n->trace[n->n_trace++] = (struct net_step){ what, (uint32_t)(t - n->t_step),
							    (uint32_t)(f - n->faults_step) };
	n->t_step = t;
	n->faults_step = f;
}

void net_init(struct vm_net *n, const char *vm_name)
{
	memset(n, 0, sizeof(*n));
	n->tap_fd = -1;
	n->dns_pidfd = -1;
	snprintf(n->vm, sizeof(n->vm), "%s", vm_name);
}

int net_pool_open(const char *cidr, struct nf_pool **out, struct avm_error *err)
{
	char dir[PATH_MAX];
	struct avm_error nerr = { 0 };
	int r;

	if (!cidr || !*cidr)
		cidr = getenv(NET_POOL_ENV);
	if (snprintf(dir, sizeof(dir), "%s/.net/leases", statedir_root()) >= (int)sizeof(dir))
		return avm_error_set(err, -ENAMETOOLONG, "state dir path too long");
	r = mkdir_p(dir, 0700);
	if (r < 0)
		return avm_error_setx(err, r, "cannot create the lease directory %s", dir);
	r = nf_pool_new(cidr && *cidr ? cidr : NULL, dir, out, &nerr);
	if (r < 0)
		return avm_error_set(err, r, "address pool%s%s: %s", cidr ? " " NET_POOL_ENV "=" : "",
				     cidr ? cidr : "", nerr.msg);
	return 0;
}

/* The host's first IPv4 resolver that a guest can reach (not loopback), or "". */
static void resolver_from(const char *path, char *out, size_t len);

static void resolver_from_any(const char *path, char *out, size_t len, bool local_ok);

static void host_resolver(char *out, size_t len)
{
	out[0] = '\0';
	resolver_from("/etc/resolv.conf", out, len);
	/* systemd-resolved's stub (127.0.0.53) is unreachable from a guest; its upstreams are not. */
	if (!out[0])
		resolver_from("/run/systemd/resolve/resolv.conf", out, len);
}

static void resolver_from(const char *path, char *out, size_t len)
{
	resolver_from_any(path, out, len, false);
}

/* local_ok: a stub on 127.x counts (the forwarder runs on the host, where it is reachable). */
static void resolver_from_any(const char *path, char *out, size_t len, bool local_ok)
{
	_cleanup_free_ char *conf = NULL;
	struct in_addr a;

	if (read_file(path, &conf, 64 * 1024) < 0)
		return;
	for (char *save = NULL, *line = strtok_r(conf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char addr[64];
		if (sscanf(line, " nameserver %63s", addr) != 1 || inet_pton(AF_INET, addr, &a) != 1)
			continue;
		if (!local_ok && (ntohl(a.s_addr) >> 24) == 127)
			continue; /* a local stub resolver: the guest cannot reach it */
		snprintf(out, len, "%s", addr);
		return;
	}
}

static bool has_port(const struct nf_port *v, size_t n, const struct nf_port *p)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].proto == p->proto && v[i].port == p->port)
			return true;
	return false;
}

/* Valid ports of a spec list into v (at most max), without duplicates. */
static void add_ports(struct nf_port *v, size_t *n, size_t max, char **ports, size_t n_ports)
{
	struct nf_port p;

	for (size_t i = 0; i < n_ports && *n < max; i++)
		if (nf_port_parse(ports[i], &p, NULL) == 0 && !has_port(v, *n, &p))
			v[(*n)++] = p;
}

static void build_allowlist(struct vm_net *n, const struct vm_spec *spec)
{
	const struct nf_port *def;
	size_t n_def = nf_default_allow(&def);

	n->n_allow = 0;
	for (size_t i = 0; !spec->deny_all_egress && i < n_def; i++)
		n->allow[n->n_allow++] = def[i];
	add_ports(n->allow, &n->n_allow, ARRAY_SIZE(n->allow), spec->allow, spec->n_allow);
	/* VM -> host: only what the policy names; --deny-all-egress is about the world. */
	n->n_host_allow = 0;
	add_ports(n->host_allow, &n->n_host_allow, ARRAY_SIZE(n->host_allow), spec->host_allow,
		  spec->n_host_allow);
}

/* Destination policy, state bounds and bandwidth of the spec, with the defaults applied. */
static void build_egress(struct vm_net *n, const struct vm_spec *spec)
{
	n->n_open = 0;
	for (size_t i = 0; i < spec->n_allow_cidr && n->n_open < ARRAY_SIZE(n->open); i++)
		if (nf_cidr_parse(spec->allow_cidr[i], &n->open[n->n_open], NULL) == 0)
			n->n_open++;
	n->n_domains = 0;
	for (size_t i = 0; i < spec->n_allow_domain && n->n_domains < ARRAY_SIZE(n->domains); i++)
		if (nf_domain_check(spec->allow_domain[i], n->domains[n->n_domains],
				    sizeof(n->domains[0]), NULL) == 0)
			n->n_domains++;
	n->domain_ttl = spec->domain_ttl ? spec->domain_ttl : NF_DEFAULT_DOMAIN_TTL;
	n->conn_limit = spec->conn_limit ? spec->conn_limit : NF_DEFAULT_CONN_LIMIT;
	n->conn_rate = spec->conn_rate ? spec->conn_rate : NF_DEFAULT_CONN_RATE;
	n->rate_bytes = n->burst_bytes = 0;
	n->bandwidth[0] = '\0';
	const char *bw = vm_spec_bandwidth(spec);
	if (bw && nf_rate_parse(bw, &n->rate_bytes, &n->burst_bytes, NULL) == 0)
		snprintf(n->bandwidth, sizeof(n->bandwidth), "%s", bw);
}

static void fill_nf_vm(const struct vm_net *n, struct nf_vm *v)
{
	*v = (struct nf_vm){
		.name = n->vm,
		.tap = n->tap,
		.guest = n->lease.guest,
		.host = n->lease.host,
		.check_mac = true,
		.allow = n->allow,
		.n_allow = n->n_allow,
		.host_allow = n->host_allow,
		.n_host_allow = n->n_host_allow,
		.open = n->open,
		.n_open = n->n_open,
		.domains = n->n_domains > 0,
		.domain_ttl = n->domain_ttl,
		.conn_limit = n->conn_limit,
		.conn_rate = n->conn_rate,
		.rate_bytes = n->rate_bytes,
		.burst_bytes = n->burst_bytes,
		.log_group = NF_LOG_GROUP(n->lease.index),
	};
	memcpy(v->mac, n->mac, sizeof(v->mac));
	/* --deny-all-egress: no DNS either, unless --allow names port 53. */
	if (!n->deny_all)
		inet_pton(AF_INET, n->dns, &v->dns);
}

/* Random tap name and locally administered unicast MAC: unique per VM, even across clones. */
static int new_identity(struct vm_net *n, struct avm_error *err)
{
	uint8_t rnd[10];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return avm_error_setx(err, -errno, "getrandom");
	snprintf(n->tap, sizeof(n->tap), NF_TAP_PREFIX "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
		 rnd[3]);
	n->mac[0] = 0x02;
	memcpy(n->mac + 1, rnd + 4, 5);
	return 0;
}

/* nf errors carry the cause; add the fix a user can act on. */
static int nf_fail(struct avm_error *err, const struct avm_error *nerr, const char *what)
{
	const char *hint = "";

	if (nerr->code == -EPERM)
		hint = "; run agentvm as root or use --network isolated";
	else if (nerr->code == -EPROTONOSUPPORT)
		hint = "; load nf_tables (modprobe nf_tables) or use --network isolated";
	else if (nerr->code == -ENOSPC)
		hint = "; remove stopped VMs (agentvm gc, agentvm net gc) or set a larger " NET_POOL_ENV;
	return avm_error_set(err, nerr->code, "%s: %s%s", what, nerr->msg, hint);
}

const char *net_dnsmasq_path(void)
{
	static const char *const paths[] = { "/usr/sbin/dnsmasq", "/usr/bin/dnsmasq",
					     "/sbin/dnsmasq", "/usr/local/sbin/dnsmasq" };

	const char *env = getenv("AGENTVM_DNSMASQ");

	if (env && *env)
		return access(env, X_OK) == 0 ? env : NULL;
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

static int forwarder_conf_path(const struct vm_net *n, char *buf, size_t len)
{
	_cleanup_free_ char *dir = NULL;

	if (statedir_find(n->vm, &dir, NULL) < 0)
		return -ENOENT;
	return statedir_file(buf, len, dir, "dnsmasq.conf");
}

/* Whether `addr`:53 is bound (UDP) in this network namespace: dnsmasq is ready to answer. */
static bool udp53_bound(struct in_addr addr)
{
	_cleanup_free_ char *tab = NULL;
	char key[32];

	/* /proc prints the address as the native-endian value of the __be32. */
	snprintf(key, sizeof(key), " %08X:0035 ", (unsigned)addr.s_addr);
	return read_file("/proc/net/udp", &tab, 4 << 20) > 0 && strstr(tab, key);
}

/*
 * The VM's own dnsmasq (see netfilter/dns.c for its configuration and why one per VM). Our
 * child with PR_SET_PDEATHSIG, so it cannot outlive the process that owns the VM; started after
 * the rules (its set exists); net_ready() waits until it listens, before the guest runs, so the
 * guest's first query finds it. Its output goes to dnsmasq.log in the state dir.
 */
static int start_forwarder(struct vm_net *n, struct avm_error *err)
{
	char conf[PATH_MAX], log[PATH_MAX], arg[PATH_MAX + 16];
	const char *domains[VM_SPEC_MAX_ALLOW];
	_cleanup_free_ char *text = NULL;
	struct avm_error nerr = { 0 };
	struct nf_dns_conf c = { .name = n->vm, .tap = n->tap, .listen = n->lease.host,
				 .domains = domains, .n_domains = n->n_domains,
				 .ttl = n->domain_ttl };
	const char *bin = net_dnsmasq_path();
	int r;

	for (size_t i = 0; i < n->n_domains; i++)
		domains[i] = n->domains[i];
	inet_pton(AF_INET, n->upstream, &c.upstream);
	r = nf_dns_config(&c, &text, &nerr);
	if (r < 0)
		return avm_error_set(err, r, "DNS forwarder: %s", nerr.msg);
	if (forwarder_conf_path(n, conf, sizeof(conf)) < 0 ||
	    snprintf(log, sizeof(log), "%.*s.log", (int)(strlen(conf) - 5), conf) >= (int)sizeof(log))
		return avm_error_set(err, -ENOENT, "DNS forwarder: no state directory for %s", n->vm);
	r = write_file_atomic(conf, text, strlen(text));
	if (r < 0)
		return avm_error_setx(err, r, "cannot write %s", conf);
	snprintf(arg, sizeof(arg), "--conf-file=%s", conf);
	char *argv[] = { (char *)bin, arg, NULL };
	struct launch_opts lo = { .argv = argv, .log_path = log, .vfork = true };
	r = launch_spawn(&lo, &n->dns_pid, &n->dns_pidfd, err);
	if (r < 0)
		return avm_error_wrap(err, "cannot start the DNS forwarder %s", bin);
	n->dns_started_ms = now_ms();
	/* Not waited for here: it starts (20-110 ms measured on a loaded host) while QEMU does. */
	return 0;
}

int net_forwarder_fd(const struct vm_net *n)
{
	return n->dns_pidfd;
}

/* Append one line to the forwarder's log (its own output goes there too). */
static void forwarder_log(const struct vm_net *n, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void forwarder_log(const struct vm_net *n, const char *fmt, ...)
{
	char conf[PATH_MAX], log[PATH_MAX], line[256];
	va_list ap;
	int fd;

	if (forwarder_conf_path(n, conf, sizeof(conf)) < 0 ||
	    snprintf(log, sizeof(log), "%.*s.log", (int)(strlen(conf) - 5), conf) >= (int)sizeof(log))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0) {
		(void)!write(fd, line, strlen(line));
		close(fd);
	}
}

int net_forwarder_exited(struct vm_net *n)
{
	int status = 0;
	bool quick;

	if (n->dns_pidfd < 0)
		return -1;
	if (waitpid(n->dns_pid, &status, WNOHANG) <= 0)
		status = -1;
	close(n->dns_pidfd);
	n->dns_pidfd = -1;
	quick = now_ms() - n->dns_started_ms < NET_DNS_STABLE_MS;
	n->dns_restarts = quick ? n->dns_restarts + 1 : 1;
	if (status == -1)
		snprintf(n->dns_exit, sizeof(n->dns_exit), "exited");
	else if (WIFSIGNALED(status))
		snprintf(n->dns_exit, sizeof(n->dns_exit), "was killed by signal %d",
			 WTERMSIG(status));
	else
		snprintf(n->dns_exit, sizeof(n->dns_exit), "exited with status %d",
			 WEXITSTATUS(status));
	if (n->dns_restarts > NET_DNS_MAX_RESTARTS) {
		forwarder_log(n, "agentvm: dnsmasq (pid %d) %s; %d restarts in a row failed, not "
			      "restarting it: the VM's names no longer resolve",
			      (int)n->dns_pid, n->dns_exit, NET_DNS_MAX_RESTARTS);
		n->dns_pid = 0;
		return -1;
	}
	/* The first restart at once; one that keeps dying waits 250 ms, 500 ms ... 8 s. */
	return n->dns_restarts <= 1 ? 0 : 250 << (n->dns_restarts - 2 < 5 ? n->dns_restarts - 2 : 5);
}

int net_forwarder_restart(struct vm_net *n, struct avm_error *err)
{
	pid_t old = n->dns_pid;
	int r = start_forwarder(n, err);

	if (r < 0) {
		forwarder_log(n, "agentvm: dnsmasq (pid %d) %s; restarting it failed: %s", (int)old,
			      n->dns_exit, err ? err->msg : "");
		n->dns_pid = 0;
		return r;
	}
	forwarder_log(n, "agentvm: dnsmasq (pid %d) %s; restarted as pid %d (%u of %d in a row)",
		      (int)old, n->dns_exit, (int)n->dns_pid, n->dns_restarts,
		      NET_DNS_MAX_RESTARTS);
	return 0;
}

int net_ready(struct vm_net *n, struct avm_error *err)
{
	char conf[PATH_MAX], log[PATH_MAX], tail[160] = "";
	_cleanup_free_ char *out = NULL;

	if (n->dns_pidfd < 0)
		return 0;
	steps_begin(n);
	for (int i = 0; i < 5000 && !udp53_bound(n->lease.host); i++) {
		struct pollfd p = { .fd = n->dns_pidfd, .events = POLLIN };
		if (poll(&p, 1, 1) > 0) {
			if (forwarder_conf_path(n, conf, sizeof(conf)) == 0 &&
			    snprintf(log, sizeof(log), "%.*s.log", (int)(strlen(conf) - 5), conf) <
				    (int)sizeof(log) &&
			    read_file(log, &out, 64 * 1024) > 0) {
				char *nl, *last = out;
				for (char *q = out; (nl = strchr(q, '\n')) && nl[1]; q = nl + 1)
					last = nl + 1;
				snprintf(tail, sizeof(tail), "%.*s", (int)strcspn(last, "\n"), last);
			}
			return avm_error_set(err, -EIO, "the DNS forwarder (dnsmasq) exited at start: %s",
					     tail[0] ? tail : "see dnsmasq.log in the state dir");
		}
	}
	if (!udp53_bound(n->lease.host))
		return avm_error_set(err, -ETIMEDOUT, "the DNS forwarder (dnsmasq) did not start "
				     "listening within 5 s");
	step(n, "dnsmasq ready (waited)");
	return 0;
}

/* Whether pid is still the dnsmasq of this VM (not a recycled pid): its argv names our conf. */
static bool forwarder_is_ours(const struct vm_net *n)
{
	char path[64], conf[PATH_MAX];
	_cleanup_free_ char *cmd = NULL;
	ssize_t len;

	if (n->dns_pid <= 0 || forwarder_conf_path(n, conf, sizeof(conf)) < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)n->dns_pid);
	len = read_file(path, &cmd, 8192);
	if (len <= 0)
		return false;
	for (ssize_t i = 0; i < len - 1; i++)
		if (cmd[i] == '\0')
			cmd[i] = ' ';
	return strstr(cmd, conf) != NULL;
}

static void stop_forwarder(struct vm_net *n)
{
	if (n->dns_pidfd >= 0) {
		/*
		 * Not waited for: the owner exits right after teardown and init reaps the zombie.
		 * Reaped here only if it is gone already (no zombies in a long-lived owner).
		 */
		syscall(SYS_pidfd_send_signal, n->dns_pidfd, SIGKILL, NULL, 0);
		waitpid(n->dns_pid, NULL, WNOHANG);
		close(n->dns_pidfd);
		n->dns_pidfd = -1;
	} else if (forwarder_is_ours(n)) {
		kill(n->dns_pid, SIGKILL); /* not our child: its parent (or init) reaps it */
	}
	n->dns_pid = 0;
}

/*
 * Costs measured on a 2-vCPU host (kernel 6.18): an nft transaction ~0.5 ms, a tap ~0.3 ms, but
 * closing the nftables socket right after a commit waits ~18 ms for an RCU grace period (the
 * kernel flushes its transaction clean-up work), and deleting a link another ~15 ms. So: one
 * nftables context kept open for the VM's life, no separate base transaction, and a tap that
 * is not persistent, so it goes away with QEMU's fd instead of by an explicit delete.
 */
static int setup_nat(struct vm_net *n, const struct vm_spec *spec, struct avm_error *err)
{
	struct avm_error nerr = { 0 };
	struct nf_pool *pool = NULL;
	int r;

	build_allowlist(n, spec);
	build_egress(n, spec);
	n->deny_all = spec->deny_all_egress;
	if (spec->dns)
		snprintf(n->dns, sizeof(n->dns), "%s", spec->dns);
	else
		host_resolver(n->dns, sizeof(n->dns));
	if (n->n_domains) {
		/* The forwarder resolves; the guest asks only the forwarder (on its gateway). */
		if (!net_dnsmasq_path())
			return avm_error_set(err, -ENOENT,
					     "--allow-domain needs dnsmasq: install it (apt-get install "
					     "dnsmasq-base)");
		/* The guest's usual resolver; a local stub only when the host has nothing else. */
		snprintf(n->upstream, sizeof(n->upstream), "%s", n->dns);
		if (!n->upstream[0])
			resolver_from_any("/etc/resolv.conf", n->upstream, sizeof(n->upstream), true);
		if (!n->upstream[0])
			return avm_error_set(err, -ENOENT,
					     "--allow-domain: the host has no resolver in "
					     "/etc/resolv.conf; give one with --dns ADDR");
	}

	if (geteuid() != 0)
		return avm_error_set(err, -EPERM,
				     "--network nat-filtered needs root (CAP_NET_ADMIN) for its tap "
				     "and firewall; run as root or use --network isolated");
	r = nf_nft_new(&n->nft, &nerr);
	if (r < 0)
		return nf_fail(err, &nerr, "cannot set up the VM's firewall");
	step(n, "nft context");
	/* Teardown must find the lease in the same pool, whatever its caller's environment. */
	snprintf(n->pool, sizeof(n->pool), "%s", getenv(NET_POOL_ENV) ? getenv(NET_POOL_ENV) : "");
	r = net_pool_open(n->pool, &pool, err);
	if (r < 0)
		goto out;
	int lk = nft_lock(); /* against a teardown's check-then-release of the same index */
	r = nf_pool_alloc(pool, n->vm, &n->lease, &nerr);
	nft_unlock(lk);
	if (r < 0) {
		r = nf_fail(err, &nerr, "cannot lease an address");
		goto out;
	}
	n->has_lease = true;
	step(n, "lease");
	r = nf_tap_create(n->tap, false, &nerr);
	if (r < 0) {
		r = nf_fail(err, &nerr, "cannot create the VM's tap");
		goto out;
	}
	n->tap_fd = r;
	step(n, "tap create");
	r = nf_link_configure(n->tap, n->lease.host, n->lease.prefixlen, &nerr);
	if (r < 0) {
		r = nf_fail(err, &nerr, "cannot configure the VM's tap");
		goto out;
	}
	step(n, "tap configure");
	if (n->rate_bytes && (r = nf_tap_shape(n->tap, n->rate_bytes, n->burst_bytes, &nerr)) < 0) {
		r = nf_fail(err, &nerr, "cannot limit the VM's bandwidth");
		goto out;
	}
	if (n->rate_bytes)
		step(n, "tap qdisc");
	/* Recorded now, so a teardown (or gc after a SIGKILL) removes what net_setup_filter()
	 * may add; removing rules that never came is refused as a whole and ignored. */
	n->filter_pending = true;
	n->rules = true;
	/* The forwarder (net_setup_filter) answers on the gateway: the guest's only resolver. */
	if (n->n_domains)
		inet_ntop(AF_INET, &n->lease.host, n->dns, sizeof(n->dns));
	r = 0;
out:
	nf_pool_free(pool);
	return r;
}

int net_setup_filter(struct vm_net *n, struct avm_error *err)
{
	struct avm_error nerr = { 0 };
	struct nf_vm v;
	char uplink[IFNAMSIZ];
	int r;

	if (!n->filter_pending)
		return 0;
	n->filter_pending = false;
	steps_begin(n);
	fill_nf_vm(n, &v);
	int lock = nft_lock();
	/* Replies come back through the uplink: IPv4 forwarding is per ingress interface. */
	if (nf_uplink(uplink, NULL) == 0 && (r = uplink_forwarding_on(uplink, &nerr)) < 0) {
		nft_unlock(lock);
		return nf_fail(err, &nerr, "cannot enable forwarding on the uplink");
	}
	step(n, "uplink forwarding");
	r = nf_nft_vm_add(n->nft, &v, &nerr);
	if (r < 0) {
		n->rules = false;
		last_vm_out(n->nft, NULL); /* undo the forwarding (and table) when no VM is left */
	}
	nft_unlock(lock);
	if (r < 0)
		return nf_fail(err, &nerr, "cannot install the VM's firewall rules");
	step(n, "nft add");
	audit_policy(n);
	if (n->n_domains) {
		r = start_forwarder(n, err);
		if (r < 0)
			return r;
		step(n, "dnsmasq spawn");
	}
	return 0;
}

static int setup_bridge(struct vm_net *n, const struct vm_spec *spec, struct avm_error *err)
{
	struct avm_error nerr = { 0 };
	int r;

	snprintf(n->bridge, sizeof(n->bridge), "%s", spec->bridge);
	r = nf_link_exists(n->bridge, &nerr);
	if (r < 0)
		return nf_fail(err, &nerr, "cannot look up the bridge");
	if (r == 0)
		return avm_error_set(err, -ENODEV,
				     "bridge '%s' does not exist; create it first (ip link add %s "
				     "type bridge) or use --network nat-filtered",
				     n->bridge, n->bridge);
	r = nf_tap_create(n->tap, false, &nerr);
	if (r < 0)
		return nf_fail(err, &nerr, "cannot create the VM's tap");
	n->tap_fd = r;
	r = nf_link_set_master(n->tap, n->bridge, &nerr);
	if (r < 0)
		return nf_fail(err, &nerr, "cannot attach the VM's tap to the bridge");
	return 0;
}

int net_setup(struct vm_net *n, const struct vm_spec *spec, struct avm_error *err)
{
	int r;

	n->mode = spec->net_mode;
	if (n->mode == VM_NET_ISOLATED)
		return 0;
	n->n_trace = 0;
	steps_begin(n);
	r = new_identity(n, err);
	if (r < 0)
		return r;
	r = n->mode == VM_NET_BRIDGE ? setup_bridge(n, spec, err) : setup_nat(n, spec, err);
	if (r < 0)
		net_teardown(n);
	return r;
}

int net_guest_cmdline(const struct vm_net *n, const char *hostname, char *buf, size_t len)
{
	char guest[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN];
	int w;

	if (n->mode != VM_NET_NAT_FILTERED || !n->has_lease) {
		w = snprintf(buf, len, "agentvm.hostname=%s", hostname);
		return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
	}
	inet_ntop(AF_INET, &n->lease.guest, guest, sizeof(guest));
	inet_ntop(AF_INET, &n->lease.host, gw, sizeof(gw));
	w = snprintf(buf, len, "agentvm.ip=%s/%u agentvm.gw=%s%s%s agentvm.hostname=%s", guest,
		     n->lease.prefixlen, gw, n->dns[0] ? " agentvm.dns=" : "", n->dns, hostname);
	return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
}

void net_port_string(const struct nf_port *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%u", p->proto == IPPROTO_UDP ? "udp" : "tcp", p->port);
}

void net_ports_string(const struct nf_port *v, size_t n, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && off < len; i++) {
		char p[16];
		net_port_string(&v[i], p, sizeof(p));
		int w = snprintf(buf + off, len - off, "%s%s", i ? "," : "", p);
		if (w < 0)
			break;
		off += (size_t)w;
	}
	if (!n)
		snprintf(buf, len, "none");
}

void net_allow_string(const struct vm_net *n, char *buf, size_t len)
{
	net_ports_string(n->allow, n->n_allow, buf, len);
}

/* The egress policy the VM's rules now enforce, as an audit event (net.policy). */
static void audit_policy(const struct vm_net *n)
{
	struct json_object *f = json_object_new_object();
	char a[INET_ADDRSTRLEN], ports[512];

	if (f) {
		json_object_object_add(f, "tap", json_object_new_string(n->tap));
		inet_ntop(AF_INET, &n->lease.guest, a, sizeof(a));
		json_object_object_add(f, "guest_addr", json_object_new_string(a));
		net_allow_string(n, ports, sizeof(ports));
		json_object_object_add(f, "allow_ports", json_object_new_string(ports));
		struct json_object *cidrs = json_object_new_array();
		for (size_t i = 0; cidrs && i < n->n_open; i++) {
			char c[NF_CIDR_STRLEN];
			nf_cidr_string(&n->open[i], c, sizeof(c));
			json_object_array_add(cidrs, json_object_new_string(c));
		}
		json_object_object_add(f, "allow_cidrs", cidrs);
		struct json_object *doms = json_object_new_array();
		for (size_t i = 0; doms && i < n->n_domains; i++)
			json_object_array_add(doms, json_object_new_string(n->domains[i]));
		json_object_object_add(f, "allow_domains", doms);
		json_object_object_add(f, "deny_all", json_object_new_boolean(n->deny_all));
	}
	audit_log("net.policy", n->vm, f);
}

/* A port list as a JSON array of "tcp:80" strings. */
static struct json_object *ports_json(const struct nf_port *v, size_t n)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; a && i < n; i++) {
		char p[16];
		net_port_string(&v[i], p, sizeof(p));
		json_object_array_add(a, json_object_new_string(p));
	}
	return a;
}

/* A JSON array of "tcp:80" strings into v (at most max); what does not parse is skipped. */
static size_t ports_from_json(struct json_object *o, const char *k, struct nf_port *v, size_t max)
{
	struct json_object *a;
	size_t n = 0;

	if (!json_object_object_get_ex(o, k, &a) || !json_object_is_type(a, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(a) && n < max; i++)
		if (nf_port_parse(json_object_get_string(json_object_array_get_idx(a, i)), &v[n],
				  NULL) == 0)
			n++;
	return n;
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

int net_save(const struct vm_net *n, const char *dir)
{
	char path[PATH_MAX], mac[18], a[INET_ADDRSTRLEN];
	struct json_object *o = json_object_new_object();
	const char *s;
	int r;

	if (!o)
		return -ENOMEM;
	add_str(o, "mode", vm_net_mode_name(n->mode));
	add_str(o, "vm", n->vm);
	add_str(o, "tap", n->tap);
	add_str(o, "bridge", n->bridge);
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2],
		 n->mac[3], n->mac[4], n->mac[5]);
	add_str(o, "mac", n->tap[0] ? mac : "");
	if (n->has_lease) {
		json_object_object_add(o, "lease", json_object_new_int64(n->lease.index));
		add_str(o, "guest", inet_ntop(AF_INET, &n->lease.guest, a, sizeof(a)));
		add_str(o, "gateway", inet_ntop(AF_INET, &n->lease.host, a, sizeof(a)));
		json_object_object_add(o, "prefixlen", json_object_new_int((int)n->lease.prefixlen));
	}
	add_str(o, "dns", n->dns);
	add_str(o, "pool", n->pool);
	json_object_object_add(o, "allow", ports_json(n->allow, n->n_allow));
	json_object_object_add(o, "host_allow", ports_json(n->host_allow, n->n_host_allow));
	struct json_object *open = json_object_new_array(), *doms = json_object_new_array();
	for (size_t i = 0; i < n->n_open; i++) {
		char c[NF_CIDR_STRLEN];
		nf_cidr_string(&n->open[i], c, sizeof(c));
		json_object_array_add(open, json_object_new_string(c));
	}
	for (size_t i = 0; i < n->n_domains; i++)
		json_object_array_add(doms, json_object_new_string(n->domains[i]));
	json_object_object_add(o, "allow_cidr", open);
	json_object_object_add(o, "allow_domain", doms);
	json_object_object_add(o, "domain_ttl", json_object_new_int((int)n->domain_ttl));
	json_object_object_add(o, "conn_limit", json_object_new_int((int)n->conn_limit));
	json_object_object_add(o, "conn_rate", json_object_new_int((int)n->conn_rate));
	add_str(o, "bandwidth", n->bandwidth);
	add_str(o, "upstream", n->upstream);
	json_object_object_add(o, "deny_all", json_object_new_boolean(n->deny_all));
	json_object_object_add(o, "dns_pid", json_object_new_int((int)n->dns_pid));
	json_object_object_add(o, "rules", json_object_new_boolean(n->rules));
	json_object_object_add(o, "torn_down", json_object_new_boolean(n->torn_down));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = statedir_file(path, sizeof(path), dir, NET_JSON);
	if (r == 0)
		r = write_file_atomic(path, s, strlen(s));
	json_object_put(o);
	return r;
}

static const char *get_s(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return "";
}

static bool get_b(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_get_boolean(v);
}

bool net_tap_name_is_ours(const char *name)
{
	size_t p = strlen(NF_TAP_PREFIX);

	if (strncmp(name, NF_TAP_PREFIX, p) != 0 || strlen(name) != p + 8)
		return false;
	for (size_t i = p; name[i]; i++)
		if (!isxdigit((unsigned char)name[i]) || isupper((unsigned char)name[i]))
			return false;
	return true;
}

int net_load(struct vm_net *n, const char *dir, struct avm_error *err)
{
	char path[PATH_MAX];
	struct json_object *o, *v;
	unsigned m[6];
	const char *mode;

	_cleanup_free_ char *buf = NULL;
	int r;

	statedir_file(path, sizeof(path), dir, NET_JSON);
	if ((r = statedir_read(dir, NET_JSON, &buf, 1 << 20)) == -ENOENT)
		return -ENOENT;
	if (r == -ELOOP)
		return avm_error_set(err, -ELOOP, "%s is a symlink; not followed", path);
	o = r < 0 ? NULL : json_tokener_parse(buf);
	if (!o)
		return avm_error_set(err, -EBADMSG, "%s is not valid JSON", path);
	net_init(n, get_s(o, "vm"));
	mode = get_s(o, "mode");
	n->mode = !strcmp(mode, "bridge")     ? VM_NET_BRIDGE
		  : !strcmp(mode, "isolated") ? VM_NET_ISOLATED
					      : VM_NET_NAT_FILTERED;
	snprintf(n->tap, sizeof(n->tap), "%s", get_s(o, "tap"));
	/*
	 * Teardown deletes the interface named here: only one of the names agentvm gives its taps
	 * (avm- + 8 hex digits), never what a planted net.json names (eth0 would take the host
	 * offline).
	 */
	if (n->tap[0] && !net_tap_name_is_ours(n->tap)) {
		r = avm_error_set(err, -EPERM,
				  "%s names interface '%s', which is not an agentvm tap; refusing "
				  "to touch it",
				  path, n->tap);
		json_object_put(o);
		n->tap[0] = '\0';
		return r;
	}
	snprintf(n->bridge, sizeof(n->bridge), "%s", get_s(o, "bridge"));
	snprintf(n->dns, sizeof(n->dns), "%s", get_s(o, "dns"));
	snprintf(n->pool, sizeof(n->pool), "%s", get_s(o, "pool"));
	if (sscanf(get_s(o, "mac"), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4],
		   &m[5]) == 6)
		for (int i = 0; i < 6; i++)
			n->mac[i] = (uint8_t)m[i];
	if (json_object_object_get_ex(o, "lease", &v)) {
		n->has_lease = true;
		n->lease.index = (uint32_t)json_object_get_int64(v);
		n->lease.prefixlen = 30;
		inet_pton(AF_INET, get_s(o, "guest"), &n->lease.guest);
		inet_pton(AF_INET, get_s(o, "gateway"), &n->lease.host);
		snprintf(n->lease.owner, sizeof(n->lease.owner), "%s", n->vm);
	}
	n->n_allow = ports_from_json(o, "allow", n->allow, ARRAY_SIZE(n->allow));
	n->n_host_allow = ports_from_json(o, "host_allow", n->host_allow, ARRAY_SIZE(n->host_allow));
	if (json_object_object_get_ex(o, "allow_cidr", &v) && json_object_is_type(v, json_type_array))
		for (size_t i = 0; i < json_object_array_length(v) && n->n_open < ARRAY_SIZE(n->open);
		     i++)
			if (nf_cidr_parse(json_object_get_string(json_object_array_get_idx(v, i)),
					  &n->open[n->n_open], NULL) == 0)
				n->n_open++;
	if (json_object_object_get_ex(o, "allow_domain", &v) &&
	    json_object_is_type(v, json_type_array))
		for (size_t i = 0;
		     i < json_object_array_length(v) && n->n_domains < ARRAY_SIZE(n->domains); i++)
			if (nf_domain_check(json_object_get_string(json_object_array_get_idx(v, i)),
					    n->domains[n->n_domains], sizeof(n->domains[0]),
					    NULL) == 0)
				n->n_domains++;
	if (json_object_object_get_ex(o, "domain_ttl", &v))
		n->domain_ttl = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(o, "conn_limit", &v))
		n->conn_limit = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(o, "conn_rate", &v))
		n->conn_rate = (unsigned)json_object_get_int(v);
	snprintf(n->bandwidth, sizeof(n->bandwidth), "%s", get_s(o, "bandwidth"));
	if (n->bandwidth[0])
		nf_rate_parse(n->bandwidth, &n->rate_bytes, &n->burst_bytes, NULL);
	snprintf(n->upstream, sizeof(n->upstream), "%s", get_s(o, "upstream"));
	n->deny_all = get_b(o, "deny_all");
	if (json_object_object_get_ex(o, "dns_pid", &v))
		n->dns_pid = (pid_t)json_object_get_int(v);
	n->rules = get_b(o, "rules");
	n->torn_down = get_b(o, "torn_down");
	json_object_put(o);
	return 0;
}

/* Whether lease k of the pool is still this VM's: a released one may belong to another VM. */
static bool lease_is_ours(const struct vm_net *n, struct nf_pool *pool)
{
	struct nf_lease cur;

	return n->has_lease && pool && nf_pool_find(pool, n->vm, &cur, NULL) >= 0 &&
	       cur.index == n->lease.index;
}

/*
 * Under the nft lock. The last VM out leaves no trace: no table, no forwarding we turned on.
 * `but` (may be NULL): a tap whose rules do not count (they go with the table).
 */
static bool last_vm_out(struct nf_nft *nft, const char *but)
{
	char **taps = NULL;
	int left = nf_nft_vm_list(nft, &taps, NULL);

	if (left == 1 && but && !strcmp(taps[0], but))
		left = 0;
	if (taps)
		nf_strv_free(taps, left > 0 ? (size_t)left : 1);
	if (left != 0)
		return false;
	nf_nft_table_delete(nft, NULL);
	uplink_forwarding_restore();
	return true;
}

bool net_host_gc(void)
{
	struct nf_nft *nft = NULL;
	bool removed = false;

	if (nf_nft_new(&nft, NULL) == 0) {
		int lock = nft_lock();
		removed = last_vm_out(nft, NULL);
		nft_unlock(lock);
	}
	nf_nft_free(nft);
	return removed;
}

void net_release_rules(struct vm_net *n)
{
	struct nf_pool *pool = NULL;
	struct nf_vm v;

	if (n->mode != VM_NET_NAT_FILTERED || n->torn_down)
		return;
	steps_begin(n);
	/*
	 * The rules first, then the forwarder: a SIGKILLed dnsmasq dies (and releases its nftables
	 * socket) while our transaction runs, and made it wait (nft del 2-3 ms -> 15-19 ms measured
	 * with it killed first). Should it still add an address meanwhile, the set goes anyway.
	 */
	if (n->rules) {
		/* The rules name the guest address: only while the lease is ours, are they ours. */
		if (net_pool_open(n->pool, &pool, NULL) == 0 && lease_is_ours(n, pool)) {
			fill_nf_vm(n, &v);
			if (n->nft || nf_nft_new(&n->nft, NULL) == 0) {
				int lock = nft_lock();
				nf_nft_vm_del(n->nft, &v, NULL);
				nft_unlock(lock);
			}
		}
		nf_pool_free(pool);
		n->rules = false;
		step(n, "nft del");
	}
	if (n->dns_pid > 0) {
		stop_forwarder(n);
		step(n, "dnsmasq stop");
	}
}

void net_teardown(struct vm_net *n)
{
	struct nf_pool *pool = NULL;
	int slow[2], nfd;
	size_t n_slow = 0;

	if (n->mode != VM_NET_ISOLATED && !n->torn_down) {
		bool table_gone = false;
		steps_begin(n);
		/*
		 * QEMU is gone. When this VM is the last with rules, deleting the table takes its
		 * rules with it: one transaction instead of two (its rules, then the table), in a
		 * process where each costs copy-on-write faults after QEMU's fork.
		 */
		if (n->mode == VM_NET_NAT_FILTERED && n->rules &&
		    (n->nft || nf_nft_new(&n->nft, NULL) == 0)) {
			int lock = nft_lock();
			table_gone = last_vm_out(n->nft, n->tap);
			nft_unlock(lock);
			if (table_gone) {
				n->rules = false;
				step(n, "last VM out: table deleted");
			}
		}
		net_release_rules(n);
		steps_begin(n);
		/*
		 * A tap nobody holds is gone already (it is not persistent); one we still hold goes
		 * with our fd below. An explicit delete is for a tap left by an older agentvm.
		 */
		if (n->tap[0] && n->tap_fd < 0 && nf_link_exists(n->tap, NULL) > 0)
			nf_link_delete(n->tap, NULL);
		step(n, "tap check");
		int lock = nft_lock(); /* check-then-release, against another teardown and alloc */
		if (n->has_lease && net_pool_open(n->pool, &pool, NULL) == 0 && lease_is_ours(n, pool))
			nf_pool_release(pool, n->lease.index, NULL);
		step(n, "lease release");
		/*
		 * Only now, with QEMU gone: the base chains' drop of unknown avm-* interfaces must
		 * outlive every VM (an early release while the guest still ran left it unfiltered).
		 */
		if (n->mode == VM_NET_NAT_FILTERED && !table_gone &&
		    (n->nft || nf_nft_new(&n->nft, NULL) == 0))
			last_vm_out(n->nft, NULL);
		nft_unlock(lock);
		nf_pool_free(pool);
		n->torn_down = true;
		step(n, "last VM out check");
	}
	/* Both last closes wait for an RCU grace period: hand them to a closer process (close_async). */
	steps_begin(n);
	if (n->tap_fd >= 0)
		slow[n_slow++] = TAKE_FD(n->tap_fd);
	nfd = nf_nft_fd(n->nft);
	if (nfd >= 0 && (slow[n_slow] = fcntl(nfd, F_DUPFD_CLOEXEC, 0)) >= 0)
		n_slow++;
	nf_nft_free(n->nft);
	n->nft = NULL;
	close_async(slow, n_slow);
	if (n_slow)
		step(n, "last closes handed off");
}

int net_teardown_dir(const char *dir)
{
	struct vm_net n;
	int r = net_load(&n, dir, NULL);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (n.torn_down)
		return 0;
	net_teardown(&n);
	return net_save(&n, dir);
}
