#!/bin/sh
# agentvm-test: host-network (mmdebstrap fetches from the Debian mirror: run.sh runs this script
# outside its private network namespace; it starts no VM and makes no tap or rule)
#
# Integration tests for the image store: build (with --packages, --file, --run, --ca-cert),
# an up-to-date rebuild, concurrent builds of one name, import of an OCI layout / OCI archive /
# docker save tarball made here (a static binary, a whiteout, a setuid file, owners, the
# config's Env/WorkingDir/User), ls, inspect (--verify), rm (refused while a VM uses it), and
# every error: a missing image, a half-built one, a full disk, a damaged image, a package or
# npm package that does not exist. One small image is built once and reused.
set -u
here=$(cd "$(dirname "$0")" && pwd)
HOST_NETWORK=1
. "$here/lib.sh"
. "$here/oci.sh"

avm() { "$AVM" "$@"; }
STORE=$AGENTVM_CACHE_DIR/images

if [ "$(id -u)" != 0 ]; then
	echo "  SKIP all: image builds need root (mmdebstrap root mode, umoci)"
	exit 0
fi
if ! timeout 10 sh -c 'exec 3<>/dev/tcp/deb.debian.org/80' 2>/dev/null &&
	! getent hosts deb.debian.org >/dev/null 2>&1; then
	echo "  SKIP all: the Debian mirror is not reachable"
	exit 0
fi

# The smallest recipe: minbase + ca-certificates (for --ca-cert), a file and a command.
R=$tmp_root/recipe
mkdir -p "$R"
cat >"$R/tiny" <<'EOF'
# a test recipe: Debian minbase and little else
suite bookworm
packages ca-certificates
env PATH=/usr/local/bin:/usr/bin:/bin
env HOME=/root
env LANG=C.UTF-8
workdir /root
user 0:0
EOF
echo "hello from a file" >"$R/hello.txt"
# A CA of our own, as a TLS-intercepting proxy would have.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$R/ca.key" -out "$R/ca.crt" -days 2 \
	-subj "/CN=agentvm test CA $$" >/dev/null 2>&1 || { echo "openssl failed"; exit 1; }

# debugfs cat/stat of a path in an image, without mounting it.
dfs() { debugfs -R "$1" "$2" 2>/dev/null; }
image_path() { avm image inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])'; }
no_work_dirs() {
	left=$(ls -A "$STORE" 2>/dev/null | grep '^\.build-' || true)
	[ -z "$left" ] || fail "work dirs left behind: $left"
}

t_build() {
	avm image build tiny --from "$R/tiny" --file "$R/hello.txt:/opt/hello.txt" \
		--run 'echo ran >/opt/ran' --ca-cert "$R/ca.crt" --size 400M >"$tmp_root/id" 2>"$tmp_root/err"
	rc=$?
	expect_eq "build exit code ($(tail -3 "$tmp_root/err"))" 0 "$rc"
	ID=$(cat "$tmp_root/id")
	printf %s "$ID" | grep -qE '^[0-9a-f]{64}$' || fail "build printed '$ID', not an id"
	expect_contains "progress lines" "image: mkfs.ext4" "$(cat "$tmp_root/err")"
	IMG=$STORE/$ID/rootfs.ext4
	expect_eq "id is the sha256 of rootfs.ext4" "$ID" "$(sha256sum "$IMG" | cut -c1-64)"
	expect_eq "names/tiny" "$ID" "$(cat "$STORE/names/tiny")"
	expect_eq "image read-only" "-r--r--r--" "$(stat -c %A "$IMG")"
	expect_eq "--file" "hello from a file" "$(dfs 'cat /opt/hello.txt' "$IMG")"
	expect_eq "--run ran in the chroot" "ran" "$(dfs 'cat /opt/ran' "$IMG")"
	expect_contains "--ca-cert in the trust store" "$(sed -n 2p "$R/ca.crt")" \
		"$(dfs 'cat /etc/ssl/certs/ca-certificates.crt' "$IMG")"
	expect_eq "/etc/agentvm/env" "PATH=/usr/local/bin:/usr/bin:/bin
HOME=/root
LANG=C.UTF-8" "$(dfs 'cat /etc/agentvm/env' "$IMG")"
	expect_eq "/etc/agentvm/exec" "workdir=/root
user=0:0" "$(dfs 'cat /etc/agentvm/exec' "$IMG")"
	expect_eq "docs excluded, copyright kept" "copyright" \
		"$(dfs 'ls -p /usr/share/doc/bash' "$IMG" | awk -F/ 'NF > 5 && $6 != "." && $6 != ".." {print $6}')"
	expect_eq "--size" $((400 * 1048576)) "$(stat -c %s "$IMG")"
	# Sparse: far fewer blocks allocated than the file's size.
	alloc=$(($(stat -c %b "$IMG") * 512))
	size=$(stat -c %s "$IMG")
	[ "$alloc" -lt "$size" ] || fail "image is not sparse ($alloc of $size bytes allocated)"
	e2fsck -fn "$IMG" >/dev/null 2>&1 || fail "e2fsck finds errors"
	no_work_dirs
}

