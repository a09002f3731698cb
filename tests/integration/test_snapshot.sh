#!/bin/sh
# Integration tests for snapshots: save, restore (clones), reset, bad input, full disk.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"
avm() { "$AVM" "$@"; }
# VMs without a NIC: these tests are about RAM and identity; networked clones are in
# test_snapshot_net.sh.
NET=""
"$AVM" start --help 2>/dev/null | grep -q -- --network && NET="--network isolated"

rm_all() {
	for n in "$@"; do avm rm --force "$n" >/dev/null 2>&1; done
}

# One golden snapshot for the tests below: /root/before exists in it, /root/after does not.
make_base() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name golden $NET >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return 1; }
	avm exec golden -- sh -c 'echo before >/root/before' || fail "write before"
	avm snapshot save golden base --description "test base" 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	avm exec golden -- sh -c 'echo after >/root/after' || fail "VM must keep running after save"
}

t_save_then_restore() {
	make_base || return
	[ -f "$AGENTVM_SNAPSHOT_DIR/base/state" ] || fail "no state file"
	grep -q '"created":"[0-9T:-]*-0[45]:00"' "$AGENTVM_SNAPSHOT_DIR/base/meta.json" || fail "created is not New York RFC 3339: $(grep created "$AGENTVM_SNAPSHOT_DIR/base/meta.json")"
	expect_contains "ls lists it" "test base" "$(avm snapshot ls)"
	expect_contains "ls --json" '"name": "base"' "$(avm snapshot ls --json)"
	name=$(avm restore base --name r1 2>"$tmp_root/err")
	expect_eq "restore prints the name" "r1" "$name"
	host_t=$(date +%s)
	guest_t=$(avm exec r1 -- date +%s)
	d=$((guest_t - host_t))
	[ "$d" -le 1 ] && [ "$d" -ge -1 ] || fail "guest clock off by $d s right after restore"
	expect_eq "file written before save" "before" "$(avm exec r1 -- cat /root/before)"
	avm exec r1 -- test -e /root/after && fail "file written after save exists in the clone"
	expect_eq "source still has its later file" "after" "$(avm exec golden -- cat /root/after)"
	expect_eq "hostname is the new name" "r1" "$(avm exec r1 -- hostname)"
	avm restore base --name r2 --network nat-filtered >/dev/null 2>"$tmp_root/err" && fail "NIC on a clone of an isolated snapshot"
	expect_contains "NIC message" "cannot add" "$(cat "$tmp_root/err")"
	rm_all r1 golden
}

