//! The client side of every verb: a request to the running runtime, then output for a person
//! (or JSON for a script). Errors name what was tried; exit codes: 0 done, 1 refused or failed.

use std::path::Path;
use std::time::Duration;

use crate::cli::Command;
use crate::control::client;
use crate::control::protocol::Request;
use crate::exit::Outcome;

fn fail(msg: impl std::fmt::Display) -> Outcome {
    eprintln!("pm-runtime: {msg}");
    Outcome::AppsFinished(1)
}

fn print_table(home: &Path) -> Outcome {
    match client::processes(home) {
        Ok(ps) => {
            print!("{}", client::table(&ps));
            Outcome::Requested
        }
        Err(e) => fail(e),
    }
}

/// The request of a verb that names a target (`stop web`…).
fn verb_request(verb: &str, target: &str) -> Option<Request> {
    let target = target.to_string();
    Some(match verb {
        "start" => Request::Start { target },
        "stop" => Request::Stop { target },
        "restart" => Request::Restart { target },
        "reload" => Request::Reload { target },
        "delete" => Request::Delete { target },
        "reset" => Request::Reset { target },
        _ => return None,
    })
}

/// start/stop/restart/reload/delete/reset: send, wait until statuses settle, show the table.
pub fn act(home: &Path, verb: &str, target: &str) -> Outcome {
    let Some(req) = verb_request(verb, target) else { return fail(format!("unknown verb {verb:?}")) };
    match client::request(home, &req) {
        Ok(_) => {
            client::wait_settled(home, Duration::from_secs(15));
            if client::processes(home).is_err() {
                // Nothing could run any more, so the runtime exited (as pm2-runtime does; see --no-auto-exit).
                println!("done: no app is left running, so the runtime has exited");
                return Outcome::Requested;
            }
            print_table(home)
        }
        Err(e) => fail(e),
    }
}

/// A verb whose target may be an ecosystem file, as PM2 allows: `restart`/`reload` of a file
/// are `startOrRestart`/`startOrReload` (PM2's `_startJson`), `stop`/`delete` act on every app
/// the file names that is running (PM2's `actionFromJson`; the others are skipped).
/// `--only a,b` keeps the file's apps of those names (PM2: one name; a list is accepted too).
fn act_or_file(home: &Path, verb: &str, t: &crate::cli::Target) -> Outcome {
    let target = t.target.as_str();
    if !crate::config::is_config_file(target) || !Path::new(target).is_file() {
        return act(home, verb, target);
    }
    let file_args = || crate::cli::ApplyArgs {
        file: target.to_string(),
        env: t.env.clone(),
        only: t.only.clone(),
        update_env: false,
        config_timeout: None,
    };
    match verb {
        "restart" => return apply(home, "startOrRestart", file_args()),
        "reload" => return apply(home, "startOrReload", file_args()),
        _ => {}
    }
    let overrides = crate::config::Overrides {
        env: t.env.clone(),
        only: t.only.as_deref().map(crate::cli::split_names).unwrap_or_default(),
        ..Default::default()
    };
    let eco = match crate::config::load(Path::new(target), &overrides) {
        Ok(eco) => eco,
        Err(e) => return invalid("pm-runtime: invalid configuration, nothing was changed:", &e),
    };
    let running = match client::processes(home) {
        Ok(ps) => ps,
        Err(e) => return fail(e),
    };
    let mut acted = 0;
    for app in &eco.apps {
        if !running.iter().any(|p| p["name"] == app.name.as_str()) {
            continue;
        }
        let Some(req) = verb_request(verb, &app.name) else { return fail(format!("unknown verb {verb:?}")) };
        if let Err(e) = client::request(home, &req) {
            return fail(e);
        }
        acted += 1;
    }
    if acted == 0 {
        println!("none of the apps of {target} is running: nothing to {verb}");
        return Outcome::Requested;
    }
    client::wait_settled(home, Duration::from_secs(15));
    if client::processes(home).is_err() {
        println!("done: no app is left running, so the runtime has exited");
        return Outcome::Requested;
    }
    print_table(home)
}

