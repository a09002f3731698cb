#!/bin/sh
# Integration tests for containerd-shim-agentvm-v2 with a real containerd (Debian's 1.6), run
# privately here: its own root, state and sockets under the run's temp dir, the shim on its PATH,
# stopped at the end. Its CRI plugin has a runtime handler `agentvm` and a sandbox image made
# here; t_cri_pod drives it with a small CRI client (cri_client.py, python3-grpcio), as kubelet
# would: a pod is one VM, its containers processes of that VM in their own roots. A local OCI image (oci.sh) is imported and run with
# `ctr run --runtime io.containerd.agentvm.v2`: the command runs in a microVM in the image's root
# file system, its output and exit code arrive; then exec, metrics, pause, resume, kill -s TERM
# (143), rm, and the task events. Nothing may be left: no VM, shim, containerd or mount.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/oci.sh"
. "$here/shim_ctrd.sh"

SHIM=$(dirname "$AVM")/containerd-shim-agentvm-v2
RT=io.containerd.agentvm.v2
IMG=localhost/avm-shim-test:latest
PAUSE=localhost/avm-pause:latest
CT=$tmp_root/ctrd
CTR_PID=

if [ "$(id -u)" != 0 ]; then
	echo "  SKIP all: containerd needs root"
	exit 0
fi
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
	echo "  SKIP all: containerd is not installed (make deps)"
	exit 0
fi

ctr_() { ctr --address "$CT/c.sock" "$@"; }

stop_containerd() {
	[ -n "$CTR_PID" ] || return 0
	kill "$CTR_PID" 2>/dev/null
	wait "$CTR_PID" 2>/dev/null
	CTR_PID=
}

# Whatever happened, nothing of ours outlives the script (a failing or interrupted run).
cleanup_shim() {
	stop_containerd
	[ -n "${serve_pid:-}" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid"
	for l in a b; do
		ip netns del "avm-pod$l-$$" 2>/dev/null
		ip link del "pv$l$$" 2>/dev/null
	done
	pkill -9 -f "containerd-shim-agentvm-v2 .*$CT" 2>/dev/null
	grep " $CT" /proc/mounts | cut -d' ' -f2 | sort -r | while read -r m; do umount -l "$m"; done
	cleanup_all
}
trap cleanup_shim EXIT INT TERM

shim_leftovers() {
	if pgrep -f "containerd-shim-agentvm-v2 .*$CT" >/dev/null; then
		fail "shim processes left: $(pgrep -af "containerd-shim-agentvm-v2 .*$CT")"
		pkill -9 -f "containerd-shim-agentvm-v2 .*$CT"
	fi
	if grep -q " $CT" /proc/mounts; then
		fail "mounts left: $(grep " $CT" /proc/mounts)"
	fi
}
LEFTOVER_HOOK=shim_leftovers

run_containerd() {
	# containerd finds the shim on its own PATH (not the client's).
	PATH="$CT/bin:$PATH" containerd --config "$CT/config.toml" >>"$CT/containerd.log" 2>&1 &
	CTR_PID=$!
	i=0
	until ctr_ version >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 100 ] && { fail "containerd did not start: $(tail -5 "$CT/containerd.log")"; return 1; }
		sleep 0.1
	done
}

start_containerd() {
	mkdir -p "$CT/bin"
	ln -sf "$SHIM" "$CT/bin/containerd-shim-agentvm-v2"
	ctrd_config "$CT" "$RT" "$PAUSE"
	# The CRI runtime's agentvm settings (README): its pods get 384 MiB.
	echo '{"memory": 384, "network": "isolated"}' >"$CT/agentvm-cri.json"
	run_containerd || return 1
	make_oci "$tmp_root/oci"
	tar -C "$tmp_root/oci/layout" -cf "$tmp_root/oci.tar" .
	ctr_ images import --base-name localhost/avm-shim-test "$tmp_root/oci.tar" >/dev/null ||
		fail "ctr images import failed"
	# The CRI plugin's images live in namespace k8s.io: the same image, and a pause image
	# (the image's layers, a config whose command sleeps) under the sandbox_image name.
	ctr_ -n k8s.io images import --base-name localhost/avm-shim-test "$tmp_root/oci.tar" \
		>/dev/null || fail "ctr -n k8s.io images import failed"
	make_pause "$tmp_root/oci"
	tar -C "$tmp_root/oci/layout" -cf "$tmp_root/pause.tar" .
	ctr_ -n k8s.io images import --base-name localhost/avm-pause "$tmp_root/pause.tar" \
		>/dev/null || fail "ctr images import (pause) failed"
}

