//! End-to-end tests of `load`/`from_script` on real files in temp dirs, with an injected PATH,
//! environment and base directory (the process environment is never touched).

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

struct Fx {
    dir: tempfile::TempDir,
    vars: BTreeMap<String, String>,
}

impl Fx {
    /// A base dir `work/` and a `bin/` on PATH with fake `node`, `bash`, `python3`.
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(dir.path().join("work")).unwrap();
        for b in ["node", "bash", "python3"] {
            let p = bin.join(b);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut vars = BTreeMap::new();
        vars.insert("PATH".into(), bin.to_string_lossy().into_owned());
        Fx { dir, vars }
    }
    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
    fn bin(&self, name: &str) -> PathBuf {
        self.dir.path().join("bin").join(name)
    }
    fn file(&self, name: &str, content: &str) -> &Self {
        let p = self.work().join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(p, content).unwrap();
        self
    }
    fn load(&self, name: &str, o: &Overrides) -> Result<Ecosystem, ConfigError> {
        let var = |k: &str| self.vars.get(k).cloned();
        let host = Host { base_dir: self.work(), var: &var };
        load_with(Path::new(name), o, &host)
    }
    fn script(&self, script: &str, o: &Overrides) -> Result<Ecosystem, ConfigError> {
        let var = |k: &str| self.vars.get(k).cloned();
        let host = Host { base_dir: self.work(), var: &var };
        from_script_with(script, o, &host)
    }
}

fn ok(r: Result<Ecosystem, ConfigError>) -> Ecosystem {
    r.unwrap_or_else(|e| panic!("unexpected error:\n{e}"))
}

#[test]
fn config_file_detection() {
    assert!(is_config_file("ecosystem.config.js"));
    assert!(is_config_file("a/b/pm2.json"));
    assert!(is_config_file("app.json5"));
    assert!(is_config_file("x.yaml"));
    assert!(is_config_file("e.config.mjs"));
    assert!(!is_config_file("ecosystem.js"));
    assert!(!is_config_file("server.cjs"));
}

#[test]
fn pid_paths_are_named_as_pm2_names_them() {
    let home = Path::new("/h/.pm2");
    let table: &[(Option<&str>, &str, u32, &str)] = &[
        (None, "web", 0, "/h/.pm2/pids/web-0.pid"),
        (None, "my app_1", 3, "/h/.pm2/pids/my-app-1-3.pid"),
        (Some("/run/app.pid"), "web", 2, "/run/app-2.pid"),
        (Some("/run/app-7.pid"), "web", 2, "/run/app-2.pid"),
        (Some("/run/app-x.pid"), "web", 2, "/run/app-x-2.pid"),
        (Some("/run/app.pidfile"), "web", 2, "/run/app.pidfile"),
        (Some("/run/app"), "web", 2, "/run/app"),
        (Some("/run/.pid"), "web", 1, "/run/-1.pid"),
        (Some("/dev/null"), "web", 1, "/dev/null"),
        (Some("NULL"), "web", 1, "NULL"),
    ];
    for (configured, name, id, want) in table {
        assert_eq!(pid_path(configured.map(Path::new), name, *id, home), Path::new(want), "{configured:?}");
    }
}

#[test]
fn resolve_instances_table() {
    let table = [
        (Instances::Count(3), 8, 3),
        (Instances::Count(0), 8, 8),
        (Instances::Max, 4, 4),
        (Instances::MinusCpus(1), 4, 3),
        (Instances::MinusCpus(4), 4, 1),
        (Instances::MinusCpus(10), 4, 1),
        (Instances::Max, 0, 1),
        (Instances::Count(1), 1, 1),
    ];
    for (i, cpus, want) in table {
        assert_eq!(resolve_instances(i, cpus), want, "{i:?} on {cpus}");
    }
}

