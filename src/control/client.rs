//! The client verbs: `pm-runtime ls`, `stop web`, `scale web +2`, `ping`… against the runtime
//! that serves `$PM2_HOME/pm-runtime.sock`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::protocol::{self, Reply, Request};
use super::server::socket_path;

/// Why a verb got no useful answer from the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `PM2_HOME` is not ours: nothing is sent to its socket.
    #[error(transparent)]
    Home(#[from] super::home::HomeError),
    #[error("no pm-runtime is running here: cannot connect to {} ({source})", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("cannot send to {}: {source}", path.display())]
    Send { path: PathBuf, source: std::io::Error },
    #[error("no answer from {}: {source}", path.display())]
    NoAnswer { path: PathBuf, source: std::io::Error },
    #[error("malformed answer from the runtime: {0}")]
    Malformed(serde_json::Error),
    /// The runtime answered `ok: false`: its words.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and returns the reply (`ok: true` ones only; a refusal is an error).
pub fn request(pm2_home: &Path, req: &Request) -> Result<Reply, ClientError> {
    // A socket in another user's PM2_HOME may be anyone's: do not send it anything.
    super::home::check(pm2_home, nix::unistd::geteuid().as_raw())?;
    let path = socket_path(pm2_home);
    let mut stream = UnixStream::connect(&path).map_err(|source| ClientError::Connect { path: path.clone(), source })?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    stream
        .write_all(format!("{}\n", protocol::encode(req)).as_bytes())
        .map_err(|source| ClientError::Send { path: path.clone(), source })?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(|source| ClientError::NoAnswer { path: path.clone(), source })?;
    let reply: Reply = serde_json::from_str(&line).map_err(ClientError::Malformed)?;
    if reply.ok { Ok(reply) } else { Err(ClientError::Refused(reply.error.unwrap_or_else(|| "unknown error".to_string()))) }
}

/// True when a runtime answers on this PM2_HOME.
pub fn runtime_running(pm2_home: &Path) -> bool {
    request(pm2_home, &Request::Ping).is_ok()
}

pub fn processes(pm2_home: &Path) -> Result<Vec<Value>, ClientError> {
    Ok(request(pm2_home, &Request::Ls)?.processes.unwrap_or_default())
}

/// Waits (bounded) until no process is in a transitional status, so the table shows the result.
pub fn wait_settled(pm2_home: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    std::thread::sleep(Duration::from_millis(150));
    while Instant::now() < deadline {
        let Ok(ps) = processes(pm2_home) else { return };
        let busy = ps.iter().any(|p| matches!(p["pm2_env"]["status"].as_str(), Some("stopping" | "launching")));
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}gb", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1}mb", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1}kb", b / 1024.0)
    } else {
        format!("{b}b")
    }
}

pub(crate) fn human_uptime(since_ms: u64) -> String {
    if since_ms == 0 {
        return "0".into();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let s = now.saturating_sub(since_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}D", s / 86400),
    }
}

/// A `--sort` value `ls` cannot sort by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SortError {
    #[error("--sort: direction must be asc or desc, got {0:?}")]
    Direction(String),
    #[error("--sort: unknown key {0:?} (name, id, pid, memory, cpu, status, uptime)")]
    Key(String),
}

/// Sorts like `pm2 ls --sort name|id|pid|memory|cpu|status|uptime[:asc|desc]`.
pub fn sort(ps: &mut [Value], spec: &str) -> Result<(), SortError> {
    let (key, dir) = spec.split_once(':').unwrap_or((spec, "asc"));
    let desc = match dir {
        "asc" => false,
        "desc" => true,
        d => return Err(SortError::Direction(d.to_string())),
    };
    let k = |p: &Value| -> (f64, String) {
        match key {
            "name" => (0.0, p["name"].as_str().unwrap_or("").to_string()),
            "id" => (p["pm_id"].as_f64().unwrap_or(0.0), String::new()),
            "pid" => (p["pid"].as_f64().unwrap_or(0.0), String::new()),
            "memory" => (p["monit"]["memory"].as_f64().unwrap_or(0.0), String::new()),
            "cpu" => (p["monit"]["cpu"].as_f64().unwrap_or(0.0), String::new()),
            "status" => (0.0, p["pm2_env"]["status"].as_str().unwrap_or("").to_string()),
            // Longest-running first when ascending by uptime means oldest start: sort by start time descending.
            _ => (-(p["pm2_env"]["pm_uptime"].as_f64().unwrap_or(0.0)), String::new()),
        }
    };
    if !["name", "id", "pid", "memory", "cpu", "status", "uptime"].contains(&key) {
        return Err(SortError::Key(key.to_string()));
    }
    ps.sort_by(|a, b| {
        let (ka, kb) = (k(a), k(b));
        let o = ka.0.partial_cmp(&kb.0).unwrap_or(std::cmp::Ordering::Equal).then_with(|| ka.1.cmp(&kb.1));
        if desc { o.reverse() } else { o }
    });
    Ok(())
}

