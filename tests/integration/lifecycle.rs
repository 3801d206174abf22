//! Starting apps: ecosystem files, env, --env, --only, instances, the script form.

use std::time::Duration;

use crate::scenario::*;

const HTTP_APP: &str = r#"
const http = require('http');
http.createServer((req, res) => res.end(`hello from ${process.env.name} ${process.env.NODE_APP_INSTANCE}`))
  .listen(process.env.PORT, '127.0.0.1', () => console.log(`listening on ${process.env.PORT}`));
"#;

#[test]
fn two_app_yaml_starts_node_http_and_python() {
    let port = free_port();
    let s = Scenario::new().file("server.js", HTTP_APP).file("job.py", "import time\nprint('python says hi')\ntime.sleep(30)\n").file(
        "ecosystem.config.yml",
        &format!("apps:\n  - name: web\n    script: server.js\n    port: {port}\n  - name: job\n    script: job.py\n"),
    );
    let mut r = s.start(&["start", "ecosystem.config.yml"]);
    r.wait_for("python says hi", Duration::from_secs(10));
    r.wait_for(&format!("listening on {port}"), Duration::from_secs(10));
    assert_eq!(wait_http(port, Duration::from_secs(5)), "hello from web 0");
    r.signal(libc::SIGTERM);
    let status = r.wait(Duration::from_secs(5)).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(http_get(port).is_none(), "nothing answers after the runtime exited");
}

const ENV_APP: &str = "console.log(`ENV name=${process.env.name} inst=${process.env.NODE_APP_INSTANCE} A=${process.env.A} B=${process.env.B} pm_id=${process.env.pm_id} mode=${process.env.exec_mode} uid=${process.env.unique_id ? 'set' : 'unset'}`);\n";

#[test]
fn env_prod_and_only() {
    let s = Scenario::new().file("env.js", ENV_APP).file(
        "eco.json",
        r#"{
  // comments and trailing commas, as PM2 accepts them
  "apps": [
    { "name": "web", "script": "env.js", "autorestart": false,
      "env": { "A": "base", "B": "base" }, "env_prod": { "B": "prod" }, },
    { "name": "other", "script": "env.js", "autorestart": false },
  ]
}"#,
    );
    let (status, out, err) = s.run(&["eco.json", "--env", "prod", "--only", "web"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("ENV name=web inst=0 A=base B=prod pm_id=0 mode=fork_mode uid=set"), "{out}");
    assert!(!out.contains("name=other"), "--only web must not start other: {out}");
}

#[test]
fn instances_in_fork_mode_get_distinct_numbers() {
    let s = Scenario::new()
        .file("env.js", ENV_APP)
        .file("eco.yml", "apps:\n  - name: w\n    script: env.js\n    exec_mode: fork\n    autorestart: false\n");
    let (status, out, err) = s.run(&["start", "eco.yml", "-i", "3"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    let mut insts: Vec<&str> = lines_with(&out, "ENV name=w").iter().map(|l| l.split_whitespace().nth(2).unwrap()).collect();
    insts.sort();
    assert_eq!(insts, vec!["inst=0", "inst=1", "inst=2"], "{out}");
}

#[test]
fn script_form_passes_args_after_double_dash() {
    let s = Scenario::new().file("args.sh", "#!/bin/sh\necho \"ARGS:$*\"\n");
    let (status, out, _) = s.run(&["args.sh", "--no-autorestart", "--", "a1", "--flag"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("ARGS:a1 --flag"), "{out}");
}

#[test]
fn wait_ready_marks_online_only_after_ready() {
    let s = Scenario::new()
        .file("ready.js", "setTimeout(() => { console.log('sending ready'); process.send('ready'); }, 700); setInterval(() => {}, 1000);\n")
        .file("eco.yml", "apps:\n  - name: r\n    script: ready.js\n    wait_ready: true\n    listen_timeout: 5000\n");
    let mut r = s.start(&["eco.yml"]);
    r.wait_for("App [r:0] online", Duration::from_secs(10));
    let out = r.stdout();
    let ready_at = out.find("sending ready").expect("ready line");
    let online_at = out.find("App [r:0] online").unwrap();
    assert!(ready_at < online_at, "online before ready:\n{out}");
    r.signal(libc::SIGINT);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
}

#[test]
fn uid_script_in_path_filter_env_port_and_delay() {
    let s = Scenario::new()
        .file("who.sh", "#!/bin/sh\necho \"WHO uid=$(id -u) home=$HOME port=$PORT keep=${KEEP_ME:-unset} drop=${SECRET_X:-unset}\"\n")
        .file(
            "eco.yml",
            "apps:\n  - name: who\n    script: who.sh\n    uid: nobody\n    port: 4321\n    autorestart: false\n    filter_env: [SECRET_]\n  - name: echo\n    script: echo\n    args: [found, in, PATH]\n    autorestart: false\n",
        );
    std::fs::set_permissions(s.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = s.command(&["eco.yml", "--delay", "0.5"]);
    cmd.env("KEEP_ME", "kept").env("SECRET_X", "hidden");
    let started = std::time::Instant::now();
    let mut r = Running::start(cmd);
    let status = r.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0), "{}{}", r.stdout(), r.stderr());
    assert!(started.elapsed() >= Duration::from_millis(500), "--delay");
    let out = r.stdout();
    assert!(out.contains("WHO uid=65534 home=/nonexistent port=4321 keep=kept drop=unset"), "{out}");
    assert!(out.contains("found in PATH"), "{out}");
}

#[test]
fn the_pid_file_names_a_live_process_only() {
    let s = Scenario::new()
        .file("p.sh", "#!/bin/sh\necho p up\nsleep 0.5\nexit 3\n")
        .file("e.yml", "apps:\n  - name: p\n    script: p.sh\n    autorestart: false\n    pid_file: ./p.pid\n");
    let mut r = s.start(&["e.yml", "--no-auto-exit"]);
    r.wait_for("p up", Duration::from_secs(5));
    // PM2 names it p-<pm_id>.pid.
    let pid_file = s.path().join("p-0.pid");
    let written = poll("the pid file", Duration::from_secs(2), || std::fs::read_to_string(&pid_file).ok());
    assert!(written.trim().parse::<u32>().is_ok(), "{written:?}");
    r.wait_for("exited with code [3]", Duration::from_secs(5));
    poll("the pid file removed after the exit", Duration::from_secs(2), || (!pid_file.exists()).then_some(()));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(5)).unwrap().code(), Some(0));
}
