//! Broken input: clear errors with file, line and field; nothing started; never a panic.

use std::time::Duration;

use crate::scenario::*;

fn run_err(s: &Scenario, file: &str) -> (Option<i32>, String) {
    let (status, out, err) = s.run(&[file], Duration::from_secs(10));
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!out.contains("starting in"), "nothing may start: {out}");
    (status.code(), format!("{out}{err}"))
}

#[test]
fn bad_yaml_syntax_names_file_and_line() {
    let s = Scenario::new().file("eco.yml", "apps:\n  - name: a\n    script: [unclosed\n");
    let (code, text) = run_err(&s, "eco.yml");
    assert_eq!(code, Some(78));
    assert!(text.contains("eco.yml:"), "{text}");
}

#[test]
fn wrong_types_are_all_reported_with_positions() {
    let s = Scenario::new().file("a.js", "").file(
        "ecosystem.config.yml",
        "apps:\n  - name: a\n    script: a.js\n    max_restarts: lots\n  - name: b\n    script: a.js\n    instances: [4]\n    kill_timeout: soon\n",
    );
    let (code, text) = run_err(&s, "ecosystem.config.yml");
    assert_eq!(code, Some(78));
    assert!(text.contains("ecosystem.config.yml:4:"), "{text}");
    assert!(text.contains("apps[0].max_restarts"), "{text}");
    assert!(text.contains("ecosystem.config.yml:7:16: apps[1].instances"), "{text}");
    assert!(text.contains("apps[1].kill_timeout"), "{text}");
}

#[test]
fn missing_script_is_an_error() {
    let s = Scenario::new().file("eco.yml", "apps:\n  - name: a\n    script: nope.js\n");
    let (code, text) = run_err(&s, "eco.yml");
    assert_eq!(code, Some(78));
    assert!(text.contains("apps[0].script") && text.contains("nope.js"), "{text}");
}

#[test]
fn unknown_key_is_a_warning_with_a_suggestion() {
    let s = Scenario::new()
        .file("ok.sh", "#!/bin/sh\necho fine\n")
        .file("eco.yml", "apps:\n  - name: a\n    script: ok.sh\n    autorestart: false\n    instancez: 2\n");
    let (status, out, err) = s.run(&["eco.yml"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("instancez") && text.contains("did you mean \"instances\""), "{text}");
    assert!(out.contains("fine"));
}

#[test]
fn missing_file_and_bad_flags() {
    let s = Scenario::new();
    let (code, text) = run_err(&s, "absent.config.yml");
    assert_eq!(code, Some(78));
    assert!(text.contains("absent.config.yml"), "{text}");
    let (status, _, err) = s.run(&["start", "x.js", "--no-such-flag"], Duration::from_secs(5));
    assert_eq!(status.code(), Some(64), "{err}");
    let (status, _, _) = s.run(&[], Duration::from_secs(5));
    assert_ne!(status.code(), Some(0));
}

#[test]
fn bad_kill_signal_is_an_error() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\n").file("eco.yml", "apps:\n  - name: a\n    script: a.sh\n    kill_signal: SIGFOO\n");
    let (code, text) = run_err(&s, "eco.yml");
    assert_eq!(code, Some(78));
    assert!(text.contains("kill_signal") && text.contains("SIGFOO"), "{text}");
}

#[test]
fn js_config_that_never_finishes_times_out_and_its_node_is_killed() {
    let s = Scenario::new().file("a.sh", "#!/bin/sh\n").file("spin.config.js", "while (true) {}\n");
    let marker = s.path().join("spin.config.js").display().to_string();
    for verb in ["start", "validate"] {
        let started = std::time::Instant::now();
        let (status, out, err) = s.run(&[verb, "spin.config.js", "--config-timeout", "1"], Duration::from_secs(20));
        let text = format!("{out}{err}");
        assert_eq!(status.code(), Some(78), "{verb}: {text}");
        assert!(text.contains("spin.config.js: evaluation did not finish within 1 s"), "{verb}: {text}");
        assert!(text.contains("--config-timeout"), "{verb}: {text}");
        assert!(started.elapsed() < Duration::from_secs(10), "{verb}: took {:?}", started.elapsed());
        assert!(pids_with(&marker).is_empty(), "{verb}: the evaluating node survived");
    }
    let (status, _, err) = s.run(&["start", "spin.config.js", "--config-timeout", "0"], Duration::from_secs(5));
    assert_eq!(status.code(), Some(64), "{err}");
}

#[test]
fn stop_signal_cancels_js_config_evaluation() {
    let s = Scenario::new().file("spin.config.js", "process.on('SIGTERM', () => {});\nwhile (true) {}\n");
    let marker = s.path().join("spin.config.js").display().to_string();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut r = s.start(&["spin.config.js"]);
        wait_for_process(&marker, Duration::from_secs(10));
        assert!(!pids_with(&marker).is_empty(), "node never started");
        r.signal(sig);
        let status = r.wait(Duration::from_secs(3)).expect("the runtime ignored the stop signal while evaluating the config");
        assert_eq!(status.code(), Some(0), "{}", r.stderr());
        assert!(r.stderr().contains("spin.config.js: evaluation cancelled"), "{}", r.stderr());
        assert!(pids_with(&marker).is_empty(), "the evaluating node survived the runtime");
    }
}

