#!/bin/sh
# Integration tests for boot templates (src/vm/boot_cache.h): run and start restore a clone of a
# cached boot; nothing of one run reaches the next; --cold and AGENTVM_BOOT_CACHE=0; cache ls/rm;
# a damaged, truncated or foreign template, two first runs at once and a full disk never break
# a run. Which path a run took is read from the guest: a template's clone has
# agentvm.template=1 on its kernel cmdline (and no per-run word), a cold boot does not.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# Root images come from the build's store, read-only (as test_rootimage.sh does).
STORE=${AVM_IMAGE_CACHE:-/var/cache/agentvm}/images

avm() { "$AVM" "$@"; }
tdir() { echo "$AGENTVM_CACHE_DIR/templates"; }
ntemplates() { ls "$(tdir)" 2>/dev/null | grep -c '^[0-9a-f]\{16\}$'; }
only_key() { ls "$(tdir)" | grep '^[0-9a-f]\{16\}$' | head -1; }
fresh_cache() { rm -rf "$(tdir)"; }
# Every run here is isolated (no root needed) unless a test says otherwise.
iso_run() { avm_run --network isolated "$@"; }

t_first_builds_then_restores() {
	fresh_cache
	iso_run -- cat /proc/cmdline
	expect_eq "first run" 0 "$rc"
	expect_contains "the first run restores the template it built" "agentvm.template=1" "$(cat "$out")"
	expect_eq "no warning" "" "$(cat "$err")"
	expect_eq "one template" 1 "$(ntemplates)"
	iso_run -- sh -c 'cat /proc/cmdline; hostname'
	expect_contains "second run is a clone" "agentvm.template=1" "$(cat "$out")"
	# Nothing per run on the template's cmdline: no hostname, address or disk word.
	case "$(head -1 "$out")" in *hostname*|*agentvm.ip*|*agentvm.disk*|*agentvm.root*|*vm-*)
		fail "per-run words on a template's cmdline: $(head -1 "$out")" ;; esac
	expect_eq "still one template" 1 "$(ntemplates)"
	avm cache ls --json >"$tmp_root/ls.json"
	python3 - "$tmp_root/ls.json" <<'EOF' || fail "cache ls --json: $(cat "$tmp_root/ls.json")"
import json, sys
v = json.load(open(sys.argv[1]))
assert len(v) == 1, v
t = v[0]
assert len(t["key"]) == 16 and t["size"] > 0 and t["last_use"] > 0, t
assert "tcg" in t["shape"] and "isolated" in t["shape"], t
EOF
	expect_contains "cache ls" "$(only_key)" "$(avm cache ls)"
}

t_cold_flag_and_env() {
	fresh_cache
	iso_run --cold -- cat /proc/cmdline
	expect_eq "--cold" 0 "$rc"
	case "$(cat "$out")" in *agentvm.template*) fail "--cold restored a template" ;; esac
	expect_eq "--cold writes no template" 0 "$(ntemplates)"
	AGENTVM_BOOT_CACHE=0 "$AVM" run --accel tcg --network isolated -- cat /proc/cmdline >"$tmp_root/out" 2>&1
	case "$(cat "$tmp_root/out")" in *agentvm.template*) fail "AGENTVM_BOOT_CACHE=0 restored a template" ;; esac
	expect_eq "AGENTVM_BOOT_CACHE=0 writes no template" 0 "$(ntemplates)"
}

# Fresh identity per clone: hostname, boot_id, random bytes, clock; disks from this run only.
t_clones_do_not_share_identity() {
	iso_run -- true # the template exists
	script='hostname; cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"; echo; date +%s'
	iso_run -- sh -c "$script"
	cp "$out" "$tmp_root/a"
	iso_run -- sh -c "$script"
	cp "$out" "$tmp_root/b"
	for i in 1 2 3; do
		[ "$(sed -n ${i}p "$tmp_root/a")" != "$(sed -n ${i}p "$tmp_root/b")" ] ||
			fail "line $i is the same in two clones: $(sed -n ${i}p "$tmp_root/a")"
	done
	d=$(( $(sed -n 4p "$tmp_root/b") - $(date +%s) ))
	[ "${d#-}" -le 5 ] || fail "a clone's clock is ${d} s off the host's"
}