#[test]
fn yaml_full_app_with_defaults() {
    let fx = Fx::new();
    fx.file("app.js", "").file("ecosystem.config.yml", "apps:\n  - script: app.js\n    instances: 2\n    out: logs/out.log\n");
    let eco = ok(fx.load("ecosystem.config.yml", &Overrides::default()));
    assert!(eco.warnings.is_empty(), "{:?}", eco.warnings);
    let a = &eco.apps[0];
    assert_eq!(a.name, "app");
    assert_eq!(a.namespace, "default");
    assert_eq!(a.cwd, fx.work());
    assert_eq!(a.exec_path, fx.work().join("app.js"));
    assert_eq!(a.command.program, fx.bin("node"));
    assert_eq!(a.command.argv, [fx.work().join("app.js").to_string_lossy().as_ref()]);
    assert!(a.command.is_node);
    assert_eq!(a.instances, Instances::Count(2));
    assert_eq!(a.exec_mode, ExecMode::Cluster, "instances set + node → cluster");
    assert_eq!(a.min_uptime, Duration::from_millis(1000));
    assert_eq!(a.max_restarts, 16);
    assert_eq!(a.kill_timeout, Duration::from_millis(1600));
    assert_eq!(a.listen_timeout, Duration::from_millis(3000));
    assert_eq!(a.kill_retry_time, Duration::from_millis(100));
    assert_eq!(a.kill_signal.to_string(), "SIGINT");
    assert_eq!(a.instance_var, "NODE_APP_INSTANCE");
    assert!(a.autostart && a.autorestart && a.treekill);
    assert_eq!(a.out_file, Some(fx.work().join("logs/out.log")));
    assert_eq!(eco.file, Some(PathBuf::from("ecosystem.config.yml")));
}

#[test]
fn yaml_collects_every_problem_with_positions() {
    let fx = Fx::new();
    fx.file("a.js", "").file(
        "ecosystem.config.yml",
        "\
apps:
  - script: a.js
    name: ok
  - script: a.js
    name: bad
    instancez: 2
    instances: [4]
    port: 70000
  - name: noscript
  - script: missing.js
    interpreter: ruby
",
    );
    let e = fx.load("ecosystem.config.yml", &Overrides::default()).unwrap_err();
    let missing = fx.work().join("missing.js");
    let want = [
        "ecosystem.config.yml:7:16: apps[1].instances: expected a number, \"max\" or -N, got a list".to_string(),
        "ecosystem.config.yml:8:11: apps[1].port: expected a port number 1-65535, got 70000".to_string(),
        "ecosystem.config.yml:9:5: apps[2]: missing required key \"script\"".to_string(),
        format!("ecosystem.config.yml:10:13: apps[3].script: script not found: {}", missing.display()),
    ];
    assert_eq!(e.problems, want, "\n{e}");
    assert_eq!(e.to_string().lines().count(), 4);
}

#[test]
fn unknown_key_warning_with_suggestion() {
    let fx = Fx::new();
    fx.file("a.js", "").file(
        "ecosystem.config.yml",
        "apps:\n  - script: a.js\n    autorestart: false\n    maxMemoryRestart: 1G\n    instancez: 4\n    vizion: false\n",
    );
    let eco = ok(fx.load("ecosystem.config.yml", &Overrides::default()));
    assert_eq!(eco.warnings, ["ecosystem.config.yml:5:5: apps[0].instancez: unknown key (did you mean \"instances\"?)"]);
    let a = &eco.apps[0];
    assert!(!a.autorestart);
    assert_eq!(a.max_memory_restart, Some(1 << 30));
    assert_eq!(a.ignored.get("vizion"), Some(&serde_json::Value::Bool(false)));
    assert_eq!(a.exec_mode, ExecMode::Fork);
}

#[test]
fn yaml_syntax_error() {
    let fx = Fx::new();
    fx.file("e.yml", "apps:\n  - script: a.js\n    name: [unclosed\n");
    let e = fx.load("e.yml", &Overrides::default()).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].starts_with("e.yml:"), "{e}");
    assert!(e.problems[0].contains("syntax error"), "{e}");
}

