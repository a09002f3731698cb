#!/bin/sh
# Integration tests for root images (--image): guest-init switches root into a Debian image on a
# per-VM copy-on-write overlay; the image is never written; commands get the image's
# environment; workspace disks, detached VMs and snapshots work on top; bad images fail clearly.
#
# The images come from the image store the build made (make rootfs: base and agent), read
# through a link from this run's own cache dir. AVM_TEST_IMAGE picks the image (default agent).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/netns.sh"
. "$here/oci.sh"
trap 'net_down; cleanup_all' EXIT
trap 'exit 130' INT TERM

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"
IMAGE=${AVM_TEST_IMAGE:-agent}
STORE=${AVM_IMAGE_CACHE:-/var/cache/agentvm}/images
mkdir -p "$AGENTVM_CACHE_DIR"
ln -s "$STORE" "$AGENTVM_CACHE_DIR/images"
avm() { "$AVM" "$@"; }
NET="--network isolated"
rm_all() {
	for n in "$@"; do avm rm --force "$n" >/dev/null 2>&1; done
}
need_image() {
	if ! avm image inspect "$IMAGE" >/dev/null 2>&1 && [ ! -e "$STORE/names/$IMAGE" ]; then
		skip "image '$IMAGE' is not built (make rootfs)"
		return 1
	fi
}
rootfs_of() { # the image file of $IMAGE
	echo "$STORE/$(cat "$STORE/names/$IMAGE")/rootfs.ext4"
}

t_userland() {
	need_image || return
	# shellcheck disable=SC2086
	avm_run $NET --image "$IMAGE" -- sh -c '
		. /etc/os-release; echo "os=$ID-$VERSION_CODENAME"
		python3 -c "import ssl, sqlite3, json; print(\"py\", 6 * 7)"
		git --version | cut -d" " -f1-2
		echo "path=$PATH"; echo "home=$HOME"; echo "lang=$LANG"; echo "pwd=$(pwd)"
		for m in /proc /dev/pts /dev/shm /tmp /run; do
			awk -v m=$m "\$2 == m {print m, \$3}" /proc/mounts
		done
		awk "\$2 == \"/\" {print \"root\", \$3}" /proc/mounts
		getent hosts "$(hostname)" >/dev/null && echo hostname-resolves
		grep -q "^00000000000000000000000000000001 " /proc/net/if_inet6 && echo lo-has-ipv6
		test -e /bin/busybox || echo no-initramfs-busybox'
	expect_eq "exit code" 0 "$rc"
	expect_eq "the image's userland and environment" "os=debian-bookworm
py 42
git version
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
home=/root
lang=C.UTF-8
pwd=/root
/proc proc
/dev/pts devpts
/dev/shm tmpfs
/tmp tmpfs
/run tmpfs
root ext4
hostname-resolves
lo-has-ipv6
no-initramfs-busybox" "$(cat "$out")"
	[ -s "$err" ] && [ -n "$(grep -v TCG "$err")" ] && fail "stderr: $(cat "$err")"
	return 0
}

t_kernel_features() {
	need_image || return
	# shellcheck disable=SC2086
	avm_run $NET --image "$IMAGE" -- python3 -c "$(cat "$here/kernel_probe.py")"
	expect_eq "exit code (stderr: $(cat "$err"))" 0 "$rc"
	grep -q ' ok$' "$out" || fail "no probe ran: $(cat "$out")"
	if grep -q FAIL "$out"; then
		fail "kernel features missing: $(grep FAIL "$out" | tr '\n' ';')"
	fi
	echo "    $(grep -c ' ok$' "$out") kernel features probed, all present"
}

t_node() {
	need_image || return
	command -v node >/dev/null || true
	# shellcheck disable=SC2086
	avm_run $NET --image "$IMAGE" -- node -e 'const c = require("crypto"); console.log("node", process.version.split(".")[0], c.createHash("sha256").update("x").digest("hex").slice(0, 8))'
	if [ "$rc" = 127 ]; then
		skip "no node in image '$IMAGE'"
		return
	fi
	expect_eq "exit code" 0 "$rc"
	expect_eq "node runs" "node v18 2d711642" "$(cat "$out")"
}

t_agent_clis() {
	need_image || return
	# shellcheck disable=SC2086
	avm_run $NET --image "$IMAGE" --memory 1024 -- sh -c 'command -v claude >/dev/null || exit 99; claude --version; copilot --version'
	if [ "$rc" = 99 ]; then
		skip "no agent CLIs in image '$IMAGE'"
		return
	fi
	expect_eq "exit code (stderr: $(cat "$err"))" 0 "$rc"
	expect_contains "claude prints its version" "Claude Code" "$(cat "$out")"
	grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+' "$out" || fail "no version number printed: $(cat "$out")"
	echo "    $(tr '\n' ' ' <"$out")"
}

