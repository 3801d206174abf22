#!/usr/bin/env python3
"""Benchmarks pm-runtime side by side with pm2-runtime (installed from npm into bench/pm2/).

Measures what DESIGN.md §6 targets, for the core runtime:
  1. supervisor RSS with 4 idle apps (target <= 4 MB; pm2-runtime ~61 MB)
  2. time until 16 fork-mode Node apps all answer HTTP (and pm2-runtime's time)
  3. supervisor CPU seconds over 10 s idle with those 4 apps (target ~0; pm2-runtime ~0.27 s/20 s)
  4. crash -> new process answering (target <= 0.1 s; pm2-runtime ~0.26 s)
  5. log throughput: 4 fast non-Node producers x 1 000 000 lines through the runtime's stdout:
     lines/s, CPU seconds of the runtime per million lines, torn lines (target >= 1 M lines/s, 0 torn)
  6. idle CPU over 20 s with 4 apps under max_memory_restart and watch (target <= 0.02 s)
  7. cluster mode: 16 workers on one port answering (target <= 0.6 s), failed requests during a
     rolling reload under load (32 keep-alive clients that do not retry + 1 opening a connection per
     request; target 0), and the spread of requests across 4 workers (busiest/idlest)
  8. the start of 16 Node HTTP apps (fork mode, 16 ports; cluster mode, one port) against its
     floor: 16 bare `node http.js` started at once by this script, no supervisor. First answer
     and all answering, every variant once per round in turn, medians of the per-round ratios
     to the floor (target: all answering <= 1.15x the floor)

Also with OxMgr's `runtime` mode (github.com/Vladimir-Urik/OxMgr, built from OXMGR_COMMIT in
bench/footprint.py with `cargo build --release`, its path given with --oxmgr): it gets the same
apps in the shape it reads (`cmd: node x.js`, kill_timeout in seconds); where its runtime mode has
no equivalent the column says n/a and why.

Usage: python3 bench/bench.py [--no-pm2] [--pm BINARY] [--oxmgr BINARY] [--no-cluster] [--start ROUNDS [--vs BINARY]]
  --pm BINARY  measure this pm-runtime binary instead of building target/<triple>/release
  --start N    only item 8, N rounds (the full run does 3)
  --vs BINARY  with --start: a second pm-runtime binary in the same rounds (an A/B of a change)
Not a test: it prints numbers, it asserts nothing.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary that ships (Dockerfile): static glibc, release profile.
TARGET = "x86_64-unknown-linux-gnu"
PM = os.path.join(ROOT, "target", TARGET, "release", "pm-runtime")
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
    """One HTTP/1.0 GET on a raw socket (urllib's overhead would dominate start-up timings)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return body.decode() if head.startswith(b"HTTP/1.") else None
    except Exception:
        return None


def proc_kb(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def rss_kb(pid):
    return proc_kb(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid):
    return proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def supervisor_pids(proc):
    """pm-runtime is one process; pm2-runtime is node (the launcher is the same process)."""
    return [proc.pid]


OXMGR = None  # --oxmgr PATH
VS = None  # --vs PATH: a second pm-runtime binary, measured in the same rounds (bench_start)


def command(tool, ecosystem, *extra):
    if tool == "pm-runtime":
        return [PM, "start", ecosystem, *extra]
    if tool == "oxmgr":
        return [OXMGR, "runtime", ecosystem]
    return [PM2, "start", ecosystem, *extra]


def start(tool, ecosystem, cwd):
    env = dict(os.environ, PM2_HOME=os.path.join(cwd, ".pm2"), HOME=cwd)
    return subprocess.Popen(command(tool, ecosystem), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc):
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass  # already gone
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
    # pm2-runtime's children may survive it; clean up whatever is left of the session.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def write_eco(d, apps, tool="pm-runtime"):
    if tool == "oxmgr":
        # OxMgr runs `script` as a command line (no interpreter for .js; `cmd` is its field),
        # reads kill_timeout in seconds, and its file must be named like a PM2 ecosystem.
        apps = [oxmgr_app(a, d) for a in apps]
    path = os.path.join(d, "ecosystem.config.json")
    with open(path, "w") as f:
        json.dump({"apps": apps}, f)
    return path


def oxmgr_app(a, d):
    a = dict(a)
    script = a.pop("script")
    a["cmd"] = f"node {script}" if script.endswith(".js") else script
    a["cwd"] = d
    if "kill_timeout" in a:
        a["kill_timeout"] = max(1, a["kill_timeout"] // 1000)
    a.pop("exec_mode", None)
    if a.pop("autorestart", None):
        # Its default (on-failure) stops the whole runtime when an app exits 0.
        a.update(restart_policy="always", crash_restart_limit=0)
    return a


def bench_idle(tool):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "idle.js"), "w") as f:
        f.write(IDLE_JS)
    eco = write_eco(d, [{"name": f"idle{i}", "script": "idle.js", "exec_mode": "fork"} for i in range(4)], tool)
    p = start(tool, eco, d)
    time.sleep(6)  # pm-runtime unmaps its start-up code 3 s after start
    rss, pss = rss_kb(p.pid), pss_kb(p.pid)
    c0 = cpu_seconds(p.pid)
    time.sleep(10)
    cpu = cpu_seconds(p.pid) - c0
    # SIGTERM -> exit: the runtime stops its 4 apps (which exit at once) and itself.
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=30)
        term = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        term = float("nan")
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return rss / 1024, pss / 1024, cpu, term