#[test]
fn json_with_comments_and_trailing_commas() {
    let fx = Fx::new();
    fx.file("server.js", "").file(
        "process.json",
        r#"{
  // the API
  "apps": [
    {
      "name": "api", /* inline */
      "script": "server.js",
      "args": "--port 80 --title 'my api'",
      "env": { "PORT": 3000, "DEBUG": false, },
      "kill_timeout": "5s",
    },
  ],
}
"#,
    );
    let eco = ok(fx.load("process.json", &Overrides::default()));
    let a = &eco.apps[0];
    assert_eq!(a.name, "api");
    assert_eq!(a.args, ["--port", "80", "--title", "my api"]);
    assert_eq!(a.env["PORT"], "3000");
    assert_eq!(a.env["DEBUG"], "false");
    assert_eq!(a.kill_timeout, Duration::from_secs(5));

    fx.file("bad.json", "{\n  \"apps\": [\n    { \"script\": \"server.js\", \"port\": \"x\" }\n  ]\n}\n");
    let e = fx.load("bad.json", &Overrides::default()).unwrap_err();
    assert_eq!(e.problems, ["bad.json:3:38: apps[0].port: expected a port number 1-65535, got \"x\""]);
}

#[test]
fn apps_as_single_object_and_document_as_app() {
    let fx = Fx::new();
    fx.file("a.py", "").file("one.yml", "apps:\n  script: a.py\n  name: worker\n");
    let eco = ok(fx.load("one.yml", &Overrides::default()));
    assert_eq!(eco.apps.len(), 1);
    assert_eq!(eco.apps[0].name, "worker");
    assert_eq!(eco.apps[0].command.interpreter, "python3");

    fx.file("doc.json", "{\"script\": \"a.py\"}");
    let eco = ok(fx.load("doc.json", &Overrides::default()));
    assert_eq!(eco.apps[0].name, "a");
}

#[test]
fn env_precedence_with_deploy_and_env_flag() {
    let fx = Fx::new();
    fx.file("a.js", "").file(
        "e.yml",
        "\
apps:
  - script: a.js
    append_env_to_name: true
    env: {A: base, B: base}
    env_production: {B: prod, NODE_ENV: production}
deploy:
  production:
    env: {A: deploy, C: deploy}
",
    );
    let o = Overrides { env: Some("production".into()), ..Default::default() };
    let eco = ok(fx.load("e.yml", &o));
    let a = &eco.apps[0];
    assert_eq!(a.name, "a-production");
    let env: Vec<(&str, &str)> = a.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("A", "base"), ("B", "prod"), ("C", "deploy"), ("NODE_ENV", "production")]);
    assert!(eco.warnings.is_empty(), "{:?}", eco.warnings);

    // No --env: only `env`.
    let eco = ok(fx.load("e.yml", &Overrides::default()));
    assert_eq!(eco.apps[0].env.len(), 2);
    assert_eq!(eco.apps[0].name, "a");

    // Undefined environment: a warning, still loads.
    let o = Overrides { env: Some("staging".into()), ..Default::default() };
    let eco = ok(fx.load("e.yml", &o));
    assert_eq!(eco.warnings, ["Environment [staging] is not defined in e.yml"]);
}

#[test]
fn only_filters_in_file_order() {
    let fx = Fx::new();
    fx.file("a.js", "")
        .file("e.yml", "apps:\n  - {name: a, script: a.js}\n  - {name: b, script: a.js}\n  - {name: c, script: a.js, port: nope}\n");
    let o = Overrides { only: vec!["b".into(), "a".into()], ..Default::default() };
    let eco = ok(fx.load("e.yml", &o));
    let names: Vec<&str> = eco.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "errors in unselected apps don't matter");

    let o = Overrides { only: vec!["web".into()], ..Default::default() };
    let e = fx.load("e.yml", &o).unwrap_err();
    assert_eq!(e.problems, ["--only web: no app named \"web\" in e.yml (apps: a, b, c)"]);
}

#[test]
fn script_with_spaces_runs_in_shell() {
    let fx = Fx::new();
    fx.file("e.yml", "apps:\n  - script: python3 -m http.server 8000\n");
    let eco = ok(fx.load("e.yml", &Overrides::default()));
    let a = &eco.apps[0];
    assert_eq!(a.name, "python3 -m http.server 8000");
    assert_eq!(a.command.program, fx.bin("bash"));
    assert_eq!(a.command.argv, ["-c", "python3 -m http.server 8000"]);
    assert_eq!(a.command.interpreter, "none");
    assert_eq!(a.exec_path, PathBuf::from("python3 -m http.server 8000"));
}

