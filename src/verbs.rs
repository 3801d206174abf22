//! The client side of every verb: a request to the running runtime, then output for a person
//! (or JSON for a script). Errors name what was tried; exit codes: 0 done, 1 refused or failed.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::cli::Command;
use crate::control::client;
use crate::exit::Outcome;

fn fail(msg: &str) -> Outcome {
    eprintln!("pm-runtime: {msg}");
    Outcome::AppsFinished(1)
}

fn print_table(home: &Path) -> Outcome {
    match client::processes(home) {
        Ok(ps) => {
            print!("{}", client::table(&ps));
            Outcome::Requested
        }
        Err(e) => fail(&e),
    }
}

/// start/stop/restart/reload/delete: send, wait until statuses settle, show the table.
pub fn act(home: &Path, verb: &str, target: &str) -> Outcome {
    match client::request(home, &json!({"cmd": verb, "target": target})) {
        Ok(_) => {
            client::wait_settled(home, Duration::from_secs(15));
            print_table(home)
        }
        Err(e) => fail(&e),
    }
}

pub fn run(home: &Path, cmd: Command) -> Outcome {
    match cmd {
        Command::Start(_) => unreachable!("handled by the caller"),
        Command::Validate { file, env, only, instances } => validate(&file, env, only, instances),
        Command::Ls { sort } => match client::processes(home) {
            Ok(mut ps) => {
                if let Some(spec) = sort
                    && let Err(e) = client::sort(&mut ps, &spec)
                {
                    return fail(&e);
                }
                print!("{}", client::table(&ps));
                Outcome::Requested
            }
            Err(e) => fail(&e),
        },
        Command::Jlist => match client::processes(home) {
            Ok(ps) => {
                println!("{}", serde_json::Value::Array(ps));
                Outcome::Requested
            }
            Err(e) => fail(&e),
        },
        Command::Show { target } => match client::request(home, &json!({"cmd": "show", "target": target})) {
            Ok(r) => {
                for p in r["processes"].as_array().into_iter().flatten() {
                    println!("{}", client::describe(p));
                }
                Outcome::Requested
            }
            Err(e) => fail(&e),
        },
        Command::Logs { target, lines, nostream, json, raw, err, out } => {
            match client::request(home, &json!({"cmd": "logs", "target": target, "lines": lines})) {
                Ok(r) => {
                    for l in r["lines"].as_array().into_iter().flatten() {
                        let kind = l["type"].as_str().unwrap_or("out");
                        if (err && kind != "err") || (out && kind != "out") {
                            continue;
                        }
                        let msg = l["message"].as_str().unwrap_or("");
                        if json {
                            println!("{l}");
                        } else if raw {
                            println!("{msg}");
                        } else {
                            println!("{}|{} | {msg}", l["pm_id"], l["app_name"].as_str().unwrap_or(""));
                        }
                    }
                    if !nostream {
                        eprintln!("pm-runtime: following the log stream is not supported yet; printed the last {lines} lines");
                    }
                    Outcome::Requested
                }
                Err(e) => fail(&e),
            }
        }
        Command::Stop(t) => act(home, "stop", &t.target),
        Command::Restart(t) => act(home, "restart", &t.target),
        Command::Reload(t) => act(home, "reload", &t.target),
        Command::Delete(t) => act(home, "delete", &t.target),
        Command::Scale { name, count } => match client::request(home, &json!({"cmd": "scale", "name": name, "count": count})) {
            Ok(_) => {
                client::wait_settled(home, Duration::from_secs(15));
                print_table(home)
            }
            Err(e) => fail(&e),
        },
        Command::SendSignal { signal, target } => {
            match client::request(home, &json!({"cmd": "signal", "signal": signal, "target": target})) {
                Ok(r) => {
                    println!("sent {signal} to {} process(es)", r["ids"].as_array().map_or(0, Vec::len));
                    Outcome::Requested
                }
                Err(e) => fail(&e),
            }
        }
        Command::Flush { target } => match client::request(home, &json!({"cmd": "flush", "target": target})) {
            Ok(r) => {
                println!("flushed {} log file(s)", r["files"].as_array().map_or(0, Vec::len));
                Outcome::Requested
            }
            Err(e) => fail(&e),
        },
        Command::ReloadLogs => match client::request(home, &json!({"cmd": "reload_logs"})) {
            Ok(_) => {
                println!("log files reopened");
                Outcome::Requested
            }
            Err(e) => fail(&e),
        },
        Command::Ping => match client::request(home, &json!({"cmd": "ping"})) {
            Ok(r) if r["healthy"] == json!(true) => {
                println!("pong");
                Outcome::Requested
            }
            Ok(r) => {
                for p in r["problems"].as_array().into_iter().flatten() {
                    eprintln!("pm-runtime: {}", p.as_str().unwrap_or(""));
                }
                Outcome::AppsFinished(1)
            }
            Err(e) => fail(&e),
        },
    }
}

/// `validate`: parse and resolve like `start`, print the plan; never starts anything and never
/// prints an environment value (they may be secrets).
fn validate(file: &str, env: Option<String>, only: Option<String>, instances: Option<String>) -> Outcome {
    let overrides = crate::config::Overrides {
        env,
        only: only.map(|s| s.split([',', ' ']).filter(|n| !n.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
        instances,
        ..Default::default()
    };
    let loaded = if crate::config::is_config_file(file) {
        crate::config::load(Path::new(file), &overrides)
    } else {
        crate::config::from_script(file, &overrides)
    };
    let eco = match loaded {
        Ok(eco) => eco,
        Err(e) => {
            eprintln!("{file}: invalid");
            for p in &e.problems {
                eprintln!("  {p}");
            }
            return Outcome::ConfigError;
        }
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
        println!("    interpreter: {}", app.command.interpreter);
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
