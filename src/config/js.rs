//! Evaluation of JavaScript configs with the machine's `node`, as PM2 does: `.config.js`/`.cjs`
//! are `require()`d, `.mjs` (or ESM `.js`) are `import()`ed (the `default` export is used), and
//! `.json` files that are not plain JSON are evaluated as the expression `(<content>)`.
//! A tiny loader prints `JSON.stringify(exports)` after a marker on stdout (so a config's own
//! `console.log` output does not get in the way); node's own error text is passed through.
//!
//! The loader runs with the base directory as its cwd and the process environment, so
//! `process.env.X` and `process.cwd()` see what the apps will see. Unlike PM2, evaluation has a
//! deadline (`--config-timeout`, 30 s by default) and a stop signal (SIGTERM/SIGINT, as counted by
//! [`crate::process::unix::stop_signals_received`]) cancels it: the evaluator runs in its own
//! process group, which is SIGKILLed then, and dies with the runtime (parent-death signal).

use super::resolve::Host;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(super) const MARKER: &str = "@@pm-runtime-config@@";

const LOADER: &str = r#"
const path = require('path'), fs = require('fs'), url = require('url');
const file = path.resolve(process.argv[process.argv.length - 1]);
const mode = process.argv[process.argv.length - 2];
const unwrap = (v) => (v && v[Symbol.toStringTag] === 'Module' && v.default !== undefined) ? v.default : v;
const out = (v) => {
  fs.writeSync(1, '\n' + MARKER + JSON.stringify(v === undefined ? null : v) + '\n');
  process.exit(0);
};
const settle = (v) => (v && typeof v.then === 'function') ? v.then(out) : out(v);
if (mode === 'json') {
  const src = fs.readFileSync(file, 'utf8');
  settle(require('vm').runInThisContext('(' + src + ')', { filename: file, timeout: 1000 }));
} else if (mode === 'import') {
  import(url.pathToFileURL(file).href).then((ns) => settle(unwrap(ns)));
} else {
  settle(unwrap(require(file)));
}
"#;

/// How node should read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsMode {
    /// `require()` (`import()` for `.mjs`, or when node says the file is ESM).
    Module,
    /// Evaluate the content as a JS expression (PM2's way of reading `.json`).
    JsonExpr,
}

/// How long a config may take to evaluate unless `--config-timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a JS config gave no value. Its text becomes the config's problem (prefixed with the
/// file's label where it does not name it already).
#[derive(Debug, thiserror::Error)]
pub enum JsError {
    #[error("node is required to read {} but was not found in PATH", file.display())]
    NoNode { file: PathBuf },
    #[error("could not run {} to read {}: {source}", node.display(), file.display())]
    Spawn { node: PathBuf, file: PathBuf, source: std::io::Error },
    #[error(
        "{}: evaluation did not finish within {} s; node was killed (a config that never returns? raise the limit with --config-timeout)",
        file.display(),
        after.as_secs_f64()
    )]
    TimedOut { file: PathBuf, after: Duration },
    /// A stop signal arrived during the evaluation: the runtime was asked to stop.
    #[error("{}: evaluation cancelled by a stop signal; node was killed", file.display())]
    Stopped { file: PathBuf },
    #[error("node printed something that is not JSON for {}: {source}", file.display())]
    NotJson { file: PathBuf, source: serde_json::Error },
    /// `require()` met an ES module (older node): it must be `import()`ed.
    #[error("ERR_REQUIRE_ESM")]
    EsModule,
    /// Node's message (file:line, code frame, the error) without its stack; empty when it said nothing.
    #[error("node failed to evaluate {}{}", file.display(), if message.is_empty() { format!(" ({status})") } else { format!(":\n{message}") })]
    Failed { file: PathBuf, status: std::process::ExitStatus, message: String },
}