#[test]
fn missing_script_and_missing_file() {
    let fx = Fx::new();
    fx.file("e.yml", "apps:\n  - name: x\n");
    let e = fx.load("e.yml", &Overrides::default()).unwrap_err();
    assert_eq!(e.problems, ["e.yml:2:5: apps[0]: missing required key \"script\""]);

    let e = fx.load("nope.yml", &Overrides::default()).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].starts_with("nope.yml: file not found"), "{e}");
    let e = fx.load("nope.config.js", &Overrides::default()).unwrap_err();
    assert!(e.problems[0].starts_with("nope.config.js: file not found"), "{e}");
}

#[test]
fn cwd_and_interpreter_resolution() {
    let fx = Fx::new();
    fx.file("svc/run.sh", "echo")
        .file("svc/tool.rb", "")
        .file("e.yml", "apps:\n  - script: run.sh\n    cwd: svc\n  - script: tool.rb\n    cwd: svc\n  - script: x.js\n    cwd: nowhere\n");
    let e = fx.load("e.yml", &Overrides::default()).unwrap_err();
    assert_eq!(
        e.problems,
        [
            "e.yml:4:13: apps[1].script: interpreter \"ruby\" is not available in PATH".to_string(),
            format!("e.yml:7:10: apps[2].cwd: directory not found: {}", fx.work().join("nowhere").display()),
        ]
    );
    fx.file("ok.yml", "apps:\n  - script: run.sh\n    cwd: svc\n    node_args: [-x]\n    args: [a, 2]\n");
    let eco = ok(fx.load("ok.yml", &Overrides::default()));
    let a = &eco.apps[0];
    assert_eq!(a.cwd, fx.work().join("svc"));
    assert_eq!(a.command.program, fx.bin("bash"));
    let exec = fx.work().join("svc/run.sh").to_string_lossy().into_owned();
    assert_eq!(a.command.argv, ["-x", exec.as_str(), "a", "2"]);
    assert!(!a.command.is_node);
}

#[test]
fn overrides_apply_to_files() {
    let fx = Fx::new();
    fx.file("a.js", "").file("e.yml", "apps:\n  - script: a.js\n    watch: false\n  - script: a.js\n    name: b\n    kill_timeout: 100\n");
    let o = Overrides {
        instances: Some("max".into()),
        node_args: Some("--max-old-space-size=512 --inspect".into()),
        no_autorestart: true,
        stop_exit_codes: Some(vec![0, 3]),
        kill_timeout: Some(9000),
        max_memory_restart: Some("300M".into()),
        cron: Some("0 3 * * *".into()),
        watch: true,
        name: Some("ignored-for-files".into()),
        ..Default::default()
    };
    let eco = ok(fx.load("e.yml", &o));
    for a in &eco.apps {
        assert_eq!(a.instances, Instances::Max);
        assert_eq!(a.exec_mode, ExecMode::Fork, "-i does not switch to cluster");
        assert_eq!(a.interpreter_args, ["--max-old-space-size=512", "--inspect"]);
        assert_eq!(a.command.argv[0], "--max-old-space-size=512");
        assert!(!a.autorestart);
        assert_eq!(a.stop_exit_codes, [0, 3]);
        assert_eq!(a.kill_timeout, Duration::from_millis(9000));
        assert_eq!(a.max_memory_restart, Some(300 << 20));
        assert_eq!(a.cron_restart.as_deref(), Some("0 3 * * *"));
    }
    assert_eq!(eco.apps[0].name, "a");
    assert_eq!(eco.apps[0].watch, Watch::Off, "explicit watch: false kept");
    assert_eq!(eco.apps[1].watch, Watch::Cwd);

    let bad = Overrides { instances: Some("x".into()), max_memory_restart: Some("lots".into()), ..Default::default() };
    let e = fx.load("e.yml", &bad).unwrap_err();
    assert_eq!(e.problems[0], "-i: expected a number, \"max\" or -N, got \"x\"");
    assert!(e.problems[1].starts_with("--max-memory-restart: expected a size"), "{e}");
}

