//! Interpreter resolution as PM2 does it: a script without a known extension that is not a
//! binary runs with node (Node CLIs such as `next`, `nuxt`, `npm`), so cluster mode and
//! `node_args` apply to it.

use std::time::{Duration, Instant};

use crate::scenario::*;

/// A Node CLI without extension, like `node_modules/next/dist/bin/next`: an HTTP server that
/// reports whether it is a cluster worker and the flags node was given.
const NEXT: &str = r#"#!/usr/bin/env node
const cluster = require('cluster');
require('http').createServer((q, r) => r.end(JSON.stringify({ pid: process.pid, isWorker: cluster.isWorker, execArgv: process.execArgv, argv: process.argv.slice(2) }))).listen(process.env.PORT, '127.0.0.1');
"#;

#[test]
fn node_cli_without_extension_runs_in_cluster_mode_with_node_args() {
    let port = free_port();
    let s = Scenario::new().file("node_modules/next/dist/bin/next", NEXT).file(
        "e.yml",
        &format!(
            "apps:\n  - name: web\n    script: node_modules/next/dist/bin/next\n    args: start\n    exec_mode: cluster\n    instances: 2\n    node_args: --max-old-space-size=100\n    env:\n      PORT: {port}\n"
        ),
    );
    let (status, out, err) = s.run(&["validate", "e.yml"], Duration::from_secs(20));
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("interpreter: node"), "{out}");
    assert!(out.contains("mode:        cluster, 2 instance(s)"), "{out}");

    let r = s.start(&["e.yml"]);
    wait_http(port, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pids = std::collections::BTreeSet::new();
    while pids.len() < 2 {
        assert!(Instant::now() < deadline, "two workers did not answer ({pids:?}):\n{}\n{}", r.stdout(), r.stderr());
        let Some(v) = http_get(port).and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) else { continue };
        assert_eq!(v["isWorker"], true, "{v}");
        assert_eq!(v["execArgv"], serde_json::json!(["--max-old-space-size=100"]), "{v}");
        assert_eq!(v["argv"], serde_json::json!(["start"]), "{v}");
        pids.insert(v["pid"].as_u64().unwrap());
    }
    assert!(!r.stderr().contains("EADDRINUSE"), "{}", r.stderr());
}

/// `script: npm` with `args: start`: found in PATH and run by node (with `node_args`), as PM2 does.
#[test]
fn command_from_path_runs_with_node() {
    let s = Scenario::new().file(
        "bin/npm",
        "#!/usr/bin/env node\nconsole.log('npm-cli ' + JSON.stringify({ execArgv: process.execArgv, argv: process.argv.slice(2) }));\n",
    );
    let bin = s.path().join("bin");
    std::fs::set_permissions(bin.join("npm"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s =
        s.file("e.yml", "apps:\n  - name: app\n    script: npm\n    args: start\n    node_args: --no-warnings\n    autorestart: false\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = s.command(&["validate", "e.yml"]);
    c.env("PATH", &path);
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interpreter: node"), "{text}");
    assert!(text.contains(&format!("{} start", bin.join("npm").display())), "{text}");

    let mut c = s.command(&["e.yml"]);
    c.env("PATH", &path);
    let mut r = Running::start(c);
    let status = r.wait(Duration::from_secs(15)).expect("exits when the app has finished");
    assert!(status.success(), "{}{}", r.stdout(), r.stderr());
    assert!(r.stdout().contains(r#"npm-cli {"execArgv":["--no-warnings"],"argv":["start"]}"#), "{}", r.stdout());
}