t_clones_are_distinct() {
	out=$(avm restore base --count 2 --name cl 2>"$tmp_root/err")
	expect_eq "two names" "cl-1 cl-2" "$(echo $out)"
	a=$(avm exec cl-1 -- sh -c 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"')
	b=$(avm exec cl-2 -- sh -c 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"')
	[ -n "$a" ] && [ "$a" != "$b" ] || fail "clones gave the same random bytes: $a"
	expect_eq "hostname 1" "cl-1" "$(avm exec cl-1 -- hostname)"
	expect_eq "hostname 2" "cl-2" "$(avm exec cl-2 -- hostname)"
	rm_all cl-1 cl-2
}

t_reset() {
	avm restore base --name rs >/dev/null 2>"$tmp_root/err" || fail "restore: $(cat "$tmp_root/err")"
	avm exec rs -- sh -c 'echo dirty >/root/dirty; rm /root/before' || fail "dirty"
	avm reset rs 2>"$tmp_root/err" || fail "reset: $(cat "$tmp_root/err")"
	expect_eq "file from the snapshot is back" "before" "$(avm exec rs -- cat /root/before)"
	avm exec rs -- test -e /root/dirty && fail "file written after restore survived reset"
	expect_eq "hostname after reset" "rs" "$(avm exec rs -- hostname)"
	# A VM that was not restored has nothing to reset to.
	# shellcheck disable=SC2086
	avm start --accel tcg --name plain $NET >/dev/null 2>&1
	avm reset plain 2>"$tmp_root/err"
	[ $? -ne 0 ] || fail "reset of a booted VM must fail"
	expect_contains "reset message" "not restored from a snapshot" "$(cat "$tmp_root/err")"
	rm_all rs plain
}

# A snapshot of a clone (restore, change, save again) restores, in both modes. A clone had
# x-ignore-shared on from its own restore, and the stream it saved could not be loaded
# ("load of migration failed: Invalid argument") before the save turned it off.
t_snapshot_of_a_clone() {
	avm restore base --name sc >/dev/null 2>"$tmp_root/err" || { fail "restore: $(cat "$tmp_root/err")"; return; }
	avm exec sc -- sh -c 'echo second >/root/second' || fail "write in the clone"
	avm snapshot save sc base2 2>"$tmp_root/err" || fail "save of a clone: $(cat "$tmp_root/err")"
	expect_eq "no warning from the save" "" "$(cat "$tmp_root/err")"
	for mode in cow plain; do
		AGENTVM_RESTORE_MODE=$mode avm restore base2 --name sc2 >/dev/null 2>"$tmp_root/err" || { fail "$mode restore of a clone's snapshot: $(cat "$tmp_root/err")"; continue; }
		expect_eq "$mode: the clone's file" "second" "$(avm exec sc2 -- cat /root/second)"
		expect_eq "$mode: the first snapshot's file" "before" "$(avm exec sc2 -- cat /root/before)"
		rm_all sc2
	done
	rm_all sc
	avm snapshot rm base2 >/dev/null 2>&1
}

t_ten_concurrent_clones() {
	ts0=$(date +%s%N)
	out=$(avm restore base --count 10 --name ten 2>"$tmp_root/err")
	rc=$?
	ms=$((($(date +%s%N) - ts0) / 1000000))
	echo "    10 clones restored concurrently in $ms ms"
	expect_eq "restore --count 10" 0 $rc
	ok=0
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ "$(avm exec "ten-$i" -- cat /root/before 2>/dev/null)" = before ] && ok=$((ok + 1))
	done
	expect_eq "clones answering exec" 10 $ok
	rm_all ten-1 ten-2 ten-3 ten-4 ten-5 ten-6 ten-7 ten-8 ten-9 ten-10
}

# Copy the base snapshot as $1 (name fixed up in meta.json).
copy_base() {
	mkdir "$AGENTVM_SNAPSHOT_DIR/$1"
	cp "$AGENTVM_SNAPSHOT_DIR/base/meta.json" "$AGENTVM_SNAPSHOT_DIR/base/state" "$AGENTVM_SNAPSHOT_DIR/$1/"
	sed -i "s/\"name\": *\"base\"/\"name\":\"$1\"/" "$AGENTVM_SNAPSHOT_DIR/$1/meta.json"
}

expect_clean_failure() { # what args...
	what=$1
	shift
	avm restore "$@" >"$tmp_root/out" 2>"$tmp_root/err"
	rc=$?
	[ $rc -ne 0 ] || fail "$what: restore succeeded"
	[ "$(wc -l <"$tmp_root/err")" -eq 1 ] || fail "$what: expected one line, got: $(cat "$tmp_root/err")"
	echo "    $what -> $rc: $(cat "$tmp_root/err")"
}

t_bad_input() {
	expect_clean_failure "missing snapshot" nosuch --name b0
	copy_base nostate
	rm "$AGENTVM_SNAPSHOT_DIR/nostate/state"
	expect_clean_failure "missing state file" nostate --name b1
	copy_base corrupt
	dd if=/dev/urandom of="$AGENTVM_SNAPSHOT_DIR/corrupt/state" bs=4096 count=512 seek=64 conv=notrunc 2>/dev/null
	expect_clean_failure "corrupt state file" corrupt --name b2
	if [ -e "$AGENTVM_SNAPSHOT_DIR/base/cow-devstate" ]; then
		copy_base badcow
		cp "$AGENTVM_SNAPSHOT_DIR/base/cow-mem" "$AGENTVM_SNAPSHOT_DIR/badcow/"
		head -c 20000 /dev/urandom >"$AGENTVM_SNAPSHOT_DIR/badcow/cow-devstate"
		expect_clean_failure "corrupt copy-on-write device state" badcow --name b7
		avm snapshot rm badcow || fail "snapshot rm badcow"
	fi
	copy_base trunc
	truncate -s 1000000 "$AGENTVM_SNAPSHOT_DIR/trunc/state"
	expect_clean_failure "truncated state file" trunc --name b3
	copy_base oldqemu
	sed -i 's/"version": *"[^"]*"/"version":"6.2.0"/' "$AGENTVM_SNAPSHOT_DIR/oldqemu/meta.json"
	expect_clean_failure "another QEMU version" oldqemu --name b4
	expect_contains "version message" "QEMU 6.2.0" "$(cat "$tmp_root/err")"
	copy_base badmeta
	echo '{"format":1,' >"$AGENTVM_SNAPSHOT_DIR/badmeta/meta.json"
	expect_clean_failure "corrupt meta.json" badmeta --name b5
	copy_base badhash
	sed -i '0,/"sha256": *"[0-9a-f]*"/s//"sha256":"0000000000000000000000000000000000000000000000000000000000000000"/; 0,/"mtime_ns": *[0-9]*/s//"mtime_ns":1/' "$AGENTVM_SNAPSHOT_DIR/badhash/meta.json"
	expect_clean_failure "changed kernel" badhash --name b6
	expect_contains "input message" "another guest kernel" "$(cat "$tmp_root/err")"
	for s in nostate corrupt trunc oldqemu badmeta badhash; do avm snapshot rm "$s" || fail "snapshot rm $s"; done
	[ -z "$(ls "$AGENTVM_SNAPSHOT_DIR" | grep -v '^base$')" ] || fail "snapshots left: $(ls "$AGENTVM_SNAPSHOT_DIR")"
}

t_full_disk() {
	if ! mkdir -p "$tmp_root/small" || ! mount -t tmpfs -o size=4m,mode=0700 tmpfs "$tmp_root/small" 2>/dev/null; then
		skip "cannot mount a small tmpfs (needs root)"
		return
	fi
	# shellcheck disable=SC2086
	avm start --accel tcg --name full $NET >/dev/null 2>&1 || fail "start"
	AGENTVM_SNAPSHOT_DIR="$tmp_root/small" avm snapshot save full s1 >"$tmp_root/out" 2>"$tmp_root/err"
	rc=$?
	echo "    full disk -> $rc: $(cat "$tmp_root/err")"
	[ $rc -ne 0 ] || fail "save onto a full disk succeeded"
	expect_contains "full disk message" "full" "$(cat "$tmp_root/err")"
	[ -z "$(ls -A "$tmp_root/small")" ] || fail "left behind: $(ls -A "$tmp_root/small")"
	expect_eq "VM still runs after a failed save" "ok" "$(avm exec full -- echo ok)"
	umount "$tmp_root/small"
	rm_all full
}

# SIGTERM (Ctrl-C is the same) during a save: the save is abandoned cleanly, exit 130, the VM
# runs on and nothing is left in the snapshot dir (a hidden temp dir with the RAM copy was).
t_save_interrupted() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name sv $NET >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	"$AVM" snapshot save sv int1 2>"$tmp_root/err" &
	pid=$!
	i=0 # signal it once the migration writes its stream
	until [ -n "$(find "$AGENTVM_SNAPSHOT_DIR" -path '*/.int1.tmp-*/state' -size +0 2>/dev/null)" ] || [ $i -gt 1000 ]; do
		i=$((i + 1))
		sleep 0.005
	done
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	echo "    interrupted save -> $rc: $(cat "$tmp_root/err")"
	expect_eq "interrupted save exits" 130 $rc
	expect_contains "message" "interrupted" "$(cat "$tmp_root/err")"
	[ "$(wc -l <"$tmp_root/err")" -eq 1 ] || fail "expected one line, got: $(cat "$tmp_root/err")"
	expect_eq "nothing left in the snapshot dir" "" "$(ls -A "$AGENTVM_SNAPSHOT_DIR" | grep -e int1 -e '\.tmp-')"
	expect_eq "VM still running" "running" "$(avm ls | awk '$1 == "sv" {print $2}')"
	expect_eq "and runs commands" "ok" "$(avm exec sv -- echo ok)"
	rm_all sv
}

