#!/bin/sh
# Integration tests for files in and out (issue 11): agentvm cp (both ways, trees, modes, mtimes,
# symlinks, tar streams), run --copy-in/--copy-out, live 9p shares (--share, --workspace) and
# every escape attempt the issue lists, on both the 9p and the cp paths.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"
avm() { "$AVM" "$@"; }
NET="--network isolated"
W=$tmp_root/w
mkdir -p "$W"

# A tree with a nested dir, odd modes, an old mtime, a symlink out and a larger file.
make_tree() {
	rm -rf "$1"
	mkdir -p "$1/sub/deep"
	echo "hello" >"$1/a.txt"
	printf 'x%.0s' $(seq 1 5000) >"$1/sub/deep/b.txt"
	chmod 0640 "$1/a.txt"
	chmod 0751 "$1/sub"
	touch -d '2001-02-03 04:05:06' "$1/a.txt"
	ln -s /etc/passwd "$1/sub/link"
	head -c 3000000 /dev/urandom >"$1/big.bin"
}

# path mode mtime, symlinks as "-> target", for comparing two trees.
tree_listing() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
		if [ -L "$p" ]; then echo "$p -> $(readlink "$p")"
		elif [ -d "$p" ]; then echo "$p $(stat -c %a "$p")"
		else echo "$p $(stat -c '%a %Y' "$p") $(sha256sum <"$p" | cut -c1-16)"; fi
	done)
}

t_workspace_done_when() {
	# The issue's one-command workflow, with a relative path and no output/work dirs yet.
	rm -rf "$W/ws"
	mkdir -p "$W/ws/input"
	echo "the task" >"$W/ws/input/task.txt"
	(cd "$W" && "$AVM" run --accel tcg $NET --workspace ./ws -- sh -c 'cat /workspace/input/task.txt > /workspace/output/result.txt') >"$tmp_root/out" 2>"$tmp_root/err"
	expect_eq "exit code" 0 "$?"
	expect_eq "result on the host" "the task" "$(cat "$W/ws/output/result.txt" 2>/dev/null)"
	[ -d "$W/ws/work" ] || fail "work/ was not created"
	# Through the boot cache: the run built the template of its shape and restored from it.
	expect_contains "a boot template with the workspace's shares" "shares=ro,rw,rw" "$(avm cache ls)"
}

t_share_escape_attempts() {
	rm -rf "$W/ws"
	mkdir -p "$W/ws/input"
	echo "host secret" >"$W/secret"
	ln -s "$W/secret" "$W/ws/input/hostlink"
	echo "in" >"$W/ws/input/in.txt"
	# shellcheck disable=SC2086
	avm_run $NET --workspace "$W/ws" -- sh -c '
		o=/workspace/output
		ln -s /etc $o/etc-link
		echo dotdot >$o/../../../escaped-by-dotdot 2>/dev/null
		mknod $o/null c 1 3 && echo mknod-ok
		echo s >$o/suid && chmod 6755 $o/suid
		echo c >$o/chowned && chown 1234:1234 $o/chowned
		ln /etc/passwd $o/hard 2>/dev/null && echo hardlink-made
		echo w >/workspace/input/new 2>/dev/null && echo ro-written
		mount -o remount,rw /workspace/input 2>/dev/null
		echo w >/workspace/input/new2 2>/dev/null && echo ro-written-after-remount
		cat /workspace/input/hostlink 2>/dev/null
		cat /workspace/input/in.txt
		true'
	expect_eq "exit code" 0 "$rc"
	o=$W/ws/output
	# What the guest saw: its own view may show a device or a link; the host must not.
	case "$(cat "$out")" in *"host secret"*) fail "the guest read a host file through a host symlink" ;; esac
	case "$(cat "$out")" in *ro-written*) fail "a read-only share was written: $(cat "$out")" ;; esac
	case "$(cat "$out")" in *hardlink-made*) fail "a hard link to a file outside the share was made" ;; esac
	expect_contains "the share reads" "in" "$(cat "$out")"
	[ -e "$W/ws/input/new" ] || [ -e "$W/ws/input/new2" ] && fail "files appeared in the read-only input"
	[ -L "$o/etc-link" ] && fail "a guest symlink became a host symlink"
	[ -f "$o/etc-link" ] || fail "the guest's symlink is not a plain file on the host"
	[ -c "$o/null" ] || [ -b "$o/null" ] && fail "the guest made a device node on the host"
	[ -e "$o/null" ] || fail "mknod in the guest left nothing (expected a plain file)"
	[ -u "$o/suid" ] || [ -g "$o/suid" ] && fail "set-uid/set-gid bits reached the host"
	expect_eq "owner of a chowned file" "$(id -u)" "$(stat -c %u "$o/chowned" 2>/dev/null)"
	if [ -e "$o/hard" ] && [ "$(stat -c %i "$o/hard")" = "$(stat -c %i /etc/passwd)" ]; then
		fail "a hard link to the host's /etc/passwd"
	fi
	[ -n "$(find "$tmp_root" -name escaped-by-dotdot)" ] && fail "'..' led out of the share"
	return 0
}

