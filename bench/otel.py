#!/usr/bin/env python3
"""What OTLP export costs the runtime (README "OpenTelemetry (OTLP)").

1. CPU per metrics export: 16 idle instances, exports every 100 ms to a receiver on 127.0.0.1 for
   N seconds, against the same run with export off; (CPU on - CPU off) / exports.
2. Memory of a full log batch: an app floods lines while the receiver is down (the batch fills to
   its cap and drops), RSS of the runtime against the same flood with export off.

usage: python3 bench/otel.py [--bin target/release/pm-runtime] [--seconds 10]
The receiver is tests/fixtures/otlp_receiver.py (pip install opentelemetry-proto).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(binary, eco, env, seconds, wait_for):
    home = tempfile.mkdtemp(prefix="pmrt-otel-bench-")
    full = dict(os.environ, PM2_HOME=home, **env)
    for k in [k for k in full if k.startswith("OTEL_") and k not in env]:
        del full[k]
    p = subprocess.Popen([binary, "start", eco], env=full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    seen = 0
    while seen < wait_for and time.time() < deadline:
        line = p.stdout.readline()
        if "] online" in line:
            seen += 1
    # Let the output drain in the background so the runtime is never blocked on its stdout.
    drain = subprocess.Popen(["cat"], stdin=p.stdout, stdout=subprocess.DEVNULL)
    time.sleep(1)
    c0 = cpu_seconds(p.pid)
    time.sleep(seconds)
    c1 = cpu_seconds(p.pid)
    rss = rss_kb(p.pid)
    p.terminate()
    p.wait(timeout=15)
    drain.wait(timeout=5)
    return c1 - c0, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/pm-runtime"))
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="pmrt-otel-eco-")
    with open(os.path.join(work, "idle.sh"), "w") as f:
        f.write("#!/bin/sh\nwhile :; do sleep 60; done\n")
    with open(os.path.join(work, "flood.sh"), "w") as f:
        f.write("#!/bin/sh\nwhile :; do echo 'a line of about sixty bytes of app output, flooding the runtime'; done\n")
    os.chmod(os.path.join(work, "idle.sh"), 0o755)
    os.chmod(os.path.join(work, "flood.sh"), 0o755)
    idle = os.path.join(work, "idle.yml")
    with open(idle, "w") as f:
        f.write(f"apps:\n  - name: idle\n    script: {work}/idle.sh\n    instances: 16\n")
    flood = os.path.join(work, "flood.yml")
    with open(flood, "w") as f:
        f.write(f"apps:\n  - name: flood\n    script: {work}/flood.sh\n")

    out = os.path.join(work, "otlp.jsonl")
    rx = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/fixtures/otlp_receiver.py"), out], stdout=subprocess.PIPE, text=True)
    port = int(rx.stdout.readline().split()[1])
    try:
        off_cpu, _ = run(a.bin, idle, {}, a.seconds, 16)
        on_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_METRIC_EXPORT_INTERVAL": "100",
            "OTEL_LOGS_EXPORTER": "none",
        }
        before = sum(1 for _ in open(out)) if os.path.exists(out) else 0
        on_cpu, _ = run(a.bin, idle, on_env, a.seconds, 16)
        exports = (sum(1 for _ in open(out)) if os.path.exists(out) else 0) - before
        bad = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
        assert not any("error" in r for r in bad), "the receiver could not decode a request"
        per = (on_cpu - off_cpu) / max(exports, 1)
        print(f"metrics export, 16 instances: {exports} exports in {a.seconds:.0f} s; runtime CPU off {off_cpu:.3f} s, on {on_cpu:.3f} s; {per * 1000:.3f} ms CPU per export")

        _, rss_off = run(a.bin, flood, {}, 3, 1)
        down = {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/logs", "OTEL_METRICS_EXPORTER": "none"}
        _, rss_down = run(a.bin, flood, down, 3, 1)
        print(f"log flood, receiver down (batch full, drops counted): runtime RSS off {rss_off} kB, on {rss_down} kB, +{rss_down - rss_off} kB")
    finally:
        rx.kill()


if __name__ == "__main__":
    main()
