#!/bin/sh
# The containerd shim against agentvm itself, in ONE run, interleaved (the machine's noise hits
# every series alike), N rounds:
#   (p) a pod through containerd's CRI plugin (what kubelet calls), runtime handler agentvm:
#       RunPodSandbox, CreateContainer, StartContainer, ExecSync `busybox true`: from the first call to
#       the exec's answer (one client process, tests/integration/cri_client.py podbench)
#   (q) the same (p) with a pod pool serving (`agentvm serve --pool-pod`) and runtime handler
#       agentvm-pool, whose config says "pool": true: the pod's VM is acquired, not restored
#   (c) `ctr run --rm IMAGE ID busybox true` through the shim (a one-container pod)
#   (r) `agentvm run --network isolated -- true` (the default path: a boot template's clone)
#   (k) `agentvm run --cold --network isolated -- true` (a real boot)
# A private containerd (its own root, state and sockets under a temp dir) and locally made
# images, as tests/integration/test_shim.sh. usage: bench/shim.sh build/agentvm [N]
set -eu
if [ "$(id -u)" != 0 ]; then
	echo "bench/shim.sh: containerd needs root" >&2
	exit 1
fi
# In a network namespace of our own, like the integration tests.
if [ -z "${AVM_BENCH_NETNS:-}" ]; then
	export AVM_BENCH_NETNS=1
	exec unshare --net -- sh -c 'ip link set lo up &&
		ip link add up0 type veth peer name up1 &&
		ip addr add 198.51.100.1/24 dev up0 && ip link set up0 up && ip link set up1 up &&
		ip route add default via 198.51.100.254 && exec sh "$0" "$@"' "$0" "$@"
fi
AVM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
N=${2:-${BENCH_N:-5}}
here=$(cd "$(dirname "$0")/../tests/integration" && pwd)
. "$here/oci.sh"
. "$here/shim_ctrd.sh"
tmp=$(mktemp -d /tmp/avm-bench-shim.XXXXXX)
CT=$tmp/ctrd
RT=io.containerd.agentvm.v2
IMG=localhost/avm-shim-test:latest
PAUSE=localhost/avm-pause:latest
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log
CTR_PID=
SERVE_PID=
finish() {
	[ -n "$CTR_PID" ] && kill "$CTR_PID" 2>/dev/null && wait "$CTR_PID" 2>/dev/null
	[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
	grep " $tmp" /proc/mounts | cut -d' ' -f2 | sort -r | while read -r m; do umount -l "$m"; done
	rm -rf "$tmp"
}
trap finish EXIT
trap 'exit 1' INT TERM
ctr_() { ctr --address "$CT/c.sock" "$@"; }

mkdir -p "$CT/bin" "$AGENTVM_STATE_DIR"
ln -s "$(dirname "$AVM")/containerd-shim-agentvm-v2" "$CT/bin/containerd-shim-agentvm-v2"
ctrd_config "$CT" "$RT" "$PAUSE"
echo '{"network": "isolated"}' >"$CT/agentvm-cri.json"
# (q)'s runtime handler: the same settings, pod VMs from the pool first.
echo '{"network": "isolated", "pool": true}' >"$CT/agentvm-pool.json"
cat >>"$CT/config.toml" <<EOC
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.agentvm-pool]
    runtime_type = "$RT"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.agentvm-pool.options]
    ConfigPath = "$CT/agentvm-pool.json"
EOC
PATH="$CT/bin:$PATH" containerd --config "$CT/config.toml" >"$CT/log" 2>&1 &
CTR_PID=$!
i=0
until ctr_ version >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -gt 100 ] && { echo "containerd did not start" >&2; exit 1; }
	sleep 0.1
done
make_oci "$tmp/oci"
tar -C "$tmp/oci/layout" -cf "$tmp/oci.tar" .
ctr_ images import --base-name localhost/avm-shim-test "$tmp/oci.tar" >/dev/null
ctr_ -n k8s.io images import --base-name localhost/avm-shim-test "$tmp/oci.tar" >/dev/null
make_pause "$tmp/oci"
tar -C "$tmp/oci/layout" -cf "$tmp/pause.tar" .
ctr_ -n k8s.io images import --base-name localhost/avm-pause "$tmp/pause.tar" >/dev/null
mkdir -p "$tmp/cri"
protoc -I "$here" --python_out="$tmp/cri" "$here/cri_min.proto"
cri() { /usr/bin/python3 "$here/cri_client.py" "$CT/c.sock" "$tmp/cri" "$@"; }
cri image "$PAUSE"