/// What `start` would fail on, `validate` reports too: both exit 78 naming file:line:key.
#[test]
fn validate_and_start_agree_on_what_cannot_be_executed() {
    let big_arg = "x".repeat(128 * 1024);
    let huge_env = "y".repeat(50 * 1024 * 1024);
    let cases: [(&str, String, &str); 5] = [
        ("dir.yml", "apps:\n  - name: a\n    script: adir\n".into(), "dir.yml:3:13: apps[0].script: "),
        (
            "nul.yml",
            "apps:\n  - name: a\n    script: a.sh\n    args: [\"ok\", \"a\\0b\"]\n".into(),
            "nul.yml:4:18: apps[0].args[1]: contains a NUL byte",
        ),
        (
            "arg.yml",
            format!("apps:\n  - name: a\n    script: a.sh\n    args: [\"{big_arg}\"]\n"),
            "arg.yml:4:12: apps[0].args[0]: is 131072 bytes long",
        ),
        (
            "env.json",
            format!("{{\"apps\": [{{\"name\": \"a\", \"script\": \"a.sh\",\n \"env\": {{\"BIG\": \"{huge_env}\"}}}}]}}\n"),
            "env.json:2:17: apps[0].env.BIG: is 52428804 bytes long",
        ),
        ("empty.yml", "apps: []\n".into(), "empty.yml:1:7: apps: the list is empty"),
    ];
    let mut s = Scenario::new().file("a.sh", "#!/bin/sh\necho ran\n");
    std::fs::create_dir(s.path().join("adir")).unwrap();
    for (name, body, _) in &cases {
        s = s.file(name, body);
    }
    for (name, _, want) in &cases {
        for verb in ["validate", "start"] {
            let (status, out, err) = s.run(&[verb, name], Duration::from_secs(60));
            let text = format!("{out}{err}");
            assert_eq!(status.code(), Some(78), "{verb} {name}: {}", &text[..text.len().min(2000)]);
            assert!(text.contains(want), "{verb} {name}: want {want:?} in {}", &text[..text.len().min(2000)]);
            assert!(!text.contains("ran"), "{verb} {name}: something started");
            assert!(text.len() < 10_000, "{verb} {name}: the value was echoed back ({} bytes)", text.len());
        }
    }
}

/// A newline in an app name would forge runtime lines (`PM2 log: App [web:0] online`).
#[test]
fn control_characters_in_app_names_are_config_errors() {
    let s = Scenario::new()
        .file("a.sh", "#!/bin/sh\necho ran\n")
        .file("evil.yml", "apps:\n  - name: \"evil\\n2026-01-01T00:00:00: PM2 log: App [web:0] online\"\n    script: a.sh\n")
        .file("esc.json", "{\"apps\": [{\"script\": \"a.sh\", \"namespace\": \"n\\u001b[2J\"}]}\n");
    for verb in ["validate", "start"] {
        let (status, out, err) = s.run(&[verb, "evil.yml"], Duration::from_secs(10));
        let text = format!("{out}{err}");
        assert_eq!(status.code(), Some(78), "{verb}: {text}");
        assert!(text.contains("evil.yml:2:11: apps[0].name: must not contain control characters (found '\\n')"), "{verb}: {text}");
        assert!(!text.contains("\nPM2 log: App [web:0] online") && !text.contains("ran"), "{verb}: {text}");
        let (status, out, err) = s.run(&[verb, "esc.json"], Duration::from_secs(10));
        assert_eq!(status.code(), Some(78), "{verb}: {out}{err}");
        assert!(err.contains("apps[0].namespace: must not contain control characters"), "{verb}: {err}");
    }
    let (status, _, err) = s.run(&["start", "a.sh", "--name", "x\ny"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("--name: \"x\\ny\" must not contain control characters"), "{err}");
}

#[test]
fn duplicate_keys_in_json_are_errors_as_in_yaml() {
    let s = Scenario::new()
        .file("a.sh", "#!/bin/sh\necho ran\n")
        .file("dup.json", "{\"apps\": [{\"name\": \"a\", \"script\": \"a.sh\",\n  \"name\": \"b\"}]}\n")
        .file("dup.yml", "apps:\n  - name: a\n    script: a.sh\n    name: b\n");
    for file in ["dup.json", "dup.yml"] {
        for verb in ["validate", "start"] {
            let (status, out, err) = s.run(&[verb, file], Duration::from_secs(10));
            assert_eq!(status.code(), Some(78), "{verb} {file}: {out}{err}");
            assert!(err.contains(&format!("{file}:")) && err.contains("duplicate key \"name\""), "{verb} {file}: {err}");
            assert!(!out.contains("ran"), "{verb} {file}: {out}");
        }
    }
}

#[test]
fn too_many_instances_is_a_config_error_and_the_limit_can_be_raised() {
    let s = Scenario::new()
        .file("a.sh", "#!/bin/sh\nexit 0\n")
        .file("eco.yml", "apps:\n  - name: a\n    script: a.sh\n    instances: 100000\n");
    let (code, text) = run_err(&s, "eco.yml");
    assert_eq!(code, Some(78));
    assert!(text.contains("eco.yml:4:16: apps[0].instances: 100000 instances is more than the limit of 4096"), "{text}");
    let mut cmd = s.command(&["a.sh", "-i", "5000"]);
    cmd.env("PM_RUNTIME_MAX_INSTANCES", "10");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-i: 5000 instances is more than the limit of 10"), "{out:?}");
}