pub fn run(home: &Path, cmd: Command) -> Outcome {
    match cmd {
        Command::Start(_) | Command::Serve(_) => unreachable!("handled by the caller"),
        Command::Validate { file, env, only, instances, config_timeout } => validate(&file, env, only, instances, config_timeout),
        Command::StartOrRestart(a) => apply(home, "startOrRestart", a),
        Command::StartOrReload(a) => apply(home, "startOrReload", a),
        Command::StartOrGracefulReload(a) => apply(home, "startOrGracefulReload", a),
        Command::Ecosystem { js } => write_sample(js),
        Command::Init { mode } => write_init(mode.as_deref()),
        Command::Kill => kill(home),
        #[cfg(feature = "monit")]
        Command::Monit => crate::monit::run(home),
        #[cfg(not(feature = "monit"))]
        Command::Monit => fail("this build has no monit (built without the `monit` feature)"),
        Command::Ls { sort } => match client::processes(home) {
            Ok(mut ps) => {
                if let Some(spec) = sort
                    && let Err(e) = client::sort(&mut ps, &spec)
                {
                    return fail(e);
                }
                print!("{}", client::table(&ps));
                // Under the table: what the runtime's container allows (the cgroup of a running
                // app, which is the runtime's; else the client's own, as under `docker exec`).
                let pid = ps.iter().filter_map(|p| p["pid"].as_u64()).find(|&p| p > 0);
                let cg = pid.and_then(|p| crate::process::cgroup::Cgroup::detect_for(p as u32));
                println!("{}", crate::process::cgroup::describe(cg.as_ref().or(crate::process::cgroup::current())));
                Outcome::Requested
            }
            Err(e) => fail(e),
        },
        Command::Jlist => match client::processes(home) {
            Ok(ps) => {
                println!("{}", serde_json::Value::Array(ps));
                Outcome::Requested
            }
            Err(e) => fail(e),
        },
        Command::Show { target } => match client::request(home, &Request::Show { target }) {
            Ok(r) => {
                for p in r.processes.iter().flatten() {
                    println!("{}", client::describe(p));
                }
                Outcome::Requested
            }
            Err(e) => fail(e),
        },
        Command::Logs { target, lines, nostream, json, raw, format, err, out } => {
            use std::io::Write as _;
            let logfmt = crate::logs::Formatter::new(crate::logs::OutputFormat::Logfmt, &[]);
            // Returns false once stdout is gone (`pm-runtime logs | head`): stop quietly.
            let show = |l: &crate::control::protocol::LogLine| -> bool {
                let kind = l.kind.as_str();
                if (err && kind != "err") || (out && kind != "out") {
                    return true;
                }
                let msg = l.message.as_str();
                let mut o = std::io::stdout().lock();
                if json {
                    // As it came over the wire (a JSON object per line).
                    writeln!(o, "{}", serde_json::to_value(l).unwrap_or_default()).is_ok()
                } else if raw {
                    writeln!(o, "{msg}").is_ok()
                } else if format {
                    let mut line = Vec::new();
                    let tag = crate::logs::AppTag { name: &l.app_name, pm_id: l.pm_id };
                    let stream = if kind == "err" { crate::logs::Stream::Err } else { crate::logs::Stream::Out };
                    let stamp = crate::logs::Stamp::new(std::time::SystemTime::now());
                    logfmt.app_line(&mut line, &tag, stream, &crate::logs::Decoration::default(), msg.as_bytes(), false, &stamp);
                    o.write_all(&line).is_ok()
                } else {
                    writeln!(o, "{}|{} | {msg}", l.pm_id, l.app_name).is_ok()
                }
            };
            let mut last_seq = 0;
            match client::request(home, &Request::Logs { target: target.clone(), lines, after: None }) {
                Ok(r) => {
                    for l in r.lines.iter().flatten() {
                        last_seq = last_seq.max(l.seq);
                        if !show(l) {
                            return Outcome::Requested;
                        }
                    }
                }
                Err(e) => return fail(e),
            }
            if nostream {
                return Outcome::Requested;
            }
            // Follow: poll for lines after the last one seen, until the runtime goes away.
            loop {
                std::thread::sleep(Duration::from_millis(250));
                match client::request(home, &Request::Logs { target: target.clone(), lines: 0, after: Some(last_seq) }) {
                    Ok(r) => {
                        for l in r.lines.iter().flatten() {
                            last_seq = last_seq.max(l.seq);
                            if !show(l) {
                                return Outcome::Requested;
                            }
                        }
                    }
                    Err(_) => return Outcome::Requested,
                }
            }
        }
        Command::Stop(t) => act_or_file(home, "stop", &t),
        Command::Restart(t) => act_or_file(home, "restart", &t),
        Command::Reload(t) => act_or_file(home, "reload", &t),
        Command::Delete(t) => act_or_file(home, "delete", &t),
        Command::Reset(t) => act(home, "reset", &t.target),
        Command::Scale { name, count } => match client::request(home, &Request::Scale { name, count }) {
            Ok(_) => {
                client::wait_settled(home, Duration::from_secs(15));
                print_table(home)
            }
            Err(e) => fail(e),
        },
        Command::SendSignal { signal, target } => match client::request(home, &Request::Signal { signal: signal.clone(), target }) {
            Ok(r) => {
                println!("sent {signal} to {} process(es)", r.ids.map_or(0, |i| i.len()));
                Outcome::Requested
            }
            Err(e) => fail(e),
        },
        Command::Flush { target } => match client::request(home, &Request::Flush { target }) {
            Ok(r) => {
                println!("flushed {} log file(s)", r.files.map_or(0, |f| f.len()));
                Outcome::Requested
            }
            Err(e) => fail(e),
        },
        Command::ReloadLogs => match client::request(home, &Request::ReloadLogs) {
            Ok(_) => {
                println!("log files reopened");
                Outcome::Requested
            }
            Err(e) => fail(e),
        },
        Command::Ping => match client::request(home, &Request::Ping) {
            Ok(r) if r.healthy == Some(true) => {
                println!("pong");
                Outcome::Requested
            }
            Ok(r) => {
                for p in r.problems.iter().flatten() {
                    eprintln!("pm-runtime: {p}");
                }
                Outcome::AppsFinished(1)
            }
            Err(e) => fail(e),
        },
    }
}