# A clone's first SYNC rewrites /etc/hosts (and, with a network, /etc/resolv.conf) in place, PID 1
# being alone then (guest-init/net.c): whatever the name's length against the template's, the
# files hold exactly this run's lines.
t_clone_etc_files() {
	iso_run -- true # the template exists
	for n in x a-name-far-longer-than-the-template-had; do
		iso_run --name "$n" -- sh -c 'hostname; cat /etc/hosts'
		expect_eq "/etc/hosts of $n" "$(printf '%s\n127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback' "$n" "$n")" "$(cat "$out")"
	done
	[ "$(id -u)" = 0 ] || return 0 # a nat-filtered run needs root (its tap)
	avm_run -- true
	avm_run --name y -- sh -c 'cat /etc/hosts; echo --; cat /etc/resolv.conf; echo --; ip -4 -o addr show eth0'
	expect_eq "nat-filtered run" 0 "$rc"
	expect_contains "hosts" "$(printf '127.0.1.1\ty')" "$(cat "$out")"
	expect_eq "resolv.conf: one resolver line" 1 "$(sed -n '/^--$/,/^--$/p' "$out" | grep -vc '^--$')"
	expect_eq "resolv.conf: a nameserver" 1 "$(grep -c '^nameserver [0-9.]*$' "$out")"
	expect_eq "one address" 1 "$(grep -c ' inet ' "$out")"
}

# The disks of one run never reach the next: two different images in a row, and a write.
t_two_disk_images_in_a_row() {
	mkdir -p "$tmp_root/d1" "$tmp_root/d2"
	echo one >"$tmp_root/d1/f"
	echo two >"$tmp_root/d2/f"
	mkfs.ext4 -q -d "$tmp_root/d1" "$tmp_root/one.ext4" 16M
	mkfs.ext4 -q -d "$tmp_root/d2" "$tmp_root/two.ext4" 24M
	iso_run --disk "$tmp_root/one.ext4" -- sh -c 'cat /workspace/f; echo leak >/workspace/g; sync'
	expect_eq "first image" "one" "$(cat "$out")"
	iso_run --disk "$tmp_root/two.ext4" -- sh -c 'cat /proc/cmdline; cat /workspace/f; ls /workspace; df -k /workspace | awk "NR==2 {print \$2}"'
	expect_contains "a clone" "agentvm.template=1" "$(sed -n 1p "$out")"
	expect_eq "second image" "two" "$(sed -n 2p "$out")"
	case "$(cat "$out")" in *leak*) fail "the first run's write reached the second" ;; esac
	# The size is the second image's (24M), not the first's or the placeholder's.
	sz=$(sed -n '$p' "$out")
	[ "$sz" -gt 18000 ] || fail "the guest sees a ${sz} KiB disk, not the 24 MiB image"
	iso_run --disk "$tmp_root/one.ext4:/data:ro" -- sh -c 'cat /data/f; ls /data; touch /data/x 2>/dev/null && echo writable'
	expect_eq "read-only, first image again, no leak" "one
f
lost+found" "$(cat "$out")"
}

# 9p shares (--share): the template has empty placeholders its guest never mounted; each clone
# exports and mounts the run's own directory. Two runs in a row see only their own files.
t_shares_in_a_row() {
	fresh_cache
	rm -rf "$tmp_root/s1" "$tmp_root/s2"
	mkdir -p "$tmp_root/s1" "$tmp_root/s2"
	echo one >"$tmp_root/s1/f1"
	echo two >"$tmp_root/s2/f2"
	iso_run --share "$tmp_root/s1:/data" -- sh -c 'cat /proc/cmdline; ls /data; echo w1 >/data/w1'
	expect_eq "first share run" 0 "$rc"
	expect_contains "restored from the template it built" "agentvm.template=1" "$(sed -n 1p "$out")"
	expect_eq "the first run sees its files" "f1" "$(sed -n 2p "$out")"
	iso_run --share "$tmp_root/s2:/data" -- sh -c 'cat /proc/cmdline; ls /data; echo w2 >/data/w2'
	expect_contains "a clone" "agentvm.template=1" "$(sed -n 1p "$out")"
	expect_eq "the second run sees only its own files" "f2" "$(sed -n '2,$p' "$out")"
	expect_eq "the first run's dir on the host" "f1 w1" "$(ls "$tmp_root/s1" | tr '\n' ' ' | sed 's/ $//')"
	expect_eq "the second run's dir on the host" "f2 w2" "$(ls "$tmp_root/s2" | tr '\n' ' ' | sed 's/ $//')"
	expect_eq "the write of the second run" "w2" "$(cat "$tmp_root/s2/w2" 2>/dev/null)"
	expect_eq "one template" 1 "$(ntemplates)"
	expect_contains "cache ls shows the share" "shares=rw" "$(avm cache ls)"
	expect_eq "no placeholder left in the template" "" "$(ls -d "$(tdir)/$(only_key)"/share* 2>/dev/null)"
	# Read-only is the clone's QEMU's readonly=on: the guest's root cannot write either.
	iso_run --share "$tmp_root/s1:/data:ro" -- sh -c 'cat /proc/cmdline; ls /data; touch /data/x 2>/dev/null && echo writable; mount -o remount,rw /data 2>/dev/null; touch /data/y 2>/dev/null && echo writable-after-remount; true'
	expect_contains "ro: a clone" "agentvm.template=1" "$(sed -n 1p "$out")"
	expect_eq "ro: its files, no write" "f1
w1" "$(sed -n '2,$p' "$out")"
	expect_eq "ro: nothing written on the host" "f1 w1" "$(ls "$tmp_root/s1" | tr '\n' ' ' | sed 's/ $//')"
	expect_eq "ro is another shape" 2 "$(ntemplates)"
}

