#!/bin/sh
# Sourced by test_shim.sh and bench/shim.sh: a private containerd for the agentvm shim, and a
# pause image. Variables are the caller's (a sourced function shares them).

# ctrd_config DIR RUNTIME SANDBOX_IMAGE: DIR/config.toml for a containerd of its own under DIR
# (root, state, sockets), its CRI plugin with runtime handler `agentvm` (RUNTIME) whose
# options.ConfigPath is DIR/agentvm-cri.json, and SANDBOX_IMAGE as the pause image.
ctrd_config() {
	cat >"$1/config.toml" <<EOC
version = 2
root = "$1/root"
state = "$1/state"
[grpc]
  address = "$1/c.sock"
[ttrpc]
  address = "$1/c.sock.ttrpc"
[debug]
  address = "$1/debug.sock"
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$3"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$1/cni/bin"
    conf_dir = "$1/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "agentvm"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.agentvm]
    runtime_type = "$2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.agentvm.options]
    ConfigPath = "$1/agentvm-cri.json"
EOC
}

# make_oci's image with a command that only waits, as a pod's sandbox (pause) image.
make_pause() {
	sed 's|"Cmd":\["/bin/sh"\]|"Cmd":["/bin/busybox","sleep","2147483647"]|' "$1/config.json" \
		>"$1/pause-config.json"
	pc=$(sha256sum "$1/pause-config.json" | cut -c1-64)
	cp "$1/pause-config.json" "$1/layout/blobs/sha256/$pc"
	sed "s|sha256:$_oci_c\",\"size\":[0-9]*|sha256:$pc\",\"size\":$(stat -c %s "$1/pause-config.json")|" \
		"$1/manifest.json" >"$1/pause-manifest.json"
	pm=$(sha256sum "$1/pause-manifest.json" | cut -c1-64)
	cp "$1/pause-manifest.json" "$1/layout/blobs/sha256/$pm"
	cat >"$1/layout/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$pm","size":$(stat -c %s "$1/pause-manifest.json"),"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
EOF
}