/// `validate`: parse and resolve like `start`, print the plan; never starts anything and never
/// prints an environment value (they may be secrets).
fn validate(file: &str, env: Option<String>, only: Option<String>, instances: Option<String>, config_timeout: Option<f64>) -> Outcome {
    let overrides = crate::config::Overrides {
        env,
        only: only.as_deref().map(crate::cli::split_names).unwrap_or_default(),
        instances,
        config_timeout,
        ..Default::default()
    };
    let loaded = if crate::config::is_config_file(file) {
        crate::config::load(Path::new(file), &overrides)
    } else {
        crate::config::from_script(file, &overrides)
    };
    let eco = match loaded {
        Ok(eco) => eco,
        Err(e) => return invalid(&format!("{file}: invalid"), &e),
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("{file}: valid, {} app(s)", eco.apps.len());
    for w in &eco.warnings {
        println!("  warning: {w}");
    }
    for app in &eco.apps {
        let mode = if app.exec_mode == crate::config::ExecMode::Cluster { "cluster" } else { "fork" };
        println!("- {}", app.name);
        println!("    run:         {} {}", app.command.program.display(), app.command.argv.join(" "));
        println!("    cwd:         {}", app.cwd.display());
        match app.command.interpreter.as_str() {
            "none" => println!("    interpreter: none (runs {})", app.command.program.display()),
            name => println!("    interpreter: {name} ({})", app.command.program.display()),
        }
        println!("    mode:        {mode}, {} instance(s)", crate::config::resolve_instances(app.instances, cpus));
        let keys: Vec<&str> = app.env.keys().map(String::as_str).collect();
        println!("    env keys:    {}", if keys.is_empty() { "-".to_string() } else { keys.join(", ") });
        if let Some(p) = app.port {
            println!("    port:        {p}");
        }
        println!(
            "    restarts:    autorestart={} max_restarts={} min_uptime={}ms kill_timeout={}ms kill_signal={}",
            app.autorestart,
            app.max_restarts,
            app.min_uptime.as_millis(),
            app.kill_timeout.as_millis(),
            app.kill_signal
        );
    }
    Outcome::Requested
}

/// `pm-runtime serve` against a running runtime: the script-form app (with `extra_env`) is
/// sent as `startOrRestart`.
pub fn apply_ecosystem(home: &Path, action: &str, script: &str, o: &crate::config::Overrides, extra_env: &[(String, String)]) -> Outcome {
    let mut eco = match crate::config::from_script(script, o) {
        Ok(eco) => eco,
        Err(e) => {
            for p in &e.problems {
                eprintln!("pm-runtime: {p}");
            }
            return Outcome::ConfigError;
        }
    };
    for app in &mut eco.apps {
        app.env.extend(extra_env.iter().cloned());
    }
    match client::request(home, &Request::Apply { action: action.to_string(), ecosystem: eco }) {
        Ok(_) => {
            client::wait_settled(home, Duration::from_secs(15));
            print_table(home)
        }
        Err(e) => fail(e),
    }
}

/// `startOrRestart` and friends: load the file here (this process's cwd and `node`), send the
/// resolved apps to the running runtime.
fn apply(home: &Path, action: &str, a: crate::cli::ApplyArgs) -> Outcome {
    let overrides = crate::config::Overrides {
        env: a.env,
        only: a.only.as_deref().map(crate::cli::split_names).unwrap_or_default(),
        config_timeout: a.config_timeout,
        ..Default::default()
    };
    let eco = match crate::config::load(Path::new(&a.file), &overrides) {
        Ok(eco) => eco,
        Err(e) => return invalid("pm-runtime: invalid configuration, nothing was changed:", &e),
    };
    for w in &eco.warnings {
        eprintln!("pm-runtime: warning: {w}");
    }
    match client::request(home, &Request::Apply { action: action.to_string(), ecosystem: eco }) {
        Ok(_) => {
            client::wait_settled(home, Duration::from_secs(15));
            print_table(home)
        }
        Err(e) => fail(format!("{e}; to run this file in the foreground: pm-runtime start {}", a.file)),
    }
}

const SAMPLE_YML: &str = r#"# pm-runtime / PM2 ecosystem file. Run it with: pm-runtime start ecosystem.config.yml
# Every key of PM2's schema is accepted; check a file with: pm-runtime validate ecosystem.config.yml
apps:
  - name: web                  # how ls, logs, restart… refer to it
    script: index.js           # .js runs with node, .py with python3, .sh with bash; or a command with spaces
    # args: ["--port", "3000"]
    # cwd: /app
    instances: 1               # a number, max (usable CPUs) or -1 (CPUs minus one)
    exec_mode: fork            # fork or cluster
    autorestart: true
    max_restarts: 16           # unstable restarts (exits within min_uptime) before "errored"
    min_uptime: 1000           # ms
    # restart_delay: 0         # ms before each restart
    # exp_backoff_restart_delay: 100   # 100, 150, 225, … up to 15 s
    # max_memory_restart: 300M # whole process tree, checked twice a second
    # cron_restart: "0 3 * * *"
    # watch: false             # true, a path, or a list of paths
    # ignore_watch: [node_modules, logs]
    kill_timeout: 1600         # ms between SIGINT and SIGKILL on stop
    # wait_ready: true         # online only after process.send('ready')
    # listen_timeout: 3000
    env:
      NODE_ENV: development
    env_production:            # merged with --env production
      NODE_ENV: production
    # out_file: logs/out.log   # no files unless set; stdout is the log
    # log_max_size: 10M        # pm-runtime: rotate file logs
    # log_retain: 5
"#;

const SAMPLE_JS: &str = r#"// pm-runtime / PM2 ecosystem file. Run it with: pm-runtime start ecosystem.config.js
module.exports = {
  apps: [
    {
      name: 'web',
      script: 'index.js',
      instances: 1,
      exec_mode: 'fork',
      autorestart: true,
      max_memory_restart: '300M',
      env: { NODE_ENV: 'development' },
      env_production: { NODE_ENV: 'production' },
    },
  ],
};
"#;

/// `ecosystem`: writes a commented sample, never over an existing file.
fn write_sample(js: bool) -> Outcome {
    let (name, body) = if js { ("ecosystem.config.js", SAMPLE_JS) } else { ("ecosystem.config.yml", SAMPLE_YML) };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(name);
    match file.and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes())) {
        Ok(()) => {
            println!("File {name} generated");
            Outcome::Requested
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => fail(format!("{name} already exists; not overwritten")),
        Err(e) => fail(format!("cannot write {name}: {e}")),
    }
}