#[test]
fn env_var_defaults_are_injectable() {
    let mut fx = Fx::new();
    fx.vars.insert("PM2_KILL_TIMEOUT".into(), "4000".into());
    fx.vars.insert("PM2_KILL_SIGNAL".into(), "SIGTERM".into());
    fx.vars.insert("PM2_GRACEFUL_LISTEN_TIMEOUT".into(), "8000".into());
    fx.file("a.js", "").file("e.yml", "apps:\n  - script: a.js\n  - script: a.js\n    name: b\n    kill_signal: usr2\n");
    let eco = ok(fx.load("e.yml", &Overrides::default()));
    assert_eq!(eco.apps[0].kill_timeout, Duration::from_millis(4000));
    assert_eq!(eco.apps[0].kill_signal.to_string(), "SIGTERM");
    assert_eq!(eco.apps[0].listen_timeout, Duration::from_millis(8000));
    assert_eq!(eco.apps[1].kill_signal.to_string(), "SIGUSR2");
}

#[test]
fn script_form() {
    let fx = Fx::new();
    fx.file("app.js", "");
    let o = Overrides { args: vec!["a".into(), "b".into()], instances: Some("2".into()), ..Default::default() };
    let eco = ok(fx.script("app.js", &o));
    assert_eq!(eco.file, None);
    let a = &eco.apps[0];
    assert_eq!(a.name, "app");
    assert_eq!(a.args, ["a", "b"]);
    let exec = fx.work().join("app.js").to_string_lossy().into_owned();
    assert_eq!(a.command.argv, [exec.as_str(), "a", "b"]);
    assert_eq!(a.instances, Instances::Count(2));
    assert_eq!(a.exec_mode, ExecMode::Cluster, "-i with a Node script → cluster, as pm2-runtime");
    let o1 = Overrides { instances: Some("2".into()), interpreter: Some("python3".into()), ..Default::default() };
    assert_eq!(ok(fx.script("app.js", &o1)).apps[0].exec_mode, ExecMode::Fork, "not Node: fork");
    assert_eq!(ok(fx.script("app.js", &Overrides::default())).apps[0].exec_mode, ExecMode::Fork, "no -i: fork");
    fx.file("f.yml", "apps:\n  - script: app.js\n");
    let o1 = Overrides { instances: Some("2".into()), ..Default::default() };
    assert_eq!(ok(fx.load("f.yml", &o1)).apps[0].exec_mode, ExecMode::Fork, "-i with a file: the file decides the mode");

    let o = Overrides { name: Some("web".into()), interpreter: Some("python3".into()), ..Default::default() };
    let eco = ok(fx.script("app.js", &o));
    assert_eq!(eco.apps[0].name, "web");
    assert_eq!(eco.apps[0].command.program, fx.bin("python3"));

    let e = fx.script("nope.js", &Overrides::default()).unwrap_err();
    assert_eq!(e.problems, [format!("script not found: {}", fx.work().join("nope.js").display())]);
    let o = Overrides { interpreter: Some("ruby".into()), ..Default::default() };
    let e = fx.script("app.js", &o).unwrap_err();
    assert_eq!(e.problems, ["--interpreter: interpreter \"ruby\" is not available in PATH"]);

    let eco = ok(fx.script("npm start", &Overrides::default()));
    assert_eq!(eco.apps[0].name, "npm start");
    assert_eq!(eco.apps[0].command.argv, ["-c", "npm start"]);
}

