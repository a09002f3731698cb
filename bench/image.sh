#!/bin/sh
# Root image benchmark, standalone (bench/run.sh calls it): in ONE run, interleaved,
#   cold `agentvm run -- true` on the initramfs  vs  cold `run --image IMAGE -- true`
#   (overlay + the guest's root mount and switch);
#   the first `python3 -c pass`, `node -e 0`, `git --version` in a fresh VM (each timed as one
#   exec in a just-started VM: nothing of the image is in the guest's page cache yet);
#   the per-VM overlay after a run that only ran a command; the image's size;
#   host memory of 10 VMs on one image vs 10 VMs on private copies of it.
# Prints a markdown table. usage: bench/image.sh build/agentvm [N] (AVM_BENCH_IMAGE, default agent)
set -eu
AVM=$1
N=${2:-${BENCH_N:-10}}
IMAGE=${AVM_BENCH_IMAGE:-agent}
# The memory comparison copies its image 10 times: the smaller base image keeps that cheap.
MEM_IMAGE=${AVM_BENCH_MEM_IMAGE:-base}
STORE=${AVM_IMAGE_CACHE:-/var/cache/agentvm}/images
tmp=$(mktemp -d /tmp/avm-bench-image.XXXXXX)
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log AGENTVM_SNAPSHOT_DIR=$tmp/snaps AGENTVM_CACHE_DIR=$tmp/cache
export AGENTVM_BOOT_CACHE=0 # its "cold run" baseline boots a kernel (bench/bootcache.sh: templates)
mkdir -p "$AGENTVM_CACHE_DIR"
ln -s "$STORE" "$AGENTVM_CACHE_DIR/images"
cleanup() {
	for d in "$AGENTVM_STATE_DIR"/*; do [ -d "$d" ] && "$AVM" rm --force "$(basename "$d")" >/dev/null 2>&1; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

if ! [ -e "$STORE/names/$IMAGE" ]; then
	echo "| image benchmark | skipped: image '$IMAGE' not built (make rootfs) | |"
	exit 0
fi
accel=tcg
"$AVM" run --accel kvm -- true >/dev/null 2>&1 && accel=kvm
net="--network isolated"
. "$(dirname "$0")/lib.sh"

for f in cold image py node git; do : >"$tmp/$f"; done
echo "bench: image: $N interleaved rounds (accel $accel, image $IMAGE)" >&2
i=0
while [ $i -lt "$N" ]; do
	t=$(date +%s%N)
	# shellcheck disable=SC2086
	"$AVM" run --accel $accel $net -- true
	ms_since "$t" >>"$tmp/cold"
	t=$(date +%s%N)
	# shellcheck disable=SC2086
	"$AVM" run --accel $accel $net --image "$IMAGE" -- true
	ms_since "$t" >>"$tmp/image"
	# One fresh VM per probe: each one is a first run.
	for probe in "py python3 -c pass" "node node -e 0" "git git --version"; do
		set -- $probe
		f=$1
		shift
		# shellcheck disable=SC2086
		"$AVM" start --accel $accel $net --image "$IMAGE" --name "b-$f-$i" >/dev/null
		t=$(date +%s%N)
		"$AVM" exec "b-$f-$i" -- "$@" >/dev/null 2>&1 || echo "bench: image: '$*' failed" >&2
		ms_since "$t" >>"$tmp/$f"
		"$AVM" rm --force "b-$f-$i" >/dev/null
	done
	i=$((i + 1))
done

# The per-VM overlay after a run that only ran a command.
# shellcheck disable=SC2086
"$AVM" run --accel $accel $net --image "$IMAGE" --keep-state --name b-ov -- python3 -c pass >/dev/null
ov=$(ls "$AGENTVM_STATE_DIR"/b-ov/disk*.qcow2 | head -1)
ov_kb=$(du -k "$ov" | cut -f1)
"$AVM" rm --force b-ov >/dev/null 2>&1 || true

id=$(cat "$STORE/names/$IMAGE")
rootfs=$STORE/$id/rootfs.ext4
size_mb=$(($(stat -c %s "$rootfs") / 1048576))
alloc_mb=$(($(du -k "$rootfs" | cut -f1) / 1024))
build_s=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("build_ms", 0) // 1000 or "?")' "$STORE/$id/meta.json" 2>/dev/null || echo "?")
mid=$(cat "$STORE/names/$MEM_IMAGE")
mrootfs=$STORE/$mid/rootfs.ext4

# Host memory: 10 VMs that each read python3's and git's files, on one shared image vs on 10
# private copies (separate files: nothing shared in the host's page cache). PSS of the QEMUs,
# plus the growth of the host page cache (after dropping it) while they ran.
# The host's page cache of files: Cached without Shmem (tmpfs and shared memory count there too).
file_cache_kb() { awk '/^Cached:/ {c = $2} /^Shmem:/ {s = $2} END {print c - s}' /proc/meminfo; }
mem_of() { # label: start 10 VMs on images names $1-0..9 (or all $IMAGE), print "pss_mb cache_mb"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	c0=$(file_cache_kb)
	for k in 0 1 2 3 4 5 6 7 8 9; do
		img=$MEM_IMAGE
		[ "$1" = private ] && img=priv-$k
		# shellcheck disable=SC2086
		"$AVM" start --accel $accel $net --image "$img" --name "m-$k" >/dev/null
		"$AVM" exec "m-$k" -- sh -c 'python3 -c "import ssl, json, sqlite3"; git --version; cat /usr/bin/* >/dev/null 2>&1' >/dev/null
	done
	c1=$(file_cache_kb)
	pss=0
	for k in 0 1 2 3 4 5 6 7 8 9; do
		p=$(cat "$AGENTVM_STATE_DIR/m-$k/qemu.pid" 2>/dev/null || echo)
		[ -n "$p" ] && pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
	done
	for k in 0 1 2 3 4 5 6 7 8 9; do "$AVM" rm --force "m-$k" >/dev/null; done
	echo "$((pss / 1024)) $(((c1 - c0) / 1024))"
}
shared=$(mem_of shared)
# Private copies: each a store entry of its own (a copy of the file under another id).
mkdir -p "$tmp/store/names"
for k in 0 1 2 3 4 5 6 7 8 9; do
	pid=$(printf '%s' "$mid$k" | sha256sum | cut -c1-64)
	mkdir -p "$tmp/store/$pid"
	cp --sparse=always "$mrootfs" "$tmp/store/$pid/rootfs.ext4"
	sed "s/$mid/$pid/g" "$STORE/$mid/meta.json" >"$tmp/store/$pid/meta.json"
	echo "$pid" >"$tmp/store/names/priv-$k"
done
rm "$AGENTVM_CACHE_DIR/images"
ln -s "$tmp/store" "$AGENTVM_CACHE_DIR/images"
private=$(mem_of private)
rm -rf "$tmp/store"

cold=$(median "$tmp/cold")
image=$(median "$tmp/image")
echo "| what (accel $accel, N=$N, medians; image \`$IMAGE\` $id) | value | note |"
echo "|---|---|---|"
echo "| cold \`agentvm run -- true\` (initramfs) | $cold ms | (baseline) |"
echo "| cold \`run --image $IMAGE -- true\` | $image ms (**$(ratio "$image" "$cold") x**, +$((image - cold)) ms) | target <= 1.15 x |"
echo "| first \`python3 -c pass\` in a fresh VM (one exec) | $(median "$tmp/py") ms | |"
echo "| first \`node -e 0\` in a fresh VM | $(median "$tmp/node") ms | |"
echo "| first \`git --version\` in a fresh VM | $(median "$tmp/git") ms | |"
echo "| image size: ext4 file / blocks allocated | $size_mb MB / $alloc_mb MB | build: $build_s s |"
echo "| per-VM overlay after \`python3 -c pass\` | $ov_kb KB | |"
echo "| 10 VMs on one image (\`$MEM_IMAGE\`): QEMU PSS total / host page cache growth | ${shared% *} MB / ${shared#* } MB | |"
echo "| 10 VMs on 10 private copies of it: QEMU PSS total / host page cache growth | ${private% *} MB / ${private#* } MB | |"