# Temp dirs of saves that died are removed once stale, unless their saver still holds them.
t_stale_save_tmp() {
	s=$AGENTVM_SNAPSHOT_DIR
	mkdir -p "$s/.old.tmp-AAAAAA" "$s/.new.tmp-BBBBBB" "$s/.busy.tmp-CCCCCC"
	head -c 65536 /dev/zero >"$s/.old.tmp-AAAAAA/state"
	touch -d '-20 minutes' "$s/.old.tmp-AAAAAA" "$s/.busy.tmp-CCCCCC"
	sh -c 'exec 9<"$1"; flock -x 9; exec sleep 30' sh "$s/.busy.tmp-CCCCCC" &
	holder=$!
	sleep 0.2
	avm snapshot ls >/dev/null || fail "snapshot ls"
	[ -e "$s/.old.tmp-AAAAAA" ] && fail "stale temp dir not removed"
	[ -e "$s/.new.tmp-BBBBBB" ] || fail "a fresh temp dir was removed"
	[ -e "$s/.busy.tmp-CCCCCC" ] || fail "a temp dir its saver holds was removed"
	kill "$holder"
	wait "$holder" 2>/dev/null
	rm -rf "$s/.old.tmp-AAAAAA" "$s/.new.tmp-BBBBBB" "$s/.busy.tmp-CCCCCC"
}

