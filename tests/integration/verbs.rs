//! Verbs as PM2 runs them: on an ecosystem file, `start` of a running app, `all` with no apps.

use std::time::Duration;

use crate::scenario::*;

const LOOP: &str = "#!/bin/sh\necho up $$\nwhile :; do sleep 1; done\n";

fn jlist(s: &Scenario) -> Vec<serde_json::Value> {
    let (code, out, err) = s.cli(&["jlist"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().clone()
}

fn status_of(s: &Scenario, name: &str) -> Vec<String> {
    jlist(s).iter().filter(|p| p["name"] == name).map(|p| p["pm2_env"]["status"].as_str().unwrap_or("").to_string()).collect()
}

fn three_apps() -> Scenario {
    Scenario::new()
        .file("a.sh", LOOP)
        .file("b.sh", LOOP)
        .file("c.sh", LOOP)
        .file("all.yml", "apps:\n  - name: a\n    script: a.sh\n  - name: b\n    script: b.sh\n  - name: c\n    script: c.sh\n")
        .file("ab.config.js", "module.exports = { apps: [{ name: 'a', script: 'a.sh' }, { name: 'b', script: 'b.sh' }] };\n")
}

fn all_online(s: &Scenario, n: usize) {
    poll("every app online", Duration::from_secs(10), || {
        let (code, out, _) = s.cli(&["jlist"]);
        let ps: Vec<serde_json::Value> = if code == 0 { serde_json::from_str(&out).ok()? } else { return None };
        (ps.len() == n && ps.iter().all(|p| p["pm2_env"]["status"] == "online")).then_some(())
    });
}

#[test]
fn stop_restart_delete_an_ecosystem_file_act_on_its_apps() {
    let s = three_apps();
    let _r = s.start(&["all.yml"]);
    all_online(&s, 3);

    let (code, out, err) = s.cli(&["stop", "ab.config.js"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(status_of(&s, "a"), ["stopped"]);
    assert_eq!(status_of(&s, "b"), ["stopped"]);
    assert_eq!(status_of(&s, "c"), ["online"]);

    let (code, out, err) = s.cli(&["restart", "ab.config.js"]);
    assert_eq!(code, 0, "{out}{err}");
    all_online(&s, 3);

    let (code, out, err) = s.cli(&["delete", "ab.config.js"]);
    assert_eq!(code, 0, "{out}{err}");
    let names: Vec<String> = jlist(&s).iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["c"]);
}

#[test]
fn start_of_a_running_app_restarts_it() {
    let s = three_apps();
    let _r = s.start(&["all.yml"]);
    all_online(&s, 3);
    let pid_of = |s: &Scenario| {
        jlist(s)
            .iter()
            .find(|p| p["name"] == "a")
            .map(|p| (p["pid"].as_u64().unwrap(), p["pm2_env"]["restart_time"].as_u64().unwrap()))
            .unwrap()
    };
    let (pid, restarts) = pid_of(&s);
    assert_eq!(restarts, 0);
    assert_eq!(s.cli(&["start", "a"]).0, 0);
    let (new_pid, restarts) = poll("a new pid for a", Duration::from_secs(10), || Some(pid_of(&s)).filter(|(p, _)| *p != pid && *p != 0));
    assert_ne!(new_pid, pid);
    assert_eq!(restarts, 1, "a restart of an online app counts, as in PM2");

    // A start after a stop is not a restart (PM2's restartProcessId of a stopped process).
    assert_eq!(s.cli(&["stop", "a"]).0, 0);
    assert_eq!(status_of(&s, "a"), ["stopped"]);
    assert_eq!(s.cli(&["start", "a"]).0, 0);
    let (_, restarts) = poll("a online again", Duration::from_secs(10), || Some(pid_of(&s)).filter(|(p, _)| *p != new_pid && *p != 0));
    assert_eq!(restarts, 1, "start after stop is not counted");
    assert_eq!(s.cli(&["stop", "a"]).0, 0);
    assert_eq!(s.cli(&["restart", "a"]).0, 0);
    let (_, restarts) = poll("a online again", Duration::from_secs(10), || Some(pid_of(&s)).filter(|(p, _)| *p != 0));
    assert_eq!(restarts, 1, "restart of a stopped app starts it without counting, as in PM2");
}

#[test]
fn verbs_on_all_with_no_apps_exit_1() {
    let s = three_apps();
    let _r = s.start(&["all.yml", "--no-auto-exit"]);
    all_online(&s, 3);
    assert_eq!(s.cli(&["delete", "all"]).0, 0);
    assert!(jlist(&s).is_empty());
    for verb in ["stop", "restart", "reload", "delete", "start"] {
        let (code, out, err) = s.cli(&[verb, "all"]);
        assert_eq!(code, 1, "{verb} all with no apps: {out}{err}");
        assert!(err.contains("no process found"), "{verb}: {err}");
    }
}

/// `jlist` in PM2's key order and with what PM2 fills: env, the configured instance_var,
/// watch paths, node_args, log paths; `watch` false after a stop.
#[test]
fn jlist_has_pm2_order_and_fields() {
    let s = Scenario::new().file("a.sh", LOOP).file(
        "e.yml",
        "apps:\n  - name: a\n    script: a.sh\n    instance_var: INST\n    watch: [src]\n    ignore_watch: [tmp]\n    interpreter: sh\n    node_args: -e\n    exp_backoff_restart_delay: 100\n    out_file: out.log\n    env:\n      GREETING: hello\n  - name: witness\n    script: a.sh\n    watch: [src]\n",
    );
    std::fs::create_dir(s.path().join("src")).unwrap();
    let _r = s.start(&["e.yml", "--no-auto-exit"]);
    all_online(&s, 2);
    let (_, text, _) = s.cli(&["jlist"]);
    assert!(text.starts_with(r#"[{"pid":"#), "{text}");
    let pm_id_at = text.find(r#""pm_id":0,"monit""#).unwrap_or_else(|| panic!("pm_id then monit, as PM2: {text}"));
    assert!(text.find(r#""pm2_env":"#).unwrap() < pm_id_at, "{text}");
    let p = &jlist(&s)[0];
    let e = &p["pm2_env"];
    assert_eq!(e["env"]["GREETING"], "hello");
    assert_eq!(e["INST"], 0);
    assert_eq!(e["instance_var"], "INST");
    assert_eq!(e["watch"], serde_json::json!(["src"]), "as configured, as PM2 shows it");
    assert_eq!(e["ignore_watch"], serde_json::json!(["tmp"]));
    assert_eq!(e["node_args"], serde_json::json!(["-e"]));
    assert_eq!(e["exp_backoff_restart_delay"], 100);
    assert_eq!(e["pm_out_log_path"], serde_json::json!(s.path().join("out.log")));
    assert_eq!(e["pm_err_log_path"], serde_json::Value::Null);

    assert_eq!(s.cli(&["stop", "a"]).0, 0);
    assert_eq!(jlist(&s)[0]["pm2_env"]["watch"], false, "PM2 turns watch off on stop");
    // And really off: a change restarts the witness watching the same folder, not `a`.
    std::fs::write(s.path().join("src/x.js"), "changed").unwrap();
    poll("the witness restarted by the change", Duration::from_secs(10), || {
        let ps = jlist(&s);
        (ps[1]["pm2_env"]["restart_time"] == 1 && ps[1]["pm2_env"]["status"] == "online").then_some(())
    });
    assert_eq!(jlist(&s)[0]["pm2_env"]["status"], "stopped");
}
