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
        "apps:\n  - name: a\n    script: a.js\n    max_restarts: lots\n  - name: b\n    script: a.js\n    instances: four\n    kill_timeout: soon\n",
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