t_overlay_is_private() {
	need_image || return
	f=$(rootfs_of)
	before=$(stat -c '%s %Y %i' "$f")
	sum=$(sha256sum "$f" | cut -c1-64)
	# shellcheck disable=SC2086
	avm_run $NET --image "$IMAGE" -- sh -c 'echo mine >/etc/marker && rm -rf /usr/share/doc && sync && cat /etc/marker'
	expect_eq "a VM writes its root" "mine" "$(cat "$out")"
	# shellcheck disable=SC2086
	avm_run $NET --image "$IMAGE" -- sh -c 'test -e /etc/marker && echo leaked || echo clean'
	expect_eq "the next VM does not see it" "clean" "$(cat "$out")"
	expect_eq "image file untouched" "$before" "$(stat -c '%s %Y %i' "$f")"
	expect_eq "image content untouched" "$sum" "$(sha256sum "$f" | cut -c1-64)"
}

t_image_and_workspace_disk() {
	need_image || return
	mkdir -p "$tmp_root/ws"
	echo "workspace file" >"$tmp_root/ws/input.txt"
	mkfs.ext4 -q -F -d "$tmp_root/ws" "$tmp_root/ws.ext4" 16M >/dev/null 2>&1 || { fail "mkfs"; return; }
	# shellcheck disable=SC2086
	avm_run $NET --disk "$tmp_root/ws.ext4" --image "$IMAGE" -- sh -c 'cat /workspace/input.txt; python3 -c "print(open(\"/workspace/input.txt\").read().strip().upper())"'
	expect_eq "exit code" 0 "$rc"
	expect_eq "the disk is mounted inside the image" "workspace file
WORKSPACE FILE" "$(cat "$out")"
	rm -rf "$tmp_root/ws" "$tmp_root/ws.ext4"
}

t_detached_snapshot_restore() {
	need_image || return
	# shellcheck disable=SC2086
	avm start --accel tcg --name ri $NET --image "$IMAGE" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec ri -- sh -c 'echo state-before-save >/root/note' || fail "exec"
	expect_eq "spec records the image" "$IMAGE" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["name"])' "$AGENTVM_STATE_DIR/ri/spec.json")"
	avm snapshot save ri risnap 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	avm exec ri -- sh -c 'echo after >/root/note' || fail "exec 2"
	avm restore risnap --name ric >/dev/null 2>"$tmp_root/err" || fail "restore: $(cat "$tmp_root/err")"
	expect_eq "the clone has the root's state at the save" "state-before-save" "$(avm exec ric -- cat /root/note 2>&1)"
	expect_eq "the clone runs in the image" "bookworm" "$(avm exec ric -- sh -c '. /etc/os-release; echo $VERSION_CODENAME' 2>&1)"
	expect_eq "the source VM kept its own" "after" "$(avm exec ri -- cat /root/note 2>&1)"
	rm_all ric ri
	avm snapshot rm risnap 2>/dev/null || fail "snapshot rm"
}

t_missing_image() {
	# shellcheck disable=SC2086
	avm_run $NET --image no-such-image -- true
	expect_eq "exit code" 125 "$rc"
	expect_eq "one line" 1 "$(wc -l <"$err")"
	expect_contains "names the fix" "agentvm image build" "$(cat "$err")"
	avm start --accel tcg --name nim $NET --image no-such-image >/dev/null 2>"$tmp_root/err"
	expect_eq "start exit code" 125 "$?"
}