cri() { /usr/bin/python3 "$here/cri_client.py" "$CT/c.sock" "$tmp_root/cri" "$@"; }

# The CRI path (what kubelet calls), through containerd's CRI plugin and runtime handler
# agentvm: one pod sandbox is one VM; two containers in it, each in its own root file system,
# are processes of that VM; ExecSync, ContainerStatus, Stop/RemovePodSandbox; nothing left.
t_cri_pod() {
	if ! /usr/bin/python3 -c 'import grpc' 2>/dev/null || ! command -v protoc >/dev/null; then
		echo "    SKIP: python3-grpcio or protobuf-compiler missing (make deps)"
		return
	fi
	mkdir -p "$tmp_root/cri"
	protoc -I "$here" --python_out="$tmp_root/cri" "$here/cri_min.proto" || { fail "protoc"; return; }
	cri image "$PAUSE" || { fail "the CRI plugin never saw the pause image: $(grep -a "cri" "$CT/containerd.log" | tail -3)"; return; }
	pod=$(cri runp pod1 agentvm) || { fail "RunPodSandbox"; return; }
	expect_eq "VMs after RunPodSandbox" 1 "$(ls "$AGENTVM_STATE_DIR" | grep -c '^ctr-')"
	# app1 as root (the image's user is app, 1000): it may write in its root's /.
	c1=$(CRI_UID=0 cri create "$pod" pod1 app1 "$IMG" busybox sleep 600) || fail "CreateContainer app1"
	c2=$(cri create "$pod" pod1 app2 "$IMG" busybox sleep 600) || fail "CreateContainer app2"
	cri start "$c1" || fail "StartContainer app1"
	cri start "$c2" || fail "StartContainer app2"
	# Still one VM, and one shim for the pod (containerd asked it through `start`).
	expect_eq "VMs for a pod of 3 containers" 1 "$(ls "$AGENTVM_STATE_DIR" | grep -c '^ctr-')"
	expect_eq "shims (sockets) for the pod" 1 "$(ls "$AGENTVM_STATE_DIR" | grep -c '^shim-.*\.sock$')"
	out=$(cri exec "$c1" sh -c 'busybox cat /opt/new.txt; id -u; echo one >/mark || echo no-mark; uname -r; exit 4')
	expect_eq "ExecSync exit code" 4 "$?"
	expect_contains "ExecSync output (a file of the image)" "new" "$out"
	case "$out" in *"$(uname -r)"*) fail "ran on the host kernel: $out" ;; esac
	case "$out" in *no-mark*) fail "app1 could not write its root: $out" ;; esac
	expect_eq "app1's user (run_as_user 0)" 0 "$(echo "$out" | sed -n 2p)"
	# Each container has its own root: app2 does not see app1's file; both in one guest
	# kernel (the same boot id).
	out=$(cri exec "$c2" sh -c 'test -e /mark && echo shared-root; id -u; busybox cat /proc/sys/kernel/random/boot_id')
	case "$out" in *shared-root*) fail "app2 sees app1's root" ;; esac
	expect_eq "app2's user (the image's)" 1000 "$(echo "$out" | sed -n 1p)"
	out=$(echo "$out" | sed -n 2p)
	b1=$(cri exec "$c1" busybox cat /proc/sys/kernel/random/boot_id)
	expect_eq "one VM (boot id) for both containers" "$b1" "$out"
	# The runtime's options.ConfigPath (agentvm-cri.json) sized the VM: 384 MiB.
	kb=$(cri exec "$c2" busybox awk '/MemTotal/ {print $2}' /proc/meminfo)
	[ "${kb:-0}" -gt 300000 ] && [ "${kb:-0}" -le 393216 ] || fail "MemTotal '$kb' kB is not ~384 MiB (ConfigPath)"
	expect_contains "ContainerStatus" "CONTAINER_RUNNING" "$(cri status "$c1")"
	# ContainerStats: the CRI plugin decodes the shim's Stats (the VM's CPU time and memory).
	set -- $(cri stats "$c1")
	[ "${1:-0}" -gt 0 ] && [ "${2:-0}" -gt 0 ] || fail "ContainerStats: cpu '${1:-}' ns, working set '${2:-}' bytes"
	# The guest's root (agentvm exec, outside every container) sees the roots beneath the pod
	# share but cannot write the share itself (its leftovers would outlive the pod).
	vm=$(ls "$AGENTVM_STATE_DIR" | grep '^ctr-')
	out=$("$AVM" exec "$vm" -- sh -c 'ls /mnt/rootfs | wc -l; touch /mnt/rootfs/x 2>/dev/null && echo wrote')
	expect_eq "the pod share from the guest (3 roots, read-only)" 3 "$out"
	# The CRI plugin's bind mounts: the pod's /etc/hostname and /etc/resolv.conf.
	expect_eq "/etc/hostname (a CRI bind mount)" pod1 "$(cri exec "$c2" busybox cat /etc/hostname)"
	cri exec "$c2" busybox test -f /etc/resolv.conf || fail "no /etc/resolv.conf in the container"
	cri stopp "$pod" || fail "StopPodSandbox"
	expect_contains "ContainerStatus after the stop" "CONTAINER_EXITED" "$(cri status "$c2")"
	cri rmp "$pod" || fail "RemovePodSandbox"
	i=0
	while ls -a "$AGENTVM_STATE_DIR" | grep -q '^ctr-\|^\.pod-' || pgrep -f "containerd-shim-agentvm-v2 .*-id $pod " >/dev/null; do
		i=$((i + 1))
		[ $i -gt 300 ] && { fail "the pod's VM or shim is left: $(ls -a "$AGENTVM_STATE_DIR")"; break; }
		sleep 0.1
	done
	[ $CURRENT_OK = 1 ] || grep -a 'agentvm-shim\|level=error' "$CT/containerd.log" | tail -20
}

