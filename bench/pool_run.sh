#!/bin/sh
# `agentvm run` from a run pool (serve --pool-run, src/pool/pool.h) against `run` restoring its
# boot template, interleaved in ONE run:
#   (p1) `run -- true` taking a ready pool VM (warmed up: it ran `true` once)
#   (p2) the same from a pool started with AGENTVM_POOL_WARMUP=0 (a VM that never ran a command)
#   (t)  `run -- true` restoring the boot template (another state dir: no pool serves there)
# After each pooled run its pool refills (its min ready) before the next run starts, so no
# restore runs beside a measured run; that refill (removal, restore, warm-up) is measured too.
# Network: BENCH_POOL_NET (default isolated; nat-filtered needs root and is best run in a
# throwaway network namespace). Prints markdown.
# usage: bench/pool_run.sh build/agentvm [N]
set -eu
AVM=$1
N=${2:-${BENCH_N:-10}}
NETW=${BENCH_POOL_NET:-isolated}
tmp=$(mktemp -d /tmp/avm-bench-pool.XXXXXX)
export AGENTVM_CACHE_DIR=$tmp/cache
unset AGENTVM_BOOT_CACHE
. "$(dirname "$0")/lib.sh"
accel=tcg
[ -r /dev/kvm ] && [ -w /dev/kvm ] && accel=kvm
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	for s in warm cold tpl; do
		for d in "$tmp/state-$s"/*; do
			[ -d "$d" ] && AGENTVM_STATE_DIR=$tmp/state-$s "$AVM" rm --force "$(basename "$d")" >/dev/null 2>&1
		done
	done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
mkdir -p "$tmp/state-warm" "$tmp/state-cold" "$tmp/state-tpl" "$AGENTVM_CACHE_DIR"
run() { AGENTVM_STATE_DIR=$tmp/state-$1 "$AVM" run --accel $accel --network "$NETW" -- true >/dev/null; }
ready() { # state: the pool's ready count
	AGENTVM_STATE_DIR=$tmp/state-$1 "$AVM" pool status --json 2>/dev/null | tr -d ' \n' |
		sed -n 's/.*"ready":\([0-9]*\).*/\1/p'
}
wait_ready() { # state: until the pool has 1 ready (up to 120 s); prints the ms it took
	_t=$(date +%s%N)
	_i=0
	while [ "$(ready "$1")" != 1 ]; do
		_i=$((_i + 1))
		[ $_i -gt 1200 ] && { echo "pool $1 never refilled" >&2; exit 1; }
		sleep 0.01
	done
	ms_since "$_t"
}
run tpl # the boot template (shared by all three: one cache dir)
run tpl
for s in warm cold; do
	[ $s = cold ] && export AGENTVM_POOL_WARMUP=0
	AGENTVM_STATE_DIR=$tmp/state-$s "$AVM" serve --pool-run --accel $accel --network "$NETW" \
		--pool-min 1 --pool-max 1 2>"$tmp/serve-$s.log" &
	pids="$pids $!"
	unset AGENTVM_POOL_WARMUP
	wait_ready $s >/dev/null
done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
i=0
while [ $i -lt "$N" ]; do
	case $((i % 3)) in 0) order="warm cold tpl" ;; 1) order="cold tpl warm" ;; *) order="tpl warm cold" ;; esac
	for s in $order; do
		t=$(date +%s%N)
		run $s
		ms_since "$t" >>"$tmp/$s"
		# Its pool refilled before the next run (no restore beside it): the removal of the
		# used VM, a restore and (warm) the warm-up.
		[ $s != tpl ] && wait_ready $s >>"$tmp/refill-$s"
	done
	i=$((i + 1))
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
for s in warm cold; do
	grep -c 'its run is over' "$tmp/serve-$s.log" >"$tmp/used-$s" || true
done
[ "$(cat "$tmp/used-warm")" -ge "$N" ] && [ "$(cat "$tmp/used-cold")" -ge "$N" ] ||
	{ echo "some runs did not take a pool VM: $(cat "$tmp/used-warm") / $(cat "$tmp/used-cold") of $N" >&2; exit 1; }
mw=$(median "$tmp/warm")
mc=$(median "$tmp/cold")
mt=$(median "$tmp/tpl")
echo "#### \`run\` from a run pool (bench/pool_run.sh, N=$N interleaved rounds, accel $accel, network $NETW, $(date -u +%Y-%m-%d), load $load0 -> $load1)"
echo
echo "| what | median | samples |"
echo "|---|---|---|"
echo "| (p1) \`run -- true\`, a warmed-up pool VM | $mw ms | $(sort -n "$tmp/warm" | tr '\n' ' ')|"
echo "| (p2) \`run -- true\`, a pool VM without warm-up | $mc ms | $(sort -n "$tmp/cold" | tr '\n' ' ')|"
echo "| (t) \`run -- true\`, restoring the boot template | $mt ms | $(sort -n "$tmp/tpl" | tr '\n' ' ')|"
echo "| **ratio p1 / t** | **$(ratio "$mw" "$mt")** | |"
echo "| ratio p2 / t | $(ratio "$mc" "$mt") | |"
echo "| refill after a run (release, restore, warm-up) / without warm-up | $(median "$tmp/refill-warm") / $(median "$tmp/refill-cold") ms | |"
