#!/bin/sh
# Integration tests for workspace disks (--disk): the guest mounts the image, its writes go to a
# per-VM overlay and never reach the image, snapshots carry the disk state, clones are
# independent, bad input leaves nothing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"
avm() { "$AVM" "$@"; }
# These tests are about disks: no NIC.
NET="--network isolated"
rm_all() {
	for n in "$@"; do avm rm --force "$n" >/dev/null 2>&1; done
}

# An ext4 image with /hello in it, made without mounting anything (mkfs.ext4 -d).
mkdir -p "$tmp_root/content/sub"
echo "hello from the image" >"$tmp_root/content/hello"
echo "nested" >"$tmp_root/content/sub/file"
IMG=$tmp_root/work.ext4
mkfs.ext4 -q -F -d "$tmp_root/content" "$IMG" 32M >/dev/null 2>&1 || { echo "mkfs.ext4 failed"; exit 1; }
echo "data disk" >"$tmp_root/content/hello"
IMG2=$tmp_root/data.ext4
mkfs.ext4 -q -F -d "$tmp_root/content" "$IMG2" 16M >/dev/null 2>&1 || exit 1
SUM=$(sha256sum "$IMG" | cut -c1-64)
image_unchanged() {
	expect_eq "the image is never written" "$SUM" "$(sha256sum "$IMG" | cut -c1-64)"
}

t_run_reads_and_writes_the_overlay() {
	# shellcheck disable=SC2086
	avm_run $NET --disk "$IMG" -- sh -c 'cat /workspace/hello /workspace/sub/file; echo new >/workspace/new; sync; cat /workspace/new; grep " /workspace " /proc/mounts | cut -d" " -f3'
	expect_eq "exit code" 0 "$rc"
	expect_eq "guest sees the image, writes work" "hello from the image
nested
new
ext4" "$(cat "$out")"
	image_unchanged
}

t_readonly_and_two_disks() {
	# shellcheck disable=SC2086
	avm_run $NET --disk "$IMG" --disk "$IMG2:/data:ro" -- sh -c 'cat /workspace/hello /data/hello; if touch /data/x 2>/dev/null; then echo writable; else echo read-only; fi'
	expect_eq "exit code" 0 "$rc"
	expect_eq "two disks, the second read-only" "hello from the image
data disk
read-only" "$(cat "$out")"
	image_unchanged
}

t_unformatted_disk_still_boots() {
	truncate -s 8M "$tmp_root/blank.img"
	# shellcheck disable=SC2086
	avm_run $NET --keep-state --name blank --disk "$tmp_root/blank.img" -- sh -c 'test -b /dev/vda && echo block-device'
	expect_eq "exit code" 0 "$rc"
	expect_eq "the device is there" "block-device" "$(cat "$out")"
	expect_contains "the console says how to fix it" "mkfs.ext4" "$(cat "$AGENTVM_STATE_DIR/blank/console.log" 2>/dev/null)"
	avm rm --force blank >/dev/null 2>&1
	rm -f "$tmp_root/blank.img"
}

t_snapshot_restore_clones_reset() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name dsrc $NET --disk "$IMG" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec dsrc -- sh -c 'echo before >/workspace/before' || fail "write before"
	# Hashes are cached only for files settled for 2 s (their times tick coarsely): on a fast
	# machine the image may still be younger than that here.
	while [ $(($(date +%s) - $(stat -c %Z "$IMG"))) -le 2 ]; do sleep 0.2; done
	avm snapshot save dsrc dbase 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	[ -f "$AGENTVM_SNAPSHOT_DIR/dbase/disk0.qcow2" ] || fail "no disk copy in the snapshot"
	grep -q '"disk0"' "$AGENTVM_SNAPSHOT_DIR/dbase/meta.json" || fail "meta.json does not record the image"
	# The image settled long ago: its hash is cached for the next save (by file identity).
	ls "$AGENTVM_CACHE_DIR/hashes" 2>/dev/null | grep -q "^[0-9a-f]*-$(printf %x "$(stat -c %i "$IMG")")-" || fail "the image's hash is not cached"
	avm exec dsrc -- sh -c 'echo after >/workspace/after' || fail "write after"
	out=$(avm restore dbase --count 2 --name dc 2>"$tmp_root/err") || fail "restore: $(cat "$tmp_root/err")"
	for c in dc-1 dc-2; do
		expect_eq "$c: file written before the save" "before" "$(avm exec $c -- cat /workspace/before)"
		avm exec $c -- test -e /workspace/after && fail "$c: file written after the save exists"
	done
	avm exec dc-1 -- sh -c 'echo mine >/workspace/mine' || fail "write in a clone"
	avm exec dc-2 -- test -e /workspace/mine && fail "a clone's write shows in another clone"
	expect_eq "the source keeps its own file" "after" "$(avm exec dsrc -- cat /workspace/after)"
	# reset: back to the snapshot, the clone's own write is gone.
	avm reset dc-1 >/dev/null 2>"$tmp_root/err" || fail "reset: $(cat "$tmp_root/err")"
	avm exec dc-1 -- test -e /workspace/mine && fail "the write survived reset"
	expect_eq "reset keeps the snapshot's file" "before" "$(avm exec dc-1 -- cat /workspace/before)"
	# A snapshot of a clone stands on the user's image alone, even after its parent is gone.
	avm exec dc-2 -- sh -c 'echo second >/workspace/second' || fail "write in dc-2"
	avm snapshot save dc-2 dsecond 2>"$tmp_root/err" || fail "save of a clone: $(cat "$tmp_root/err")"
	rm_all dc-1 dc-2 dsrc
	avm snapshot rm dbase >/dev/null || fail "snapshot rm dbase"
	expect_contains "the copy is backed by the user's image" "backing file: $IMG" "$(qemu-img info "$AGENTVM_SNAPSHOT_DIR/dsecond/disk0.qcow2")"
	avm restore dsecond --name dd >/dev/null 2>"$tmp_root/err" || fail "restore of the clone's snapshot: $(cat "$tmp_root/err")"
	expect_eq "both generations of files" "before second" "$(avm exec dd -- sh -c 'echo $(cat /workspace/before /workspace/second)')"
	rm_all dd
	avm snapshot rm dsecond >/dev/null
	image_unchanged
}

