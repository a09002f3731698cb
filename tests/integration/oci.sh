#!/bin/sh
# Sourced by tests: a small OCI image made locally (no registry is reachable here), two layers:
#   layer 1: a static busybox (/bin/busybox, /bin/sh), a setuid copy /usr/bin/suid, /opt/gone.txt,
#            /etc/passwd and /etc/group with user app (1000:1000)
#   layer 2 (owned 1000:1000): a whiteout for /opt/gone.txt and /opt/new.txt
#   config: Env PATH=/bin:/usr/bin and FOO="bar baz", WorkingDir /opt, User app
# Its variables are all _oci_*: a sourced function shares the caller's.
make_oci() { # dir: an OCI image layout in DIR/layout, built here (no registry is reachable)
	_oci_o=$1
	rm -rf "$_oci_o" && mkdir -p "$_oci_o/l1/bin" "$_oci_o/l1/etc" "$_oci_o/l1/opt" \
		"$_oci_o/l1/usr/bin" "$_oci_o/l2/opt" \
		"$_oci_o/layout/blobs/sha256"
	cp /bin/busybox "$_oci_o/l1/bin/busybox"
	ln -s busybox "$_oci_o/l1/bin/sh"
	cp /bin/busybox "$_oci_o/l1/usr/bin/suid"
	chmod 4755 "$_oci_o/l1/usr/bin/suid"
	echo "doomed" >"$_oci_o/l1/opt/gone.txt"
	printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n' >"$_oci_o/l1/etc/passwd"
	printf 'root:x:0:\napp:x:1000:\nstaff:x:50:\n' >"$_oci_o/l1/etc/group"
	: >"$_oci_o/l2/opt/.wh.gone.txt"
	echo "new" >"$_oci_o/l2/opt/new.txt"
	_oci_blob() { # file -> digest hex, stored as a blob
		_oci_d=$(sha256sum "$1" | cut -c1-64)
		cp "$1" "$_oci_o/layout/blobs/sha256/$_oci_d"
		echo "$_oci_d"
	}
	tar --sort=name --owner=0 --group=0 --numeric-owner -C "$_oci_o/l1" -cf "$_oci_o/l1.tar" .
	tar --sort=name --numeric-owner --owner=1000 --group=1000 -C "$_oci_o/l2" -cf "$_oci_o/l2.tar" .
	_oci_diff1=$(sha256sum "$_oci_o/l1.tar" | cut -c1-64)
	_oci_diff2=$(sha256sum "$_oci_o/l2.tar" | cut -c1-64)
	gzip -n "$_oci_o/l1.tar" "$_oci_o/l2.tar"
	_oci_g1=$(_oci_blob "$_oci_o/l1.tar.gz")
	_oci_g2=$(_oci_blob "$_oci_o/l2.tar.gz")
	cat >"$_oci_o/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin:/usr/bin","FOO=bar baz"],"WorkingDir":"/opt","User":"app","Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$_oci_diff1","sha256:$_oci_diff2"]}}
EOF
	_oci_c=$(_oci_blob "$_oci_o/config.json")
	cat >"$_oci_o/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$_oci_c","size":$(stat -c %s "$_oci_o/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$_oci_g1","size":$(stat -c %s "$_oci_o/l1.tar.gz")},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$_oci_g2","size":$(stat -c %s "$_oci_o/l2.tar.gz")}]}
EOF
	_oci_m=$(_oci_blob "$_oci_o/manifest.json")
	cat >"$_oci_o/layout/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$_oci_m","size":$(stat -c %s "$_oci_o/manifest.json"),"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
EOF
	echo '{"imageLayoutVersion":"1.0.0"}' >"$_oci_o/layout/oci-layout"
}
