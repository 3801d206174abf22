//! What PM2's own end-to-end tests find when `pm2-runtime` is swapped for `pm-runtime`: each
//! test is one step of theirs, mapped to our verbs, asserting what PM2 shows.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::scenario::*;

const SERVER: &str = r#"
const http = require('http');
http.createServer((q, r) => r.end(String(process.pid))).listen(process.env.PORT, '127.0.0.1', () => console.log('listening ' + process.pid));
"#;

fn jlist(s: &Scenario) -> Vec<serde_json::Value> {
    let (code, out, err) = s.cli(&["jlist"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().clone()
}

/// Polls `jlist` until `n` processes are online.
fn online(s: &Scenario, n: usize) -> Vec<serde_json::Value> {
    poll(&format!("{n} processes online"), Duration::from_secs(20), || {
        let (code, out, _) = s.cli(&["jlist"]);
        let ps: Vec<serde_json::Value> = if code == 0 { serde_json::from_str(&out).ok()? } else { return None };
        (ps.len() == n && ps.iter().all(|p| p["pm2_env"]["status"] == "online")).then_some(ps)
    })
}

#[test]
fn dash_i_on_the_command_line_runs_a_node_script_in_cluster_mode() {
    require_tool("node", &["--version"]);
    let port = free_port();
    let s = Scenario::new().file("server.js", SERVER);
    let mut cmd = s.command(&["start", "server.js", "-i", "2"]);
    cmd.env("PORT", port.to_string());
    let r = Running::start(cmd);
    let ps = online(&s, 2);
    assert!(ps.iter().all(|p| p["pm2_env"]["exec_mode"] == "cluster_mode"), "{ps:?}");
    // Both workers answer on the one port (in fork mode the second died with EADDRINUSE).
    let pids: BTreeSet<String> = poll("both workers answer", Duration::from_secs(20), || {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            seen.extend(http_get(port));
        }
        (seen.len() == 2).then_some(seen)
    });
    assert_eq!(pids.len(), 2);
    assert!(!r.stdout().contains("EADDRINUSE") && !r.stderr().contains("EADDRINUSE"), "{}{}", r.stdout(), r.stderr());
}
