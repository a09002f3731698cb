#!/bin/sh
# Boot templates (src/vm/boot_cache.h), standalone (bench/run.sh calls it). In ONE run, interleaved:
#   (t1) `run -- true` restoring a warm template  vs  `run --cold -- true`
#   (t2) `start` until ready from the template     vs  `start --cold`
#   (t3) the first run of a new shape (template build + restore) vs a cold run, same rounds
#   (t4) ten concurrent `run` from one template vs ten concurrent cold runs: wall time, and the
#        host memory (PSS) of the ten QEMUs while they all run
#   (t5) `run --workspace DIR -- true` (three 9p shares) from its template vs `--cold`
#        (BENCH_BC_ONLY=workspace: only this one)
# Every VM is --network isolated (the network's own cost is bench/net.sh's). Prints markdown.
# usage: bench/bootcache.sh build/agentvm [N]
set -eu
AVM=$1
N=${2:-${BENCH_N:-10}}
tmp=$(mktemp -d /tmp/avm-bench-bc.XXXXXX)
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_CACHE_DIR=$tmp/cache
unset AGENTVM_BOOT_CACHE # bench/run.sh turns it off for its cold numbers
cleanup() {
	for d in "$AGENTVM_STATE_DIR"/*; do [ -d "$d" ] && "$AVM" rm --force "$(basename "$d")" >/dev/null 2>&1; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

accel=tcg
"$AVM" run --accel kvm --network isolated --cold -- true >/dev/null 2>&1 && accel=kvm
run() { "$AVM" run --accel $accel --network isolated "$@"; }
. "$(dirname "$0")/lib.sh"
timed() { # file cmd...: append the command's wall ms to file
	_f=$1
	shift
	_t=$(date +%s%N)
	"$@" >/dev/null
	ms_since "$_t" >>"$_f"
}

# (t5): the product's workflow, three shares, interleaved; min(N, 5) rounds.
R5=$(( N < 5 ? N : 5 ))
ws_rounds() {
	: >"$tmp/wswarm"
	: >"$tmp/wscold"
	mkdir -p "$tmp/ws/input"
	run --workspace "$tmp/ws" -- true >/dev/null # its template
	_i=0
	while [ $_i -lt "$R5" ]; do
		timed "$tmp/wscold" run --cold --workspace "$tmp/ws" -- true
		timed "$tmp/wswarm" run --workspace "$tmp/ws" -- true
		_i=$((_i + 1))
	done
}
ws_rows() {
	_a=$(median "$tmp/wswarm")
	_b=$(median "$tmp/wscold")
	echo "| (t5) \`run --workspace DIR -- true\` (3 shares): template / \`--cold\` | $_a / $_b ms (**$(ratio "$_a" "$_b") x**) | $R5 | - |"
	echo
	echo "Raw samples (ms): workspace template = $(tr '\n' ' ' <"$tmp/wswarm")/ workspace cold = $(tr '\n' ' ' <"$tmp/wscold")"
}
if [ "${BENCH_BC_ONLY:-}" = workspace ]; then
	ws_rounds
	printf '\n### Boot templates with shares (bench/bootcache.sh, BENCH_BC_ONLY=workspace, accel %s, %s, load %s)\n\n| what | median | samples | target |\n|---|---|---|---|\n' \
		"$accel" "$(date -u +%Y-%m-%d)" "$(cut -d' ' -f1-3 /proc/loadavg)"
	ws_rows
	exit 0
fi

for f in warm cold swarm scold first firstcold; do : >"$tmp/$f"; done
run -- true >/dev/null # the template of the bench's shape
echo "bench: $N interleaved rounds (accel $accel)" >&2
i=0
while [ $i -lt "$N" ]; do
	timed "$tmp/cold" run --cold -- true
	timed "$tmp/warm" run -- true
	timed "$tmp/scold" "$AVM" start --accel $accel --network isolated --cold --name "c-$i"
	"$AVM" rm --force "c-$i" >/dev/null
	timed "$tmp/swarm" "$AVM" start --accel $accel --network isolated --name "w-$i"
	"$AVM" rm --force "w-$i" >/dev/null
	i=$((i + 1))
done
# (t3): a shape nobody built (another memory size), its cache emptied before each round.
R=$(( N < 5 ? N : 5 ))
i=0
while [ $i -lt "$R" ]; do
	"$AVM" cache rm --all >/dev/null
	timed "$tmp/firstcold" run --cold --memory 384 -- true
	timed "$tmp/first" run --memory 384 -- true
	i=$((i + 1))
done
key=$("$AVM" cache ls --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v[0]["key"])')
build_ms=$("$AVM" cache ls --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v[0]["build_ms"])')
tsize=$(du -m "$AGENTVM_CACHE_DIR/templates/$key" | cut -f1)
"$AVM" cache rm --all >/dev/null
run -- true >/dev/null

# (t4): ten at once. The PSS of our QEMUs is read while all ten hold a sleeping command.
pss_of_ours() {
	for p in $(pgrep -f "qemu-system-x86_64.*$tmp"); do
		awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null
	done | awk '{s += $1} END {printf "%d", s / 1024}'
}
ten() { # extra run flags: wall ms of ten concurrent `run -- true`, then PSS (MB) of ten sleepers
	_t=$(date +%s%N)
	for j in 0 1 2 3 4 5 6 7 8 9; do run "$@" -- true >/dev/null & done
	wait
	_wall=$(ms_since "$_t")
	_pids=""
	for j in 0 1 2 3 4 5 6 7 8 9; do
		run "$@" -- sh -c 'echo up; sleep 30' >"$tmp/up-$j" &
		_pids="$_pids $!"
	done
	_w=0
	while [ "$(cat "$tmp"/up-* 2>/dev/null | grep -c up)" -lt 10 ] && [ $_w -lt 1200 ]; do
		_w=$((_w + 1))
		sleep 0.1
	done
	sleep 1
	_pss=$(pss_of_ours)
	kill -INT $_pids 2>/dev/null || true
	wait
	rm -f "$tmp"/up-*
	echo "$_wall $_pss"
}
ws_rounds
set -- $(ten)
ten_warm_ms=$1 ten_warm_pss=$2
set -- $(ten --cold)
ten_cold_ms=$1 ten_cold_pss=$2

mw=$(median "$tmp/warm")
mc=$(median "$tmp/cold")
msw=$(median "$tmp/swarm")
msc=$(median "$tmp/scold")
mf=$(median "$tmp/first")
mfc=$(median "$tmp/firstcold")
cat <<MD

### Boot templates (bench/bootcache.sh, N=$N interleaved rounds, accel $accel, $(date -u +%Y-%m-%d), load $(cut -d' ' -f1-3 /proc/loadavg))

| what | median | samples | target |
|---|---|---|---|
| (t1) \`run -- true\`, warm template | $mw ms | $N | - |
| (t1) \`run --cold -- true\` | $mc ms | $N | - |
| (t1) **ratio warm / cold** | **$(ratio "$mw" "$mc")** | | <= 0.25 |
| (t2) \`start\` until ready, warm template | $msw ms | $N | - |
| (t2) \`start --cold\` until ready | $msc ms | $N | - |
| (t2) **ratio warm / cold** | **$(ratio "$msw" "$msc")** | | <= 0.25 |
| (t3) first \`run\` of a new shape (build + restore) / a cold run, same rounds | $mf / $mfc ms | $R | - |
| (t3) **extra cost of the first run, once per shape** | **$(awk -v a="$mf" -v b="$mfc" 'BEGIN {printf "%+d", a - b}') ms** | $R | <= +1500 ms |
| (t3) template build alone (cold boot to READY + device state save, last round) / size on disk | $build_ms ms / $tsize MB | 1 | - |
| (t4) ten concurrent \`run -- true\`, wall: warm template / cold | $ten_warm_ms / $ten_cold_ms ms ($(ratio "$ten_warm_ms" "$ten_cold_ms") x) | 1 | measured |
| (t4) host PSS of ten running VMs' QEMUs: warm template / cold | $ten_warm_pss / $ten_cold_pss MB ($(ratio "$ten_warm_pss" "$ten_cold_pss") x) | 1 | measured |
$(ws_rows | head -1)

Raw samples (ms): warm = $(tr '\n' ' ' <"$tmp/warm")/ cold = $(tr '\n' ' ' <"$tmp/cold")/ start warm = $(tr '\n' ' ' <"$tmp/swarm")/ start cold = $(tr '\n' ' ' <"$tmp/scold")/ first = $(tr '\n' ' ' <"$tmp/first")/ first's cold = $(tr '\n' ' ' <"$tmp/firstcold")
$(ws_rows | tail -1)
MD