t_run_exit_code_and_rootfs() {
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" c1 sh -c \
		'busybox cat /opt/new.txt; test -e /opt/gone.txt && echo gone-exists; id -u; uname -r
		 echo x >/dev/null && test -c /dev/null && echo devnull-ok
		 test -r /proc/self/status && echo proc-ok
		 busybox grep -o agentvm.template=1 /proc/cmdline; exit 7' \
		</dev/null 2>"$tmp_root/err")
	rc=$?
	expect_eq "exit code of the task" 7 "$rc"
	# /opt/new.txt exists only in the image's second layer, /opt/gone.txt was whited out.
	expect_contains "a file only the image has" "new" "$out"
	case "$out" in *gone-exists*) fail "whiteout not applied: $out" ;; esac
	# The image's User app (1000) and a guest kernel, not the host's.
	expect_contains "image user" "1000" "$out"
	# The guest's /dev and /proc inside the container root.
	expect_contains "/dev/null in the container" "devnull-ok" "$out"
	expect_contains "/proc in the container" "proc-ok" "$out"
	# The pod VM (one container-root share) is a boot template's clone: even the first pod of
	# its shape builds the template and restores from it.
	expect_contains "a boot template's clone" "agentvm.template=1" "$out"
	case "$out" in *"$(uname -r)"*) fail "ran on the host kernel: $out" ;; esac
	[ -s "$tmp_root/err" ] && echo "    (stderr: $(head -3 "$tmp_root/err"))"
	ctr_ containers rm c1 || fail "ctr containers rm c1"
	[ $CURRENT_OK = 1 ] || grep -a agentvm-shim "$CT/containerd.log" | tail -20
}

t_exec_pause_resume_kill() {
	ctr_ events >"$tmp_root/events" 2>&1 &
	ev=$!
	ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" c2 busybox sleep 600 </dev/null >"$tmp_root/c2.out" 2>&1 &
	run=$!
	i=0
	until ctr_ task ls 2>/dev/null | grep -q '^c2 .*RUNNING'; do
		i=$((i + 1))
		[ $i -gt 1200 ] && { fail "task c2 never ran"; break; }
		sleep 0.1
	done
	out=$(ctr_ task exec --fifo-dir "$CT/fifo" --exec-id e1 c2 sh -c 'echo exec-out $(busybox cat /opt/new.txt); exit 3' </dev/null)
	rc=$?
	expect_eq "exec exit code" 3 "$rc"
	expect_eq "exec output" "exec-out new" "$out"
	# Task.Stats as cgroup v1 metrics: the VM's CPU time, the guest's memory against the
	# VM's (512 MiB by default), the container's processes (sleep).
	out=$(ctr_ task metrics c2 2>&1)
	cpu=$(echo "$out" | busybox awk '$1 == "cpuacct.usage" {print $2}')
	lim=$(echo "$out" | busybox awk '$1 == "memory.limit_in_bytes" {print $2}')
	use=$(echo "$out" | busybox awk '$1 == "memory.usage_in_bytes" {print $2}')
	expect_eq "pids.current" 1 "$(echo "$out" | busybox awk '$1 == "pids.current" {print $2}')"
	[ "${cpu:-0}" -gt 0 ] || fail "no CPU time in ctr task metrics: $out"
	[ "${lim:-0}" -gt 300000000 ] && [ "${lim:-0}" -le 536870912 ] || fail "memory limit '$lim' is not the VM's: $out"
	[ "${use:-0}" -gt 0 ] && [ "${use:-0}" -lt "${lim:-0}" ] || fail "memory usage '$use': $out"
	ctr_ task pause c2 || fail "pause"
	expect_contains "paused state" "PAUSED" "$(ctr_ task ls | grep '^c2 ')"
	ctr_ task resume c2 || fail "resume"
	expect_contains "resumed state" "RUNNING" "$(ctr_ task ls | grep '^c2 ')"
	ctr_ task kill -s TERM c2 || fail "kill -s TERM"
	wait $run
	expect_eq "exit code after SIGTERM" 143 "$?"
	ctr_ containers rm c2 || fail "ctr containers rm c2"
	# The shim publishes through containerd's publish binary, asynchronously: wait for them.
	for topic in /tasks/create /tasks/start /tasks/exec-added /tasks/exec-started \
		/tasks/paused /tasks/resumed /tasks/exit /tasks/delete; do
		i=0
		while ! grep -q "$topic" "$tmp_root/events"; do
			i=$((i + 1))
			[ $i -gt 300 ] && { fail "no $topic event in ctr events"; break; }
			sleep 0.1
		done
	done
	kill $ev 2>/dev/null
	wait $ev 2>/dev/null
}

