#!/bin/sh
# Interleaved A/B of a warm `run -- true` (boot template restored, --network isolated) between
# two builds, for changes to the warm path (issue 10). Each build is a directory holding its
# `agentvm` and its `images/` (vmlinux, initramfs.cpio: guest-init changes count), e.g. a copy
# of build/ made before a change. Rounds go A B B A ... so neither side always runs first.
# Prints medians, the ratio B / A and the median of the per-round differences.
# usage: bench/warm_ab.sh A_DIR B_DIR [N] [run flags...]   (AGENTVM_TRACE lines go to stderr)
set -eu
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
N=${3:-20}
shift 3 2>/dev/null || shift $#
tmp=$(mktemp -d /tmp/avm-bench-ab.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
. "$(dirname "$0")/lib.sh"
accel=tcg
[ -r /dev/kvm ] && [ -w /dev/kvm ] && accel=kvm
one() { # side: one warm run, its wall ms appended to $tmp/<side>
	_s=$1
	shift
	_d=$(eval echo \$"$_s")
	_t=$(date +%s%N)
	AGENTVM_STATE_DIR=$tmp/state-$_s AGENTVM_CACHE_DIR=$tmp/cache-$_s \
		"$_d/agentvm" run --accel $accel --network isolated "$@" -- true >/dev/null
	ms_since "$_t" >>"$tmp/$_s"
}
for s in A B; do # the templates, and one warm run each (page cache)
	mkdir -p "$tmp/state-$s" "$tmp/cache-$s"
	for _ in 1 2; do
		AGENTVM_STATE_DIR=$tmp/state-$s AGENTVM_CACHE_DIR=$tmp/cache-$s \
			"$(eval echo \$$s)/agentvm" run --accel $accel --network isolated "$@" -- true \
			>/dev/null 2>&1
	done
	: >"$tmp/$s"
done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
i=0
while [ $i -lt "$N" ]; do
	if [ $((i % 2)) -eq 0 ]; then one A "$@"; one B "$@"; else one B "$@"; one A "$@"; fi
	i=$((i + 1))
done
paste "$tmp/A" "$tmp/B" | awk '{print $2 - $1}' >"$tmp/d"
ma=$(median "$tmp/A")
mb=$(median "$tmp/B")
load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "warm \`run --accel $accel --network isolated $* -- true\`, N=$N interleaved," \
	"load $load0 -> $load1"
echo "A $A: median $ma ms"
echo "B $B: median $mb ms"
echo "B / A = $(ratio "$mb" "$ma"); median of per-round B - A = $(median "$tmp/d") ms"
echo "A: $(sort -n "$tmp/A" | tr '\n' ' ')"
echo "B: $(sort -n "$tmp/B" | tr '\n' ' ')"