def wait_answering(ports, t0, limit=30):
    """Polls every port that has not answered yet (10 ms apart: a spinning probe would steal CPU
    from the processes it is timing) until all answer: (first answer, all answering) in seconds
    from t0."""
    pending, first = set(ports), None
    while pending and time.monotonic() - t0 < limit:
        pending = {port for port in pending if answers(port) is None}
        if first is None and len(pending) < len(ports):
            first = time.monotonic() - t0
        time.sleep(0.01)
    took = time.monotonic() - t0 if not pending else float("nan")
    return first if first is not None else float("nan"), took


def wait_pids(port, n, t0, limit=30):
    """Polls one shared port until n different pids answered: (first answer, all n answering).
    Each sweep asks again as long as a new pid answers (as the floor's sweep tries every port
    not answering yet): one request per sweep would see workers that start together one per
    sweep, and time the probe rather than the workers."""
    pids, first = set(), None
    while len(pids) < n and time.monotonic() - t0 < limit:
        while len(pids) < n:
            a = answers(port)
            if not a or a in pids:
                break
            pids.add(a)
            if first is None:
                first = time.monotonic() - t0
        time.sleep(0.01)
    took = time.monotonic() - t0 if len(pids) >= n else float("nan")
    return first if first is not None else float("nan"), took


def floor_16():
    """The floor of a 16-app start: 16 bare Node HTTP servers (the same script) started at once
    by this process, no supervisor: (first answer, all answering)."""
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "http.js"), "w") as f:
        f.write(HTTP_JS)
    ports = free_ports(16)
    t0 = time.monotonic()
    procs = [subprocess.Popen(["node", "http.js"], cwd=d, env=dict(os.environ, PORT=str(p)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    times = wait_answering(ports, t0)
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    shutil.rmtree(d, ignore_errors=True)
    return times


def bench_16(tool, crash=True):
    """16 fork-mode apps on 16 ports: (first answer, all answering, crash -> new process answering)."""
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "http.js"), "w") as f:
        f.write(HTTP_JS)
    ports = free_ports(16)
    eco = write_eco(d, [{"name": f"h{i}", "script": "http.js", "exec_mode": "fork", "env": {"PORT": str(p)}} for i, p in enumerate(ports)], tool)
    t0 = time.monotonic()
    p = start(tool, eco, d)
    first, took = wait_answering(ports, t0)
    restart = float("nan")
    if crash and took == took:
        # Crash -> new process answering: SIGKILL the app on ports[0] and time until a new pid answers.
        old = answers(ports[0])
        t1 = time.monotonic()
        os.kill(int(old), signal.SIGKILL)
        while time.monotonic() - t1 < 10:
            now = answers(ports[0])
            if now is not None and now != old:
                restart = time.monotonic() - t1
                break
            time.sleep(0.005)
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return first, took, restart


def cluster_16(tool):
    """16 cluster workers on one port: (first answer, 16 pids answered)."""
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "c.js"), "w") as f:
        f.write(CLUSTER_JS)
    port = free_ports(1)[0]
    eco = write_eco(d, [{"name": "c", "script": "c.js", "exec_mode": "cluster", "instances": 16, "env": {"PORT": str(port)}}])
    t0 = time.monotonic()
    p = start(tool, eco, d)
    times = wait_pids(port, 16, t0)
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return times


