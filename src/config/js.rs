//! Evaluation of JavaScript configs with the machine's `node`, as PM2 does: `.config.js`/`.cjs`
//! are `require()`d, `.mjs` (or ESM `.js`) are `import()`ed (the `default` export is used), and
//! `.json` files that are not plain JSON are evaluated as the expression `(<content>)`.
//! A tiny loader prints `JSON.stringify(exports)` after a marker on stdout (so a config's own
//! `console.log` output does not get in the way); node's own error text is passed through.
//!
//! The loader runs with the base directory as its cwd and the process environment, so
//! `process.env.X` and `process.cwd()` see what the apps will see. There is no timeout: a config
//! that never finishes loading blocks startup, as it would with PM2.

use super::resolve::Host;
use std::path::Path;
use std::process::Command;

const MARKER: &str = "@@pm-runtime-config@@";

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

/// Runs node on `file` and returns what it exported, or a message for the user.
pub fn eval_with_node(file: &Path, mode: JsMode, host: &Host) -> Result<serde_json::Value, String> {
    let label = file.display();
    let Some(node) = host.which("node", &host.base_dir) else {
        return Err(format!("node is required to read {label} but was not found in PATH"));
    };
    let is_mjs = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("mjs"));
    let first = match mode {
        JsMode::JsonExpr => "json",
        JsMode::Module if is_mjs => "import",
        JsMode::Module => "require",
    };
    match run_loader(&node, first, file, host) {
        // Older node cannot require() an ES module: import it instead.
        Err(e) if first == "require" && e.contains("ERR_REQUIRE_ESM") => run_loader(&node, "import", file, host),
        r => r,
    }
}

fn run_loader(node: &Path, mode_arg: &str, file: &Path, host: &Host) -> Result<serde_json::Value, String> {
    let label = file.display();
    let loader = LOADER.replace("MARKER", &format!("{MARKER:?}"));
    let abs = host.base_dir.join(file);
    let output = Command::new(node)
        .arg("-e")
        .arg(&loader)
        .arg("--")
        .arg(mode_arg)
        .arg(&abs)
        .current_dir(&host.base_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("could not run {} to read {label}: {e}", node.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success()
        && let Some(idx) = stdout.rfind(MARKER)
    {
        let json = stdout[idx + MARKER.len()..].trim();
        return serde_json::from_str(json).map_err(|e| format!("node printed something that is not JSON for {label}: {e}"));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("ERR_REQUIRE_ESM") || stderr.contains("ERR_REQUIRE_ASYNC_MODULE") {
        return Err("ERR_REQUIRE_ESM".into());
    }
    let text = clean_node_error(&stderr);
    if text.is_empty() {
        Err(format!("node failed to evaluate {label} ({})", output.status))
    } else {
        Err(format!("node failed to evaluate {label}:\n{text}"))
    }
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
        std::env::var("PATH").ok()
    }

    fn with_host<T>(dir: &Path, f: impl FnOnce(&Host) -> T) -> Option<T> {
        let path = real_path()?;
        let var = move |k: &str| (k == "PATH").then(|| path.clone());
        let host = Host { base_dir: dir.to_path_buf(), var: &var };
        if host.which("node", dir).is_none() {
            eprintln!("node not found: skipping");
            return None;
        }
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
            let v = eval_with_node(Path::new("eco.config.js"), JsMode::Module, host).unwrap();
            assert_eq!(v["apps"][0]["instances"], 2);
            let v = eval_with_node(&d.join("eco.config.mjs"), JsMode::Module, host).unwrap();
            assert_eq!(v["apps"][0]["script"], "b.js");
            let v = eval_with_node(&d.join("eco.json"), JsMode::JsonExpr, host).unwrap();
            assert_eq!(v["apps"][0]["port"], 1001);
            let e = eval_with_node(&d.join("bad.config.js"), JsMode::Module, host).unwrap_err();
            assert!(e.contains("bad.config.js:2"), "{e}");
            assert!(e.contains("SyntaxError"), "{e}");
            assert!(!e.contains("    at "), "{e}");
            let v = eval_with_node(&d.join("esm/e.config.js"), JsMode::Module, host).unwrap();
            assert_eq!(v["apps"][0]["instances"], 3);
            let e = eval_with_node(&d.join("throws.config.cjs"), JsMode::Module, host).unwrap_err();
            assert!(e.contains("throws.config.cjs:1"), "{e}");
            assert!(e.contains("Error: boom from config"), "{e}");
            assert!(!e.contains("[eval]"), "{e}");
        });
    }

    #[test]
    fn node_missing() {
        let var = |_: &str| Some("/nonexistent-dir".to_string());
        let host = Host { base_dir: PathBuf::from("/"), var: &var };
        let e = eval_with_node(Path::new("e.config.js"), JsMode::Module, &host).unwrap_err();
        assert_eq!(e, "node is required to read e.config.js but was not found in PATH");
    }
}