t_share_flag_and_errors() {
	mkdir -p "$W/shared"
	echo "shared file" >"$W/shared/f"
	# shellcheck disable=SC2086
	avm_run $NET --share "$W/shared:/data:ro" --share "$W/shared:/data-rw" -- sh -c 'cat /data/f; echo x >/data-rw/new'
	expect_eq "exit code" 0 "$rc"
	expect_eq "read through the share" "shared file" "$(cat "$out")"
	expect_eq "written through the rw share" "x" "$(cat "$W/shared/new" 2>/dev/null)"
	# shellcheck disable=SC2086
	avm_run $NET --share "$W/nope:/data" -- true
	expect_eq "missing host dir: exit" 125 "$rc"
	expect_contains "missing host dir: says which" "nope" "$(cat "$err")"
	# shellcheck disable=SC2086
	avm_run $NET --share "$W/shared/f:/data" -- true
	expect_eq "a file, not a dir: exit" 125 "$rc"
	expect_contains "a file: says so" "not a directory" "$(cat "$err")"
	# shellcheck disable=SC2086
	avm_run $NET --share "$W/shared:/etc" -- true
	expect_eq "a system dir: exit" 125 "$rc"
	# 6 shares and a disk: one more than the 6 free slots of an isolated VM.
	truncate -s 8M "$W/disk.img"
	# shellcheck disable=SC2086
	avm_run $NET --workspace "$W/ws" --share "$W/shared:/a" --share "$W/shared:/b" --share "$W/shared:/c" --disk "$W/disk.img" -- true
	expect_eq "too many shares: exit" 125 "$rc"
	expect_contains "too many shares: says slots" "virtio" "$(cat "$err")"
}

t_snapshot_refused_with_shares() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name shsnap $NET --workspace "$W/ws" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm snapshot save shsnap s1 >/dev/null 2>"$tmp_root/err"
	expect_eq "save of a VM with shares: exit" 125 "$?"
	expect_contains "save: one clear line" "shares" "$(cat "$tmp_root/err")"
	expect_eq "save: one line" 1 "$(wc -l <"$tmp_root/err")"
	[ -e "$AGENTVM_SNAPSHOT_DIR/s1" ] && fail "a snapshot was left behind"
	expect_eq "the VM still runs" "running" "$(avm ls 2>/dev/null | awk '$1 == "shsnap" {print $2}')"
	avm rm --force shsnap >/dev/null 2>&1
}

t_cp_both_ways() {
	make_tree "$W/tree"
	# shellcheck disable=SC2086
	avm start --accel tcg --name cpvm $NET >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm cp "$W/tree" cpvm:/root 2>"$tmp_root/err" || fail "cp in: $(cat "$tmp_root/err")"
	expect_eq "symlink kept as a link in the guest" "/etc/passwd" "$(avm exec cpvm -- readlink /root/tree/sub/link)"
	expect_eq "mode in the guest" "751" "$(avm exec cpvm -- stat -c %a /root/tree/sub)"
	rm -rf "$W/back" && mkdir "$W/back"
	avm cp cpvm:/root/tree "$W/back" 2>"$tmp_root/err" || fail "cp out: $(cat "$tmp_root/err")"
	expect_eq "tree identical after a round trip" "$(tree_listing "$W/tree")" "$(tree_listing "$W/back/tree")"
	# A single file to a new name, and into an existing directory.
	avm cp "$W/tree/a.txt" cpvm:/root/renamed.txt || fail "cp file to new name"
	expect_eq "file copied as the new name" "hello" "$(avm exec cpvm -- cat /root/renamed.txt)"
	avm cp cpvm:/root/renamed.txt "$W/back/out.txt" || fail "cp file out to new name"
	expect_eq "file out as the new name" "hello" "$(cat "$W/back/out.txt")"
	# Tar streams both ways ('-').
	tar -C "$W/tree" -cf - sub | avm cp - cpvm:/tmp 2>"$tmp_root/err" || fail "cp - in: $(cat "$tmp_root/err")"
	expect_eq "tar stream in" "$(cat "$W/tree/sub/deep/b.txt")" "$(avm exec cpvm -- cat /tmp/sub/deep/b.txt)"
	# The README's form: a stream of '.' (its first entry is "./").
	tar -C "$W/tree" -cf - . | avm cp - cpvm:/tmp 2>"$tmp_root/err" || fail "cp - of '.': $(cat "$tmp_root/err")"
	expect_eq "tar stream of '.' in" "hello" "$(avm exec cpvm -- cat /tmp/a.txt)"
	avm cp cpvm:/root/tree - 2>"$tmp_root/err" | tar -tf - >"$tmp_root/list" || fail "cp - out"
	grep -qx 'tree/sub/deep/b.txt' "$tmp_root/list" || fail "tar stream out lacks tree/sub/deep/b.txt: $(head -5 "$tmp_root/list")"
	# Clear errors.
	avm cp "$W/tree/a.txt" cpvm:/no/such/dir/x 2>"$tmp_root/err"
	expect_eq "missing guest parent: exit" 1 "$?"
	expect_contains "missing guest parent: says so" "parent directory does not exist" "$(cat "$tmp_root/err")"
	avm cp cpvm:/root/nope "$W/back" 2>"$tmp_root/err"
	expect_eq "missing guest source: exit" 1 "$?"
	expect_contains "missing guest source: names it" "/root/nope" "$(cat "$tmp_root/err")"
	[ -n "$(find "$W/back" -name '.agentvm-cp-*')" ] && fail "temporary dirs left behind"
	avm cp "$W/nope" cpvm:/root 2>"$tmp_root/err"
	expect_eq "missing host source: exit" 1 "$?"
	avm cp "$W/tree" "$W/x" 2>"$tmp_root/err"
	expect_eq "no VM side: usage" 125 "$?"
	avm rm --force cpvm >/dev/null 2>&1
}