/// PM2's `ls` columns as an aligned text table (no colours, so it reads the same in a pipe).
pub fn table(ps: &[Value]) -> String {
    let header = ["id", "name", "namespace", "version", "mode", "pid", "uptime", "↺", "status", "cpu", "mem", "user", "watching"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for p in ps {
        let env = &p["pm2_env"];
        let online = env["status"] == json!("online");
        rows.push(vec![
            p["pm_id"].to_string(),
            p["name"].as_str().unwrap_or("").to_string(),
            env["namespace"].as_str().unwrap_or("default").to_string(),
            env["version"].as_str().unwrap_or("N/A").to_string(),
            if env["exec_mode"] == json!("cluster_mode") { "cluster" } else { "fork" }.to_string(),
            // Any live process, as PM2 shows it: online, launching, or still in its stop grace.
            p["pid"].as_u64().unwrap_or(0).to_string(),
            if online { human_uptime(env["pm_uptime"].as_u64().unwrap_or(0)) } else { "0".into() },
            env["restart_time"].to_string(),
            match (env["waiting_on"].as_str(), online && env["ready"] == json!(false)) {
                (Some(w), _) => format!("waiting: {w}"),
                (None, true) => "online (not ready)".to_string(),
                (None, false) => env["status"].as_str().unwrap_or("").to_string(),
            },
            format!("{}%", p["monit"]["cpu"].as_f64().unwrap_or(0.0)),
            human_bytes(p["monit"]["memory"].as_u64().unwrap_or(0)),
            env["username"].as_str().unwrap_or("").to_string(),
            if env["watch"] == json!(true) || env["watch"].is_array() { "enabled" } else { "disabled" }.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join(" │ ").trim_end());
        out.push('\n');
        if i == 0 {
            let sep: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
            out.push_str(&sep.join("─┼─"));
            out.push('\n');
        }
    }
    out
}

/// `show`: one process as key/value rows.
pub fn describe(p: &Value) -> String {
    let env = &p["pm2_env"];
    let rows = [
        ("status", env["status"].as_str().unwrap_or("").to_string()),
        ("name", p["name"].as_str().unwrap_or("").to_string()),
        ("namespace", env["namespace"].as_str().unwrap_or("").to_string()),
        ("version", env["version"].as_str().unwrap_or("").to_string()),
        ("pm_id", p["pm_id"].to_string()),
        ("pid", p["pid"].to_string()),
        ("restarts", env["restart_time"].to_string()),
        ("uptime", human_uptime(env["pm_uptime"].as_u64().unwrap_or(0))),
        ("script path", env["pm_exec_path"].as_str().unwrap_or("").to_string()),
        ("pid path", env["pm_pid_path"].as_str().unwrap_or("").to_string()),
        ("interpreter", env["exec_interpreter"].as_str().unwrap_or("").to_string()),
        ("exec cwd", env["pm_cwd"].as_str().unwrap_or("").to_string()),
        ("exec mode", env["exec_mode"].as_str().unwrap_or("").to_string()),
        ("instance", env[env["instance_var"].as_str().unwrap_or("NODE_APP_INSTANCE")].to_string()),
        ("watch & reload", if env["watch"] == json!(true) || env["watch"].is_array() { "✔" } else { "✘" }.to_string()),
        ("cpu", format!("{}%", p["monit"]["cpu"])),
        ("memory", human_bytes(p["monit"]["memory"].as_u64().unwrap_or(0))),
        ("last exit code", env["exit_code"].to_string()),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<w$} │ {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32, name: &str, mem: u64) -> Value {
        json!({"pm_id": id, "name": name, "pid": 100 + id, "monit": {"memory": mem, "cpu": 0.0}, "pm2_env": {"status": "online", "restart_time": 0, "pm_uptime": 0, "exec_mode": "fork_mode", "namespace": "default", "version": "N/A", "username": "root", "watch": false}})
    }

    #[test]
    fn sorting() {
        let mut ps = vec![p(0, "b", 30), p(1, "a", 10), p(2, "c", 20)];
        sort(&mut ps, "memory:desc").unwrap();
        assert_eq!(ps.iter().map(|p| p["name"].as_str().unwrap()).collect::<String>(), "bca");
        sort(&mut ps, "name").unwrap();
        assert_eq!(ps.iter().map(|p| p["name"].as_str().unwrap()).collect::<String>(), "abc");
        assert_eq!(sort(&mut ps, "bogus"), Err(SortError::Key("bogus".into())));
        assert_eq!(sort(&mut ps, "name:sideways"), Err(SortError::Direction("sideways".into())));
    }

    #[test]
    fn table_shape() {
        let t = table(&[p(0, "web", 52_000_000)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("id │ name │ namespace │ version │ mode │ pid │ uptime │ ↺ │ status │ cpu │ mem"), "{t}");
        assert!(lines[2].contains("web") && lines[2].contains("online") && lines[2].contains("49.6mb"), "{t}");
    }
}
