#!/bin/sh
# agentvm benchmark harness. Measures in ONE run, interleaved, so the machine's noise hits every
# series alike:
#   (a) cold `agentvm run -- true`
#   (b) baseline: raw qemu-system-x86_64 -M microvm, same kernel and machine options, an
#       initramfs whose init reboots (= exits QEMU) at once
#   (c) exec round trip of `true` in a running VM (through libagentvm)
# and writes bench/RESULTS.md. usage: bench/run.sh build/agentvm [N]
set -eu
# As root, measure inside a network namespace of our own (lo + a veth "uplink" with the default
# route), like the integration tests: the default --network nat-filtered then builds its taps
# and nftables table there, never in the machine's own namespace.
if [ "$(id -u)" = 0 ] && [ -z "${AVM_BENCH_NETNS:-}" ] && unshare --net true 2>/dev/null; then
	export AVM_BENCH_NETNS=1
	exec unshare --net -- sh -c 'ip link set lo up &&
		ip link add up0 type veth peer name up1 &&
		ip addr add 198.51.100.1/24 dev up0 && ip link set up0 up && ip link set up1 up &&
		ip route add default via 198.51.100.254 && exec sh "$0" "$@"' "$0" "$@"
fi
AVM=$1
N=${2:-${BENCH_N:-15}}
B=$(dirname "$AVM")
IMG=$B/images
out=bench/RESULTS.md
tmp=$(mktemp -d /tmp/avm-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log
# (a) and (d) are cold boots against the raw-QEMU floor; bench/bootcache.sh measures the default
# path (a boot template's clone) against these, in its own run.
export AGENTVM_BOOT_CACHE=0

# The same rule as agentvm's own (src/vm/host.c): KVM needs /dev/kvm and vmx/svm in the CPU flags.
accel=tcg
[ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
khz=$(awk -F: '/cpu MHz/ {printf "%d", $2 * 1000 + 0.5; exit}' /proc/cpuinfo)
if [ "$accel" = tcg ]; then
	machine="microvm,accel=tcg,acpi=off,x-option-roms=off,isa-serial=off,rtc=on"
	cpu=max
	tsc=" no_timer_check tsc_early_khz=$khz"
else
	machine="microvm,accel=kvm,acpi=off,x-option-roms=off,isa-serial=off,rtc=on"
	cpu=host
	tsc=""
fi

. "$(dirname "$0")/lib.sh"

baseline() {
	qemu-system-x86_64 -M "$machine" -cpu $cpu -smp 1 -m 512 -nodefaults -no-user-config \
		-nographic -no-reboot -kernel "$IMG/vmlinux" -initrd "$IMG/baseline-initramfs.cpio" \
		-append "console=hvc0 quiet reboot=t panic=-1 rdinit=/init$tsc" \
		-device virtio-serial-device,max_ports=2 -chardev null,id=con0 \
		-device virtconsole,chardev=con0,nr=0 </dev/null >/dev/null 2>&1
}


: >"$tmp/a"
: >"$tmp/b"
: >"$tmp/s"
echo "bench: $N interleaved rounds (accel $accel)"
i=0
while [ $i -lt "$N" ]; do
	t=$(date +%s%N)
	baseline || { echo "bench: baseline QEMU failed" >&2; exit 1; }
	ms_since "$t" >>"$tmp/b"
	t=$(date +%s%N)
	"$AVM" run --accel $accel -- true || { echo "bench: agentvm run failed" >&2; exit 1; }
	ms_since "$t" >>"$tmp/a"
	t=$(date +%s%N)
	"$AVM" start --accel $accel --name "bench-$i" >/dev/null || { echo "bench: start failed" >&2; exit 1; }
	ms_since "$t" >>"$tmp/s"
	"$AVM" rm --force "bench-$i"
	i=$((i + 1))
done
"$B/bench/exec-rtt" "$IMG/vmlinux" "$IMG/initramfs.cpio" $((N * 10)) >"$tmp/c_us" 2>"$tmp/c_err"
awk '{printf "%.3f\n", $1 / 1000}' "$tmp/c_us" >"$tmp/c"
"$AVM" start --accel $accel --name bench-qmp >/dev/null
"$B/bench/qmp-rtt" "$AGENTVM_STATE_DIR/bench-qmp/qmp.sock" $((N * 10)) >"$tmp/q_us"
"$AVM" rm --force bench-qmp
awk '$1 == "stop" {printf "%.3f\n", $2 / 1000}' "$tmp/q_us" >"$tmp/qs"
awk '$1 == "cont" {printf "%.3f\n", $2 / 1000}' "$tmp/q_us" >"$tmp/qc"

ma=$(median "$tmp/a")
mb=$(median "$tmp/b")
mc=$(median "$tmp/c")
ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", a / b}')
ms=$(median "$tmp/s")
sratio=$(awk -v a="$ms" -v b="$mb" 'BEGIN {printf "%.3f", a / b}')
mqs=$(median "$tmp/qs")
mqc=$(median "$tmp/qc")
boot=$(awk '/boot_to_ready_ms/ {print $2}' "$tmp/c_err")
cpu_model=$(awk -F: '/model name/ {sub(/^ /, "", $2); print $2; exit}' /proc/cpuinfo)
qver=$(qemu-system-x86_64 --version | head -1)

cat >"$out" <<MD
# agentvm benchmark results

Produced by \`make bench\` (bench/run.sh, N=$N interleaved rounds) on $(date -u +%Y-%m-%d).

- Machine: $(nproc) cores ($cpu_model), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)
- QEMU: $qver; accelerator: **$accel**
- Guest: images/kernel/agentvm.config (linux-source-6.1, PVH vmlinux), initramfs with guest-init + busybox

| what | median | samples | target |
|---|---|---|---|
| (a) cold \`agentvm run -- true\` (spawn, boot, READY, exec, teardown) | $ma ms | $N | <= 1.15 x (b) |
| (b) baseline: raw \`qemu-system-x86_64 -M microvm\`, init reboots at once | $mb ms | $N | - |
| ratio a / b | **$ratio** | | <= 1.15 |
| (c) exec round trip of \`true\` in a running VM | $mc ms | $((N * 10)) | < 20 ms |
| (d) \`agentvm start\` until the guest is READY (supervisor, detached) | $ms ms | $N | <= 1.15 x (b) |
| ratio d / b | **$sratio** | | <= 1.15 |
| (e) pause: QMP \`stop\` round trip | $mqs ms | $((N * 10)) | < 5 ms |
| (f) resume: QMP \`cont\` round trip | $mqc ms | $((N * 10)) | < 5 ms |
| boot to READY inside (c)'s VM (one sample) | $boot ms | 1 | - |

Commands:
- (a) \`$AVM run --accel $accel -- true\`
- (b) \`qemu-system-x86_64 -M $machine -cpu $cpu -smp 1 -m 512 -nodefaults -no-user-config -nographic -no-reboot -kernel vmlinux -initrd baseline-initramfs.cpio -append "console=hvc0 quiet reboot=t panic=-1 rdinit=/init$tsc" -device virtio-serial-device,max_ports=2 -chardev null,id=con0 -device virtconsole,chardev=con0,nr=0\`
- (d) \`$AVM start --accel $accel --name bench-N\` (then \`rm --force\`, not timed)
- (e, f) \`$B/bench/qmp-rtt STATE/bench-qmp/qmp.sock $((N * 10))\` (stop/cont pairs over the VM's QMP socket)
- (c) \`$B/bench/exec-rtt vmlinux initramfs.cpio $((N * 10))\` (libagentvm: vm_exec of \`true\`, stdout to /dev/null)

Raw samples (ms): a = $(tr '\n' ' ' <"$tmp/a")/ b = $(tr '\n' ' ' <"$tmp/b")/ d = $(tr '\n' ' ' <"$tmp/s")
MD
# The jail's cost on a start (src/jail/jail.h), root only: a spawn with and without it, interleaved.
if [ "$(id -u)" = 0 ] && [ -x "$B/bench/jail-cost" ]; then
	mkdir -p "$tmp/jail"
	{
		echo
		echo "## jail (\`$B/bench/jail-cost DIR $((N * 2))\`)"
		echo
		echo "$("$B/bench/jail-cost" "$tmp/jail" $((N * 2)))"
		echo "(load average at the time: $(cut -d' ' -f1-3 /proc/loadavg))"
	} >>"$out"
fi
# Networking and snapshots: their own scripts, each with its cold baseline measured in its run.
for part in net snapshot disk image files bootcache pool_run; do
	[ -f "bench/$part.sh" ] || continue
	echo "bench: bench/$part.sh"
	{
		echo
		echo "## $part (\`sh bench/$part.sh $AVM $N\`)"
		echo
		sh "bench/$part.sh" "$AVM" "$N"
	} >"$tmp/part" || { echo "bench: bench/$part.sh failed" >&2; exit 1; }
	cat "$tmp/part" >>"$out"
done
cat "$out"
