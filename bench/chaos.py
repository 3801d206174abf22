#!/usr/bin/env python3
"""Chaos: 4 cluster workers under HTTP load while workers are SIGKILLed and SIGSTOPped.

For DURATION seconds (default 30), 32 keep-alive clients and 1 client opening a connection per
request hit one port on 127.0.0.1 served by `pm-runtime` in cluster mode with 4 Node workers.
Meanwhile a random worker is SIGKILLed every 300 ms, and another one is SIGSTOPped for 200 ms
then SIGCONTed every 700 ms. Then it checks that every worker came back, counts zombies among
the runtime's children, stops the runtime and counts the processes left behind.

Failed requests are sorted by cause: a connection reset or closed with the request in flight
(its worker was killed: only these may fail), refused (nobody listening: must be 0), timeout.
A keep-alive client does not retry a failed request; it opens a new connection for the next.

Usage: python3 bench/chaos.py [--bin PATH] [--duration SECONDS]
Default binary: target/release/pm-runtime (built with `cargo build --release` if missing).
Bounded: everything listens on 127.0.0.1, every wait has a deadline. Not a test: it prints
numbers and exits 1 only if a worker did not come back, or a zombie or orphan was found.
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 4
SERVER_JS = """const http = require('http');
http.createServer((q, r) => r.end(String(process.pid))).listen(Number(process.env.PORT), '127.0.0.1');
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    """Direct children of `pid` (the workers)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def jlist(binary, env, cwd):
    r = subprocess.run([binary, "jlist"], env=env, cwd=cwd, capture_output=True, text=True, timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 else []


def online(binary, env, cwd):
    return sum(1 for p in jlist(binary, env, cwd) if p["pm2_env"]["status"] == "online")


class Load:
    def __init__(self, port, duration):
        self.port, self.end = port, time.monotonic() + duration
        self.lock = threading.Lock()
        self.stats = {"ok": 0, "in_flight_on_killed_worker": 0, "refused": 0, "timeout": 0, "other": 0}

    def count(self, key):
        with self.lock:
            self.stats[key] += 1

    def failure(self, e):
        if isinstance(e, ConnectionRefusedError):
            self.count("refused")
        elif isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead)):
            self.count("in_flight_on_killed_worker")
        elif isinstance(e, (socket.timeout, TimeoutError)):
            self.count("timeout")
        else:
            self.count("other")

    def keepalive(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while time.monotonic() < self.end:
            try:
                c.request("GET", "/")
                c.getresponse().read()
                self.count("ok")
            except Exception as e:  # noqa: BLE001 - every failure is counted by kind
                self.failure(e)
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.close()

    def fresh(self):
        while time.monotonic() < self.end:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/")
                c.getresponse().read()
                c.close()
                self.count("ok")
            except Exception as e:  # noqa: BLE001
                self.failure(e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pm-runtime"))
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    if not os.path.exists(args.bin):
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    d = tempfile.mkdtemp(prefix="pm-chaos-")
    with open(os.path.join(d, "server.js"), "w") as f:
        f.write(SERVER_JS)
    port = free_port()
    with open(os.path.join(d, "eco.json"), "w") as f:
        json.dump({"apps": [{"name": "web", "script": "server.js", "exec_mode": "cluster", "instances": WORKERS, "env": {"PORT": str(port)}}]}, f)
    env = dict(os.environ, PM2_HOME=os.path.join(d, ".pm2"))
    rt = subprocess.Popen([args.bin, "eco.json"], cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while online(args.bin, env, d) < WORKERS:
        if time.monotonic() > deadline or rt.poll() is not None:
            sys.exit("the workers never came online")
        time.sleep(0.2)

    load = Load(port, args.duration)
    threads = [threading.Thread(target=load.keepalive) for _ in range(32)] + [threading.Thread(target=load.fresh)]
    for t in threads:
        t.start()
    stops = [0]

    def stopper():
        rng = random.Random(31)
        while time.monotonic() < load.end:
            pids = children(rt.pid)
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGSTOP)
                    time.sleep(0.2)
                    os.kill(victim, signal.SIGCONT)
                    stops[0] += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.5)

    threads.append(threading.Thread(target=stopper))
    threads[-1].start()
    kills = 0
    next_kill = time.monotonic()
    rng = random.Random(13)
    while time.monotonic() < load.end:
        if time.monotonic() >= next_kill:
            pids = children(rt.pid)
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            next_kill += 0.3
        time.sleep(0.005)
    for t in threads:
        t.join()
    stops = stops[0]

    t0 = time.monotonic()
    while online(args.bin, env, d) < WORKERS and time.monotonic() - t0 < 15:
        time.sleep(0.1)
    back = online(args.bin, env, d)
    back_after = time.monotonic() - t0
    # A zombie that stays one across a second is one nobody reaps.
    zombies = {p for p in children(rt.pid) if state(p) == "Z"}
    for _ in range(10):
        time.sleep(0.1)
        zombies &= {p for p in children(rt.pid) if state(p) == "Z"}
    restarts = sum(p["pm2_env"]["restart_time"] for p in jlist(args.bin, env, d))
    rt.send_signal(signal.SIGTERM)
    try:
        code = rt.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rt.kill()
        code = "killed after 20 s"
    time.sleep(0.5)
    # Anything still running that was started from the scenario directory (node gets the
    # script's absolute path).
    orphans = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if d.encode() in f.read():
                        orphans.append(int(entry))
            except OSError:
                pass

    s = load.stats
    total = s["ok"] + s["in_flight_on_killed_worker"] + s["refused"] + s["timeout"] + s["other"]
    failed = total - s["ok"]
    print(f"binary: {args.bin}")
    print(f"{args.duration:.0f} s, {WORKERS} cluster workers, 33 clients: {kills} SIGKILLs (every 300 ms), {stops} SIGSTOP/SIGCONT (200 ms each)")
    print(f"requests: {total}, failed: {failed} ({100.0 * failed / max(total, 1):.2f} %)")
    print(f"  in flight on a killed worker: {s['in_flight_on_killed_worker']}, refused: {s['refused']}, timeout: {s['timeout']}, other: {s['other']}")
    print(f"workers online afterwards: {back}/{WORKERS} (after {back_after:.1f} s), restarts counted: {restarts}")
    print(f"zombies among the runtime's children: {len(zombies)}")
    print(f"runtime exit on SIGTERM: {code}; processes left after stop: {len(orphans)}")
    ok = back == WORKERS and not zombies and not orphans
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
