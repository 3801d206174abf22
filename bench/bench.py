#!/usr/bin/env python3
"""Benchmarks pm-runtime side by side with pm2-runtime (installed from npm into bench/pm2/).

Measures what DESIGN.md §6 targets, for the core runtime:
  1. supervisor RSS with 4 idle apps (target <= 4 MB; pm2-runtime ~61 MB)
  2. time until 16 fork-mode Node apps all answer HTTP (and pm2-runtime's time)
  3. supervisor CPU seconds over 10 s idle with those 4 apps (target ~0; pm2-runtime ~0.27 s/20 s)
  4. crash -> new process answering (target <= 0.1 s; pm2-runtime ~0.26 s)

Usage: python3 bench/bench.py [--no-pm2]. Not a test: it prints numbers, it asserts nothing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PM = os.path.join(ROOT, "target", "release", "pm-runtime")
PM2_DIR = os.path.join(ROOT, "bench", "pm2")
PM2 = os.path.join(PM2_DIR, "node_modules", ".bin", "pm2-runtime")

IDLE_JS = "setInterval(() => {}, 1000);\n"
HTTP_JS = """const http = require('http');
http.createServer((q, r) => r.end(String(process.pid))).listen(Number(process.env.PORT), '127.0.0.1');
"""


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as r:
            return r.read().decode()
    except Exception:
        return None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def supervisor_pids(proc):
    """pm-runtime is one process; pm2-runtime is node (the launcher is the same process)."""
    return [proc.pid]


def start(tool, ecosystem, cwd):
    env = dict(os.environ, PM2_HOME=os.path.join(cwd, ".pm2"))
    cmd = [PM, "start", ecosystem] if tool == "pm-runtime" else [PM2, "start", ecosystem]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc):
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
    # pm2-runtime's children may survive it; clean up whatever is left of the session.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def write_eco(d, apps):
    path = os.path.join(d, "eco.json")
    with open(path, "w") as f:
        json.dump({"apps": apps}, f)
    return path


def bench_idle(tool):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "idle.js"), "w") as f:
        f.write(IDLE_JS)
    eco = write_eco(d, [{"name": f"idle{i}", "script": "idle.js", "exec_mode": "fork"} for i in range(4)])
    p = start(tool, eco, d)
    time.sleep(4)
    rss = rss_kb(p.pid)
    c0 = cpu_seconds(p.pid)
    time.sleep(10)
    cpu = cpu_seconds(p.pid) - c0
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return rss / 1024, cpu


def bench_16(tool):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "http.js"), "w") as f:
        f.write(HTTP_JS)
    ports = free_ports(16)
    eco = write_eco(d, [{"name": f"h{i}", "script": "http.js", "exec_mode": "fork", "env": {"PORT": str(p)}} for i, p in enumerate(ports)])
    t0 = time.monotonic()
    p = start(tool, eco, d)
    pending = set(ports)
    while pending and time.monotonic() - t0 < 30:
        pending = {port for port in pending if answers(port) is None}
        time.sleep(0.01)
    took = time.monotonic() - t0 if not pending else float("nan")
    # Crash -> new process answering: SIGKILL the app on ports[0] and time until a new pid answers.
    old = answers(ports[0])
    t1 = time.monotonic()
    os.kill(int(old), signal.SIGKILL)
    restart = float("nan")
    while time.monotonic() - t1 < 10:
        now = answers(ports[0])
        if now is not None and now != old:
            restart = time.monotonic() - t1
            break
        time.sleep(0.005)
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return took, restart


def ensure_pm2():
    if os.path.exists(PM2):
        return True
    os.makedirs(PM2_DIR, exist_ok=True)
    r = subprocess.run(["npm", "install", "--prefix", PM2_DIR, "--no-audit", "--no-fund", "pm2@7"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0 and os.path.exists(PM2)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    tools = ["pm-runtime"]
    if "--no-pm2" not in sys.argv and ensure_pm2():
        tools.append("pm2-runtime")
    rows = []
    for tool in tools:
        rss, cpu = bench_idle(tool)
        t16, crash = bench_16(tool)
        rows.append((tool, rss, cpu, t16, crash))
    print(f"{'':14} {'RSS 4 idle apps':>16} {'CPU 10 s idle':>14} {'16 apps answer':>15} {'crash->answer':>14}")
    for tool, rss, cpu, t16, crash in rows:
        print(f"{tool:14} {rss:>13.1f} MB {cpu:>12.2f} s {t16:>13.2f} s {crash:>12.3f} s")


if __name__ == "__main__":
    main()
