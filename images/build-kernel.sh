#!/bin/sh
# Build the agentvm guest kernel (PVH vmlinux) from Debian's linux-source-6.1.
#
# The build takes minutes, so the result is cached outside the repository, keyed by a hash of
# every input: the linux-source package version, the config fragment and this script. A second
# run with the same inputs only copies the cached vmlinux.
#
# usage: build-kernel.sh OUTPUT_VMLINUX
# env:   AGENTVM_CACHE (default /var/cache/agentvm), JOBS (default nproc)
set -eu

out=$1
here=$(cd "$(dirname "$0")" && pwd)
frag=$here/kernel/agentvm.config
tarball=/usr/src/linux-source-6.1.tar.xz
cache=${AGENTVM_CACHE:-/var/cache/agentvm}
jobs=${JOBS:-$(nproc)}

if [ ! -f "$tarball" ]; then
	echo "build-kernel: $tarball not found; install it with: apt-get install linux-source-6.1" >&2
	exit 1
fi

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$tarball")
key=$( (echo "$srcver"; cat "$frag" "$0") | sha256sum | cut -c1-16)
dir=$cache/kernel-$key

# One build per key at a time (parallel make runs, CI jobs): the others wait, then copy.
mkdir -p "$cache"
exec 9>"$cache/kernel-$key.lock"
flock 9

if [ ! -f "$dir/vmlinux" ]; then
	echo "build-kernel: building kernel $key (linux-source $srcver), cache $dir"
	work=$cache/kernel-build-$key
	rm -rf "$work"
	mkdir -p "$work"
	tar -xf "$tarball" -C "$work" --strip-components=1
	(
		cd "$work"
		make -s ARCH=x86_64 tinyconfig
		./scripts/kconfig/merge_config.sh -m .config "$frag" >/dev/null
		make -s ARCH=x86_64 olddefconfig
		# every line of the fragment must survive olddefconfig, or a dependency is missing
		bad=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$frag" | while IFS= read -r line; do
			opt=${line%%=*}
			if [ "${line#*=}" = n ]; then
				if grep -q "^$opt=" .config; then echo "$opt"; fi
			elif ! grep -qx "$line" .config; then
				echo "$line"
			fi
		done)
		if [ -n "$bad" ]; then
			echo "build-kernel: config lines that did not stick: $bad" >&2
			exit 1
		fi
		make -s ARCH=x86_64 -j"$jobs" vmlinux
	)
	mkdir -p "$dir"
	cp "$work/vmlinux" "$dir/vmlinux.tmp"
	cp "$work/.config" "$dir/config"
	strip --strip-debug "$dir/vmlinux.tmp" 2>/dev/null || true
	mv "$dir/vmlinux.tmp" "$dir/vmlinux"
	rm -rf "$work"
fi
mkdir -p "$(dirname "$out")"
cp "$dir/vmlinux" "$out"
echo "build-kernel: $out (cache $dir)"