t_cp_escape_attempts() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name cpesc $NET >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec cpesc -- mkdir -p /root/dst
	# Into the guest: a tar with '..', an absolute path, and a write through a symlink.
	for kind in dotdot abs symlink; do
		python3 - "$kind" >"$tmp_root/evil.tar" <<'PY'
import io, sys, tarfile
kind = sys.argv[1]
buf = io.BytesIO()
t = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
def add(name, data=b"evil"):
    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
if kind == "dotdot":
    add("../../etc/evil-dotdot")
elif kind == "abs":
    add("/etc/evil-abs")
else:
    l = tarfile.TarInfo("l"); l.type = tarfile.SYMTYPE; l.linkname = "/etc"; t.addfile(l)
    add("l/evil-symlink")
t.close()
sys.stdout.buffer.write(buf.getvalue())
PY
		avm cp - cpesc:/root/dst <"$tmp_root/evil.tar" 2>"$tmp_root/err"
		[ $? -ne 0 ] || fail "$kind: the guest accepted the archive"
		reason=refused
		[ $kind = symlink ] && reason=symlink
		expect_contains "$kind: refused with a reason" "$reason" "$(cat "$tmp_root/err")"
	done
	expect_eq "nothing written outside the destination" "" "$(avm exec cpesc -- sh -c 'ls /etc | grep evil; ls /root | grep evil')"
	# Out of the guest: a set-uid file, a device node, a symlink out: none made real on the host.
	avm exec cpesc -- sh -c 'mkdir -p /root/o && echo s >/root/o/suid && chmod 6755 /root/o/suid && mknod /root/o/null c 1 3 && ln -s /etc/shadow /root/o/link && ln -s / /root/o/rootlink'
	rm -rf "$W/eo" && mkdir "$W/eo"
	avm cp cpesc:/root/o "$W/eo" 2>"$tmp_root/err" || fail "cp out: $(cat "$tmp_root/err")"
	[ -u "$W/eo/o/suid" ] || [ -g "$W/eo/o/suid" ] && fail "set-uid/set-gid bits reached the host"
	expect_eq "suid file content" "s" "$(cat "$W/eo/o/suid")"
	[ -e "$W/eo/o/null" ] && fail "a device node reached the host"
	expect_contains "the device was reported skipped" "skipped" "$(cat "$tmp_root/err")"
	expect_eq "symlink kept, not followed" "/etc/shadow" "$(readlink "$W/eo/o/link")"
	avm rm --force cpesc >/dev/null 2>&1
}

t_cp_paused_and_stopped() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name cpst $NET >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	echo x >"$W/small"
	avm pause cpst >/dev/null
	avm cp "$W/small" cpst:/root 2>"$tmp_root/err"
	[ $? -ne 0 ] || fail "cp into a paused VM succeeded"
	expect_contains "paused: says so" "paused" "$(cat "$tmp_root/err")"
	avm resume cpst >/dev/null
	avm stop cpst >/dev/null 2>&1
	avm cp cpst:/root/x "$W" 2>"$tmp_root/err"
	[ $? -ne 0 ] || fail "cp out of a stopped VM succeeded"
	expect_contains "stopped: says so" "not running" "$(cat "$tmp_root/err")"
	avm rm --force cpst >/dev/null 2>&1
}

