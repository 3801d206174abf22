//! Output: every line exactly once, whole, in order; JSON output parses line by line.

use std::collections::HashMap;
use std::time::Duration;

use crate::scenario::*;

/// A fast writer that is not Node: Python writing numbered lines in big blocks.
const WRITER: &str = "import sys, os\nn = int(sys.argv[1]); tag = os.environ['name'] + os.environ['NODE_APP_INSTANCE']\nout = sys.stdout\nfor i in range(n):\n    out.write(f'{tag} line {i} ' + 'x' * (i % 50) + '\\n')\nout.flush()\n";

fn check_counts(lines: &[String], writers: usize, n: usize) {
    let mut next: HashMap<String, usize> = HashMap::new();
    for l in lines {
        let mut parts = l.splitn(4, ' ');
        let (Some(tag), Some("line"), Some(num)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let num: usize = num.parse().unwrap_or_else(|_| panic!("torn line: {l:?}"));
        let expect = next.entry(tag.to_string()).or_insert(0);
        assert_eq!(num, *expect, "out of order or lost for {tag}: {l:?}");
        let pad = parts.next().unwrap_or("");
        assert_eq!(pad.len(), num % 50, "torn line: {l:?}");
        *expect += 1;
    }
    assert_eq!(next.len(), writers, "{next:?}");
    assert!(next.values().all(|&c| c == n), "{next:?}");
}

#[test]
fn many_writers_lines_arrive_whole_and_in_order() {
    let n = 100_000;
    let s = Scenario::new().file("w.py", WRITER).file(
        "eco.yml",
        &format!(
            "apps:\n  - name: w\n    script: w.py\n    args: ['{n}']\n    exec_mode: fork\n    instances: 8\n    autorestart: false\n"
        ),
    );
    let (status, out, err) = s.run(&["eco.yml"], Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{err}");
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    check_counts(&lines, 8, n);
}

#[test]
fn json_mode_every_line_parses() {
    let n = 100_000;
    let s = Scenario::new().file("w.py", WRITER).file(
        "eco.yml",
        &format!(
            "apps:\n  - name: w\n    script: w.py\n    args: ['{n}']\n    exec_mode: fork\n    instances: 8\n    autorestart: false\n"
        ),
    );
    let (status, out, err) = s.run(&["eco.yml", "--json"], Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{err}");
    let mut messages = Vec::new();
    let mut events = 0;
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
        match v["type"].as_str() {
            Some("out") => messages.push(v["message"].as_str().unwrap().to_string()),
            Some("process_event") | Some("PM2") => events += 1,
            other => panic!("unexpected type {other:?}: {l}"),
        }
    }
    assert!(events >= 8, "runtime events are JSON too");
    check_counts(&messages, 8, n);
}

#[test]
fn one_mib_line_arrives_whole_and_huge_line_is_split_with_marker() {
    let s = Scenario::new().file(
        "big.py",
        "import sys\nsys.stdout.write('a' * (1 << 20) + '\\n')\nsys.stdout.write('b' * (9 << 20) + '\\n')\nsys.stdout.write('end\\n')\n",
    );
    let (status, out, _) = s.run(&["big.py", "--no-autorestart"], Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    let lines: Vec<&str> = out.lines().filter(|l| !l.contains("PM2 log:")).collect();
    assert_eq!(lines[0].len(), 1 << 20);
    let marker = " [pm-runtime: line continues]";
    let pieces: Vec<&str> = lines[1..lines.len() - 1].to_vec();
    assert!(pieces.len() >= 3, "9 MiB split into pieces: {}", pieces.len());
    let total: usize = pieces.iter().map(|p| p.trim_end_matches(marker).len()).sum();
    assert_eq!(total, 9 << 20, "nothing lost");
    assert!(pieces[..pieces.len() - 1].iter().all(|p| p.ends_with(marker)));
    assert_eq!(*lines.last().unwrap(), "end");
}

#[test]
fn blank_lines_and_partial_last_line_are_kept() {
    let s = Scenario::new().file("p.sh", "#!/bin/sh\nprintf 'one\\n\\ntwo\\nno-newline'\n");
    let (status, out, _) = s.run(&["p.sh", "--no-autorestart"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let app: Vec<&str> = out.lines().filter(|l| !l.contains("PM2 log:")).collect();
    assert_eq!(app, vec!["one", "", "two", "no-newline"]);
}

#[test]
fn stderr_goes_to_stderr_in_raw_mode() {
    let s = Scenario::new().file("e.sh", "#!/bin/sh\necho to-out\necho to-err >&2\n");
    let (_, out, err) = s.run(&["e.sh", "--no-autorestart"], Duration::from_secs(10));
    assert!(out.contains("to-out") && !out.contains("to-err"));
    assert!(err.contains("to-err"));
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

#[test]
fn stalled_stdout_blocks_apps_not_the_runtime_and_loses_nothing() {
    use std::io::Read;
    let n = 300_000;
    let s = Scenario::new()
        .file("w.py", WRITER)
        .file("crash.sh", "#!/bin/sh\necho run >> runs.txt\nsleep 0.5\nexit 1\n")
        .file(
            "eco.yml",
            &format!("apps:\n  - name: w\n    script: w.py\n    args: ['{n}']\n    autorestart: false\n  - name: crash\n    script: crash.sh\n    min_uptime: 100\n"),
        );
    let mut cmd = s.command(&["eco.yml"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Nobody reads stdout: the crashing app is still restarted (its runs counted in a file).
    let runs = || std::fs::read_to_string(s.path().join("runs.txt")).unwrap_or_default().lines().count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs() < 4 {
        assert!(std::time::Instant::now() < deadline, "the crashing app is restarted while stdout is stalled (runs: {})", runs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss = rss_kb(child.id());
    assert!(rss < 40_000, "runtime memory stays bounded: {rss} kB");
    // Resume reading: every line of the writer arrives once, in order.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stdout.read_to_string(&mut all);
        all
    });
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let out = reader.join().unwrap();
    let lines: Vec<String> = out.lines().filter(|l| l.starts_with('w')).map(str::to_string).collect();
    check_counts(&lines, 1, n);
}

#[test]
fn file_log_rotation_keeps_every_line() {
    // 30 MB through a file log with a 10 MB limit and retain 2: at most 3 files, no line lost.
    let n = 300_000; // lines of 100 bytes
    let s = Scenario::new()
        .file("big.py", &format!("import sys\nfor i in range({n}):\n    sys.stdout.write(f'{{i:09d}} ' + 'y' * 89 + '\\n')\n"))
        .file("eco.yml", "apps:\n  - name: r\n    script: big.py\n    autorestart: false\n    out_file: logs/out.log\n    log_max_size: 10M\n    log_retain: 2\n");
    let (status, _, err) = s.run(&["eco.yml", "--json"], Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{err}");
    let dir = s.path().join("logs");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(files.len() <= 3, "{files:?}");
    let mut all = String::new();
    for f in ["out.log.2", "out.log.1", "out.log"] {
        let p = dir.join(f);
        assert!(std::fs::metadata(&p).map(|m| m.len() <= 10 << 20).unwrap_or(true), "{f} over the limit");
        all.push_str(&std::fs::read_to_string(p).unwrap_or_default());
    }
    let nums: Vec<u64> = all.lines().map(|l| l[..9].parse().unwrap_or_else(|_| panic!("torn line in file: {l:?}"))).collect();
    assert_eq!(*nums.last().unwrap(), n as u64 - 1);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "a gap or a duplicate across rotations");
    // The files hold the app's lines, not the --json stdout format.
    assert!(!all.contains("\"message\""));
}

/// PM2 writes its log files with the app's decoration: `log_date_format` prefixes every line of
/// out_file/error_file/log_file, and `log_type: json` writes PM2's JSON objects there.
#[test]
fn log_files_carry_date_format_and_json_type() {
    let s = Scenario::new().file("say.sh", "#!/bin/sh\necho hello\necho oops >&2\n").file(
        "eco.yml",
        "apps:\n  - name: dated\n    script: say.sh\n    autorestart: false\n    log_date_format: YYYY-MM-DD\n    out_file: d-out.log\n    error_file: d-err.log\n    log_file: d-all.log\n  - name: js\n    script: say.sh\n    autorestart: false\n    log_type: json\n    out_file: j-out.log\n    error_file: j-err.log\n",
    );
    let (status, out, err) = s.run(&["eco.yml"], Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{out}{err}");
    let read = |f: &str| std::fs::read_to_string(s.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let dated = |line: &str, text: &str| {
        let (date, rest) = line.split_once(": ").unwrap_or_else(|| panic!("no date prefix: {line:?}"));
        assert!(date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2, "{line:?}");
        assert_eq!(rest, text, "{line:?}");
    };
    dated(read("d-out.log").trim_end(), "hello");
    dated(read("d-err.log").trim_end(), "oops");
    let all = read("d-all.log");
    assert_eq!(all.lines().count(), 2, "{all}");
    for l in all.lines() {
        dated(l, if l.ends_with("hello") { "hello" } else { "oops" });
    }
    for (file, message, kind) in [("j-out.log", "hello", "out"), ("j-err.log", "oops", "err")] {
        let text = read(file);
        let v: serde_json::Value =
            serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{file} is not one JSON line ({e}): {text}"));
        assert_eq!(v["message"], message, "{v}");
        assert_eq!(v["type"], kind, "{v}");
        assert_eq!(v["app_name"], "js", "{v}");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert!(v["process_id"].is_u64(), "{v}");
    }
}

/// A log file deleted while its app is stopped is created again when the app starts.
#[test]
fn log_file_deleted_while_stopped_is_recreated_on_start() {
    let s = Scenario::new()
        .file("tick.sh", "#!/bin/sh\necho started $$\nwhile :; do sleep 1; done\n")
        .file("eco.yml", "apps:\n  - name: tick\n    script: tick.sh\n    out_file: logs/tick.log\n");
    let _r = s.start(&["eco.yml", "--no-auto-exit"]);
    let log = s.path().join("logs/tick.log");
    let read = || std::fs::read_to_string(&log).ok().filter(|t| t.contains("started"));
    poll("the first line in the log file", Duration::from_secs(10), read);
    assert_eq!(s.cli(&["stop", "tick"]).0, 0);
    std::fs::remove_dir_all(s.path().join("logs")).unwrap();
    assert_eq!(s.cli(&["start", "tick"]).0, 0);
    let text = poll("the log file to be created again", Duration::from_secs(10), read);
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// Four apps each write 100 MiB without a newline while nobody reads our stdout: the runtime's
/// memory stays bounded (the apps are held back instead), and once stdout is read again every
/// byte arrives.
#[test]
fn stalled_stdout_with_huge_lines_keeps_runtime_memory_bounded() {
    use std::io::Read;
    const MIB: usize = 1024 * 1024;
    let writer = "import sys, time\nc = sys.argv[1].encode() * (1024 * 1024)\nfor _ in range(100):\n    sys.stdout.buffer.write(c)\nsys.stdout.buffer.flush()\n";
    let mut eco = String::from("apps:\n");
    for c in ["w", "x", "y", "z"] {
        eco.push_str(&format!("  - name: {c}\n    script: big.py\n    args: ['{c}']\n    autorestart: false\n"));
    }
    let s = Scenario::new().file("big.py", writer).file("eco.yml", &eco);
    let mut cmd = s.command(&["eco.yml"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Nobody reads stdout for 6 s; the apps write as fast as they are let.
    let mut peak = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        peak = peak.max(rss_kb(child.id()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(peak > 0, "no RSS read");
    eprintln!("peak RSS with a stalled stdout: {peak} kB");
    assert!(peak < 64 * 1024, "the runtime's RSS reached {peak} kB with a stalled stdout (bound: 64 MiB)");
    // Resume reading: all 4 × 100 MiB arrive.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // Bytes of each app's char on its own lines (runtime lines start with a date).
        let mut counts = [0usize; 256];
        let (mut first, mut run) = (None, 0usize);
        let mut buf = vec![0u8; MIB];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            if let Some(c) = first.take() {
                                counts[c as usize] += run;
                            }
                            run = 0;
                        } else if first.is_none() {
                            first = Some(b);
                            run = 1;
                        } else if first == Some(b) {
                            run += 1;
                        }
                    }
                }
            }
        }
        counts
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "the apps never finished");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let counts = reader.join().unwrap();
    for c in [b'w', b'x', b'y', b'z'] {
        assert_eq!(counts[c as usize], 100 * MIB, "bytes of app {}", c as char);
    }
}

/// Idle apps hold none of the output budget: 300 silent streams (more than the budget has room
/// for reads) do not keep another app's lines from being written.
#[test]
fn idle_apps_hold_no_output_budget() {
    let s =
        Scenario::new().file("idle.sh", "#!/bin/sh\nexec sleep 60\n").file("talk.sh", "#!/bin/sh\nsleep 2\necho talking; sleep 60\n").file(
            "eco.yml",
            "apps:\n  - name: idle\n    script: idle.sh\n    exec_mode: fork\n    instances: 150\n  - name: talk\n    script: talk.sh\n",
        );
    let r = s.start(&["eco.yml"]);
    r.wait_for("talking", Duration::from_secs(30));
}

/// Unfinished lines that together fill the whole budget (5 × 3.5 MiB without a newline, the
/// apps then silent) cannot wedge the output: they are handed out as continued pieces and
/// other apps' lines keep flowing.
#[test]
fn unfinished_lines_filling_the_budget_do_not_wedge_output() {
    let s = Scenario::new()
        .file("part.py", "import sys, time\nsys.stdout.buffer.write(b'p' * (3584 * 1024))\nsys.stdout.buffer.flush()\ntime.sleep(60)\n")
        .file("talk.sh", "#!/bin/sh\nsleep 3\necho talking; sleep 60\n")
        .file(
            "eco.yml",
            "apps:\n  - name: part\n    script: part.py\n    exec_mode: fork\n    instances: 5\n  - name: talk\n    script: talk.sh\n",
        );
    let r = s.start(&["eco.yml"]);
    r.wait_for("talking", Duration::from_secs(20));
    r.wait_for("[pm-runtime: line continues]", Duration::from_secs(5));
}