/// `init [simple]`: PM2's `init`, an ecosystem.config.js in the current directory (never
/// over an existing file); the path is printed as PM2 prints it.
fn write_init(mode: Option<&str>) -> Outcome {
    const NAME: &str = "ecosystem.config.js";
    let body = if mode == Some("simple") { SAMPLE_JS_SIMPLE } else { SAMPLE_JS };
    let path = std::env::current_dir().map(|d| d.join(NAME)).unwrap_or_else(|_| NAME.into());
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path);
    match file.and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes())) {
        Ok(()) => {
            println!("File {} generated", path.display());
            Outcome::Requested
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => fail(format!("{} already exists; not overwritten", path.display())),
        Err(e) => fail(format!("cannot write {}: {e}", path.display())),
    }
}

const SAMPLE_JS_SIMPLE: &str = r#"module.exports = {
  apps: [
    {
      name: 'app1',
      script: './app.js',
    },
  ],
};
"#;

/// `kill`: asks the runtime to stop as a stop signal would, then waits (bounded by the apps'
/// kill_timeout) until it has gone. With no runtime running there is nothing to do: exit 0,
/// as `pm2 kill` does.
fn kill(home: &Path) -> Outcome {
    if !client::runtime_running(home) {
        println!("no pm-runtime is running with PM2_HOME={}: nothing to stop", home.display());
        return Outcome::Requested;
    }
    if let Err(e) = client::request(home, &Request::Kill) {
        return fail(e);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client::runtime_running(home) {
        if std::time::Instant::now() > deadline {
            return fail("the runtime is still stopping after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("every app stopped; pm-runtime has exited");
    Outcome::Requested
}

/// A configuration the client could not load: a heading, then every problem (exit 78).
fn invalid(heading: &str, e: &crate::config::ConfigError) -> Outcome {
    eprintln!("{heading}");
    for p in &e.problems {
        eprintln!("  {p}");
    }
    Outcome::ConfigError
}