t_cp_interrupted_leaves_no_partial_file() {
	# shellcheck disable=SC2086
	avm start --accel tcg --name cpint $NET --memory 1024 >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec cpint -- dd if=/dev/urandom of=/root/big bs=1M count=200 2>/dev/null
	rm -rf "$W/int" && mkdir "$W/int"
	avm cp -q cpint:/root/big "$W/int/big" 2>"$tmp_root/err" &
	cp_pid=$!
	# Kill the VM while the copy streams (its temp dir holds a partial file by then).
	i=0
	while [ -z "$(find "$W/int" -path '*/.agentvm-cp-*/big' -size +1M 2>/dev/null)" ]; do
		i=$((i + 1))
		[ $i -gt 600 ] && { fail "the copy never started"; break; }
		sleep 0.05
	done
	avm kill cpint >/dev/null 2>&1
	wait $cp_pid
	cp_rc=$?
	[ $cp_rc -ne 0 ] || fail "an interrupted copy reported success"
	[ -e "$W/int/big" ] && fail "a partial file under the final name"
	[ -n "$(ls -A "$W/int")" ] && fail "left behind: $(ls -A "$W/int")"
	avm rm --force cpint >/dev/null 2>&1
}

t_run_copy_in_and_out() {
	make_tree "$W/tree"
	rm -rf "$W/res" && mkdir "$W/res"
	# Outputs come out even when the command fails; the exit code stays the command's.
	# shellcheck disable=SC2086
	avm_run $NET --copy-in "$W/tree:/root/in" --copy-out "/root/result.txt:$W/res/result.txt" --copy-out "/root/in:$W/res" -- sh -c 'cat /root/in/a.txt > /root/result.txt; exit 3'
	expect_eq "exit code is the command's" 3 "$rc"
	expect_eq "copied out after a failure" "hello" "$(cat "$W/res/result.txt" 2>/dev/null)"
	expect_eq "tree in and out again" "$(tree_listing "$W/tree")" "$(tree_listing "$W/res/in")"
	# And after a timeout.
	# shellcheck disable=SC2086
	avm_run $NET --timeout 2 --copy-out "/root/t.txt:$W/res/t.txt" -- sh -c 'echo partial >/root/t.txt; sleep 30'
	expect_eq "timeout exit code" 124 "$rc"
	expect_eq "copied out after a timeout" "partial" "$(cat "$W/res/t.txt" 2>/dev/null)"
	# A missing copy-in source is refused before anything boots.
	# shellcheck disable=SC2086
	avm_run $NET --copy-in "$W/nope:/root" -- true
	expect_eq "missing copy-in source: exit" 125 "$rc"
	# start has no command to copy around.
	avm start --accel tcg $NET --copy-in "$W/tree:/root" >/dev/null 2>"$tmp_root/err"
	expect_eq "start --copy-in: exit" 125 "$?"
	expect_contains "start --copy-in: points at cp" "agentvm cp" "$(cat "$tmp_root/err")"
}

echo "test_files:"
t_cp_into_a_detached_vm_keeps_flat_memory() {
	# A cp into a detached VM goes through its supervisor, which must not queue what the guest
	# has not taken yet: it stops reading the client instead (before: +228 MB for 256 MiB).
	head -c 67108864 /dev/urandom >"$tmp_root/big64"
	# shellcheck disable=SC2086
	avm start --accel tcg $NET --memory 512 --name flat >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	sup=$(sed -n 's/.*"supervisor_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/flat/state.json")
	[ -n "$sup" ] || { fail "no supervisor_pid in state.json"; avm rm --force flat >/dev/null 2>&1; return; }
	avm cp -q "$tmp_root/big64" flat:/tmp/big64 &
	cpid=$!
	max=0
	while kill -0 $cpid 2>/dev/null; do
		r=$(awk '/^VmRSS/ {print $2}' "/proc/$sup/status" 2>/dev/null)
		[ -n "$r" ] && [ "$r" -gt "$max" ] && max=$r
		sleep 0.1
	done
	wait $cpid
	expect_eq "cp exit code" 0 "$?"
	expect_eq "all of it arrived" "$(sha256sum <"$tmp_root/big64" | cut -c1-64)" "$(avm exec flat -- sh -c 'sha256sum </tmp/big64' | cut -c1-64)"
	[ "$max" -lt 32768 ] || fail "the supervisor grew to $max kB during a 64 MiB cp (bound: 32 MiB)"
	echo "    supervisor peak RSS during a 64 MiB cp in: $max kB"
	avm rm --force flat >/dev/null 2>&1
	rm -f "$tmp_root/big64"
}

run_test t_workspace_done_when
run_test t_share_escape_attempts
run_test t_share_flag_and_errors
run_test t_snapshot_refused_with_shares
run_test t_cp_both_ways
run_test t_cp_escape_attempts
run_test t_cp_paused_and_stopped
run_test t_cp_interrupted_leaves_no_partial_file
run_test t_run_copy_in_and_out
run_test t_cp_into_a_detached_vm_keeps_flat_memory
summary