t_bad_runtime_input() {
	# An image without the command: the task fails to start and nothing is left.
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" c3 /no/such/cmd </dev/null 2>&1)
	rc=$?
	[ "$rc" -ne 0 ] || fail "a missing command succeeded"
	expect_contains "the reason" "cannot run /no/such/cmd in the container: No such file" "$out"
	ctr_ task rm -f c3 >/dev/null 2>&1
	ctr_ containers rm c3 >/dev/null 2>&1 || true
	# A terminal is refused with the reason, before any VM boots.
	# (ctr -t wants a console: script(1) gives it a pty.)
	out=$(script -qec "ctr --address $CT/c.sock run -t --fifo-dir $CT/fifo --runtime $RT $IMG c7 true" /dev/null \
		</dev/null 2>&1)
	[ $? -ne 0 ] || fail "ctr run -t succeeded"
	expect_contains "the terminal refusal" "does not give containers a terminal" "$out"
	ctr_ task rm -f c7 >/dev/null 2>&1
	ctr_ containers rm c7 >/dev/null 2>&1 || true
}

# The spec's bind mounts reach the container (what Kubernetes' volumes and /etc/hosts are): a
# read-only directory and a writable one; a destination climbing out with ".." stays inside the
# container's root (nothing appears on the host).
t_bind_mounts() {
	mkdir -p "$tmp_root/vol-ro" "$tmp_root/vol-rw"
	# Both writable by the image's user (app, 1000): only the ro bind refuses the write.
	chmod 0777 "$tmp_root/vol-rw" "$tmp_root/vol-ro"
	echo from-host >"$tmp_root/vol-ro/f"
	esc=/tmp/avm-escape-$$
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" \
		--mount "type=bind,src=$tmp_root/vol-ro,dst=/data,options=rbind:ro" \
		--mount "type=bind,src=$tmp_root/vol-rw,dst=/opt/out,options=rbind:rw" \
		--mount "type=bind,src=$tmp_root/vol-ro,dst=/../../../..$esc,options=rbind:ro" \
		"$IMG" c13 sh -c "busybox cat /data/f; echo x >/data/g || echo ro-refused
			echo written >/opt/out/w; busybox cat $esc/f" </dev/null 2>&1)
	expect_eq "exit code with binds" 0 "$?"
	expect_eq "the binds' output" "$(printf 'from-host\nro-refused\nfrom-host')" "$(echo "$out" | grep -v 'Read-only')"
	expect_contains "the ro bind's refusal" "Read-only file system" "$out"
	expect_eq "a write through the rw bind" written "$(cat "$tmp_root/vol-rw/w" 2>&1)"
	[ -e "$tmp_root/vol-ro/g" ] && fail "a write through the ro bind reached the host"
	[ -e "$esc" ] && { fail "a mount point was made outside the container: $esc"; rm -rf "$esc"; }
	ctr_ containers rm c13 || fail "ctr containers rm c13"
}

# A pod's own network namespace (what a CNI plugin makes; here one made by the test with a veth
# and a default route, passed as `ctr run --with-ns`): a nat-filtered VM's tap and nft table are
# made in it, not in the shim's namespace, and go with the VM.
# A shim was killed: containerd runs `shim delete`, which removes the VM; then ID goes.
dead_shim_cleaned() { # ID
	i=0
	while ls "$AGENTVM_STATE_DIR" | grep -q '^ctr-'; do
		i=$((i + 1))
		[ $i -gt 300 ] && { fail "the dead shim's VM was not removed"; break; }
		sleep 0.1
	done
	ctr_ task rm -f "$1" >/dev/null 2>&1
	ctr_ containers rm "$1" || fail "ctr containers rm $1"
}