def median(xs):
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def bench_start(tools, rounds):
    """Start of 16 Node HTTP apps against its floor, the variants in turn in every round (the
    machine's speed drifts; a ratio is taken within a round): first answer and all answering,
    medians of the times and of the per-round ratios to the floor."""
    variants = [("floor", floor_16)]
    pms = [("pm-runtime", PM)] + ([("pm-runtime B", VS)] if VS else [])

    def as_pm(binary, run):
        # The same tool with another binary (--vs): PM swapped for the call.
        def go():
            global PM
            saved, PM = PM, binary
            try:
                return run()
            finally:
                PM = saved
        return go

    for tool in tools:
        for name, binary in pms if tool == "pm-runtime" else [(tool, None)]:
            fork, cluster = (lambda t=tool: bench_16(t, crash=False)[:2]), (lambda t=tool: cluster_16(t))
            if binary:
                fork, cluster = as_pm(binary, fork), as_pm(binary, cluster)
            variants.append((f"{name} fork", fork))
            if tool != "oxmgr":
                variants.append((f"{name} cluster", cluster))
    runs = {name: [] for name, _ in variants}
    for _ in range(rounds):
        for name, run in variants:
            runs[name].append(run())
    floor = runs["floor"]
    print(f"16 Node HTTP apps, {rounds} rounds in turn (medians; ratio: to the floor of the same round)")
    print(f"{'':22} {'first answer':>13} {'ratio':>6} {'all answering':>14} {'ratio':>6}")
    for name, _ in variants:
        r = runs[name]
        f1 = median([a[0] / b[0] for a, b in zip(r, floor)])
        fa = median([a[1] / b[1] for a, b in zip(r, floor)])
        print(f"{name:22} {median([a[0] for a in r]):>11.2f} s {f1:>5.2f}x {median([a[1] for a in r]):>12.2f} s {fa:>5.2f}x")
    if VS:
        print("pm-runtime / pm-runtime B, round by round (medians): first answer, all answering")
        for mode in ("fork", "cluster"):
            a, b = runs[f"pm-runtime {mode}"], runs[f"pm-runtime B {mode}"]
            print(f"{mode:22} {median([x[0] / y[0] for x, y in zip(a, b)]):>11.2f}x {median([x[1] / y[1] for x, y in zip(a, b)]):>12.2f}x")


def bench_logs(tool, n=1_000_000, apps=4):
    d = tempfile.mkdtemp()
    # OxMgr's runtime mode stops everything when an app that may not restart exits: its apps
    # restart (the count stops at n * apps lines anyway).
    eco = write_eco(d, [{"name": f"p{i}", "script": f"seq 1 {n}", "autorestart": tool == "oxmgr"} for i in range(apps)], tool)
    env = dict(os.environ, PM2_HOME=os.path.join(d, ".pm2"), HOME=d)
    cmd = command(tool, eco, "--no-auto-exit")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    want = n * apps
    got = torn = 0
    buf = b""
    while got < want and time.monotonic() - t0 < 120:
        chunk = p.stdout.read1(1 << 20)
        if not chunk:
            break
        buf += chunk
        lines = buf.split(b"\n")
        buf = lines.pop()
        for line in lines:
            if tool == "oxmgr":
                if not line.startswith(b"[p"):
                    continue  # its own messages ("Runtime started ...", "[runtime] ...")
                line = line.split(b"] ", 1)[-1]  # "[p0:stdout] 123"
            if line.isdigit():
                got += 1
            elif b"PM2" not in line and not line.startswith(b"[runtime]") and line:
                torn += 1
    took = time.monotonic() - t0
    cpu = cpu_seconds(p.pid)
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return got / took, cpu / (got / 1e6) if got else float("nan"), torn, got == want


def bench_idle_triggers(tool):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "idle.js"), "w") as f:
        f.write(IDLE_JS)
    os.makedirs(os.path.join(d, "node_modules", "dep"), exist_ok=True)
    eco = write_eco(d, [{"name": f"i{i}", "script": "idle.js", "exec_mode": "fork", "max_memory_restart": "200M", "watch": True} for i in range(4)], tool)
    p = start(tool, eco, d)
    time.sleep(4)
    c0 = cpu_seconds(p.pid)
    time.sleep(20)
    cpu = cpu_seconds(p.pid) - c0
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return cpu


CLUSTER_JS = """const http = require('http');
http.createServer((q, r) => r.end(String(process.pid))).listen(Number(process.env.PORT));
"""