# --- the fake internet: git over https (dumb http over TLS), ssh (dropbear) and git://, and an
# npm package tarball over https, all on $NET_SERVER inside the test's own namespaces.
net_git_up() {
	d=$tmp_root/net
	# The topology's busybox httpds on 80 and 8080 only: 22, 443 and 9418 are ours here.
	NET_TCP_PORTS="80 8080"
	net_up "$d" >"$tmp_root/net.err" 2>&1 || { cat "$tmp_root/net.err"; return 1; }
	srv=$d/srv
	mkdir -p "$srv" "$d/pkg/package" "$d/files" "$d/home/.ssh"
	# A repository with one commit, exported bare.
	git init -q "$d/src" && git -C "$d/src" -c user.email=t@t -c user.name=t commit -q --allow-empty -m "hello from the fake forge" &&
		git clone -q --bare "$d/src" "$srv/repo.git" && git -C "$srv/repo.git" update-server-info || return 1
	# An npm package tarball (npm's layout: package/ at the top).
	printf '{"name":"avm-test-pkg","version":"1.0.0","main":"index.js"}\n' >"$d/pkg/package/package.json"
	echo 'module.exports = "avm-test-pkg works";' >"$d/pkg/package/index.js"
	tar -C "$d/pkg" -czf "$srv/avm-test-pkg-1.0.0.tgz" package || return 1
	# A CA and a server certificate for the address.
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=avm-test-ca -keyout "$d/ca.key" -out "$d/files/ca.pem" >/dev/null 2>&1 &&
		openssl req -newkey rsa:2048 -nodes -subj "/CN=$NET_SERVER" -keyout "$d/srv.key" -out "$d/srv.csr" >/dev/null 2>&1 &&
		printf 'subjectAltName=IP:%s\n' "$NET_SERVER" >"$d/ext" &&
		openssl x509 -req -in "$d/srv.csr" -CA "$d/files/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 -extfile "$d/ext" -out "$d/srv.pem" >/dev/null 2>&1 || return 1
	cat >"$d/https.py" <<PY
import http.server, ssl, functools
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory="$srv")
s = http.server.ThreadingHTTPServer(("$NET_SERVER", 443), h)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain("$d/srv.pem", "$d/srv.key")
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
PY
	net_bg "$NS_INET" "$d/https.log" python3 "$d/https.py"
	net_bg "$NS_INET" "$d/gitd.log" git daemon --reuseaddr --export-all --base-path="$srv" --listen="$NET_SERVER" --port=9418 "$srv"
	# ssh: dropbear with a key of ours, root's home a tmpfs in a private mount namespace.
	ssh-keygen -q -t ed25519 -N "" -f "$d/files/id" >/dev/null || return 1
	dropbearkey -t ed25519 -f "$d/hostkey" >/dev/null 2>&1 || return 1
	cat >"$d/sshd.sh" <<SH
mount -t tmpfs -o mode=0700 none /root && mkdir -m 0700 /root/.ssh &&
cp "$d/files/id.pub" /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys &&
exec dropbear -F -E -s -p $NET_SERVER:22 -r "$d/hostkey"
SH
	net_bg "$NS_INET" "$d/sshd.log" unshare -m --propagation private sh "$d/sshd.sh"
	for p in 22 443 9418; do net_wait_listen "$NS_INET" tcp $p || return 1; done
	# The guest gets the CA and the key on a read-only workspace disk.
	chmod 0644 "$d/files/id"
	mkfs.ext4 -q -F -d "$d/files" "$d/files.ext4" 16M >/dev/null 2>&1 || return 1
}

t_git_and_npm_over_the_network() {
	need_image || return
	msg=$(net_missing) || { skip "$msg"; return; }
	for t in git openssl dropbear dropbearkey ssh-keygen; do
		command -v $t >/dev/null || { skip "$t not installed (make deps)"; return; }
	done
	net_git_up || { fail "topology: $(cat "$tmp_root/net.err" 2>/dev/null)"; net_down; return; }
	S=$NET_SERVER
	ip netns exec "$NS_HOST" "$AVM" run --accel tcg --boot-timeout 180 --memory 1024 --image "$IMAGE" \
		--disk "$tmp_root/net/files.ext4:/workspace:ro" -- sh -c "
		set -e
		cd /tmp
		git -c http.sslCAInfo=/workspace/ca.pem clone -q https://$S/repo.git via-https
		git clone -q git://$S/repo.git via-git
		install -m 0600 /workspace/id /root/id
		GIT_SSH_COMMAND='ssh -i /root/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR' \
			git clone -q root@$S:$tmp_root/net/srv/repo.git via-ssh
		for r in via-https via-git via-ssh; do echo \"\$r: \$(git -C \$r log -1 --format=%s)\"; done
		if command -v npm >/dev/null; then
			mkdir app && cd app && echo '{}' >package.json
			npm install --no-audit --no-fund --loglevel=error --cafile /workspace/ca.pem \
				--registry http://$S:8080/ https://$S/avm-test-pkg-1.0.0.tgz >/dev/null
			node -e 'console.log(require(\"avm-test-pkg\"))'
		else
			echo 'avm-test-pkg works'
		fi" >"$tmp_root/out" 2>"$tmp_root/err"
	rc=$?
	expect_eq "exit code (stderr: $(cat "$tmp_root/err"))" 0 "$rc"
	expect_eq "git over https, git:// and ssh; npm from a tarball" "via-https: hello from the fake forge
via-git: hello from the fake forge
via-ssh: hello from the fake forge
avm-test-pkg works" "$(cat "$tmp_root/out")"
	net_down
}

