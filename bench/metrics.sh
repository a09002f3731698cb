#!/bin/sh
# Metrics recording cost, standalone: in ONE run, one VM, `true` run 2N times with recording on
# and off in turn (`exec-rtt ... --metrics-ab`, bench/exec_rtt.c), medians and their ratio; and
# the recording alone.
# Also the time of a one-shot `agentvm metrics` with that VM running.
# The state dir goes where STATE_PARENT says (default /dev/shm: a tmpfs, as /run/agentvm is on a
# usual host); STATE_PARENT=/tmp measures a disk file system (ext4 writes back a file renamed
# over another at once: auto_da_alloc).
# Prints a markdown table. usage: bench/metrics.sh build/agentvm [N]
set -eu
AVM=$1
N=${2:-${BENCH_N:-200}}
B=$(cd "$(dirname "$AVM")" && pwd)
IMG=$B/images
tmp=$(mktemp -d "${STATE_PARENT:-/dev/shm}/avm-bench-metrics.XXXXXX")
export AGENTVM_STATE_DIR=$tmp/state
trap 'rm -rf "$tmp"' EXIT INT TERM
. "$(dirname "$0")/lib.sh"

"$B/bench/exec-rtt" "$IMG/vmlinux" "$IMG/initramfs.cpio" "$N" --metrics-ab >"$tmp/out" 2>"$tmp/err" ||
	{ cat "$tmp/err"; exit 1; }
for k in on off record; do awk -v k=$k '$1 == k {print $2}' "$tmp/out" >"$tmp/$k"; done
on=$(median "$tmp/on")
off=$(median "$tmp/off")
rec=$(median "$tmp/record")
# Each on is run next to an off (on, off, off, on): the median of their differences.
paste -d' ' "$tmp/on" "$tmp/off" | awk '{print $1 - $2}' >"$tmp/diff"
diff=$(median "$tmp/diff")
"$AVM" start --accel tcg --network isolated --name mb >/dev/null
: >"$tmp/m"
for i in 1 2 3 4 5 6 7 8 9 10; do
	t=$(date +%s%N)
	"$AVM" metrics >/dev/null
	echo $((($(date +%s%N) - t) / 1000)) >>"$tmp/m"
done
"$AVM" rm --force mb >/dev/null
echo "| measure (N=$N interleaved, state dir on $(stat -f -c %T "$tmp")) | median |"
echo "|---|---|"
echo "| exec round trip of \`true\`, recording on | $on us |"
echo "| exec round trip of \`true\`, recording off | $off us |"
echo "| ratio on/off | $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}') |"
echo "| median of paired differences (on - off, neighbours) | $diff us |"
echo "| metrics_record_exec alone (1000 calls) | $rec us |"
echo "| one-shot \`agentvm metrics\`, 1 VM running (10 runs) | $(median "$tmp/m") us |"
