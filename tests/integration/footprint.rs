//! The runtime's own memory: a guard against an accidental cache or buffer, not a benchmark
//! (bench/footprint.py measures the shipped binary).

use std::time::{Duration, Instant};

use crate::scenario::{Scenario, pids_with, poll, require_tool};

/// Anonymous memory the runtime may hold with 4 idle apps, beyond the relocated data of the
/// binary and its libraries (which depends on the build, not on what the runtime keeps). The
/// release binary holds about 1 MB; a debug build a little more. Generous on purpose.
const ANON_BOUND_KB: u64 = 3 * 1024;

/// (Anonymous kB of the whole process from smaps_rollup, Anonymous kB of its file mappings).
fn anonymous_kb(pid: u32) -> (u64, u64) {
    let field = |line: &str| line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("read smaps_rollup");
    let total = rollup.lines().find(|l| l.starts_with("Anonymous:")).map(field).expect("Anonymous in smaps_rollup");
    // Copy-on-write pages of file mappings (relocations, .data): every mapping header names a
    // file when its sixth field is a path.
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mut in_file = false;
    let mut of_files = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_file = line.split_whitespace().nth(5).is_some_and(|p| p.starts_with('/'));
        } else if in_file && first == "Anonymous:" {
            of_files += field(line);
        }
    }
    (total, of_files)
}

#[test]
fn runtime_with_four_idle_apps_keeps_its_anonymous_memory_small() {
    require_tool("node", &["--version"]);
    let sc = Scenario::new()
        .file("idle-footprint.js", "setInterval(() => {}, 1000);\n")
        .file("eco.json", r#"{"apps":[{"name":"fp","script":"idle-footprint.js","instances":4,"exec_mode":"fork"}]}"#);
    let r = sc.start(&["start", "eco.json"]);
    poll("4 idle apps running", Duration::from_secs(30), || (pids_with("idle-footprint.js").len() >= 4).then_some(()));
    // Start-up may briefly hold more (it gives back what it freed once the apps run): the bound
    // must hold within a generous deadline, and keep holding while the apps idle.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut within = 0;
    while within < 5 {
        let (total, of_files) = anonymous_kb(r.pid());
        let own = total - of_files;
        within = if own <= ANON_BOUND_KB { within + 1 } else { 0 };
        assert!(
            within > 0 || Instant::now() < deadline,
            "pm-runtime holds {own} kB of anonymous memory with 4 idle apps (bound {ANON_BOUND_KB} kB; smaps_rollup Anonymous {total} kB, of which {of_files} kB are copy-on-write pages of the binary and its libraries)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
