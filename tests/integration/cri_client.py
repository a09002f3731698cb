#!/usr/bin/python3
"""A small CRI client for test_shim.sh (what kubelet calls), over containerd's CRI plugin.

usage: cri_client.py SOCKET GENDIR VERB ARGS...
  image REF                       wait (up to 30 s) until the CRI plugin knows the image
  runp NAME HANDLER               RunPodSandbox (host network: no CNI needed); prints the id
  create POD PODNAME NAME IMAGE CMD...  CreateContainer in pod POD (made by runp PODNAME);
                                  $CRI_UID sets the container's user
  start ID | rm ID                StartContainer | RemoveContainer
  exec ID CMD...                  ExecSync; prints its stdout, exits with its exit code
  status ID                       ContainerStatus: prints "STATE exit_code"
  stats ID                        ContainerStats: prints "CPU_NS WORKING_SET_BYTES"
  stopp ID | rmp ID               StopPodSandbox | RemovePodSandbox
  podbench NAME HANDLER IMAGE     (bench/shim.sh) RunPodSandbox, CreateContainer (busybox sleep),
                                  StartContainer and ExecSync `busybox true`: prints the ms from the
                                  RunPodSandbox call to the ExecSync answer; then removes the pod
GENDIR holds cri_min_pb2.py (protoc --python_out from cri_min.proto)."""
import os
import sys
import time

import grpc

sock, gen, verb, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.path.insert(0, gen)
import cri_min_pb2 as pb  # noqa: E402

chan = grpc.insecure_channel("unix://" + sock)


def call(service, method, req, resp_type):
    f = chan.unary_unary("/runtime.v1.%s/%s" % (service, method),
                         request_serializer=lambda m: m.SerializeToString(),
                         response_deserializer=resp_type.FromString)
    return f(req, timeout=300)


def rt(method, req, resp_type=pb.Empty):
    return call("RuntimeService", method, req, resp_type)


def sandbox_config(name):
    c = pb.PodSandboxConfig(hostname=name)
    c.metadata.name = name
    c.metadata.uid = "uid-" + name
    c.metadata.namespace = "avm-test"
    # The node's network: the CRI plugin makes no network namespace and calls no CNI plugin.
    c.linux.security_context.namespace_options.network = pb.NODE
    return c


try:
    if verb == "image":
        for _ in range(300):
            r = call("ImageService", "ImageStatus",
                     pb.ImageStatusRequest(image=pb.ImageSpec(image=args[0])),
                     pb.ImageStatusResponse)
            if r.image.id:
                break
            time.sleep(0.1)
        else:
            sys.exit("cri: the CRI plugin does not know image %s" % args[0])
    elif verb == "runp":
        r = rt("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config(args[0]),
                                                        runtime_handler=args[1]),
               pb.RunPodSandboxResponse)
        print(r.pod_sandbox_id)
    elif verb == "create":
        pod, podname, name, image, cmd = args[0], args[1], args[2], args[3], args[4:]
        c = pb.ContainerConfig(image=pb.ImageSpec(image=image), command=cmd)
        c.metadata.name = name
        if os.environ.get("CRI_UID"):
            c.linux.security_context.run_as_user.value = int(os.environ["CRI_UID"])
        r = rt("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=c, sandbox_config=sandbox_config(podname)),
            pb.CreateContainerResponse)
        print(r.container_id)
    elif verb in ("start", "rm"):
        rt({"start": "StartContainer", "rm": "RemoveContainer"}[verb],
           pb.ContainerIdRequest(container_id=args[0]))
    elif verb == "exec":
        r = rt("ExecSync", pb.ExecSyncRequest(container_id=args[0], cmd=args[1:], timeout=120),
               pb.ExecSyncResponse)
        sys.stdout.write(r.stdout.decode(errors="replace"))
        sys.stderr.write(r.stderr.decode(errors="replace"))
        sys.exit(r.exit_code)
    elif verb == "status":
        r = rt("ContainerStatus", pb.ContainerStatusRequest(container_id=args[0]),
               pb.ContainerStatusResponse)
        print(pb.ContainerState.Name(r.status.state), r.status.exit_code)
    elif verb == "stats":
        r = rt("ContainerStats", pb.ContainerStatsRequest(container_id=args[0]),
               pb.ContainerStatsResponse)
        print(r.stats.cpu.usage_core_nano_seconds.value,
              r.stats.memory.working_set_bytes.value)
    elif verb in ("stopp", "rmp"):
        rt({"stopp": "StopPodSandbox", "rmp": "RemovePodSandbox"}[verb],
           pb.PodSandboxIdRequest(pod_sandbox_id=args[0]))
    elif verb == "podbench":
        name, handler, image = args
        t0 = time.monotonic()
        pod = rt("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config(name),
                                                          runtime_handler=handler),
                 pb.RunPodSandboxResponse).pod_sandbox_id
        c = pb.ContainerConfig(image=pb.ImageSpec(image=image),
                               command=["busybox", "sleep", "600"])
        c.metadata.name = "app"
        cid = rt("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=c, sandbox_config=sandbox_config(name)),
            pb.CreateContainerResponse).container_id
        rt("StartContainer", pb.ContainerIdRequest(container_id=cid))
        r = rt("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=["busybox", "true"], timeout=120),
               pb.ExecSyncResponse)
        ms = (time.monotonic() - t0) * 1000
        rt("StopPodSandbox", pb.PodSandboxIdRequest(pod_sandbox_id=pod))
        rt("RemovePodSandbox", pb.PodSandboxIdRequest(pod_sandbox_id=pod))
        if r.exit_code != 0:
            sys.exit("cri: podbench: exec exit code %d" % r.exit_code)
        print("%.0f" % ms)
    else:
        sys.exit("cri: unknown verb " + verb)
except grpc.RpcError as e:
    sys.exit("cri: %s: %s: %s" % (verb, e.code().name, e.details()))