# The product's workflow from a template: --workspace (input ro, output and work rw).
t_workspace_from_template() {
	fresh_cache
	rm -rf "$tmp_root/ws"
	mkdir -p "$tmp_root/ws/input"
	echo "the task" >"$tmp_root/ws/input/task.txt"
	iso_run --workspace "$tmp_root/ws" -- true
	expect_eq "the first workspace run" 0 "$rc"
	iso_run --workspace "$tmp_root/ws" -- sh -c 'grep -o agentvm.template=1 /proc/cmdline; cat /workspace/input/task.txt > /workspace/output/result.txt'
	expect_eq "exit code" 0 "$rc"
	expect_eq "a clone" "agentvm.template=1" "$(cat "$out")"
	expect_eq "result on the host" "the task" "$(cat "$tmp_root/ws/output/result.txt" 2>/dev/null)"
	expect_contains "cache ls" "shares=ro,rw,rw" "$(avm cache ls)"
	expect_eq "one template" 1 "$(ntemplates)"
	# A writable share makes QEMU run as its owner: a clone's writes are that user's too.
	if [ "$(id -u)" != 0 ]; then
		skip "not root: QEMU runs as the caller"
		return
	fi
	rm -rf "$tmp_root/nb"
	mkdir -p "$tmp_root/nb"
	chown 65534:65534 "$tmp_root/nb"
	for i in 1 2; do
		iso_run --share "$tmp_root/nb:/data" -- sh -c "cat /proc/cmdline; echo x >/data/f$i"
		expect_eq "run $i in another user's share" 0 "$rc"
	done
	expect_contains "a clone" "agentvm.template=1" "$(sed -n 1p "$out")"
	expect_eq "the clone's file is the share owner's" "65534" "$(stat -c %u "$tmp_root/nb/f2" 2>/dev/null)"
	expect_contains "one template per owner" "owner=65534" "$(avm cache ls)"
	rm -rf "$tmp_root/nb"
}

# The root image is a disk too: the template is taken before any root is mounted.
t_two_root_images_in_a_row() {
	if [ ! -e "$STORE/names/base" ] || [ ! -e "$STORE/names/agent" ]; then
		skip "no base and agent images in $STORE (make rootfs)"
		return
	fi
	mkdir -p "$AGENTVM_CACHE_DIR"
	[ -e "$AGENTVM_CACHE_DIR/images" ] || ln -s "$STORE" "$AGENTVM_CACHE_DIR/images"
	iso_run --image agent -- sh -c 'command -v node; echo agent-only >/root/mark'
	expect_eq "agent image" "/usr/bin/node" "$(sed -n 1p "$out")"
	iso_run --image base -- sh -c 'cat /proc/cmdline; command -v node || echo no-node; cat /root/mark 2>/dev/null || echo no-mark; hostname'
	expect_contains "a clone" "agentvm.template=1" "$(sed -n 1p "$out")"
	expect_eq "base has no node" "no-node" "$(sed -n 2p "$out")"
	expect_eq "nothing of the agent run" "no-mark" "$(sed -n 3p "$out")"
	rm -f "$AGENTVM_CACHE_DIR/images"
}

t_start_restores_a_template() {
	iso_run -- true
	name=$(avm start --accel tcg --network isolated --name tpl 2>"$tmp_root/err")
	expect_eq "start" "tpl" "$name"
	expect_contains "a clone" "agentvm.template=1" "$(avm exec tpl -- cat /proc/cmdline)"
	expect_eq "hostname" "tpl" "$(avm exec tpl -- hostname)"
	avm rm --force tpl >/dev/null || fail "rm"
	name=$(avm start --accel tcg --network isolated --cold --name tplc 2>"$tmp_root/err")
	case "$(avm exec tplc -- cat /proc/cmdline)" in *agentvm.template*) fail "start --cold restored" ;; esac
	avm rm --force tplc >/dev/null || fail "rm"
}