#[test]
fn js_config_through_node() {
    let fx = Fx::new();
    // CI installs node (.ci/run): a missing node fails the test, it never passes as a skip.
    let real_path = std::env::var("PATH").expect("this test needs PATH to find node");
    let var = |k: &str| (k == "PATH").then(|| real_path.clone());
    let probe = Host { base_dir: fx.work(), var: &var };
    let node = probe.which("node", &fx.work()).expect("this test needs node on PATH");
    fx.file("app.js", "").file(
        "ecosystem.config.js",
        "const path = require('path');\nmodule.exports = {\n  apps: [{\n    name: 'api',\n    script: path.join(__dirname, 'app.js'),\n    instances: '2',\n    port: 99999,\n    env: { N: 1 + 1 },\n  }],\n};\n",
    );
    let e = load_with(Path::new("ecosystem.config.js"), &Overrides::default(), &probe).unwrap_err();
    assert_eq!(e.problems, ["ecosystem.config.js: apps[0].port: expected a port number 1-65535, got 99999"]);

    fx.file("ecosystem.config.js", "module.exports = { apps: [{ name: 'api', script: 'app.js', instances: '2', env: { N: 1 + 1 } }] };\n");
    let eco = load_with(Path::new("ecosystem.config.js"), &Overrides::default(), &probe).unwrap();
    let a = &eco.apps[0];
    assert_eq!(a.env["N"], "2");
    assert_eq!(a.instances, Instances::Count(2));
    assert_eq!(a.command.program, node);
    assert_eq!(a.exec_mode, ExecMode::Cluster);

    fx.file("broken.config.js", "module.exports = {\n  apps: [ oops oops ]\n};\n");
    let e = load_with(Path::new("broken.config.js"), &Overrides::default(), &probe).unwrap_err();
    assert!(e.problems[0].starts_with("node failed to evaluate broken.config.js:\n"), "{e}");
    assert!(e.problems[0].contains("SyntaxError"), "{e}");

    // Without node in PATH.
    let e = fx.load("ecosystem.config.js", &Overrides::default());
    if let Err(e) = e {
        // The fixture's fake `node` is a no-op shell script: the loader prints nothing.
        assert!(e.problems[0].starts_with("node failed to evaluate ecosystem.config.js"), "{e}");
    }
    let none = |_: &str| Some("/nonexistent".to_string());
    let host = Host { base_dir: fx.work(), var: &none };
    let e = load_with(Path::new("ecosystem.config.js"), &Overrides::default(), &host).unwrap_err();
    assert_eq!(e.problems, ["node is required to read ecosystem.config.js but was not found in PATH"]);
}

#[test]
fn never_panics_on_odd_documents() {
    let fx = Fx::new();
    for (i, doc) in [
        "",
        "~",
        "42",
        "\"str\"",
        "[1, 2]",
        "apps: [null, 3, [], {}]",
        "apps:\n  - script: [1]\n    env: 5\n    args: {a: 1}\n    watch: {x: 1}\n",
        "apps:\n  - script: a.js\n    instances: 1e400\n    port: -1\n    max_restarts: -3\n",
        "{?: 1}",
        "apps: &a\n  - script: x\n    <<: {name: y}\n",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("d{i}.yml");
        fx.file(&name, doc);
        let _ = fx.load(&name, &Overrides::default());
    }
}

