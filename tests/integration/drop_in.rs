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

#[test]
fn init_writes_pm2s_sample_ecosystem_and_runs_nothing() {
    require_tool("node", &["--version"]);
    let s = Scenario::new().file("index.js", "setInterval(() => {}, 1000);\n");
    let (status, out, err) = s.run(&["init"], Duration::from_secs(20));
    assert!(status.success(), "{out}{err}");
    let file = s.path().join("ecosystem.config.js");
    assert!(out.contains(&format!("File {} generated", file.display())), "{out}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("module.exports"));
    // It is an ecosystem file that pm-runtime reads.
    let (status, out, err) = s.run(&["validate", "ecosystem.config.js"], Duration::from_secs(30));
    assert!(status.success(), "{out}{err}");
    // Never over an existing file.
    let (status, _, err) = s.run(&["init"], Duration::from_secs(20));
    assert!(!status.success() && err.contains("already exists"), "{err}");
    // `init simple`: PM2's short sample.
    let t = Scenario::new();
    let (status, out, err) = t.run(&["init", "simple"], Duration::from_secs(20));
    assert!(status.success(), "{out}{err}");
    assert!(std::fs::read_to_string(t.path().join("ecosystem.config.js")).unwrap().contains("app1"));
}

#[test]
fn kill_stops_every_app_and_the_runtime() {
    let s = Scenario::new().file("loop.sh", "#!/bin/sh\nwhile :; do sleep 1; done\n").file(
        "e.yml",
        "apps:\n  - name: a\n    script: loop.sh\n    args: [killmarker-a]\n  - name: b\n    script: loop.sh\n    args: [killmarker-b]\n",
    );
    let mut r = s.start(&["e.yml"]);
    online(&s, 2);
    let (code, out, err) = s.cli(&["kill"]);
    assert_eq!(code, 0, "{out}{err}");
    let status = r.wait(Duration::from_secs(30)).expect("the runtime exits after kill");
    assert_eq!(status.code(), Some(0), "{}{}", r.stdout(), r.stderr());
    assert!(pids_with("killmarker-").is_empty(), "apps left running");
    // Nothing running: kill says so and succeeds, as `pm2 kill` does.
    let (code, out, _) = s.cli(&["kill"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to stop"), "{out}");
}

const LOOP: &str = "#!/bin/sh\nwhile :; do sleep 1; done\n";

fn three_loops() -> Scenario {
    Scenario::new()
        .file("loop.sh", LOOP)
        .file("e.yml", "apps:\n  - name: a\n    script: loop.sh\n  - name: b\n    script: loop.sh\n  - name: c\n    script: loop.sh\n")
}

fn statuses(s: &Scenario) -> Vec<(String, String)> {
    jlist(s).iter().map(|p| (p["name"].as_str().unwrap().to_string(), p["pm2_env"]["status"].as_str().unwrap().to_string())).collect()
}

fn pair(n: &str, st: &str) -> (String, String) {
    (n.to_string(), st.to_string())
}

#[test]
fn verbs_on_an_ecosystem_file_with_only_act_on_those_apps() {
    let s = three_loops();
    let _r = s.start(&["e.yml"]);
    online(&s, 3);
    let (code, out, err) = s.cli(&["stop", "e.yml", "--only", "a,b"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("a", "stopped"), pair("b", "stopped"), pair("c", "online")]);

    let (code, out, err) = s.cli(&["restart", "e.yml", "--only", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    poll("a online again", Duration::from_secs(20), || (statuses(&s)[0] == pair("a", "online")).then_some(()));
    assert_eq!(statuses(&s)[1], pair("b", "stopped"));

    let (code, out, err) = s.cli(&["delete", "e.yml", "--only", "b"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("a", "online"), pair("c", "online")]);
}

#[test]
fn numeric_targets_are_names_then_namespaces_then_pm_ids() {
    let s = Scenario::new().file("loop.sh", LOOP).file(
        "e.yml",
        "apps:\n  - name: a\n    script: loop.sh\n  - name: \"455\"\n    script: loop.sh\n  - name: c\n    script: loop.sh\n    namespace: \"7\"\n",
    );
    let _r = s.start(&["e.yml", "--no-auto-exit"]);
    online(&s, 3);
    // "455" is the app of that name (pm_id 1), not a missing pm_id.
    let (code, out, err) = s.cli(&["stop", "455"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("a", "online"), pair("455", "stopped"), pair("c", "online")]);
    // "7" is the namespace of c.
    let (code, out, err) = s.cli(&["stop", "7"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("a", "online"), pair("455", "stopped"), pair("c", "stopped")]);
    // "0" is no name and no namespace: the pm_id.
    let (code, out, err) = s.cli(&["stop", "0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("a", "stopped"), pair("455", "stopped"), pair("c", "stopped")]);
}

#[test]
fn regex_targets_act_on_the_apps_whose_names_match() {
    let s = Scenario::new().file("loop.sh", LOOP).file(
        "e.yml",
        "apps:\n  - name: api-users\n    script: loop.sh\n  - name: api-orders\n    script: loop.sh\n  - name: web\n    script: loop.sh\n",
    );
    let _r = s.start(&["e.yml"]);
    online(&s, 3);
    let (code, out, err) = s.cli(&["stop", "/^api-/"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("api-users", "stopped"), pair("api-orders", "stopped"), pair("web", "online")]);
    let (code, out, err) = s.cli(&["restart", "/orders$/"]);
    assert_eq!(code, 0, "{out}{err}");
    poll("api-orders online", Duration::from_secs(20), || (statuses(&s)[1] == pair("api-orders", "online")).then_some(()));
    let (code, out, err) = s.cli(&["reload", "/users/"]);
    assert_eq!(code, 0, "{out}{err}");
    poll("api-users online", Duration::from_secs(20), || (statuses(&s)[0] == pair("api-users", "online")).then_some(()));
    let (code, out, err) = s.cli(&["delete", "/^api/"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(statuses(&s), [pair("web", "online")]);
    let (code, _, err) = s.cli(&["stop", "/^nothing/"]);
    assert_eq!(code, 1);
    assert!(err.contains("no process whose app name matches /^nothing/"), "{err}");
}

#[test]
fn pm_ids_start_at_zero_again_once_the_table_is_empty() {
    let s = three_loops();
    let _r = s.start(&["e.yml", "--no-auto-exit"]);
    online(&s, 3);
    let (code, out, err) = s.cli(&["delete", "all"]);
    assert_eq!(code, 0, "{out}{err}");
    poll("an empty table", Duration::from_secs(20), || jlist(&s).is_empty().then_some(()));
    let (code, out, err) = s.cli(&["startOrRestart", "e.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    let ids: Vec<u64> = online(&s, 3).iter().map(|p| p["pm_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2]);
    // Not while something is left: the next id goes on from the highest.
    let (code, out, err) = s.cli(&["delete", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = s.cli(&["startOrRestart", "e.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    let ids: Vec<u64> = online(&s, 3).iter().map(|p| p["pm_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn a_partial_line_shows_after_a_short_idle_and_whole_lines_stay_whole() {
    // A prompt without a newline, then a line written in two quick pieces.
    let app = "#!/bin/sh\nprintf 'Enter name: '\nsleep 3\nprintf 'ab'; sleep 0.05; printf 'cd\\n'\nsleep 30\n";
    let s = Scenario::new().file("p.sh", app);
    let r = s.start(&["p.sh"]);
    // The prompt is out on its own (held until its newline, it would be "Enter name: abcd").
    r.wait_for("Enter name: ", Duration::from_secs(20));
    r.wait_for("abcd\n", Duration::from_secs(20));
    assert!(r.stdout().lines().any(|l| l == "Enter name: "), "{}", r.stdout());
}

fn read_pid(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn pid_files_are_named_as_pm2_names_them() {
    let s = Scenario::new().file("loop.sh", LOOP).file(
        "e.yml",
        "apps:\n  - name: a\n    script: loop.sh\n    pid_file: run/a.pid\n  - name: b\n    script: loop.sh\n    pid_file: run/b-9.pid\n  - name: c d\n    script: loop.sh\n",
    );
    let mut r = s.start(&["e.yml"]);
    let ps = online(&s, 3);
    let home = s.path().join(".pm2");
    // A fork app with one instance gets -<pm_id> too; `-9.pid` is replaced; no pid_file: PM2_HOME/pids.
    let want = [s.path().join("run/a-0.pid"), s.path().join("run/b-1.pid"), home.join("pids/c-d-2.pid")];
    for (p, path) in ps.iter().zip(&want) {
        assert_eq!(p["pm2_env"]["pm_pid_path"], path.to_string_lossy().as_ref(), "{p}");
        assert_eq!(read_pid(path), p["pid"].as_u64(), "{}", path.display());
    }
    let (_, show, _) = s.cli(&["show", "a"]);
    assert!(show.contains(&format!("│ {}", want[0].display())), "pid path in show, as PM2's describe: {show}");
    // The runtime's own pid, where PM2 keeps its daemon's.
    assert_eq!(read_pid(&home.join("pm2.pid")), Some(u64::from(r.pid())));
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(30)).expect("the runtime stops");
    for path in want.iter().chain([&home.join("pm2.pid")]) {
        assert!(!path.exists(), "{} left behind", path.display());
    }
}

#[test]
fn jlist_env_has_pm2s_shape_and_hides_secrets() {
    let s = Scenario::new().file("loop.sh", LOOP).file(
        "e.yml",
        "apps:\n  - name: api\n    script: loop.sh\n    instances: 2\n    increment_var: PORT\n    env:\n      PORT: 3000\n      WORKERS: 4\n      QUOTED: \"42\"\n      NODE_ENV: production\n      DB_PASSWORD: pw-in-file\n      API_TOKEN: tok-in-file\n      PM2_PUBLIC_KEY: pub-in-file\n",
    );
    let mut cmd = s.command(&["e.yml"]);
    cmd.env("FROM_THE_RUNTIME", "inherited").env("PM_RUNTIME_WEB_TOKEN", "web-token-value").env("PM2_PUBLIC_KEY", "pub-in-env");
    let _r = Running::start(cmd);
    let ps = online(&s, 2);
    let (_, text, _) = s.cli(&["jlist"]);
    for secret in ["pw-in-file", "tok-in-file", "pub-in-file", "pub-in-env", "web-token-value", "PM2_PUBLIC_KEY", "PM_RUNTIME_WEB_TOKEN"] {
        assert!(!text.contains(secret), "{secret} shown in jlist");
    }
    for (i, p) in ps.iter().enumerate() {
        let e = &p["pm2_env"];
        let env = &e["env"];
        // increment_var per instance, numbers as numbers, strings as strings.
        assert_eq!(env["PORT"], 3000 + i as u64, "{env}");
        assert_eq!(env["WORKERS"], 4);
        assert_eq!(env["QUOTED"], "42");
        assert_eq!(env["NODE_ENV"], "production");
        assert_eq!(env["FROM_THE_RUNTIME"], "inherited");
        assert_eq!(env["DB_PASSWORD"], "[redacted]");
        assert_eq!(env["API_TOKEN"], "[redacted]");
        assert!(env["unique_id"].is_string());
        // Also at the top level of pm2_env, where tools read them; PM2's own keys win.
        assert_eq!(e["PORT"], env["PORT"]);
        assert_eq!(e["NODE_ENV"], "production");
        assert_eq!(e["DB_PASSWORD"], "[redacted]");
        assert_eq!(e["status"], "online");
    }
}

#[test]
fn jlist_shows_watch_paths_as_configured_and_watching_works() {
    let s = Scenario::new()
        .file("loop.sh", "#!/bin/sh\necho started\nwhile :; do sleep 1; done\n")
        .file("src/x.txt", "1")
        .file("e.yml", "apps:\n  - name: w\n    script: loop.sh\n    watch: [src, ./lib]\n");
    std::fs::create_dir(s.path().join("lib")).unwrap();
    let r = s.start(&["e.yml"]);
    let ps = online(&s, 1);
    assert_eq!(ps[0]["pm2_env"]["watch"], serde_json::json!(["src", "./lib"]));
    // The relative paths are still watched, from the app's cwd.
    r.wait_for("started", Duration::from_secs(20));
    poll("a restart after a change in src", Duration::from_secs(20), || {
        std::fs::write(s.path().join("src/x.txt"), "2").unwrap();
        (r.stdout().matches("started").count() >= 2).then_some(())
    });
}

#[test]
fn json_files_that_are_javascript_literals_are_read_as_pm2_reads_them() {
    require_tool("node", &["--version"]);
    // PM2's own fixture shape: unquoted keys with no space after the colon (YAML reads
    // `script:"./child.js"` as one key with no value), a trailing comma, a JS expression.
    let s = Scenario::new()
        .file("child.js", "setInterval(() => {}, 1000);\n")
        .file("child.json", "{\n  script:\"./child.js\",\n  name  :\"child\",\n  instances: 1 + 1,\n  vizion: false,\n}\n");
    let (status, out, err) = s.run(&["validate", "child.json"], Duration::from_secs(30));
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("- child") && out.contains("2 instance(s)"), "{out}");
    let _r = s.start(&["child.json"]);
    let ps = online(&s, 2);
    assert_eq!(ps[0]["pm2_env"]["vizion"], false);
    assert_eq!(ps[0]["pm2_env"]["vizion_running"], false);
}

#[test]
fn jlist_shows_vizion_as_pm2_does() {
    let s = three_loops();
    let _r = s.start(&["e.yml"]);
    let ps = online(&s, 3);
    assert_eq!(ps[0]["pm2_env"]["vizion"], true, "PM2's default");
}

#[test]
fn a_broken_esm_entry_point_is_errored_not_online() {
    require_tool("node", &["--version"]);
    // `import './test'` without its extension: Node's ESM loader refuses it.
    let s = Scenario::new()
        .file("test.mjs", "console.log('never');\n")
        .file("app.mjs", "import './test';\nsetInterval(() => {}, 1000);\n")
        // A slow machine may take node more than the default min_uptime (1 s) to fail.
        .file("e.yml", "apps:\n  - name: esm\n    script: app.mjs\n    max_restarts: 3\n    min_uptime: 60000\n");
    let (status, out, err) = s.run(&["e.yml"], Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "errored, not online forever\n{out}{err}");
    assert!(out.contains("errored") || err.contains("errored"), "{out}{err}");
    assert!(err.contains("ERR_MODULE_NOT_FOUND") || err.contains("Cannot find module"), "{err}");
}

#[test]
fn a_rolling_reload_leaves_the_new_process_its_pid_file() {
    require_tool("node", &["--version"]);
    let port = free_port();
    let s = Scenario::new()
        .file("server.js", SERVER)
        .file("e.yml", &format!("apps:\n  - name: web\n    script: server.js\n    instances: 1\n    env:\n      PORT: {port}\n"));
    let _r = s.start(&["e.yml"]);
    let before = online(&s, 1)[0]["pid"].as_u64().unwrap();
    let pid_file = s.path().join(".pm2/pids/web-0.pid");
    poll("the pid file", Duration::from_secs(20), || (read_pid(&pid_file) == Some(before)).then_some(()));
    let (code, out, err) = s.cli(&["reload", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = poll("a new process online", Duration::from_secs(30), || {
        let p = online(&s, 1)[0]["pid"].as_u64()?;
        (p != before).then_some(p)
    });
    // The old process is gone (drained); its exit must not take the new one's pid file along.
    poll("the old process gone", Duration::from_secs(30), || (!std::path::Path::new(&format!("/proc/{before}")).exists()).then_some(()));
    assert_eq!(read_pid(&pid_file), Some(after));
}