# A damaged template is never used and never fatal: one warning, a cold boot, rebuilt later.
damaged_case() { # what to do to the template dir ($1 = its path)
	fresh_cache
	iso_run -- true
	k=$(only_key)
	"$@" "$(tdir)/$k"
	iso_run -- sh -c 'cat /proc/cmdline; exit 3'
	expect_eq "exit code kept" 3 "$rc"
	expect_eq "one warning line" 1 "$(grep -c 'boot template' "$err")"
	expect_contains "warning names it" "$k" "$(cat "$err")"
	case "$(cat "$out")" in *agentvm.template*) fail "a damaged template was used" ;; esac
	[ ! -e "$(tdir)/$k" ] || fail "the damaged template was kept"
	iso_run -- cat /proc/cmdline
	expect_eq "rebuilt" 1 "$(ntemplates)"
	expect_eq "no warning once rebuilt" "" "$(cat "$err")"
}
truncate_mem() { truncate -s 1M "$1/mem"; }
corrupt_devstate() { printf 'XXXXXXXX' | dd of="$1/devstate" bs=1 seek=200 conv=notrunc 2>/dev/null; }
foreign_meta() { sed -i 's/format 1\\nagentvm build [0-9a-f]*/format 1\\nagentvm build 00/' "$1/meta.json"; }
garbage_meta() { echo '{"format":' >"$1/meta.json"; }
t_damaged_templates() {
	for what in truncate_mem corrupt_devstate foreign_meta garbage_meta; do
		echo "    $what"
		damaged_case $what
	done
}

# Two first runs at once: one builds, the other boots cold; one template, both succeed.
t_two_first_runs_at_once() {
	fresh_cache
	"$AVM" run --accel tcg --network isolated -- echo a >"$tmp_root/o1" 2>"$tmp_root/e1" &
	p1=$!
	"$AVM" run --accel tcg --network isolated -- echo b >"$tmp_root/o2" 2>"$tmp_root/e2" &
	p2=$!
	wait $p1
	r1=$?
	wait $p2
	r2=$?
	expect_eq "run 1" "0 a" "$r1 $(cat "$tmp_root/o1")"
	expect_eq "run 2" "0 b" "$r2 $(cat "$tmp_root/o2")"
	expect_eq "no warnings" "" "$(cat "$tmp_root/e1" "$tmp_root/e2")"
	expect_eq "one template" 1 "$(ntemplates)"
	expect_eq "no build leftovers" "" "$(ls -A "$(tdir)" | grep '^\.tmp-')"
}

# A full disk while saving: no partial template, and the run succeeds.
t_full_disk_while_saving() {
	if [ "$(id -u)" != 0 ]; then
		skip "needs root for a small tmpfs"
		return
	fi
	small=$tmp_root/small
	mkdir -p "$small"
	unshare -m sh -c 'mount -t tmpfs -o size=6m,mode=0700 tmpfs "$1" && shift &&
		AGENTVM_CACHE_DIR="$0" "$@"' "$small" "$small" "$AVM" run --accel tcg --network isolated -- echo fine \
		>"$tmp_root/out" 2>"$tmp_root/err"
	rc=$?
	expect_eq "run succeeds" "0 fine" "$rc $(cat "$tmp_root/out")"
	expect_eq "one warning line" 1 "$(grep -c 'boot template' "$tmp_root/err")"
	expect_eq "no template and no partial one" "" \
		"$(ls -A "$small/templates" 2>/dev/null | grep -v '^\.[0-9a-f]*\.build$')"
}

t_cache_rm_and_gc() {
	fresh_cache
	iso_run -- true
	iso_run --memory 256 -- true
	expect_eq "two shapes" 2 "$(ntemplates)"
	k=$(only_key)
	avm cache rm "$k" || fail "cache rm KEY"
	expect_eq "one left" 1 "$(ntemplates)"
	avm cache rm "$k" 2>"$tmp_root/err"
	expect_eq "rm of a missing key" 125 $?
	avm cache rm nothex 2>"$tmp_root/err"
	expect_eq "rm of a bad key" 125 $?
	expect_contains "says how" "cache ls" "$(cat "$tmp_root/err")"
	# gc: unused for longer than the max age.
	touch -d '30 days ago' "$(tdir)/$(only_key)/used"
	expect_contains "gc" "removed 1 boot template" "$(avm gc)"
	expect_eq "gc removed it" 0 "$(ntemplates)"
	iso_run -- true
	avm cache rm --all || fail "cache rm --all"
	expect_eq "all gone" 0 "$(ntemplates)"
}

filter=${1:-}
for t in t_first_builds_then_restores t_cold_flag_and_env t_clones_do_not_share_identity \
	t_clone_etc_files t_two_disk_images_in_a_row t_shares_in_a_row t_workspace_from_template \
	t_two_root_images_in_a_row t_start_restores_a_template \
	t_damaged_templates t_two_first_runs_at_once t_full_disk_while_saving t_cache_rm_and_gc; do
	case "$t" in *"$filter"*) run_test "$t" ;; esac
done
summary
