#!/usr/bin/env python3
"""The supervisor's own memory, side by side: pm-runtime, pm2-runtime and OxMgr's `runtime` mode.

For each runtime and mode it starts 4 idle Node apps, waits until the 4 are running and the
supervisor has settled, and prints from /proc/PID/smaps_rollup: RSS, PSS, anonymous resident and
file-backed resident (RSS - anonymous), plus the resident pages of the binary's code mapping.

pm-runtime runs four ways: plain, --web, PM2 Plus (against a mock backend on 127.0.0.1 that
answers the verify call and holds the websocket), and both.

  python3 bench/footprint.py [--pm PATH] [--symbols UNSTRIPPED] [--oxmgr PATH] [--no-pm2]
                             [--sizes] [--settle SECONDS]

--pm         the binary to measure (default: the static release build npm/build.sh ships,
             target/x86_64-unknown-linux-gnu/release/pm-runtime)
--symbols    an unstripped build of the same code (same layout as --pm; e.g. build with
             CARGO_PROFILE_RELEASE_STRIP=false and measure `objcopy --strip-all` of it, whose
             loaded segments are the shipped binary's): resident code is then
             attributed to crates, so "no code page of an off feature mapped" can be read off
--sizes      print the code size by crate of --symbols (what `cargo bloat --crates` shows)
--oxmgr      OxMgr's binary (build it: see OXMGR_COMMIT below); without it the column is skipped
--env K=V    add K=V to the supervisor's environment (repeatable)
--only TOOL  measure only pm-runtime, pm2-runtime or oxmgr
--no-pm2     skip pm2-runtime (else it is installed from npm into bench/pm2/, as bench.py does)

Not a test: it prints numbers, it asserts nothing.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "x86_64-unknown-linux-gnu"
PM = os.path.join(ROOT, "target", TARGET, "release", "pm-runtime")
PM2_DIR = os.path.join(ROOT, "bench", "pm2")
PM2 = os.path.join(PM2_DIR, "node_modules", ".bin", "pm2-runtime")
# OxMgr (github.com/Vladimir-Urik/OxMgr) as measured for the README: this commit, built with
# `cargo build --release` outside this repository (its own release profile: opt-level "s", LTO).
OXMGR_COMMIT = "76bed9dc09c20f7f1a179c4f60dda1f2f86f0654"

IDLE_JS = "setInterval(() => {}, 1000);\n"
# The code groups of link/layout.ld: each line there is `*(patterns) /* group */`; the patterns
# match section names `.text.<mangled symbol>`, so they classify the unstripped build's symbols.
LAYOUT = os.path.join(ROOT, "link", "layout.ld")
# Groups that belong to features (off in the "plain" run: none of their code should be resident).
FEATURE_GROUPS = ("web", "http", "tls", "plus", "otel", "monit")


# --- a mock PM2 Plus backend: verify call + websocket that reads and drops frames -------------

class MockPlus:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.frames = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def root(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
            if lines[0].startswith("POST"):
                want = int(headers.get("content-length", "0"))
                while len(rest) < want:
                    rest += c.recv(4096)
                body = json.dumps({"active": True, "pending": False, "disabled": False, "new": False,
                                   "endpoints": {"ws": f"http://127.0.0.1:{self.port}/ws", "web": "http://dashboard.invalid"}})
                c.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
                return
            key = headers.get("sec-websocket-key", "")
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            c.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode())
            buf = rest
            while not self.stopped:
                while len(buf) < 2:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                n = buf[1] & 0x7F
                off = 2
                if n == 126:
                    need = 4
                elif n == 127:
                    need = 10
                else:
                    need = 2
                while len(buf) < need + 4:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                if n == 126:
                    n, off = struct.unpack(">H", buf[2:4])[0], 4
                elif n == 127:
                    n, off = struct.unpack(">Q", buf[2:10])[0], 10
                total = off + 4 + n  # client frames are masked
                while len(buf) < total:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                opcode = buf[0] & 0x0F
                if opcode == 9:  # ping -> pong (empty)
                    c.sendall(b"\x8a\x00")
                elif opcode == 8:
                    return
                else:
                    self.frames += 1
                buf = buf[total:]
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


# --- /proc readers ---------------------------------------------------------------------------

def rollup(pid):
    """smaps_rollup fields in kB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def code_mappings(pid, binary):
    """(start, end, file offset, Rss kB) of the executable mappings of `binary` in `pid`."""
    real = os.path.realpath(binary)
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split()
            if "-" in first[0] and len(first) >= 5 and ":" not in first[0]:
                cur = None
                start, end = (int(x, 16) for x in first[0].split("-"))
                if "x" in first[1] and len(first) >= 6 and os.path.realpath(first[5]) == real:
                    cur = [start, end, int(first[2], 16), 0]
                    maps.append(cur)
            elif cur is not None and first[0] == "Rss:":
                cur[3] = int(first[1])
    return maps