# A pod's network namespace avm-pod<L>-$$ with a veth pv<L>$$ to it and a default route (what
# a CNI plugin makes). L: a letter per test, N: the /24's third byte.
make_pod_ns() { # L N
	ns=avm-pod$1-$$
	ip netns add "$ns" || { fail "ip netns add"; return 1; }
	ip link add pv$1$$ type veth peer name pp$1$$ && ip link set pp$1$$ netns "$ns" &&
		ip addr add 10.251.$2.1/24 dev pv$1$$ && ip link set pv$1$$ up &&
		ip -n "$ns" link set lo up && ip -n "$ns" addr add 10.251.$2.2/24 dev pp$1$$ &&
		ip -n "$ns" link set pp$1$$ up && ip -n "$ns" route add default via 10.251.$2.1 ||
		fail "the pod namespace's veth"
}

t_pod_netns() {
	make_pod_ns a 0 || return
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" --with-ns "network:/run/netns/$ns" \
		--annotation io.agentvm.network=nat-filtered "$IMG" c14 busybox sleep 600 \
		>/dev/null 2>&1 || fail "ctr run -d c14 --with-ns"
	expect_eq "the VM's tap in the pod's namespace" 1 "$(ip -n "$ns" -o link | grep -c ': avm-')"
	expect_eq "no tap of it in the shim's namespace" 0 "$(ip -o link | grep -c ': avm-')"
	out=$(ctr_ task exec --fifo-dir "$CT/fifo" --exec-id e14 c14 busybox cat /sys/class/net/eth0/address </dev/null)
	expect_contains "a NIC in the VM" "02:" "$out"
	kill_and_wait c14
	ctr_ task rm c14 >/dev/null 2>&1
	ctr_ containers rm c14 || fail "ctr containers rm c14"
	expect_eq "the tap gone with the VM" 0 "$(ip -n "$ns" -o link | grep -c ': avm-')"
	n=$(ip netns exec "$ns" nft list tables 2>/dev/null | grep -c agentvm)
	expect_eq "agentvm's nft tables left in the pod's namespace" 0 "$n"
	ip link del pva$$ 2>/dev/null
	ip netns del "$ns"
}