t_bad_input() {
	for args in "--disk $tmp_root/missing.img" "--disk $IMG:/proc" "--disk $IMG:relative" \
		"--disk $tmp_root" "--disk $IMG --disk $IMG2:/workspace"; do
		# shellcheck disable=SC2086
		avm_run $NET $args -- true
		[ "$rc" -ne 0 ] || fail "$args: accepted"
		[ "$(wc -l <"$err")" -eq 1 ] || fail "$args: not one line: $(cat "$err")"
		echo "    $args -> $rc: $(cat "$err")"
	done
	# qemu-img missing: one line naming the package, nothing left.
	# shellcheck disable=SC2086
	AGENTVM_QEMU_IMG=$tmp_root/no-qemu-img avm_run $NET --disk "$IMG" -- true
	[ "$rc" -ne 0 ] || fail "ran without qemu-img"
	expect_contains "qemu-img message" "AGENTVM_QEMU_IMG" "$(cat "$err")"
	echo "    no qemu-img -> $rc: $(cat "$err")"

	# The image changes after a save: restore refuses with one line, leaves nothing.
	cp "$IMG" "$tmp_root/changing.ext4"
	# shellcheck disable=SC2086
	avm start --accel tcg --name dch $NET --disk "$tmp_root/changing.ext4" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm snapshot save dch dchs 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	rm_all dch
	echo x | dd of="$tmp_root/changing.ext4" bs=1 seek=100000 conv=notrunc 2>/dev/null
	avm restore dchs --name dchr >/dev/null 2>"$tmp_root/err" && fail "restored over a changed image"
	expect_contains "changed image message" "disk image" "$(cat "$tmp_root/err")"
	echo "    changed image -> $(cat "$tmp_root/err")"
	# The snapshot's disk copy is gone: damaged, one line.
	rm -f "$AGENTVM_SNAPSHOT_DIR/dchs/disk0.qcow2"
	avm restore dchs --name dchr >/dev/null 2>"$tmp_root/err" && fail "restored without the disk copy"
	expect_contains "missing copy message" "damaged" "$(cat "$tmp_root/err")"
	echo "    missing disk copy -> $(cat "$tmp_root/err")"
	avm snapshot rm dchs >/dev/null 2>&1
	rm -f "$tmp_root/changing.ext4"
}

# The warm pool hands out clones of a snapshot with a disk: each with its own overlay.
t_pool_with_a_disk() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name pg $NET --disk "$IMG" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec pg -- sh -c 'echo pooled >/workspace/pooled' || fail "write"
	avm snapshot save pg psnap 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	rm_all pg
	"$AVM" serve --pool psnap --pool-min 1 --pool-max 2 2>"$tmp_root/serve.log" &
	spid=$!
	# acquire needs serve's socket: wait (up to 30 s) until serve answers.
	w=0
	until avm pool status >/dev/null 2>&1; do
		w=$((w + 1))
		[ $w -gt 300 ] && { fail "serve never answered: $(cat "$tmp_root/serve.log")"; break; }
		sleep 0.1
	done
	v=$(avm pool acquire --timeout 60 2>"$tmp_root/err") || fail "acquire: $(cat "$tmp_root/err")"
	if [ -n "$v" ]; then
		expect_eq "the pool VM has the snapshot's disk" "pooled" "$(avm exec "$v" -- cat /workspace/pooled)"
		[ -f "$AGENTVM_STATE_DIR/$v/disk0.qcow2" ] || fail "the pool VM has no overlay of its own"
		avm pool release "$v" || fail "release"
	fi
	kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
	w=0
	while [ -n "$(ls -A "$AGENTVM_STATE_DIR" | grep -vx -e .net -e .metrics)" ] && [ $w -lt 100 ]; do w=$((w + 1)); sleep 0.1; done
	avm snapshot rm psnap >/dev/null || fail "snapshot rm after serve stopped"
	image_unchanged
}