t_up_to_date() {
	avm image build tiny --from "$R/tiny" --file "$R/hello.txt:/opt/hello.txt" \
		--run 'echo ran >/opt/ran' --ca-cert "$R/ca.crt" --size 400M >"$tmp_root/id2" 2>"$tmp_root/err"
	expect_eq "exit code" 0 "$?"
	expect_eq "same id" "$ID" "$(cat "$tmp_root/id2")"
	expect_contains "skipped" "tiny is up to date" "$(cat "$tmp_root/err")"
}

t_concurrent_builds_wait() {
	# Another build of tiny holds the lock: this one waits, then finds tiny up to date.
	flock "$STORE/.locks/tiny" sleep 3 &
	holder=$!
	sleep 0.5
	avm image build tiny --from "$R/tiny" --file "$R/hello.txt:/opt/hello.txt" \
		--run 'echo ran >/opt/ran' --ca-cert "$R/ca.crt" --size 400M >"$tmp_root/id2" 2>"$tmp_root/err"
	expect_eq "exit code" 0 "$?"
	wait $holder
	expect_contains "waited" "waiting for another build of tiny" "$(cat "$tmp_root/err")"
	expect_eq "same id" "$ID" "$(cat "$tmp_root/id2")"
}

t_ls_inspect() {
	out=$(avm image ls)
	expect_contains "ls lists tiny" "tiny" "$out"
	expect_contains "ls shows the short id" "$(echo "$ID" | cut -c1-12)" "$out"
	n=$(avm image ls --json | python3 -c 'import json,sys; a=json.load(sys.stdin); print(len([e for e in a if e["name"]=="tiny" and e["id"]=="'"$ID"'" and e["size"]>0 and e["problem"] is None]))')
	expect_eq "ls --json" 1 "$n"
	meta=$(avm image inspect tiny)
	expect_eq "inspect: meta fields" "tiny $ID True True True" "$(echo "$meta" | python3 -c '
import json,sys; m=json.load(sys.stdin)
print(m["name"], m["id"], "ca-certificates" in m["packages"], m["size"] > m["allocated"] > 0,
      m["created"].endswith("Z") and m["env"][0].startswith("PATH="))')"
	# By a 12-digit prefix and by the full id, too.
	expect_eq "inspect by prefix" "$ID" "$(avm image inspect "$(echo "$ID" | cut -c1-12)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
	avm image inspect --verify "$ID" >/dev/null
	expect_eq "inspect --verify" 0 "$?"
}

t_missing_image() {
	avm image inspect nosuch >/dev/null 2>"$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_eq "message" "agentvm: image nosuch not found; build it with 'agentvm image build nosuch' (see agentvm image ls)" "$(cat "$tmp_root/err")"
	avm image rm nosuch 2>"$tmp_root/err"
	expect_eq "rm exit code" 1 "$?"
	avm image build 'bad/name' 2>"$tmp_root/err"
	expect_eq "bad name: usage" 125 "$?"
}