t_damaged_image() {
	# An image whose file system is damaged after it was stored (its size and meta.json still
	# match, so only the guest can tell): every command is refused with the reason and the fix.
	dc=$tmp_root/cache-damaged
	mkdir -p "$dc/images/names" "$tmp_root/tiny/etc"
	echo tiny >"$tmp_root/tiny/etc/hostname"
	mkfs.ext4 -q -F -d "$tmp_root/tiny" "$tmp_root/tiny.ext4" 8M >/dev/null 2>&1 || { fail "mkfs"; return; }
	id=$(sha256sum "$tmp_root/tiny.ext4" | cut -c1-64)
	mkdir -p "$dc/images/$id"
	mv "$tmp_root/tiny.ext4" "$dc/images/$id/rootfs.ext4"
	printf '{"name": "broken", "id": "%s", "size": %s}\n' "$id" "$(stat -c %s "$dc/images/$id/rootfs.ext4")" >"$dc/images/$id/meta.json"
	echo "$id" >"$dc/images/names/broken"
	# Zero the superblock (1 KiB at offset 1 KiB): same size, no file system.
	dd if=/dev/zero of="$dc/images/$id/rootfs.ext4" bs=1024 seek=1 count=1 conv=notrunc 2>/dev/null
	AGENTVM_CACHE_DIR=$dc "$AVM" run --accel tcg $NET --image broken -- true >"$tmp_root/out" 2>"$tmp_root/err"
	rc=$?
	expect_eq "exit code" 122 "$rc"
	expect_contains "says the root image cannot be mounted" "root image (/dev/vda) cannot be mounted" "$(cat "$tmp_root/err")"
	expect_contains "names the fix" "agentvm image rm" "$(cat "$tmp_root/err")"
	expect_eq "nothing ran" "" "$(cat "$tmp_root/out")"
	rm -rf "$dc"
}

t_imported_oci_image_runs() {
	# An OCI image imported here (no registry: a layout built locally) boots and runs its own
	# binaries with its config's Env, WorkingDir and User; whiteouts and setuid bits came through.
	for t in skopeo umoci; do
		command -v $t >/dev/null || { skip "$t not installed (make deps)"; return; }
	done
	oc=$tmp_root/cache-oci
	mkdir -p "$oc"
	make_oci "$tmp_root/oci"
	AGENTVM_CACHE_DIR=$oc avm image import ociimg "$tmp_root/oci/layout" >/dev/null 2>"$tmp_root/err" || { fail "import: $(cat "$tmp_root/err")"; return; }
	AGENTVM_CACHE_DIR=$oc "$AVM" run --accel tcg $NET --image ociimg -- sh -c 'echo "$FOO"; pwd; busybox id -u; cat /opt/new.txt; test -e /opt/gone.txt || echo whiteout; busybox stat -c %a /usr/bin/suid' >"$tmp_root/out" 2>"$tmp_root/err"
	expect_eq "exit code (stderr: $(cat "$tmp_root/err"))" 0 "$?"
	expect_eq "the image's own busybox, env, workdir, user, layers" "bar baz
/opt
1000
new
whiteout
4755" "$(cat "$tmp_root/out")"
	# A snapshot of a VM on it cannot be restored once the image is gone: one line says why.
	AGENTVM_CACHE_DIR=$oc avm start --accel tcg --name ocivm $NET --image ociimg >/dev/null 2>"$tmp_root/err" || fail "start: $(cat "$tmp_root/err")"
	AGENTVM_CACHE_DIR=$oc avm snapshot save ocivm ocisnap 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	rm_all ocivm
	AGENTVM_CACHE_DIR=$oc avm image rm ociimg >/dev/null 2>"$tmp_root/err"
	expect_eq "image rm refuses while a snapshot uses it" 1 "$?"
	AGENTVM_CACHE_DIR=$oc avm image rm --force ociimg >/dev/null 2>&1
	AGENTVM_CACHE_DIR=$oc avm restore ocisnap --name ociclone >/dev/null 2>"$tmp_root/err"
	expect_eq "restore without its image: exit code" 125 "$?"
	expect_contains "restore names the image" "runs in root image ociimg" "$(cat "$tmp_root/err")"
	avm snapshot rm ocisnap >/dev/null 2>&1 || fail "snapshot rm"
	rm -rf "$oc" "$tmp_root/oci"
}

echo "root image tests (TCG, image '$IMAGE')"
[ -n "${ONLY:-}" ] && { run_test "$ONLY"; summary; exit $?; }
run_test t_userland
run_test t_kernel_features
run_test t_node
run_test t_agent_clis
run_test t_overlay_is_private
run_test t_image_and_workspace_disk
run_test t_detached_snapshot_restore
run_test t_missing_image
run_test t_damaged_image
run_test t_imported_oci_image_runs
run_test t_git_and_npm_over_the_network
summary