/// PM2's meaning of 0 for each numeric key (read from PM2's God.js, Worker.js, Common.js,
/// God/Methods.js): "off" or "the default", never "every time" or "at once".
#[test]
fn zero_means_what_it_means_in_pm2() {
    type Check = fn(&App) -> bool;
    let table: [(&str, &str, Check); 13] = [
        ("max_memory_restart", "0", |a| a.max_memory_restart.is_none()),
        ("max_memory_restart", "\"0M\"", |a| a.max_memory_restart.is_none()),
        ("kill_timeout", "0", |a| a.kill_timeout == Duration::from_millis(1600)),
        ("listen_timeout", "0", |a| a.listen_timeout == Duration::from_millis(3000)),
        ("kill_retry_time", "0", |a| a.kill_retry_time == Duration::from_millis(100)),
        ("port", "0", |a| a.port.is_none()),
        ("cron_restart", "0", |a| a.cron_restart.is_none()),
        ("cron_restart", "\"0\"", |a| a.cron_restart.is_none()),
        ("exp_backoff_restart_delay", "0", |a| a.exp_backoff_restart_delay.is_none()),
        ("restart_delay", "0", |a| a.restart_delay.is_zero()),
        ("instances", "0", |a| resolve_instances(a.instances, 3) == 3),
        // 0 restarts: the first unstable exit makes it errored (God.handleExit: 0 >= 0).
        ("max_restarts", "0", |a| a.max_restarts == 0),
        ("log_max_size", "0", |a| a.log_max_size.unwrap_or(0) == 0),
    ];
    for (key, value, check) in table {
        let fx = Fx::new();
        fx.file("a.js", "").file("eco.yml", &format!("apps:\n  - script: a.js\n    {key}: {value}\n"));
        let eco = ok(fx.load("eco.yml", &Overrides::default()));
        assert!(check(&eco.apps[0]), "{key}: {value} gave {:?}", eco.apps[0]);
    }
    // Negative values are errors naming the key (PM2's schema: digits only, `min: 0`).
    for key in ["max_memory_restart", "kill_timeout", "listen_timeout", "max_restarts", "restart_delay", "port", "log_max_size"] {
        let fx = Fx::new();
        fx.file("a.js", "").file("eco.yml", &format!("apps:\n  - script: a.js\n    {key}: -5\n"));
        let e = fx.load("eco.yml", &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("eco.yml:3:") && e.contains(&format!("apps[0].{key}")), "{key}: {e}");
    }
    // The flags mean the same.
    let fx = Fx::new();
    fx.file("a.js", "").file("eco.yml", "apps:\n  - script: a.js\n    max_memory_restart: 100M\n    kill_timeout: 500\n");
    let o = Overrides { max_memory_restart: Some("0".into()), kill_timeout: Some(0), ..Default::default() };
    let a = &ok(fx.load("eco.yml", &o)).apps[0];
    assert_eq!(a.max_memory_restart, None);
    assert_eq!(a.kill_timeout, Duration::from_millis(1600));
}

#[test]
fn args_and_env_past_arg_max_are_an_error() {
    let fx = Fx::new();
    let n = crate::process::unix::arg_max() / (100 * 1024) + 2;
    let args: Vec<String> = (0..n).map(|_| format!("\"{}\"", "a".repeat(100 * 1024))).collect();
    fx.file("a.js", "").file("eco.yml", &format!("apps:\n  - script: a.js\n    args: [{}]\n", args.join(", ")));
    let e = fx.load("eco.yml", &Overrides::default()).unwrap_err().to_string();
    assert!(e.starts_with("eco.yml:2:13: apps[0].args: arguments (") && e.contains("ARG_MAX"), "{}", &e[..e.len().min(300)]);
    // One string just under the per-string limit is fine.
    fx.file("ok.yml", &format!("apps:\n  - script: a.js\n    args: [\"{}\"]\n", "a".repeat(validate::MAX_ARG_STRLEN - 1)));
    ok(fx.load("ok.yml", &Overrides::default()));
}

/// The one owner of per-instance log/pid names: `-<pm_id>` before the extension when
/// instances keep separate files (cluster, several instances, `merge_logs: false`), the path
/// as configured otherwise; null sinks untouched.
#[test]
fn instance_paths() {
    let fx = Fx::new();
    fx.file("a.js", "").file(
        "e.yml",
        "apps:\n  - script: a.js\n    name: single\n  - script: a.js\n    name: many\n    instances: 2\n    exec_mode: fork\n  - script: a.js\n    name: merged\n    instances: 2\n    merge_logs: true\n  - script: a.js\n    name: split\n    merge_logs: false\n",
    );
    let eco = ok(fx.load("e.yml", &Overrides::default()));
    let [single, many, merged, split] = &eco.apps[..] else { panic!("{:?}", eco.apps) };
    let w = fx.work();
    let table = [
        (single, "/l/web-out.log", "/l/web-out.log".into()),
        (single, "rel/out.log", w.join("rel/out.log")),
        (many, "/l/web-out.log", "/l/web-out-3.log".into()),
        (many, "/l/out", "/l/out-3".into()),
        (many, "rel/app.err.log", w.join("rel/app.err-3.log")),
        (many, "/dev/null", "/dev/null".into()),
        (many, "NULL", "NULL".into()),
        (merged, "/l/web-out.log", "/l/web-out.log".into()),
        (split, "/l/web-out.log", "/l/web-out-3.log".into()),
    ];
    for (app, path, want) in table {
        assert_eq!(app.instance_path(Path::new(path), 3), want, "{} {path}", app.name);
    }
}