# SIGTERM to restore --count and its children (as Ctrl-C hits the process group) while VMs
# start: it waits for them and removes every one (their supervisors went on to start them).
t_restore_count_interrupted() {
	setsid "$AVM" restore base --count 3 --name ci >"$tmp_root/out" 2>"$tmp_root/err" &
	pid=$!
	i=0
	until [ -d "$AGENTVM_STATE_DIR/ci-1" ] || [ $i -gt 1000 ]; do
		i=$((i + 1))
		sleep 0.005
	done
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
	wait "$pid"
	rc=$?
	echo "    interrupted restore --count 3 -> $rc: $(cat "$tmp_root/err")"
	expect_eq "interrupted restore exits" 130 $rc
	expect_eq "prints no names" "" "$(cat "$tmp_root/out")"
	sleep 1 # a supervisor of a killed child would be starting its VM now
	expect_eq "no clone left" "" "$(avm ls | awk '$1 ~ /^ci-/ {print $1}')"
	rm_all ci-1 ci-2 ci-3
}

# A copy-on-write template build that was interrupted left a RAM-sized cow-mem.tmp-*: the next
# build (under the template lock) removes it.
t_stale_cow_tmp() {
	copy_base sc
	head -c 65536 /dev/zero >"$AGENTVM_SNAPSHOT_DIR/sc/cow-mem.tmp-deadbeef"
	head -c 100 /dev/zero >"$AGENTVM_SNAPSHOT_DIR/sc/cow-devstate.tmp-deadbeef"
	avm restore sc --name sc1 >/dev/null 2>"$tmp_root/err" || fail "restore: $(cat "$tmp_root/err")"
	expect_eq "stale template files removed" "" "$(ls "$AGENTVM_SNAPSHOT_DIR/sc" | grep '\.tmp-')"
	rm_all sc1
	avm snapshot rm sc || fail "snapshot rm sc"
}

t_snapshot_rm() {
	avm snapshot rm base || fail "rm"
	avm snapshot rm base 2>/dev/null && fail "second rm must fail"
	[ -z "$(ls -A "$AGENTVM_SNAPSHOT_DIR")" ] || fail "left: $(ls -A "$AGENTVM_SNAPSHOT_DIR")"
}

echo "snapshot tests (TCG)"
run_test t_save_then_restore
run_test t_clones_are_distinct
run_test t_reset
run_test t_snapshot_of_a_clone
run_test t_ten_concurrent_clones
run_test t_save_interrupted
run_test t_stale_save_tmp
run_test t_restore_count_interrupted
run_test t_stale_cow_tmp
run_test t_bad_input
run_test t_full_disk
run_test t_snapshot_rm
summary