# The state dir on tmpfs (like /run) and the snapshots elsewhere: the overlay copy crosses
# file systems, where copy_file_range gives EXDEV and read/write (keeping holes) takes over.
t_save_across_file_systems() {
	if ! mkdir -p "$tmp_root/run" || ! mount -t tmpfs -o size=64m,mode=0700 tmpfs "$tmp_root/run" 2>/dev/null; then
		skip "cannot mount a tmpfs (needs root)"
		return
	fi
	# shellcheck disable=SC2086
	AGENTVM_STATE_DIR=$tmp_root/run avm start --accel tcg --name xfs $NET --disk "$IMG" >/dev/null 2>"$tmp_root/err" || fail "start: $(cat "$tmp_root/err")"
	AGENTVM_STATE_DIR=$tmp_root/run avm exec xfs -- sh -c 'echo across >/workspace/across; sync' || fail "write"
	AGENTVM_STATE_DIR=$tmp_root/run avm snapshot save xfs xsnap 2>"$tmp_root/err" || fail "save across file systems: $(cat "$tmp_root/err")"
	AGENTVM_STATE_DIR=$tmp_root/run avm rm --force xfs >/dev/null 2>&1
	umount "$tmp_root/run"
	avm restore xsnap --name xr >/dev/null 2>"$tmp_root/err" || fail "restore: $(cat "$tmp_root/err")"
	expect_eq "the file written before the save" "across" "$(avm exec xr -- cat /workspace/across)"
	rm_all xr
	avm snapshot rm xsnap >/dev/null
}

# A VM saved while paused is left "postmigrate" by QEMU, which refuses a second migration:
# one line saying to resume it, the VM unharmed; resumed, it saves again.
t_paused_save_twice() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name pz $NET --disk "$IMG" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm pause pz || fail "pause"
	avm snapshot save pz pz1 2>"$tmp_root/err" || fail "first save: $(cat "$tmp_root/err")"
	avm snapshot save pz pz2 2>"$tmp_root/err" && fail "second save while still paused"
	expect_contains "second save message" "resume it" "$(cat "$tmp_root/err")"
	[ "$(wc -l <"$tmp_root/err")" -eq 1 ] || fail "not one line: $(cat "$tmp_root/err")"
	avm resume pz || fail "resume"
	expect_eq "the VM survived" "ok" "$(avm exec pz -- echo ok)"
	avm snapshot save pz pz2 2>"$tmp_root/err" || fail "save after resume: $(cat "$tmp_root/err")"
	rm_all pz
	avm snapshot rm pz1 >/dev/null
	avm snapshot rm pz2 >/dev/null
}

# What a disk stands on must not change under a VM that is saved: an image replaced while the
# VM runs, or the snapshot a clone's disk stands on removed, make the save refuse (a copy
# would hold a corrupt file system and pass every later check). snapshot rm refuses a
# snapshot that live clones come from, unless --force.
t_disk_identity_guards() {
	cp "$IMG" "$tmp_root/swap.ext4"
	# shellcheck disable=SC2086
	avm start --accel tcg --name gd $NET --disk "$tmp_root/swap.ext4" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm snapshot save gd gsnap 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	avm restore gsnap --name gc >/dev/null 2>"$tmp_root/err" || fail "restore: $(cat "$tmp_root/err")"
	avm snapshot rm gsnap 2>"$tmp_root/err" && fail "removed a snapshot a live clone comes from"
	expect_contains "rm message" "in use by VMs restored from it (gc)" "$(cat "$tmp_root/err")"
	avm snapshot rm --force gsnap 2>"$tmp_root/err" || fail "rm --force: $(cat "$tmp_root/err")"
	avm snapshot save gc gc1 2>"$tmp_root/err" && fail "saved a clone whose snapshot is gone"
	expect_contains "clone save message" "removed or replaced since the VM was restored" "$(cat "$tmp_root/err")"
	echo "    clone of a removed snapshot -> $(cat "$tmp_root/err")"
	# Replace the image under the running source VM (a new file at the same path).
	cp "$IMG" "$tmp_root/swap.new" && mv "$tmp_root/swap.new" "$tmp_root/swap.ext4"
	avm snapshot save gd g2 2>"$tmp_root/err" && fail "saved over a replaced image"
	expect_contains "replaced image message" "changed or replaced while the VM ran" "$(cat "$tmp_root/err")"
	echo "    replaced image -> $(cat "$tmp_root/err")"
	[ -z "$(ls -A "$AGENTVM_SNAPSHOT_DIR" 2>/dev/null)" ] || fail "left in the snapshot dir: $(ls -A "$AGENTVM_SNAPSHOT_DIR")"
	rm_all gc gd
	rm -f "$tmp_root/swap.ext4"
}

echo "workspace disk tests (TCG)"
run_test t_run_reads_and_writes_the_overlay
run_test t_readonly_and_two_disks
run_test t_unformatted_disk_still_boots
run_test t_snapshot_restore_clones_reset
run_test t_pool_with_a_disk
run_test t_save_across_file_systems
run_test t_paused_save_twice
run_test t_disk_identity_guards
run_test t_bad_input
summary
