#!/usr/bin/env python3
"""Benchmarks the optional HTTP server (`--web`, issue 11).

  1. what `--web` costs when off and when on: supervisor RSS, threads and TCP sockets with
     4 idle Node apps, for the build before the server existed (--before PATH, optional), this
     build without --web, and this build with --web (target: off = before; on = no new thread)
  2. supervisor CPU over 20 s idle with the server on and nobody scraping (target <= 0.02 s)
  3. runtime CPU per scrape of /metrics with 16 instances, over a keep-alive connection like
     Prometheus' (target < 1 ms)

Usage: python3 bench/web.py [--before PATH_TO_OLD_BINARY] [--no-build] [--host]
Runs inside a new PID namespace (unshare, as root), so /proc shows what a container's does:
the sampler's once-a-second sweep reads every process in /proc, and on a busy host that is
hundreds of processes no container would see. --host measures on the host's /proc instead.
Not a test: it prints numbers, it asserts nothing.
"""
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import IDLE_JS, PM, ROOT, TARGET, cpu_seconds, rss_kb, stop, write_eco  # noqa: E402


def start(binary, eco, d, web):
    env = dict(os.environ, PM2_HOME=os.path.join(d, ".pm2"), PM_RUNTIME_WEB_TOKEN="bench")
    cmd = [binary, "start", eco] + (["--web=0"] if web else [])
    log = open(os.path.join(d, "runtime.log"), "w")
    return subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def web_port(d, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(os.path.join(d, "runtime.log")) as f:
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", f.read())
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise RuntimeError("the runtime did not say where it listens")


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def tcp_sockets(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                n += sum(1 for line in list(f)[1:] if line.split()[9] in inodes)
        except OSError:
            pass
    return n


def idle_apps(d, n):
    with open(os.path.join(d, "idle.js"), "w") as f:
        f.write(IDLE_JS)
    return write_eco(d, [{"name": f"idle{i}", "script": "idle.js", "exec_mode": "fork"} for i in range(n)])


def footprint(binary, web):
    """RSS (MB), threads, TCP sockets after 4 s, and CPU seconds over the next 20 s idle."""
    d = tempfile.mkdtemp()
    p = start(binary, idle_apps(d, 4), d, web)
    time.sleep(4)
    rss, th, socks = rss_kb(p.pid) / 1024, threads(p.pid), tcp_sockets(p.pid)
    c0 = cpu_seconds(p.pid)
    time.sleep(20)
    cpu = cpu_seconds(p.pid) - c0
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return rss, th, socks, cpu


def scrape_cost(binary, scrapes=1000):
    """Runtime CPU per /metrics scrape with 16 instances (idle CPU subtracted)."""
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "idle.sh"), "w") as f:
        f.write("#!/bin/sh\nexec sleep 100000\n")
    os.chmod(os.path.join(d, "idle.sh"), 0o755)
    eco = write_eco(d, [{"name": f"s{i}", "script": "idle.sh"} for i in range(16)])
    p = start(binary, eco, d, True)
    port = web_port(d)
    time.sleep(3)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read()
    # Idle rate first (the sampler sweeps once a second while the server is on).
    c0, t0 = cpu_seconds(p.pid), time.monotonic()
    time.sleep(5)
    idle_rate = (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
    # Idle keep-alive connections are closed after 5 s: a new one, as Prometheus would open.
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    conn.getresponse().read()
    c0, t0 = cpu_seconds(p.pid), time.monotonic()
    for _ in range(scrapes):
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(p.pid) - c0 - idle_rate * elapsed
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return cpu / scrapes * 1000, len(body), body.count(b"\n")


def main():
    if "--host" not in sys.argv and os.environ.get("PM_RUNTIME_BENCH_NS") != "1":
        os.environ["PM_RUNTIME_BENCH_NS"] = "1"
        os.execvp("unshare", ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    if "--no-build" not in sys.argv:
        env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--target", TARGET], cwd=ROOT, env=env, check=True)
    before = sys.argv[sys.argv.index("--before") + 1] if "--before" in sys.argv else None
    rows = []
    if before:
        rows.append(("before --web existed", *footprint(before, False)))
    rows.append(("without --web", *footprint(PM, False)))
    rows.append(("with --web", *footprint(PM, True)))
    print(f"{'4 idle Node apps':22} {'RSS':>8} {'threads':>8} {'TCP sockets':>12} {'CPU 20 s idle':>14}")
    for name, rss, th, socks, cpu in rows:
        print(f"{name:22} {rss:>5.1f} MB {th:>8} {socks:>12} {cpu:>12.3f} s")
    ms, size, lines = scrape_cost(PM)
    print(f"\n/metrics with 16 instances: {ms:.3f} ms of runtime CPU per scrape ({size} bytes, {lines} lines)")


if __name__ == "__main__":
    main()