# A pod in its own network namespace whose shim and VM supervisor both die: containerd's `shim
# delete` removes the VM, and its network (the nft table, made in the pod's namespace) with it.
t_dead_shim_pod_netns() {
	make_pod_ns b 1 || return
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" --with-ns "network:/run/netns/$ns" \
		--annotation io.agentvm.network=nat-filtered "$IMG" c15 busybox sleep 600 \
		>/dev/null 2>&1 || fail "ctr run -d c15 --with-ns"
	vm=$(ls "$AGENTVM_STATE_DIR" | grep '^ctr-')
	sup=$(sed -n 's/.*"supervisor_pid": *\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/$vm/state.json")
	n=$(ip netns exec "$ns" nft list tables 2>/dev/null | grep -c agentvm)
	[ "$n" -ge 1 ] || fail "no agentvm nft table in the pod's namespace"
	shim=$(pgrep -f "containerd-shim-agentvm-v2 .*-id c15 ")
	[ -n "$sup" ] && [ -n "$shim" ] || { fail "no supervisor ($sup) or shim ($shim) for c15"; return; }
	kill -9 "$sup" $shim
	dead_shim_cleaned c15
	n=$(ip netns exec "$ns" nft list tables 2>/dev/null | grep -c agentvm)
	expect_eq "agentvm's nft tables left in the pod's namespace" 0 "$n"
	expect_eq "taps left in the pod's namespace" 0 "$(ip -n "$ns" -o link | grep -c ': avm-')"
	ip link del pvb$$ 2>/dev/null
	ip netns del "$ns"
}

# `ctr run ID ARGS...` must fail with MESSAGE in its output; nothing of it stays.
expect_run_refused() { # ID MESSAGE ARGS...
	_id=$1 _msg=$2
	shift 2
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" "$@" "$IMG" "$_id" true </dev/null 2>&1)
	[ $? -ne 0 ] || fail "ctr run $* was accepted"
	expect_contains "the refusal of $*" "$_msg" "$out"
	ctr_ task rm -f "$_id" >/dev/null 2>&1
	ctr_ containers rm "$_id" >/dev/null 2>&1
}

# The VM's settings from OCI annotations: memory and a (filtered) network; an unknown one fails.
t_annotations() {
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" --annotation io.agentvm.memory=768 \
		--annotation io.agentvm.network=nat-filtered "$IMG" c5 sh -c \
		'busybox grep MemTotal /proc/meminfo; busybox cat /sys/class/net/eth0/address' \
		</dev/null 2>&1)
	rc=$?
	expect_eq "exit code" 0 "$rc"
	kb=$(echo "$out" | busybox awk '/MemTotal/ {print $2}')
	# 768 MiB less the kernel's own share; the default (512 MiB) stays below 524288 kB.
	[ "${kb:-0}" -gt 600000 ] && [ "${kb:-0}" -le 786432 ] || fail "MemTotal '$kb' kB is not ~768 MiB: $out"
	expect_contains "a NIC in the VM" "02:" "$out"
	ctr_ containers rm c5 || fail "ctr containers rm c5"
	expect_run_refused c6 "unknown annotation 'io.agentvm.colour'" --annotation io.agentvm.colour=red
	# The runtime's config file (what containerd's options.ConfigPath names; ctr passes it
	# with --runtime-config-path): memory, and no io.agentvm.* annotations allowed.
	echo '{"memory": 640, "annotations": false}' >"$tmp_root/shim.json"
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" --runtime-config-path "$tmp_root/shim.json" \
		"$IMG" c9 busybox grep MemTotal /proc/meminfo </dev/null 2>&1)
	expect_eq "exit code with a config file" 0 "$?"
	kb=$(echo "$out" | busybox awk '/MemTotal/ {print $2}')
	[ "${kb:-0}" -gt 500000 ] && [ "${kb:-0}" -le 655360 ] || fail "MemTotal '$kb' kB is not ~640 MiB: $out"
	ctr_ containers rm c9 || fail "ctr containers rm c9"
	expect_run_refused c10 "annotation 'io.agentvm.memory' refused" \
		--runtime-config-path "$tmp_root/shim.json" --annotation io.agentvm.memory=768
	echo '{"memory": 640, "colour": "red"}' >"$tmp_root/shim.json"
	expect_run_refused c11 "unknown key or wrong type 'colour'" \
		--runtime-config-path "$tmp_root/shim.json"
}

# The runtime's "image": the pod VM itself boots into an agentvm root image (here one imported
# from a local OCI layout), its containers still each in their own root. The guest's PID 1 is
# in the image's root: /dev/vda mounted at / (with the initramfs it is rootfs).
t_vm_image() {
	make_oci "$tmp_root/oci-vm"
	"$AVM" image import shimvm "$tmp_root/oci-vm/layout" >/dev/null 2>"$tmp_root/err" ||
		{ fail "agentvm image import: $(cat "$tmp_root/err")"; return; }
	echo '{"image": "shimvm"}' >"$tmp_root/shim-img.json"
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" --runtime-config-path "$tmp_root/shim-img.json" \
		"$IMG" c16 sh -c 'busybox grep " / " /proc/1/mounts; busybox cat /opt/new.txt' \
		</dev/null 2>&1)
	expect_eq "exit code with a VM image" 0 "$?"
	expect_contains "the VM's root is the image" "/dev/vda / ext4" "$out"
	expect_contains "the container in its own root" "new" "$out"
	ctr_ containers rm c16 || fail "ctr containers rm c16"
	# An image agentvm does not have fails the Create with the store's message.
	echo '{"image": "nosuch-image"}' >"$tmp_root/shim-img.json"
	expect_run_refused c17 "image nosuch-image not found" \
		--runtime-config-path "$tmp_root/shim-img.json"
	"$AVM" image rm shimvm >/dev/null || fail "agentvm image rm shimvm"
}

# ctr task kill -s KILL ID, then wait until the task is STOPPED.
kill_and_wait() {
	ctr_ task kill -s KILL "$1" || fail "kill -s KILL $1"
	i=0
	until ctr_ task ls | grep -q "^$1 .*STOPPED *$"; do
		i=$((i + 1))
		[ $i -gt 300 ] && { fail "$1 never stopped"; break; }
		sleep 0.1
	done
}

# After a restart (WHAT): task ID runs, an exec works, and a kill ends it with 137; removed.
expect_taken_back() { # ID WHAT
	expect_contains "$1 after $2" "RUNNING" "$(ctr_ task ls | grep "^$1 ")"
	out=$(ctr_ task exec --fifo-dir "$CT/fifo" --exec-id "e$1" "$1" sh -c 'echo still-here' </dev/null)
	expect_eq "exec after $2" "still-here" "$out"
	kill_and_wait "$1"
	# (ctr task rm warns of the task's non-zero exit code.)
	out=$(ctr_ task rm "$1" 2>&1) || fail "ctr task rm $1"
	expect_contains "the exit status after $2" "exit code 137" "$out"
	ctr_ containers rm "$1" || fail "ctr containers rm $1"
}

# containerd restarts while a task runs: the shim and its VM live on and containerd takes them
# back (the bundle's address file); exec and kill still work.
t_containerd_restart() {
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" c8 busybox sleep 600 >/dev/null 2>&1 ||
		fail "ctr run -d c8"
	stop_containerd
	run_containerd || return
	expect_taken_back c8 "containerd's restart"
}

# The shim's Task service directly (ttrpc), for calls ctr never makes alone.
shim_call() { # ID OP ARGS...
	_sock=$(sed 's|^unix://||' "$CT/state/io.containerd.runtime.v2.task/default/$1/address")
	_id=$1 _op=$2
	shift 2
	/usr/bin/python3 "$here/shim_ttrpc.py" "$_sock" "$_op" "$_id" "$@"
}

# The shim process itself restarts (containerd down meanwhile, as for an upgrade of the shim):
# the new one, started by `start` for the same id from the bundle as containerd does, takes the
# VM and its processes back from its saved state; containerd then finds the task running, exec
# works, and the exit status of the process an earlier shim started arrives (137). An exec
# process added but not started yet (containerd's Exec; its Start comes next, to whichever shim
# is there) survives too: the new shim starts it with its spec and stdio.
t_shim_restart() {
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" c12 busybox sleep 600 >/dev/null 2>&1 ||
		fail "ctr run -d c12"
	# An exec id containerd would refuse is refused (the saved state would not take it back).
	out=$(shim_call c12 exec "../e" "$tmp_root/pend.out" true 2>&1) && fail "exec id ../e taken"
	expect_contains "the bad exec id's refusal" "bad exec id" "$out"
	: >"$tmp_root/pend.out" # (containerd's would be a FIFO it made)
	shim_call c12 exec pend "$tmp_root/pend.out" sh -c 'echo pending-ran $(id -u); exit 5' ||
		fail "Exec (not started) in c12"
	stop_containerd
	shim=$(pgrep -o -f "containerd-shim-agentvm-v2 .*-id c12 ")
	[ -n "$shim" ] || { fail "no shim for c12"; return; }
	kill -9 "$shim"
	bundle=$CT/state/io.containerd.runtime.v2.task/default/c12
	(cd "$bundle" && "$SHIM" -namespace default -address "$CT/c.sock" \
		-publish-binary "$(command -v containerd)" -id c12 start >/dev/null) ||
		fail "shim start for c12 again"
	run_containerd || return
	expect_eq "the unstarted exec after the shim's restart (1: created)" 1 "$(shim_call c12 state pend)"
	shim_call c12 start pend || fail "Start of the exec added before the restart"
	expect_eq "its exit status" 5 "$(shim_call c12 wait pend)"
	expect_eq "its output (its spec and stdout kept)" "pending-ran 0" "$(cat "$tmp_root/pend.out" 2>&1)"
	expect_taken_back c12 "the shim's restart"
	[ $CURRENT_OK = 1 ] || grep -a 'agentvm-shim' "$CT/containerd.log" | tail -20
}

# A shim killed with its VM running: containerd runs `shim delete`, which removes the VM.
t_dead_shim_cleanup() {
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" c4 busybox sleep 600 >/dev/null 2>&1 ||
		fail "ctr run -d c4"
	n=$(ls "$AGENTVM_STATE_DIR" | grep -c '^ctr-')
	expect_eq "VMs running for c4" 1 "$n"
	pids=$(pgrep -f "containerd-shim-agentvm-v2 .*-id c4 ")
	[ -n "$pids" ] || fail "no shim process for c4"
	kill -9 $pids
	dead_shim_cleaned c4
}

# The pool's VMs in state $1 (ready, leased), from `agentvm pool status --json`.
pool_vms() {
	"$AVM" pool status --json 2>/dev/null | tr -d ' \n' |
		grep -o "\"name\":\"pool-[0-9a-f]*\",\"state\":\"$1\"" | cut -d'"' -f4
}

# The pool's ready VM, once it has one (waiting up to $1 s; nothing after that).
pool_ready_vm() { # SECONDS
	i=0
	while [ -z "$(pool_vms ready)" ] && [ $i -lt $(($1 * 10)) ]; do
		i=$((i + 1))
		sleep 0.1
	done
	pool_vms ready | head -1
}

# Wait (up to $3 s) until PATH is gone (WHAT names it in the failure).
wait_gone() { # PATH WHAT SECONDS
	i=0
	while [ -e "$1" ]; do
		i=$((i + 1))
		[ $i -gt $(($3 * 10)) ] && { fail "$2 is still there"; return 1; }
		sleep 0.1
	done
}

# The runtime config's "pool": true: with a pod pool serving (agentvm serve --pool-pod) the pod's
# VM is one the pool started (its status shows it acquired, no VM of the shim's own) and the
# container runs in its own root as before; removing the pod releases it (the pool removes the
# VM and its pod dir), as does a dead shim's delete. Without a pool: a VM booted as before.
t_pod_pool() {
	echo '{"pool": true}' >"$tmp_root/pool.json"
	out=$(ctr_ run --fifo-dir "$CT/fifo" --runtime "$RT" --runtime-config-path "$tmp_root/pool.json" \
		"$IMG" p1 sh -c 'busybox cat /opt/new.txt; id -u' </dev/null 2>&1)
	expect_eq "exit code without a pool serving" 0 "$?"
	expect_eq "its output" "new
1000" "$out"
	ctr_ containers rm p1 || fail "ctr containers rm p1"
	grep -q "create p1: no VM from the pool" "$CT/containerd.log" || fail "no log line for the fallback"

	"$AVM" serve --pool-pod --pool-min 1 --pool-max 2 2>"$tmp_root/serve.log" &
	serve_pid=$!
	ready=$(pool_ready_vm 120)
	[ -n "$ready" ] || fail "the pod pool never had a VM ready: $(cat "$tmp_root/serve.log")"
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" --runtime-config-path "$tmp_root/pool.json" \
		"$IMG" p2 busybox sleep 600 </dev/null >/dev/null 2>&1 || fail "ctr run -d p2"
	expect_eq "the pod's VM is the pool's, acquired" "$ready" "$(pool_vms leased)"
	expect_eq "VMs of the shim's own" 0 "$(ls "$AGENTVM_STATE_DIR" | grep -c '^ctr-')"
	out=$(ctr_ task exec --fifo-dir "$CT/fifo" --exec-id e1 p2 sh -c 'busybox cat /opt/new.txt; id -u' </dev/null)
	expect_eq "exec in the container's root" "new
1000" "$out"
	kill_and_wait p2
	ctr_ task rm p2 >/dev/null || fail "ctr task rm p2"
	ctr_ containers rm p2 || fail "ctr containers rm p2"
	wait_gone "$AGENTVM_STATE_DIR/$ready" "the released VM $ready" 15
	wait_gone "$AGENTVM_STATE_DIR/.pod-$ready" "the released VM's pod dir" 15

	# A dead shim's delete gives its pool VM back too (the pool asked for by annotation here).
	ready=$(pool_ready_vm 60)
	[ -n "$ready" ] || fail "the pod pool did not refill: $(cat "$tmp_root/serve.log")"
	ctr_ run -d --fifo-dir "$CT/fifo" --runtime "$RT" --annotation io.agentvm.pool=true \
		"$IMG" p3 busybox sleep 600 </dev/null >/dev/null 2>&1 || fail "ctr run -d p3"
	expect_eq "p3's VM is the pool's" "$ready" "$(pool_vms leased)"
	pids=$(pgrep -f "containerd-shim-agentvm-v2 .*-id p3 ")
	[ -n "$pids" ] && kill -9 $pids
	wait_gone "$AGENTVM_STATE_DIR/$ready" "the dead shim's pool VM $ready" 30
	wait_gone "$AGENTVM_STATE_DIR/.pod-$ready" "the dead shim's pod dir" 15
	ctr_ task rm -f p3 >/dev/null 2>&1
	ctr_ containers rm p3 || fail "ctr containers rm p3"
	expect_run_refused p4 "annotation 'io.agentvm.pool' is true or false, not 'yes'" \
		--annotation io.agentvm.pool=yes
	kill "$serve_pid"
	wait "$serve_pid"
	serve_pid=
	i=0
	while [ -n "$(ls -A "$AGENTVM_STATE_DIR" | grep -vx -e .net -e .metrics)" ] && [ $i -lt 100 ]; do
		i=$((i + 1))
		sleep 0.1
	done
}

if start_containerd; then
	for t in ${ONLY:-t_run_exit_code_and_rootfs t_exec_pause_resume_kill t_bad_runtime_input t_annotations t_vm_image t_bind_mounts t_pod_netns t_containerd_restart t_shim_restart t_dead_shim_cleanup t_dead_shim_pod_netns t_cri_pod t_pod_pool}; do
		run_test "$t"
	done
fi
stop_containerd
run_test shim_leftovers
summary