/// Runs node on `file` and returns what it exported. Gives up (and kills node) after
/// `timeout`, or as soon as the runtime has received a stop signal.
pub fn eval_with_node(file: &Path, mode: JsMode, host: &Host, timeout: Duration) -> Result<serde_json::Value, JsError> {
    let Some(node) = host.which("node", &host.base_dir) else {
        return Err(JsError::NoNode { file: file.to_path_buf() });
    };
    let is_mjs = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("mjs"));
    let first = match mode {
        JsMode::JsonExpr => "json",
        JsMode::Module if is_mjs => "import",
        JsMode::Module => "require",
    };
    let deadline = Instant::now() + timeout;
    match run_loader(&node, first, file, host, deadline, timeout) {
        // Older node cannot require() an ES module: import it instead.
        Err(JsError::EsModule) if first == "require" => run_loader(&node, "import", file, host, deadline, timeout),
        r => r,
    }
}

/// What node printed and how it ended.
struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn run_loader(
    node: &Path,
    mode_arg: &str,
    file: &Path,
    host: &Host,
    deadline: Instant,
    timeout: Duration,
) -> Result<serde_json::Value, JsError> {
    let loader = LOADER.replace("MARKER", &format!("{MARKER:?}"));
    let abs = host.base_dir.join(file);
    let mut cmd = Command::new(node);
    cmd.arg("-e").arg(&loader).arg("--").arg(mode_arg).arg(&abs).current_dir(&host.base_dir);
    let file = file.to_path_buf();
    let output = match run_bounded(cmd, deadline) {
        Ok(o) => o,
        Err(Bounded::Spawn(source)) => return Err(JsError::Spawn { node: node.to_path_buf(), file, source }),
        Err(Bounded::TimedOut) => return Err(JsError::TimedOut { file, after: timeout }),
        Err(Bounded::Stopped) => return Err(JsError::Stopped { file }),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success()
        && let Some(r) = exported_json(&stdout)
    {
        return r.map_err(|source| JsError::NotJson { file, source });
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("ERR_REQUIRE_ESM") || stderr.contains("ERR_REQUIRE_ASYNC_MODULE") {
        return Err(JsError::EsModule);
    }
    Err(JsError::Failed { file, status: output.status, message: clean_node_error(&stderr) })
}

/// What the loader exported: the JSON after the last marker of its stdout (whatever the
/// config itself printed before), or `None` when there is no marker.
pub(super) fn exported_json(stdout: &str) -> Option<Result<serde_json::Value, serde_json::Error>> {
    let idx = stdout.rfind(MARKER)?;
    Some(super::strict_json::from_str(stdout[idx + MARKER.len()..].trim()))
}

enum Bounded {
    Spawn(std::io::Error),
    TimedOut,
    Stopped,
}

/// Runs `cmd` in its own process group to completion, collecting its output, unless `deadline`
/// passes or a stop signal arrives first: then the whole group is SIGKILLed and reaped.
fn run_bounded(mut cmd: Command, deadline: Instant) -> Result<Output, Bounded> {
    use crate::process::unix;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    unix::prepare_evaluator(&mut cmd);
    let mut child = cmd.spawn().map_err(Bounded::Spawn)?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let pgid = child.id();
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(Bounded::Spawn(e)),
        }
        if unix::stop_signals_received() > 0 {
            break Err(Bounded::Stopped);
        }
        if Instant::now() >= deadline {
            break Err(Bounded::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Whatever the outcome, nothing the evaluator started may outlive it (the group also holds
    // the pipes open, so the readers end only once it is gone).
    unix::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    if ended.is_err() {
        let _ = child.wait();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    ended.map(|status| Output { status, stdout, stderr })
}

/// Keeps node's message (file:line, code frame, `SyntaxError: …`) and drops the stack and the
/// `Node.js vXX` trailer.
fn clean_node_error(stderr: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in stderr.lines() {
        let t = line.trim_start();
        if t.starts_with("at ") || t.starts_with("Node.js v") {
            break;
        }
        lines.push(line.trim_end());
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|l| l.is_empty()) {
        lines.remove(0);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn real_path() -> Option<String> {
        Some(std::env::var("PATH").expect("these tests need PATH to find node"))
    }

    fn with_host<T>(dir: &Path, f: impl FnOnce(&Host) -> T) -> Option<T> {
        let path = real_path()?;
        let var = move |k: &str| (k == "PATH").then(|| path.clone());
        let host = Host { base_dir: dir.to_path_buf(), var: &var };
        // CI installs node (.ci/run): a missing node fails the test, it never passes as a skip.
        assert!(host.which("node", dir).is_some(), "these tests need node on PATH");
        Some(f(&host))
    }

    #[test]
    fn evaluates_cjs_esm_and_json_expr() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("eco.config.js"),
            "console.log('noise');\nmodule.exports = { apps: [{ script: 'a.js', instances: require('os').cpus().length > 0 ? 2 : 1 }] };\n",
        )
        .unwrap();
        std::fs::write(d.join("eco.config.mjs"), "export default { apps: [{ script: 'b.js' }] };\n").unwrap();
        std::fs::write(d.join("eco.json"), "{ apps: [{ script: 'c.js', port: 1000 + 1 }] }").unwrap();
        std::fs::create_dir_all(d.join("esm")).unwrap();
        std::fs::write(d.join("esm/package.json"), r#"{"type":"module"}"#).unwrap();
        std::fs::write(
            d.join("esm/e.config.js"),
            "const n = await Promise.resolve(3);\nexport default { apps: [{ script: 'x.js', instances: n }] };\n",
        )
        .unwrap();
        std::fs::write(d.join("throws.config.cjs"), "throw new Error('boom from config');\n").unwrap();
        std::fs::write(d.join("bad.config.js"), "module.exports = {\n  apps: [ oops oops ]\n};\n").unwrap();
        with_host(d, |host| {
            let v = eval_with_node(Path::new("eco.config.js"), JsMode::Module, host, DEFAULT_TIMEOUT).unwrap();
            assert_eq!(v["apps"][0]["instances"], 2);
            let v = eval_with_node(&d.join("eco.config.mjs"), JsMode::Module, host, DEFAULT_TIMEOUT).unwrap();
            assert_eq!(v["apps"][0]["script"], "b.js");
            let v = eval_with_node(&d.join("eco.json"), JsMode::JsonExpr, host, DEFAULT_TIMEOUT).unwrap();
            assert_eq!(v["apps"][0]["port"], 1001);
            let e = eval_with_node(&d.join("bad.config.js"), JsMode::Module, host, DEFAULT_TIMEOUT).unwrap_err().to_string();
            assert!(e.contains("bad.config.js:2"), "{e}");
            assert!(e.contains("SyntaxError"), "{e}");
            assert!(!e.contains("    at "), "{e}");
            let v = eval_with_node(&d.join("esm/e.config.js"), JsMode::Module, host, DEFAULT_TIMEOUT).unwrap();
            assert_eq!(v["apps"][0]["instances"], 3);
            let e = eval_with_node(&d.join("throws.config.cjs"), JsMode::Module, host, DEFAULT_TIMEOUT).unwrap_err();
            assert!(matches!(&e, JsError::Failed { status, .. } if !status.success()), "{e:?}");
            let e = e.to_string();
            assert!(e.contains("throws.config.cjs:1"), "{e}");
            assert!(e.contains("Error: boom from config"), "{e}");
            assert!(!e.contains("[eval]"), "{e}");
        });
    }

    #[test]
    fn node_missing() {
        let var = |_: &str| Some("/nonexistent-dir".to_string());
        let host = Host { base_dir: PathBuf::from("/"), var: &var };
        let e = eval_with_node(Path::new("e.config.js"), JsMode::Module, &host, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(&e, JsError::NoNode { file } if file == Path::new("e.config.js")), "{e:?}");
        assert_eq!(e.to_string(), "node is required to read e.config.js but was not found in PATH");
    }
}
