#!/bin/sh
# Build the guest initramfs: an uncompressed newc cpio (the guest kernel has no decompressors,
# on purpose: unpacking is cheaper than decompressing under TCG).
#
# usage: build-initramfs.sh INIT_BINARY OUTPUT_CPIO
#        build-initramfs.sh --bare INIT_BINARY OUTPUT_CPIO   (only /init: the benchmark baseline)
# env:   BUSYBOX (default /bin/busybox, from Debian's busybox-static)
#
# The archive is deterministic: sorted entries, owner 0:0, fixed mtimes, renumbered inodes, so
# the same inputs always give the same hash.
set -eu

usage() {
	echo "usage: $0 [--bare] INIT_BINARY OUTPUT_CPIO" >&2
	exit 2
}

bare=0
if [ "${1:-}" = --bare ]; then
	bare=1
	shift
fi
[ $# -eq 2 ] || usage
init=$1
out=$2
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -f "$init" ]; then
	echo "build-initramfs: init binary $init not found" >&2
	exit 1
fi
if [ "$bare" = 0 ] && ! "$busybox" true 2>/dev/null; then
	echo "build-initramfs: $busybox missing or not runnable;" \
		"install it with: apt-get install busybox-static" >&2
	exit 1
fi
# Debian's plain busybox package installs a dynamically linked /bin/busybox: useless in a
# guest without libc. A dynamic ELF has a PT_INTERP (type 3) program header.
has_interp() {
	phoff=$(od -An -t u8 -j 32 -N 8 "$1" | tr -d ' ')
	phentsize=$(od -An -t u2 -j 54 -N 2 "$1" | tr -d ' ')
	phnum=$(od -An -t u2 -j 56 -N 2 "$1" | tr -d ' ')
	i=0
	while [ "$i" -lt "$phnum" ]; do
		type=$(od -An -t u4 -j $((phoff + i * phentsize)) -N 4 "$1" | tr -d ' ')
		[ "$type" = 3 ] && return 0
		i=$((i + 1))
	done
	return 1
}
if [ "$bare" = 0 ] && has_interp "$busybox"; then
	echo "build-initramfs: $busybox is dynamically linked;" \
		"install the static one with: apt-get install busybox-static" >&2
	exit 1
fi
if ! command -v cpio >/dev/null 2>&1; then
	echo "build-initramfs: cpio not found; install it with: apt-get install cpio" >&2
	exit 1
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/agentvm-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
umask 022

cp "$init" "$stage/init"
chmod 0755 "$stage/init"

if [ "$bare" = 0 ]; then
	mkdir -p "$stage/bin" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/tmp" "$stage/run" \
		"$stage/root" "$stage/etc" "$stage/usr/bin"
	chmod 1777 "$stage/tmp"
	chmod 0700 "$stage/root"
	cp "$busybox" "$stage/bin/busybox"
	chmod 0755 "$stage/bin/busybox"
	# One symlink per applet; everything lives in /bin, which is first in PATH.
	for applet in $("$busybox" --list); do
		case $applet in
		busybox | */*) continue ;;
		esac
		[ -e "$stage/bin/$applet" ] || ln -s busybox "$stage/bin/$applet"
	done
	# #!/usr/bin/env scripts are everywhere.
	ln -s ../../bin/busybox "$stage/usr/bin/env"

	cat >"$stage/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
	cat >"$stage/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
	cat >"$stage/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	agentvm
::1	localhost ip6-localhost ip6-loopback
HOSTS
	chmod 0644 "$stage/etc/passwd" "$stage/etc/group" "$stage/etc/hosts"
fi

# Fixed timestamps (SOURCE_DATE_EPOCH when set) for a stable hash; -h: the links themselves.
epoch=${SOURCE_DATE_EPOCH:-0}
find "$stage" -exec touch -h -d "@$epoch" {} +

mkdir -p "$(dirname "$out")"
tmp=$out.tmp.$$
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) >"$tmp"
mv -f "$tmp" "$out"
echo "build-initramfs: wrote $out ($(wc -c <"$out") bytes)"