t_not_root() {
	command -v setpriv >/dev/null || { skip "no setpriv"; return; }
	# A user of its own dirs (root's test dirs are refused to others before anything else).
	nr=$(mktemp -d /tmp/avm-nr.XXXXXX)
	chown 65534:65534 "$nr"
	setpriv --reuid 65534 --regid 65534 --clear-groups env AGENTVM_STATE_DIR="$nr/state" \
		AGENTVM_CACHE_DIR="$nr/cache" AGENTVM_SNAPSHOT_DIR="$nr/snaps" \
		AGENTVM_LOG_DIR="$nr/log" "$AVM" image build x \
		>/dev/null 2>"$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_contains "message" "needs root" "$(cat "$tmp_root/err")"
	rm -rf "$nr"
}

t_unknown_package() {
	avm image build badpkg --from "$R/tiny" --packages agentvm-no-such-package-$$ \
		>/dev/null 2>"$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_eq "one line" 1 "$(grep -c '^agentvm:' "$tmp_root/err")"
	expect_contains "names the package" "package agentvm-no-such-package-$$ not found in bookworm" "$(cat "$tmp_root/err")"
	[ ! -e "$STORE/names/badpkg" ] || fail "a name was made for a failed build"
	no_work_dirs
}

t_unknown_npm_package() {
	command -v npm >/dev/null || { skip "no npm on the host"; return; }
	avm image build badnpm --from "$R/tiny" --npm "@agentvm-test-$$/no-such-package" \
		>/dev/null 2>"$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_contains "names the package" "npm package @agentvm-test-$$/no-such-package not found" "$(cat "$tmp_root/err")"
	[ ! -e "$STORE/names/badnpm" ] || fail "a name was made for a failed build"
	no_work_dirs
}

t_bad_flags() {
	avm image build x --from "$R/tiny" --file "/nonexistent-$$:/x" 2>"$tmp_root/err"
	expect_eq "missing --file: usage" 1 "$?"
	expect_contains "message" "is not a regular file" "$(cat "$tmp_root/err")"
	avm image build x --from "$R/tiny" --ca-cert "$R/hello.txt" 2>"$tmp_root/err"
	expect_eq "not a PEM: usage" 125 "$?"
	avm image build x --from nosuchrecipe 2>"$tmp_root/err"
	expect_contains "unknown recipe" "recipe 'nosuchrecipe' not found" "$(cat "$tmp_root/err")"
	avm image build x --from "$R/tiny" --size 12X 2>"$tmp_root/err" >/dev/null
	expect_contains "bad --size" "bad size '12X'" "$(cat "$tmp_root/err")"
	[ ! -e "$STORE/names/x" ] || fail "a name was made for a failed build"
	no_work_dirs
}

t_full_disk() {
	# The store on a 40 MiB tmpfs in a mount namespace of our own: minbase does not fit.
	# apt-get update once hung for good (all its methods idle, no connection) when its lists
	# filled the disk: a build stalled for 3 minutes is killed (which ends its whole builder)
	# and tried once more, so one apt hang does not hang the suite.
	unshare -m sh -c '
		mount --make-rprivate / && mkdir -p "$1" && mount -t tmpfs -o size=40m,mode=0700 tmpfs "$1" || exit 99
		for try in 1 2; do
			AGENTVM_CACHE_DIR=$1 timeout -s KILL 180 "$2" image build full --from "$3" >/dev/null 2>"$4"
			rc=$?
			[ $rc -ne 137 ] && break
			echo "    the build stalled for 180 s (apt hung); killed, once more"
		done
		ls -A "$1/images" >"$4.left"; exit $rc' sh "$tmp_root/small" "$AVM" "$R/tiny" "$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_contains "one line with the fix" "filled up during the build of full; free space there" "$(cat "$tmp_root/err")"
	expect_eq "nothing left but the lock dir" ".locks" "$(tr '\n' ' ' <"$tmp_root/err.left" | sed 's/ $//')"
}

# Start a build of NAME in the background; wait until its builder (mmdebstrap) is at work.
# Sets pid (agentvm) once the builder has started mmdebstrap.
start_build() {
	"$AVM" image build "$1" --from "$R/tiny" >/dev/null 2>"$tmp_root/err.$1" &
	pid=$!
	i=0
	until grep -q '^I: ' "$STORE"/.build-"$1"-*/build.log 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 1200 ] && { fail "the build never started mmdebstrap"; break; }
		sleep 0.1
	done
}

