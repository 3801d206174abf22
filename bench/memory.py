#!/usr/bin/env python3
"""Leaking workers in a memory-limited container: how often the kernel's OOM killer strikes,
with pm-runtime's recycling (default: the largest instance is restarted at 95 % of the limit),
without it, and under pm2-runtime.

A memory cgroup of its own (v1 or v2; needs root) with a 384 MiB limit — on v2 with
`memory.oom.group=1`, as Kubernetes >= 1.28 sets it, so one OOM kill takes every process of the
"container", the supervisor included. Three Node workers each leak 1 MiB every 100 ms, forever.
For each supervisor, over SECONDS (default 20): OOM kills (the cgroup's `oom_kill` count),
graceful recycles (pm-runtime's log), whether the supervisor itself survived.

Usage: sudo python3 bench/memory.py [--no-pm2] [SECONDS]. Not a test: it prints numbers.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "debug", "pm-runtime")
PM2 = os.path.join(ROOT, "bench", "pm2", "node_modules", ".bin", "pm2-runtime")
LIMIT = 384 << 20
LEAK = "const a = []; setInterval(() => a.push(Buffer.alloc(1 << 20, 1)), 100);\n"


def cgroup(name):
    """Makes the cgroup; returns (dir, oom_kills())."""
    v1 = "/sys/fs/cgroup/memory"
    if os.path.exists(os.path.join(v1, "memory.limit_in_bytes")):
        d = os.path.join(v1, name)
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "memory.limit_in_bytes"), "w").write(str(LIMIT))
        events, group = "memory.oom_control", False
    else:
        d = os.path.join("/sys/fs/cgroup", name)
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "memory.max"), "w").write(str(LIMIT))
        open(os.path.join(d, "memory.oom.group"), "w").write("1")
        events, group = "memory.events", True

    def kills():
        for line in open(os.path.join(d, events)):
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    return d, kills, group


def run(label, argv, env, seconds, work):
    name = f"pmrt-bench-{os.getpid()}-{label.replace(' ', '-')}"
    d, kills, group = cgroup(name)
    out = open(os.path.join(work, f"{label}.log"), "w+")
    cmd = ["sh", "-c", f"echo $$ > {d}/cgroup.procs && exec " + " ".join(f"'{a}'" for a in argv)]
    p = subprocess.Popen(cmd, cwd=work, env={**os.environ, "PM2_HOME": os.path.join(work, f".pm2-{label}"), **env}, stdout=out, stderr=subprocess.STDOUT)
    start = kills()
    time.sleep(seconds)
    survived = p.poll() is None
    oom = kills() - start
    if survived:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    # Whatever is left in the cgroup goes, then the cgroup.
    for _ in range(100):
        try:
            pids = open(os.path.join(d, "cgroup.procs")).read().split()
        except OSError:
            break
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    try:
        os.rmdir(d)
    except OSError:
        pass
    out.seek(0)
    log = out.read()
    recycles = log.count("before the OOM killer strikes")
    return {"label": label, "oom_kills": oom, "recycles": recycles, "supervisor_survived": survived, "group_kill": group}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = float(args[0]) if args else 20.0
    if os.geteuid() != 0:
        sys.exit("needs root (a memory cgroup of its own)")
    subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="pmrt-memory-")
    open(os.path.join(work, "leak.js"), "w").write(LEAK)
    open(os.path.join(work, "eco.json"), "w").write('{"apps":[{"name":"leak","script":"leak.js","instances":3,"exec_mode":"fork"}]}')
    rows = [
        run("pm-runtime recycle", [BIN, "start", "eco.json"], {}, seconds, work),
        run("pm-runtime no recycle", [BIN, "start", "eco.json"], {"PM_RUNTIME_MEMORY_RECYCLE": "off"}, seconds, work),
    ]
    if "--no-pm2" not in sys.argv:
        if not os.path.exists(PM2):
            subprocess.run(["npm", "install", "--prefix", os.path.join(ROOT, "bench", "pm2"), "--no-audit", "--no-fund", "pm2@7"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append(run("pm2-runtime", [PM2, "start", "eco.json"], {}, seconds, work))
    print(f"{LIMIT >> 20} MiB limit, 3 workers leaking 10 MiB/s each, {seconds:.0f} s"
          + (", memory.oom.group=1 (one OOM kill = every process)" if rows[0]["group_kill"] else ", cgroup v1 (the OOM killer kills one process)"))
    print(f"{'supervisor':24} {'OOM kills':>10} {'recycles':>9} {'supervisor survived':>20}")
    for r in rows:
        print(f"{r['label']:24} {r['oom_kills']:>10} {r['recycles']:>9} {str(r['supervisor_survived']):>20}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
