#!/bin/sh
# Snapshot benchmark, standalone (bench/run.sh may call it): in ONE run, interleaved,
#   cold `agentvm run -- true`  vs  restore -> first exec answered (plain stream and copy-on-write)
#   pool acquire latency with a warm pool, snapshot size and save time.
# Prints a markdown table. usage: bench/snapshot.sh build/agentvm [N]
set -eu
AVM=$1
N=${2:-${BENCH_N:-10}}
tmp=$(mktemp -d /tmp/avm-bench-snap.XXXXXX)
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log AGENTVM_SNAPSHOT_DIR=$tmp/snaps AGENTVM_CACHE_DIR=$tmp/cache
export AGENTVM_BOOT_CACHE=0 # its "cold run" baseline boots a kernel (bench/bootcache.sh: templates)
serve_pid=""
cleanup() {
	[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
	for d in "$AGENTVM_STATE_DIR"/*; do [ -d "$d" ] && "$AVM" rm --force "$(basename "$d")" >/dev/null 2>&1; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

accel=tcg
"$AVM" run --accel kvm -- true >/dev/null 2>&1 && accel=kvm
net=""
"$AVM" start --help 2>/dev/null | grep -q -- --network && net="--network isolated"

. "$(dirname "$0")/lib.sh"
us_since() { echo $((($(date +%s%N) - $1) / 1000)); }

# The golden VM and its snapshot (saved a few times for the save time; the last one is used).
# shellcheck disable=SC2086
"$AVM" start --accel $accel $net --name golden >/dev/null
"$AVM" exec golden -- sh -c 'echo ready >/root/mark'
: >"$tmp/save_plain"
: >"$tmp/save_cow"
for i in 1 2 3; do
	t=$(date +%s%N)
	AGENTVM_RESTORE_MODE=plain "$AVM" snapshot save golden "p$i" >/dev/null
	ms_since "$t" >>"$tmp/save_plain"
	t=$(date +%s%N)
	"$AVM" snapshot save golden "c$i" >/dev/null # + the copy-on-write template
	ms_since "$t" >>"$tmp/save_cow"
done
"$AVM" rm --force golden >/dev/null
snap=c3
state_mb=$(du -m --apparent-size "$AGENTVM_SNAPSHOT_DIR/$snap/state" | cut -f1)
dev_kb=$(du -k --apparent-size "$AGENTVM_SNAPSHOT_DIR/$snap/cow-devstate" | cut -f1)
mem_mb=$(du -m "$AGENTVM_SNAPSHOT_DIR/$snap/cow-mem" | cut -f1)
migr_ms=$(sed -n 's/.*"save_ms": *\([0-9]*\).*/\1/p' "$AGENTVM_SNAPSHOT_DIR/$snap/meta.json")

: >"$tmp/cold"
: >"$tmp/plain"
: >"$tmp/cow"
echo "bench: $N interleaved rounds (accel $accel)" >&2
i=0
while [ $i -lt "$N" ]; do
	t=$(date +%s%N)
	# shellcheck disable=SC2086
	"$AVM" run --accel $accel $net -- true
	ms_since "$t" >>"$tmp/cold"
	t=$(date +%s%N)
	AGENTVM_RESTORE_MODE=plain "$AVM" restore "$snap" --name "p-$i" >/dev/null
	"$AVM" exec "p-$i" -- true
	ms_since "$t" >>"$tmp/plain"
	t=$(date +%s%N)
	"$AVM" restore "$snap" --name "c-$i" >/dev/null
	"$AVM" exec "c-$i" -- true
	ms_since "$t" >>"$tmp/cow"
	"$AVM" rm --force "p-$i" >/dev/null
	"$AVM" rm --force "c-$i" >/dev/null
	i=$((i + 1))
done

# Pool acquire with a warm pool: each acquire finds a ready VM (we wait for one between rounds).
"$AVM" serve --pool "$snap" --pool-min 2 --pool-max 4 2>"$tmp/serve.log" &
serve_pid=$!
ready() { "$AVM" pool status --json 2>/dev/null | tr -d ' \n' | sed -n 's/.*"ready":\([0-9]*\).*/\1/p'; }
: >"$tmp/acq"
i=0
while [ $i -lt "$N" ]; do
	w=0
	while [ "$(ready)" != 2 ] && [ $w -lt 600 ]; do w=$((w + 1)); sleep 0.05; done
	t=$(date +%s%N)
	v=$("$AVM" pool acquire --timeout 30)
	us_since "$t" >>"$tmp/acq"
	"$AVM" pool release "$v"
	i=$((i + 1))
done
kill "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
serve_pid=""

cold=$(median "$tmp/cold")
plain=$(median "$tmp/plain")
cow=$(median "$tmp/cow")
acq=$(median "$tmp/acq")
echo
echo "| what (accel $accel, N=$N, medians) | value | target |"
echo "|---|---|---|"
echo "| cold \`agentvm run -- true\` | $cold ms | (baseline) |"
echo "| restore -> first exec, copy-on-write (default) | $cow ms ($(ratio "$cow" "$cold") x cold) | <= 0.25 x |"
echo "| restore -> first exec, plain migration stream | $plain ms ($(ratio "$plain" "$cold") x cold) | <= 0.25 x |"
echo "| \`pool acquire\` with a warm pool (CLI process included) | $(awk -v u="$acq" 'BEGIN {printf "%.1f", u / 1000}') ms | < 10 ms |"
echo "| snapshot save, plain (stop + migrate + cont, wall) | $(median "$tmp/save_plain") ms (migration $migr_ms ms) | |"
echo "| snapshot save + copy-on-write template (wall) | $(median "$tmp/save_cow") ms | |"
echo "| snapshot size: migration stream | $state_mb MB | |"
echo "| copy-on-write template: RAM file allocated / device state | $mem_mb MB / $dev_kb KB | |"