t_half_built_and_interrupted() {
	# A build killed outright (agentvm alone, with SIGKILL) takes its whole builder with it
	# (mmdebstrap and apt used to go on writing into the work dir) and leaves its work dir:
	# the name reads as half-built, and rm cleans up.
	start_build half
	sleep 3
	work=$(ls -d "$STORE"/.build-half-* 2>/dev/null | head -1)
	[ -n "$work" ] || { fail "no work dir"; return; }
	kill -9 $pid
	wait $pid 2>/dev/null
	i=0
	while pgrep -f "$work" >/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	expect_eq "builder processes left after a SIGKILL of agentvm" "" "$(pgrep -f "$work")"
	pkill -9 -f "$work"
	expect_eq "builder mounts on the host" 0 "$(grep -c "$STORE" /proc/self/mountinfo)"
	[ -n "$(ls -d "$STORE"/.build-half-* 2>/dev/null)" ] || fail "no work dir was left"
	avm image inspect half >/dev/null 2>"$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_contains "half-built" "image half is half-built" "$(cat "$tmp_root/err")"
	expect_contains "the fix" "agentvm image rm half" "$(cat "$tmp_root/err")"
	avm image rm half
	expect_eq "rm exit code" 0 "$?"
	no_work_dirs
	expect_eq "no mounts left" 0 "$(grep -c "$STORE" /proc/self/mountinfo)"

	# Interrupted (SIGINT, as Ctrl-C): agentvm stops its builder and removes the work dir.
	start_build half
	sleep 2
	kill -INT $pid
	wait $pid
	expect_eq "interrupted exit code" 130 "$?"
	expect_contains "message" "build of half interrupted" "$(cat "$tmp_root/err.half")"
	no_work_dirs
	expect_eq "no mounts left" 0 "$(grep -c "$STORE" /proc/self/mountinfo)"
	[ ! -e "$STORE/names/half" ] || fail "an interrupted build got a name"
}

# The OCI image of oci.sh (make_oci): a static busybox, a setuid copy, a file the second layer
# deletes with a whiteout, a file owned by 1000:1000, a user "app" in /etc/passwd.
check_imported() { # name what
	img=$(image_path "$1")
	expect_eq "$2: binary intact" "ok" "$(debugfs -R 'dump /bin/busybox /dev/stdout' "$img" 2>/dev/null | cmp -s - /bin/busybox && echo ok)"
	expect_contains "$2: setuid kept" "Mode:  04755" "$(dfs 'stat /usr/bin/suid' "$img")"
	expect_contains "$2: whiteout applied" "File not found" "$(debugfs -R 'stat /opt/gone.txt' "$img" 2>&1)"
	expect_contains "$2: owner kept" "User:  1000   Group:  1000" "$(dfs 'stat /opt/new.txt' "$img")"
	expect_eq "$2: env" "PATH=/bin:/usr/bin
FOO=bar baz
HOME=/home/app" "$(dfs 'cat /etc/agentvm/env' "$img")"
	expect_eq "$2: exec" "workdir=/opt
user=1000:1000" "$(dfs 'cat /etc/agentvm/exec' "$img")"
	expect_eq "$2: meta source" "app" "$(avm image inspect "$1" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["oci_user"] if m["source"] else "")')"
}

t_import_layout() {
	make_oci "$tmp_root/oci"
	avm image import imp "$tmp_root/oci/layout" >/dev/null 2>"$tmp_root/err"
	expect_eq "exit code ($(tail -2 "$tmp_root/err"))" 0 "$?"
	check_imported imp "OCI layout"
	no_work_dirs
}