def resident_pages(pid, start, end):
    """Virtual page numbers in [start, end) that are mapped (present) in `pid` (needs root for
    other users' processes; the present bit is readable by the owner)."""
    page = os.sysconf("SC_PAGE_SIZE")
    first, count = start // page, (end - start) // page
    present = set()
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(first * 8)
        data = f.read(count * 8)
    for i in range(len(data) // 8):
        (v,) = struct.unpack_from("<Q", data, i * 8)
        if v >> 63:
            present.add(first + i)
    return present


def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        c = children(todo.pop())
        out += c
        todo += c
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --- symbols: code by crate ------------------------------------------------------------------

def crate_of(name):
    """The crate a demangled Rust symbol belongs to (cargo-bloat's rule, roughly): the first path
    segment, looking through `<T as Trait>` and `<&T>` to T."""
    s = name
    while s.startswith("<") or s.startswith("&") or s.startswith("*const ") or s.startswith("*mut ") or s.startswith("dyn "):
        for p in ("<", "&mut ", "&", "*const ", "*mut ", "dyn "):
            if s.startswith(p):
                s = s[len(p):]
                break
    if s.startswith("_") or "::" not in s:
        return "[C/std-sys]" if not s.startswith("_ZN") else "[?]"
    head = s.split("::", 1)[0]
    return head.split("<", 1)[0].split(" ", 1)[0].split("[", 1)[0] or "[?]"


def layout_groups():
    """[(fnmatch pattern on the mangled name, group)] from link/layout.ld."""
    import re
    out = []
    with open(LAYOUT) as f:
        for line in f:
            m = re.match(r"\s*\*\(([^)]*)\)\s*/\*\s*([\w-]+)\s*\*/", line)
            if m:
                out += [(p[len(".text."):], m.group(2)) for p in m.group(1).split() if p.startswith(".text.")]
    return out


def group_of(mangled, groups):
    import fnmatch
    for pattern, group in groups:
        if fnmatch.fnmatchcase(mangled, pattern):
            return group
    return None


def load_symbols(unstripped):
    """[(addr, size, crate, layout group or None)] of the code symbols of `unstripped`, sorted by
    address."""
    out = subprocess.run(["nm", "-S", "--defined-only", "-n", unstripped], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2] not in "tTwW":
            continue
        try:
            addr, size = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            continue
        if size:
            rows.append((addr, size, parts[3]))
    names = subprocess.run(["c++filt"], input="\n".join(r[2] for r in rows), capture_output=True, text=True, check=True).stdout.split("\n")
    groups = layout_groups()
    syms = [(a, sz, crate_of(d), group_of(m, groups)) for (a, sz, m), d in zip(rows, names)]
    # LLVM merges identical functions: one body, several names. A body that also carries a name
    # outside every group is code the running paths share, not a feature's; and it is counted
    # once, under its first name.
    shared = {a for a, _, _, g in syms if g is None}
    out, seen = [], set()
    for a, sz, crate, g in syms:
        if a not in seen:
            seen.add(a)
            out.append((a, sz, crate, None if a in shared else g))
    return out


def text_vaddr_base(binary):
    """Virtual address and file offset of the executable PT_LOAD segment (to map runtime
    addresses back to link-time addresses: static binaries are PIE)."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        p = line.split()
        if p and p[0] == "LOAD" and "E" in p[6:]:
            return int(p[2], 16), int(p[1], 16)
    raise RuntimeError(f"{binary}: no executable LOAD segment")


def sizes_by_crate(syms):
    total = {}
    for _, size, crate, _ in syms:
        total[crate] = total.get(crate, 0) + size
    return sorted(total.items(), key=lambda kv: -kv[1])


def resident_by_crate(pid, binary, syms):
    """Bytes of each crate's code, and of each layout group's, on pages mapped in `pid`."""
    page = os.sysconf("SC_PAGE_SIZE")
    vaddr, _ = text_vaddr_base(binary)
    out, by_group = {}, {}
    for start, end, offset, _ in code_mappings(pid, binary):
        present = resident_pages(pid, start, end)
        # runtime address = load bias + link address; the mapping at file offset `offset`
        # starts at link address (vaddr - segment offset + offset) for page-aligned segments.
        _, seg_off = text_vaddr_base(binary)
        bias = start - (vaddr - seg_off + offset)
        for addr, size, crate, group in syms:
            a = addr + bias
            if a + size <= start or a >= end:
                continue
            p0, p1 = a // page, (a + size - 1) // page
            hit = 0
            for vp in range(p0, p1 + 1):
                if vp in present:
                    lo, hi = max(a, vp * page), min(a + size, (vp + 1) * page)
                    hit += hi - lo
            if hit:
                out[crate] = out.get(crate, 0) + hit
                if group:
                    by_group[group] = by_group.get(group, 0) + hit
    return out, by_group


# --- runs ------------------------------------------------------------------------------------

def write_apps(d, tool):
    with open(os.path.join(d, "idle.js"), "w") as f:
        f.write(IDLE_JS)
    if tool == "oxmgr":
        # OxMgr's ecosystem import runs `script` as a command (no interpreter for .js) and reads
        # kill_timeout in seconds: give it `cmd: node idle.js`.
        apps = [{"name": f"idle{i}", "cmd": "node idle.js", "cwd": d, "kill_timeout": 5} for i in range(4)]
    else:
        apps = [{"name": f"idle{i}", "script": "idle.js", "exec_mode": "fork", "kill_timeout": 5000} for i in range(4)]
    path = os.path.join(d, "ecosystem.config.json")
    with open(path, "w") as f:
        json.dump({"apps": apps}, f)
    return path


def measure(tool, binary, mode, settle, symbols=None):
    """Starts `tool` with 4 idle apps, returns its memory figures once settled."""
    d = tempfile.mkdtemp(prefix="footprint-")
    eco = write_apps(d, tool)
    env = dict(os.environ, PM2_HOME=os.path.join(d, ".pm2"), HOME=d)
    for v in ("PM2_PUBLIC_KEY", "PM2_SECRET_KEY", "KEYMETRICS_PUBLIC", "KEYMETRICS_SECRET", "KEYMETRICS_NODE", "PM_RUNTIME_WEB_TOKEN"):
        env.pop(v, None)
    env.update(EXTRA_ENV)
    mock = None
    if tool == "pm-runtime":
        cmd = [binary, "start", eco]
        if "web" in mode:
            cmd += ["--web", "0"]
        if "plus" in mode:
            mock = MockPlus()
            env.update(KEYMETRICS_NODE=mock.root(), PM2_PUBLIC_KEY="footprint-public", PM2_SECRET_KEY="footprint-secret", PM2_MACHINE_NAME="footprint")
    elif tool == "pm2-runtime":
        cmd = [binary, "start", eco]
    else:
        cmd = [binary, "runtime", eco]
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            apps = [c for c in descendants(p.pid) if "idle.js" in cmdline(c)]
            if len(apps) >= 4:
                break
            if p.poll() is not None:
                raise RuntimeError(f"{tool} {mode}: exited with {p.returncode} before its apps ran")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{tool} {mode}: the 4 apps did not start within 30 s")
        if mock:
            while mock.frames == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            if mock.frames == 0:
                raise RuntimeError("pm-runtime plus: no frame reached the mock PM2 Plus backend")
        time.sleep(settle)
        r = rollup(p.pid)
        code = sum(m[3] for m in code_mappings(p.pid, binary)) if tool != "pm2-runtime" else float("nan")
        threads = len(os.listdir(f"/proc/{p.pid}/task"))
        by_crate = resident_by_crate(p.pid, binary, symbols) if symbols else None
        return {"rss": r["Rss"], "pss": r["Pss"], "anon": r["Anonymous"], "file": r["Rss"] - r["Anonymous"], "code": code,
                "threads": threads, "by_crate": by_crate}
    finally:
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(timeout=15)
        except Exception:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if mock:
            mock.stop()
        shutil.rmtree(d, ignore_errors=True)


def ensure_pm2():
    if os.path.exists(PM2):
        return True
    os.makedirs(PM2_DIR, exist_ok=True)
    r = subprocess.run(["npm", "install", "--prefix", PM2_DIR, "--no-audit", "--no-fund", "pm2@7"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0 and os.path.exists(PM2)


# --env K=V (repeatable): added to the supervisor's environment (for experiments).
EXTRA_ENV = dict(sys.argv[i + 1].split("=", 1) for i, a in enumerate(sys.argv) if a == "--env")


def arg(name, default=None):
    if name in sys.argv:
        i = sys.argv.index(name)
        return sys.argv[i + 1]
    return default


def mb(kb):
    return kb / 1024


def main():
    pm = arg("--pm", PM)
    unstripped = arg("--symbols")
    oxmgr = arg("--oxmgr")
    settle = float(arg("--settle", "3"))
    syms = load_symbols(unstripped) if unstripped else None
    print(f"pm-runtime binary: {pm} ({os.path.getsize(pm) / 1e6:.2f} MB)")
    if syms and "--sizes" in sys.argv:
        total = sum(s for _, s, _, _ in syms)
        print(f"\ncode by crate (symbols of {unstripped}; {total / 1e6:.2f} MB of functions):")
        for crate, size in sizes_by_crate(syms)[:30]:
            print(f"  {crate:28} {size / 1024:8.1f} KiB {100 * size / total:5.1f}%")
    runs = [("pm-runtime", pm, m) for m in ("", "web", "plus", "web+plus")]
    if "--no-pm2" not in sys.argv and ensure_pm2():
        runs.append(("pm2-runtime", PM2, ""))
    if oxmgr:
        runs.append(("oxmgr", oxmgr, "runtime"))
    only = arg("--only")
    if only:
        runs = [r for r in runs if r[0] == only]
    rows = []
    for tool, binary, mode in runs:
        try:
            rows.append((tool, mode, measure(tool, binary, mode, settle, syms if tool == "pm-runtime" else None)))
        except RuntimeError as e:
            rows.append((tool, mode, None))
            print(f"{tool} {mode}: {e}", file=sys.stderr)
    print(f"\nsupervisor with 4 idle Node apps (MB; file = RSS - anonymous; code = resident pages of the binary's code)")
    print(f"{'':24} {'RSS':>6} {'PSS':>6} {'anon':>6} {'file':>6} {'code':>6} {'threads':>8}")
    for tool, mode, m in rows:
        label = f"{tool} {mode or 'plain'}" if tool == "pm-runtime" else tool
        if m is None:
            print(f"{label:24} {'n/a':>6}")
            continue
        print(f"{label:24} {mb(m['rss']):6.2f} {mb(m['pss']):6.2f} {mb(m['anon']):6.2f} {mb(m['file']):6.2f} {mb(m['code']):6.2f} {m['threads']:>8}")
    if syms:
        totals = {}
        for _, size, _, group in syms:
            totals[group] = totals.get(group, 0) + size
        print("\nresident code by group of link/layout.ld (KiB mapped of each group's code; in the plain run every")
        print("feature group is off and should show 0; start-up is unmapped after start):")
        cols = FEATURE_GROUPS + ("start-up",)
        print(f"  {'':9} " + " ".join(f"{c:>8}" for c in cols) + "  | top crates")
        print(f"  {'(size)':9} " + " ".join(f"{totals.get(c, 0) / 1024:8.1f}" for c in cols))
        for tool, mode, m in rows:
            if not m or m["by_crate"] is None:
                continue
            bc, bg = m["by_crate"]
            top = ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(bc.items(), key=lambda kv: -kv[1])[:6])
            print(f"  {mode or 'plain':9} " + " ".join(f"{bg.get(c, 0) / 1024:8.1f}" for c in cols) + f"  | {top}")


if __name__ == "__main__":
    main()
