#!/usr/bin/python3
# A minimal ttrpc client of containerd-shim-agentvm-v2's Task service, for what ctr cannot do:
# add an exec process without starting it (ctr task exec does both at once).
#   shim_ttrpc.py SOCKET exec ID EXEC_ID STDOUT_PATH ARG...   Exec (not Start)
#   shim_ttrpc.py SOCKET state ID EXEC_ID                     prints the status number
#   shim_ttrpc.py SOCKET start ID EXEC_ID                     Start
#   shim_ttrpc.py SOCKET wait ID EXEC_ID                      prints the exit status
# ttrpc: a 10-byte header (u32 length, u32 stream id, u8 type, u8 flags; big-endian), then
# Request {service = 1, method = 2, payload = 3}; the answer: Response {status = 1, payload = 2}.
import json
import socket
import struct
import sys


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def parse(buf):
    """A protobuf message's fields: {number: [value, ...]} (varints as ints, the rest bytes)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wire)
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def call(path, method, payload):
    req = field(1, "containerd.task.v2.Task") + field(2, method) + field(3, payload)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(struct.pack(">IIBB", len(req), 1, 1, 0) + req)
    hdr = b""
    while len(hdr) < 10:
        hdr += s.recv(10 - len(hdr))
    n = struct.unpack(">I", hdr[:4])[0]
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    s.close()
    resp = parse(body)
    status = parse(resp.get(1, [b""])[0])
    code = status.get(1, [0])[0]
    if code:
        sys.stderr.write("%s: code %d: %s\n" % (method, code, status.get(2, [b""])[0].decode()))
        sys.exit(1)
    return parse(resp.get(2, [b""])[0])


def main():
    sock, op = sys.argv[1], sys.argv[2]
    if op == "exec":
        tid, eid, out = sys.argv[3:6]
        spec = json.dumps({"args": sys.argv[6:], "cwd": "/", "user": {"uid": 0, "gid": 0},
                           "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})
        any_ = field(1, "types.containerd.io/opencontainers/runtime-spec/1/Process") + field(2, spec)
        call(sock, "Exec", field(1, tid) + field(2, eid) + field(5, out) + field(7, any_))
    elif op == "state":
        r = call(sock, "State", field(1, sys.argv[3]) + field(2, sys.argv[4]))
        print(r.get(4, [0])[0])
    elif op in ("start", "wait"):
        r = call(sock, op.capitalize(), field(1, sys.argv[3]) + field(2, sys.argv[4]))
        if op == "wait":
            print(r.get(1, [0])[0])
    else:
        sys.exit("unknown operation " + op)


main()