t_import_archives() {
	tar -C "$tmp_root/oci/layout" -cf "$tmp_root/oci.tar" .
	avm image import imp-archive "$tmp_root/oci.tar" >/dev/null 2>"$tmp_root/err"
	expect_eq "OCI archive exit code ($(tail -2 "$tmp_root/err"))" 0 "$?"
	check_imported imp-archive "OCI archive"
	skopeo copy --quiet "oci:$tmp_root/oci/layout:latest" "docker-archive:$tmp_root/docker.tar:test/img:1" ||
		{ fail "skopeo could not make a docker save tarball"; return; }
	avm image import imp-docker "$tmp_root/docker.tar" >/dev/null 2>"$tmp_root/err"
	expect_eq "docker save exit code ($(tail -2 "$tmp_root/err"))" 0 "$?"
	check_imported imp-docker "docker save tarball"
	avm image import nothing "$tmp_root/no-such-$$.tar" >/dev/null 2>"$tmp_root/err"
	expect_eq "missing source exit code" 125 "$?"
	expect_contains "missing source message" "no-such-$$.tar not found" "$(cat "$tmp_root/err")"
	[ ! -e "$STORE/names/nothing" ] || fail "a failed import got a name"
	no_work_dirs
}

t_damaged() {
	img=$(image_path imp-docker)
	id=$(basename "$(dirname "$img")")
	chmod u+w "$img"
	# Same size, other bytes: only --verify sees it.
	printf 'X' | dd of="$img" bs=1 seek=2000000 conv=notrunc 2>/dev/null
	avm image inspect imp-docker >/dev/null
	expect_eq "cheap check passes" 0 "$?"
	avm image inspect --verify imp-docker >/dev/null 2>"$tmp_root/err"
	expect_eq "verify exit code" 1 "$?"
	expect_contains "verify message" "image imp-docker is damaged (rootfs.ext4 hashes to" "$(cat "$tmp_root/err")"
	# Another size: every resolve sees it.
	truncate -s +4096 "$img"
	avm image inspect imp-docker >/dev/null 2>"$tmp_root/err"
	expect_eq "exit code" 1 "$?"
	expect_contains "message" "is damaged (rootfs.ext4's size differs from meta.json's); remove it with 'agentvm image rm --force imp-docker'" "$(cat "$tmp_root/err")"
	avm image rm imp-docker
	expect_eq "rm of a damaged image" 0 "$?"
	[ ! -e "$STORE/$id" ] || fail "damaged image dir left"
}

t_rm() {
	id=$(cat "$STORE/names/imp")
	# A VM (its spec.json) uses the image: rm refuses, --force removes.
	mkdir -p "$AGENTVM_STATE_DIR/vm-img-$$"
	printf '{"image":{"name":"imp","id":"%s"}}\n' "$id" >"$AGENTVM_STATE_DIR/vm-img-$$/spec.json"
	avm image rm imp 2>"$tmp_root/err"
	expect_eq "refused exit code" 1 "$?"
	expect_contains "names the VM" "image imp is in use by vm vm-img-$$" "$(cat "$tmp_root/err")"
	[ -e "$STORE/$id/rootfs.ext4" ] || fail "refused rm removed the image"
	avm image rm --force imp
	expect_eq "--force exit code" 0 "$?"
	rm -rf "${AGENTVM_STATE_DIR:?}/vm-img-$$"
	[ ! -e "$STORE/$id" ] || fail "image dir left after rm"
	[ ! -e "$STORE/names/imp" ] || fail "name left after rm"
	left=""
	for n in imp-archive tiny; do [ -e "$STORE/names/$n" ] && left="$left $n"; done
	# shellcheck disable=SC2086
	avm image rm $left
	expect_eq "rm of the rest" 0 "$?"
	expect_eq "store empty" "" "$(avm image ls --json | python3 -c 'import json,sys; print(" ".join(e["id"] for e in json.load(sys.stdin)))')"
}

echo "image store tests (a small Debian build first: a minute or two)"
# ONLY="t_a t_b" runs just those (the import tests need no Debian build).
for t in t_build t_up_to_date t_concurrent_builds_wait t_ls_inspect t_missing_image t_bad_flags t_not_root t_unknown_package t_unknown_npm_package t_full_disk t_half_built_and_interrupted t_import_layout t_import_archives t_damaged t_rm; do
	case " ${ONLY:-$t} " in *" $t "*) run_test "$t" ;; esac
done
summary