accel=tcg
[ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
. "$(dirname "$0")/lib.sh"

# The pod pool (isolated, the default shape: what the runtime handler's pods get otherwise).
"$AVM" serve --pool-pod --pool-min 2 --pool-max 4 2>"$tmp/serve.log" &
SERVE_PID=$!
# Until the pool has a VM ready and no refill under way (not timed: a pool refills while nobody
# waits; a restore beside the measured pod would take one of the two CPUs from it).
pool_ready() {
	i=0
	until "$AVM" pool status --json 2>/dev/null | tr -d ' \n' | grep -q '"ready":[1-9][0-9]*,"starting":0'; do
		i=$((i + 1))
		[ $i -gt 1800 ] && { echo "the pod pool has no VM ready: $(tail -3 "$tmp/serve.log")" >&2; exit 1; }
		sleep 0.1
	done
}

# One warm-up of each (images unpacked, the boot template built, page cache), not counted.
cri podbench warm agentvm "$IMG" >/dev/null
pool_ready
cri podbench warmq agentvm-pool "$IMG" >/dev/null
ctr_ run --rm --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" warm busybox true </dev/null
"$AVM" run --accel "$accel" --network isolated -- true
: >"$tmp/p"; : >"$tmp/q"; : >"$tmp/c"; : >"$tmp/r"; : >"$tmp/k"
for i in $(seq "$N"); do
	cri podbench "pod$i" agentvm "$IMG" >>"$tmp/p"
	pool_ready
	cri podbench "poq$i" agentvm-pool "$IMG" >>"$tmp/q"
	t=$(date +%s%N); ctr_ run --rm --fifo-dir "$CT/fifo" --runtime "$RT" "$IMG" "c$i" busybox true </dev/null
	ms_since "$t" >>"$tmp/c"
	t=$(date +%s%N); "$AVM" run --accel "$accel" --network isolated -- true; ms_since "$t" >>"$tmp/r"
	t=$(date +%s%N); "$AVM" run --accel "$accel" --cold --network isolated -- true; ms_since "$t" >>"$tmp/k"
done
# Each (q) pod's VM came from the pool (the shim logs it; a fallback would be a restore).
hits=$(grep -c ': VM pool-[0-9a-f]* from the pool' "$CT/log" || true)
p=$(median "$tmp/p"); q=$(median "$tmp/q"); c=$(median "$tmp/c"); r=$(median "$tmp/r"); k=$(median "$tmp/k")
cat <<EOT
#### containerd shim (bench/shim.sh, N=$N interleaved rounds, accel $accel, $(date -u +%Y-%m-%d), load $(cut -d' ' -f1-3 /proc/loadavg))

| what | median | samples |
|---|---|---|
| (p) CRI pod: RunPodSandbox to the first ExecSync's answer | $p ms | $N |
| (q) the same, the pod's VM from a pod pool (\`serve --pool-pod\`; $hits of $((N + 1)) pods from the pool) | $q ms | $N |
| (c) \`ctr run --rm IMAGE ID busybox true\` (shim) | $c ms | $N |
| (r) \`agentvm run --network isolated -- true\` (boot template) | $r ms | $N |
| (k) \`agentvm run --cold --network isolated -- true\` | $k ms | $N |
| **ratio (p) / (r)** | **$(awk "BEGIN {printf \"%.2f\", $p / $r}")** | |
| **ratio (q) / (r)** | **$(ratio "$q" "$r")** | |
| ratio (q) / (p): the pool's gain | $(ratio "$q" "$p") | |
| ratio (p) / (k) | $(awk "BEGIN {printf \"%.2f\", $p / $k}") | |
| ratio (c) / (k) | $(awk "BEGIN {printf \"%.2f\", $c / $k}") | |

Raw samples (ms): p = $(tr '\n' ' ' <"$tmp/p")/ q = $(tr '\n' ' ' <"$tmp/q")/ c = $(tr '\n' ' ' <"$tmp/c")/ r = $(tr '\n' ' ' <"$tmp/r")/ k = $(tr '\n' ' ' <"$tmp/k")
EOT