def bench_cluster(tool):
    up16 = cluster_16(tool)[1]
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "c.js"), "w") as f:
        f.write(CLUSTER_JS)
    port = free_ports(1)[0]
    # 4 workers: distribution and a rolling reload under load.
    eco = write_eco(d, [{"name": "c", "script": "c.js", "exec_mode": "cluster", "instances": 4, "env": {"PORT": str(port)}}])
    p = start(tool, eco, d)
    deadline = time.monotonic() + 10
    while answers(port) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    counts = {}
    for _ in range(2000):
        a = answers(port)
        if a:
            counts[a] = counts.get(a, 0) + 1
    spread = max(counts.values()) / min(counts.values()) if len(counts) == 4 else float("nan")
    # Clients that do not retry: a request on a keep-alive connection the server closes fails.
    load = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fixtures", "load.py"), str(port), "6", "--no-retry"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    env = dict(os.environ, PM2_HOME=os.path.join(d, ".pm2"))
    cmd = [PM, "reload", "c"] if tool == "pm-runtime" else [os.path.join(PM2_DIR, "node_modules", ".bin", "pm2"), "reload", "c"]
    subprocess.run(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = load.communicate()[0].strip().replace("'", '"')
    try:
        stats = json.loads(out)
    except ValueError:
        stats = {"ok": 0, "fail": float("nan"), "retried": 0}
    stop(p)
    shutil.rmtree(d, ignore_errors=True)
    return up16, spread, stats


def ensure_pm2():
    if os.path.exists(PM2):
        return True
    os.makedirs(PM2_DIR, exist_ok=True)
    r = subprocess.run(["npm", "install", "--prefix", PM2_DIR, "--no-audit", "--no-fund", "pm2@7"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0 and os.path.exists(PM2)


def main():
    global PM, OXMGR, VS
    if "--pm" in sys.argv:
        PM = os.path.abspath(sys.argv[sys.argv.index("--pm") + 1])
    else:
        env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--target", TARGET], cwd=ROOT, env=env, check=True)
    tools = ["pm-runtime"]
    if "--no-pm2" not in sys.argv and ensure_pm2():
        tools.append("pm2-runtime")
    if "--oxmgr" in sys.argv:
        OXMGR = os.path.abspath(sys.argv[sys.argv.index("--oxmgr") + 1])
        tools.append("oxmgr")
    if "--vs" in sys.argv:
        VS = os.path.abspath(sys.argv[sys.argv.index("--vs") + 1])
    if "--start" in sys.argv:
        bench_start(tools, int(sys.argv[sys.argv.index("--start") + 1]))
        return
    rows = []
    for tool in tools:
        rss, pss, cpu, term = bench_idle(tool)
        first16, t16, crash = bench_16(tool)
        rate, cpu_per_m, torn, complete = bench_logs(tool)
        # OxMgr's runtime mode neither samples memory nor watches files (both are daemon
        # features there): its idle cost with them set is not comparable.
        idle_triggers = bench_idle_triggers(tool) if tool != "oxmgr" else None
        rows.append((tool, rss, pss, cpu, term, t16, crash, rate, cpu_per_m, torn, complete, idle_triggers))
    if "--no-cluster" not in sys.argv:
        print()
        print(f"{'':12} {'16 workers up':>14} {'spread 4w':>10} {'reload: ok':>11} {'failed':>7} {'retried':>8}")
        for tool in tools:
            if tool == "oxmgr":
                # Its runtime mode starts `instances` as separate processes: no shared port.
                print(f"{tool:12} {'n/a: runtime mode has no cluster (instances are separate processes, no shared port)':>40}")
                continue
            up16, spread, st = bench_cluster(tool)
            print(f"{tool:12} {up16:>12.2f} s {spread:>9.2f}x {st['ok']:>11} {st['fail']:>7} {st['retried']:>8}")
    if "--no-start" not in sys.argv:
        print()
        bench_start(tools, 3)
    print()
    print(f"{'':12} {'RSS 4 idle':>11} {'PSS':>8} {'CPU 10s idle':>13} {'SIGTERM->exit':>14} {'16 answer':>10} {'crash->ans':>11} {'lines/s':>10} {'CPU s/M lines':>14} {'torn':>5} {'all?':>5} {'CPU 20s mem+watch':>18}")
    for tool, rss, pss, cpu, term, t16, crash, rate, cpm, torn, complete, it in rows:
        trig = f"{it:>16.3f} s" if it is not None else f"{'n/a':>18}"
        print(f"{tool:12} {rss:>8.1f} MB {pss:>5.1f} MB {cpu:>11.3f} s {term:>12.2f} s {t16:>8.2f} s {crash:>9.3f} s {rate:>10.0f} {cpm:>14.3f} {torn:>5} {str(complete):>5} {trig}")


if __name__ == "__main__":
    main()
