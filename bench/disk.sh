#!/bin/sh
# Workspace disk benchmark, standalone (bench/run.sh calls it): in ONE run, interleaved,
#   cold `agentvm run -- true`  vs  the same with a 256 MiB ext4 image attached (--disk): the
#   overlay (qemu-img) plus the guest's mount;
#   restore -> first exec of a snapshot with a disk (copy-on-write), snapshot save with a disk
#   and the size of the saved overlay copy after writing 16 MiB in the guest.
# Prints a markdown table. usage: bench/disk.sh build/agentvm [N]
set -eu
AVM=$1
N=${2:-${BENCH_N:-10}}
tmp=$(mktemp -d /tmp/avm-bench-disk.XXXXXX)
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log AGENTVM_SNAPSHOT_DIR=$tmp/snaps AGENTVM_CACHE_DIR=$tmp/cache
export AGENTVM_BOOT_CACHE=0 # its "cold run" baseline boots a kernel (bench/bootcache.sh: templates)
cleanup() {
	for d in "$AGENTVM_STATE_DIR"/*; do [ -d "$d" ] && "$AVM" rm --force "$(basename "$d")" >/dev/null 2>&1; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

accel=tcg
"$AVM" run --accel kvm -- true >/dev/null 2>&1 && accel=kvm
net="--network isolated"
. "$(dirname "$0")/lib.sh"

mkdir -p "$tmp/content"
head -c 1048576 /dev/urandom >"$tmp/content/blob"
img=$tmp/work.ext4
mkfs.ext4 -q -F -d "$tmp/content" "$img" 256M >/dev/null 2>&1

# shellcheck disable=SC2086
"$AVM" start --accel $accel $net --name dgold --disk "$img" >/dev/null
"$AVM" exec dgold -- sh -c 'head -c 16777216 /dev/urandom >/workspace/written; sync'
: >"$tmp/save"
for i in 1 2 3; do
	t=$(date +%s%N)
	AGENTVM_RESTORE_MODE=plain "$AVM" snapshot save dgold "d$i" >/dev/null
	ms_since "$t" >>"$tmp/save"
done
"$AVM" snapshot save dgold dsnap >/dev/null # with the copy-on-write template, for the restores
"$AVM" rm --force dgold >/dev/null
copy_mb=$(du -m "$AGENTVM_SNAPSHOT_DIR/dsnap/disk0.qcow2" | cut -f1)

: >"$tmp/cold"
: >"$tmp/disk"
: >"$tmp/restore"
echo "bench: $N interleaved rounds (accel $accel)" >&2
i=0
while [ $i -lt "$N" ]; do
	t=$(date +%s%N)
	# shellcheck disable=SC2086
	"$AVM" run --accel $accel $net -- true
	ms_since "$t" >>"$tmp/cold"
	t=$(date +%s%N)
	# shellcheck disable=SC2086
	"$AVM" run --accel $accel $net --disk "$img" -- test -f /workspace/blob
	ms_since "$t" >>"$tmp/disk"
	t=$(date +%s%N)
	"$AVM" restore dsnap --name "r-$i" >/dev/null
	"$AVM" exec "r-$i" -- test -f /workspace/written
	ms_since "$t" >>"$tmp/restore"
	"$AVM" rm --force "r-$i" >/dev/null
	i=$((i + 1))
done

cold=$(median "$tmp/cold")
disk=$(median "$tmp/disk")
restore=$(median "$tmp/restore")
echo "| what (accel $accel, N=$N, medians) | value | note |"
echo "|---|---|---|"
echo "| cold \`agentvm run -- true\` | $cold ms | (baseline) |"
echo "| cold run with a 256 MiB ext4 \`--disk\` (overlay + mount) | $disk ms ($(ratio "$disk" "$cold") x, +$(awk -v a="$disk" -v b="$cold" 'BEGIN {print a - b}') ms) | |"
echo "| restore -> first exec, snapshot with a disk (copy-on-write) | $restore ms ($(ratio "$restore" "$cold") x cold) | target <= 0.25 x |"
echo "| snapshot save with a disk (stream + overlay copy, plain) | $(median "$tmp/save") ms | |"
echo "| saved overlay copy after 16 MiB written in the guest | $copy_mb MB | |"
