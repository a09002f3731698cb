#!/usr/bin/env python3
"""HTTP probes for test_metrics.sh (stdlib only).

  get URL [SOURCE_IP] [METHOD]   print "STATUS" then the body; SOURCE_IP binds the client end
  slowloris HOST PORT N SECS     hold N connections sending a header byte a second for SECS,
                                 then print how many the server had closed
  idle HOST PORT MAX             connect, send nothing; print the seconds until the server
                                 closed it ("never" after MAX)
  prom HOST PORT QUERY MAX       query a Prometheus server's HTTP API until QUERY has a result
                                 (up to MAX seconds); print the first sample's labels and value
"""
import http.client
import json
import socket
import sys
import time
import urllib.parse


def get(url, source=None, method="GET"):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30,
                                   source_address=(source, 0) if source else None)
    c.request(method, u.path or "/")
    r = c.getresponse()
    print(r.status)
    try:
        sys.stdout.write(r.read().decode())
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # `| head -1`: only the status was wanted


def slowloris(host, port, n, secs):
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    closed = set()
    end = time.time() + secs
    while time.time() < end:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                s.sendall(b"X")
            except OSError:
                closed.add(i)
        time.sleep(1)
    print(len(closed))
    for s in socks:
        s.close()


def idle(host, port, limit):
    s = socket.create_connection((host, port), timeout=limit)
    t0 = time.time()
    try:
        data = s.recv(1)
        print(int(time.time() - t0) if data == b"" else "data")
    except socket.timeout:
        print("never")
    except OSError:
        print(int(time.time() - t0))


def prom(host, port, query, limit):
    end = time.time() + limit
    url = "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    while time.time() < end:
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", url)
            body = json.loads(c.getresponse().read())
            res = body.get("data", {}).get("result", [])
            if res:
                print(json.dumps(res[0]["metric"], sort_keys=True), res[0]["value"][1])
                return
        except (OSError, ValueError):
            pass
        time.sleep(1)
    print("none")


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "get":
        get(a[1], a[2] if len(a) > 2 and a[2] else None, a[3] if len(a) > 3 else "GET")
    elif a[0] == "slowloris":
        slowloris(a[1], int(a[2]), int(a[3]), int(a[4]))
    elif a[0] == "idle":
        idle(a[1], int(a[2]), int(a[3]))
    elif a[0] == "prom":
        prom(a[1], int(a[2]), a[3], int(a[4]))
