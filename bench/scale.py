#!/usr/bin/env python3
"""Start and stop times of N short-lived instances (`exec sleep`), N = 10, 100, 1000.

Start: from launching pm-runtime until its log says every instance is online, and the CPU
time the runtime process itself used until then (forks included, the apps' own time not).
Stop: from SIGTERM until pm-runtime has exited (every instance stopped, every process gone).
Both should grow linearly with N (issue 10: 1000 instances stopped in under 2 s on 2 cores).

Usage: python3 bench/scale.py [N ...]. Builds the release binary first (set PM_RUNTIME_BIN to
use another one). Not a test: it prints numbers, it asserts nothing.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary():
    if os.environ.get("PM_RUNTIME_BIN"):
        return os.path.abspath(os.environ["PM_RUNTIME_BIN"])
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "pm-runtime")


def cpu_seconds(pid):
    """User + system CPU time of the runtime process itself (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(pm, n):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "s.sh"), "w") as f:
            f.write("#!/bin/sh\nexec sleep 3600\n")
        os.chmod(os.path.join(d, "s.sh"), 0o755)
        with open(os.path.join(d, "e.yml"), "w") as f:
            f.write(f"apps:\n  - name: s\n    script: s.sh\n    instances: {n}\n")
        env = dict(os.environ, PM2_HOME=os.path.join(d, ".pm2"), PM_RUNTIME_MAX_INSTANCES=str(max(n, 4096)))
        t0 = time.monotonic()
        p = subprocess.Popen([pm, "e.yml"], cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        online = [0]
        all_up = threading.Event()

        def read():
            for line in p.stdout:
                if "] online" in line:
                    online[0] += 1
                    if online[0] == n:
                        all_up.set()

        threading.Thread(target=read, daemon=True).start()
        if not all_up.wait(120):
            p.kill()
            return None, None, None
        started = time.monotonic() - t0
        cpu = cpu_seconds(p.pid)
        time.sleep(0.5)
        t1 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            p.kill()
            return started, cpu, None
        return started, cpu, time.monotonic() - t1


def main():
    pm = binary()
    sizes = [int(a) for a in sys.argv[1:]] or [10, 100, 1000]
    print(f"{'instances':>10} {'start (all online)':>19} {'runtime CPU to start':>21} {'stop (SIGTERM to exit)':>23}")
    for n in sizes:
        started, cpu, stopped = run(pm, n)
        fmt = lambda t: "timeout" if t is None else f"{t:.2f} s"
        print(f"{n:>10} {fmt(started):>19} {fmt(cpu):>21} {fmt(stopped):>23}", flush=True)


if __name__ == "__main__":
    main()
