//! Filesystem and PATH resolution of one app (spec §5, §3.1): working directory, the script's
//! absolute path (`pm_exec_path`), the interpreter (explicit, or chosen by extension), and the
//! final [`Command`]. Reads the environment only through [`Host`], so tests inject their own
//! `PATH` and base directory.

use super::model::Command;
use super::tree::Pos;
use super::validate::{Reporter, join};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The process context resolution depends on: the base directory (the process cwd) and an
/// environment lookup.
pub struct Host<'a> {
    pub base_dir: PathBuf,
    pub var: &'a dyn Fn(&str) -> Option<String>,
}

impl Host<'_> {
    /// Finds an executable: a path with a `/` is taken relative to `dir`; a bare name is searched
    /// in `PATH`. Returns an absolute, lexically normalised path.
    pub fn which(&self, prog: &str, dir: &Path) -> Option<PathBuf> {
        if prog.is_empty() {
            return None;
        }
        if prog.contains('/') {
            let p = normalize(&dir.join(prog));
            return is_executable_file(&p).then_some(p);
        }
        let path = (self.var)("PATH")?;
        path.split(':').filter(|d| !d.is_empty()).map(|d| normalize(&self.base_dir.join(d).join(prog))).find(|p| is_executable_file(p))
    }
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The hidden subcommand that runs PM2's static file server (`script: serve`): an app whose
/// program is this binary. Config names it; the server itself imports config, never the reverse.
pub const SERVE_SUBCOMMAND: &str = "__serve";

/// Lexical normalisation (`a/./b/../c` → `a/c`), like node's `path.resolve`; no symlinks resolved.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// What resolution needs to know about one app.
pub struct Target<'a> {
    /// Key path prefix for messages (`apps[0]`; empty for the script form).
    pub path: &'a str,
    pub script: &'a str,
    pub script_pos: Option<Pos>,
    /// Key path to blame for script problems (`apps[0].script`; empty for the script form).
    pub script_key: String,
    pub cwd: Option<(&'a str, Option<Pos>)>,
    /// Explicit interpreter, and the key path to blame (`apps[0].interpreter`, `--interpreter`).
    pub interpreter: Option<(&'a str, Option<Pos>, String)>,
    pub interpreter_args: &'a [String],
    pub args: &'a [String],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub cwd: PathBuf,
    pub exec_path: PathBuf,
    pub command: Command,
    /// The script was a shell command (contained a space).
    pub shell: bool,
}

/// Resolves cwd, script and interpreter; reports every problem found.
pub fn resolve(t: &Target, host: &Host, rep: &mut Reporter) -> Option<Resolved> {
    let script_key = t.script_key.clone();
    let cwd = match t.cwd {
        None => host.base_dir.clone(),
        Some((c, pos)) => {
            let p = normalize(&host.base_dir.join(c));
            if !p.is_dir() {
                rep.error(pos, &join(t.path, "cwd"), format!("directory not found: {}", p.display()));
                return None;
            }
            p
        }
    };

    // PM2's built-in static server (`script: serve`, whatever is in the directory): this
    // binary runs it (`pm-runtime __serve args…`).
    if t.script == "serve" {
        let Ok(exe) = std::env::current_exe() else {
            rep.error(t.script_pos, &script_key, "cannot find the pm-runtime binary to run the static server");
            return None;
        };
        let mut argv = vec![SERVE_SUBCOMMAND.to_string()];
        argv.extend(t.args.iter().cloned());
        return Some(Resolved {
            cwd,
            exec_path: exe.clone(),
            command: Command { program: exe, argv, interpreter: "none".into(), is_node: false },
            shell: false,
        });
    }

    let mut candidate = normalize(&cwd.join(t.script));
    if candidate.is_dir() {
        // `script: dist/`: the file Node itself would run for `node dist/`.
        match directory_entry(&candidate) {
            Ok(entry) => candidate = entry,
            Err(why) => {
                rep.error(t.script_pos, &script_key, format!("{} is a directory {why} (name the file to run)", candidate.display()));
                return None;
            }
        }
    }
    let file = if candidate.exists() {
        Some(candidate.clone())
    } else if t.script.contains(' ') {
        None
    } else if !t.script.contains('/') {
        match host.which(t.script, &cwd) {
            Some(p) => Some(p),
            None => {
                rep.error(t.script_pos, &script_key, format!("script not found: {}", candidate.display()));
                return None;
            }
        }
    } else {
        rep.error(t.script_pos, &script_key, format!("script not found: {}", candidate.display()));
        return None;
    };

    let Some(exec_path) = file else {
        // A command line (`npm start`): run through the shell, as PM2 does (bash, else sh).
        let program = host.which("bash", &cwd).or_else(|| host.which("sh", &cwd)).unwrap_or_else(|| PathBuf::from("/bin/sh"));
        if !t.args.is_empty() {
            rep.warn(t.script_pos, &script_key, "args are ignored for a command with spaces (it runs as `sh -c \"<script>\"`)");
        }
        return Some(Resolved {
            cwd,
            exec_path: PathBuf::from(t.script),
            command: Command { program, argv: vec!["-c".into(), t.script.to_string()], interpreter: "none".into(), is_node: false },
            shell: true,
        });
    };

    let (interp_name, blame) = match &t.interpreter {
        Some((name, pos, key)) => (name.to_string(), Some((*pos, key.clone()))),
        None => (by_extension(&exec_path, host, &cwd), None),
    };

    let exec_str = exec_path.to_string_lossy().into_owned();
    if interp_name == "none" {
        if !is_executable_file(&exec_path) {
            rep.error(
                t.script_pos,
                &script_key,
                format!("{} is not executable (make it executable, or set an interpreter)", exec_path.display()),
            );
            return None;
        }
        return Some(Resolved {
            cwd,
            command: Command { program: exec_path.clone(), argv: t.args.to_vec(), interpreter: "none".into(), is_node: false },
            exec_path,
            shell: false,
        });
    }

    let Some(program) = host.which(&interp_name, &cwd) else {
        let (pos, key) = blame.unwrap_or((t.script_pos, script_key.clone()));
        let msg = if interp_name.contains('/') {
            format!("interpreter {interp_name:?} not found (or not executable)")
        } else {
            format!("interpreter {interp_name:?} is not available in PATH")
        };
        rep.error(pos, &key, msg);
        return None;
    };
    let base = Path::new(&interp_name).file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
    let is_node = base.ends_with("node") || base.ends_with("bun");
    if base.ends_with("node")
        && let Some(why) = typescript_problem(&exec_path, &program, t.interpreter_args)
    {
        let (pos, key) = blame.unwrap_or((t.script_pos, script_key.clone()));
        rep.error(pos, &key, why);
        return None;
    }
    let mut argv = t.interpreter_args.to_vec();
    argv.push(exec_str);
    argv.extend(t.args.iter().cloned());
    Some(Resolved { cwd, exec_path, command: Command { program, argv, interpreter: interp_name, is_node }, shell: false })
}

/// The interpreter PM2 picks for a script with no explicit one (`Common.resolveInterpreter`).
///
/// `.py` prefers `python3` when it exists (PM2 prefers `python` and falls back to `python3`);
/// `.ts`/`.mts`/`.cts`/`.tsx` use `node` (PM2 before 7.0.4 used `bun` when it was in PATH).
/// Any other extension, or none (`npm`, `node_modules/.bin/nuxt`, `next/dist/bin/next`): `none`
/// for a binary (PM2's test: a NUL byte or too many non-text bytes in the first 512), else
/// `node`, as PM2 does. One exception of ours: an executable script whose `#!` line names
/// another interpreter (`#!/bin/sh`) runs through it (PM2 would hand a shell script to node).
pub fn by_extension(exec_path: &Path, host: &Host, cwd: &Path) -> String {
    let ext = exec_path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let name = match ext.as_str() {
        "js" | "cjs" | "mjs" => "node",
        "sh" => "bash",
        "py" => {
            if host.which("python3", cwd).is_some() || host.which("python", cwd).is_none() {
                "python3"
            } else {
                "python"
            }
        }
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        "coffee" => "coffee",
        "ls" => "lsc",
        // TypeScript: node, whose type stripping runs it (22.18+, 23.6+); `resolve` says what
        // to do when the Node found cannot. Never bun just because it is in PATH (PM2 did, and
        // dropped it in 7.0.4: the app changed runtime with what happened to be installed).
        "ts" | "mts" | "cts" | "tsx" => "node",
        _ => match head(exec_path) {
            Some(bytes) if is_binary(&bytes) => "none",
            Some(bytes) if foreign_shebang(&bytes) && is_executable_file(exec_path) => "none",
            _ => "node",
        },
    };
    name.to_string()
}

/// The file Node runs for `node <dir>`: the `main` of the directory's `package.json` (as a
/// file, with `.js`, or as a directory's `index.js`), else `index.js`. The error says what
/// is missing.
///
/// Errs with `String` on purpose: the text becomes a config `Problem` (file, line, field).
pub fn directory_entry(dir: &Path) -> Result<PathBuf, String> {
    let file = |p: PathBuf| p.is_file().then_some(p);
    let manifest = dir.join("package.json");
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("whose package.json is not valid JSON ({}: {e})", manifest.display()))?;
        if let Some(main) = json.get("main").and_then(|m| m.as_str()).filter(|m| !m.is_empty()) {
            let main = normalize(&dir.join(main));
            let with_js = PathBuf::from(format!("{}.js", main.display()));
            if let Some(p) = file(main.clone()).or_else(|| file(with_js)).or_else(|| file(main.join("index.js"))) {
                return Ok(p);
            }
        }
    }
    file(dir.join("index.js")).ok_or_else(|| "with neither a package.json \"main\" that exists nor an index.js".to_string())
}

/// Why Node at `node` cannot run the TypeScript file `script`, if it cannot: Node strips types
/// itself from 22.18 and 23.6 (earlier only with `--experimental-strip-types`, never `.tsx`).
/// Node args that load TypeScript some other way (`--experimental-strip-types`,
/// `--import tsx`, `--require ts-node/register`, a `--loader`) are trusted.
fn typescript_problem(script: &Path, node: &Path, node_args: &[String]) -> Option<String> {
    let ext = script.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if !matches!(ext.as_str(), "ts" | "mts" | "cts" | "tsx") {
        return None;
    }
    let loads_ts = |a: &String| {
        a.contains("strip-types")
            || a.contains("transform-types")
            || ["--import", "--require", "-r", "--loader", "--experimental-loader"]
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
    };
    if node_args.iter().any(loads_ts) {
        return None;
    }
    let options = "set `interpreter: bun`, or `node_args: --import tsx` (with tsx installed), or `interpreter: tsx`";
    if ext == "tsx" {
        return Some(format!("{} is TSX, which Node's type stripping does not run: {options}", script.display()));
    }
    let version = node_version(node)?;
    let (major, minor) = version;
    if major >= 24 || (major == 23 && minor >= 6) || (major == 22 && minor >= 18) {
        return None;
    }
    Some(format!(
        "{} is TypeScript, which Node {major}.{minor} ({}) does not run by itself (type stripping is built in from Node 22.18 and 23.6): \
         use a newer Node, or {options}, or (Node 22.6+) `node_args: --experimental-strip-types`",
        script.display(),
        node.display()
    ))
}

/// `node --version` as (major, minor); None when it does not answer `vX.Y.Z` within 10 s.
fn node_version(node: &Path) -> Option<(u32, u32)> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(node).arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().ok()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    let mut parts = out.trim().strip_prefix('v')?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The first 512 bytes of a file (what PM2's binary test reads).
fn head(p: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    std::fs::File::open(p).ok()?.take(512).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// PM2's binary test (`lib/tools/isbinaryfile.js`, reimplemented): a NUL byte is binary; else
/// bytes that are neither printable ASCII, tabs/newlines nor well-formed 2- or 3-byte UTF-8 are
/// "suspicious", and more than 10% of them is binary. A UTF-8 BOM or an empty file is text.
pub fn is_binary(bytes: &[u8]) -> bool {
    let n = bytes.len().min(512);
    if n == 0 || bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return false;
    }
    let cont = |i: usize| i < n && (0x80..0xC0).contains(&bytes[i]);
    let mut suspicious = 0usize;
    let mut i = 0;
    while i < n {
        let b = bytes[i];
        if b == 0 {
            return true;
        }
        let text = (7..=14).contains(&b) || (32..=127).contains(&b);
        if !text {
            if (0xC2..0xE0).contains(&b) && cont(i + 1) {
                i += 2;
                continue;
            }
            if (0xE0..0xF0).contains(&b) && cont(i + 1) && cont(i + 2) {
                i += 3;
                continue;
            }
            suspicious += 1;
            if i > 32 && suspicious * 100 / n > 10 {
                return true;
            }
        }
        i += 1;
    }
    suspicious * 100 / n > 10
}

/// A `#!` line whose interpreter is not node or bun (`#!/bin/sh`, `#!/usr/bin/env python3`).
fn foreign_shebang(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"#!") else {
        return false;
    };
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    // `#!/usr/bin/env -S node --flag` and `#!/usr/local/bin/node` both name node.
    let mut words = line.split_whitespace().filter(|w| !w.starts_with('-'));
    let first = words.next().unwrap_or_default();
    let prog = if first.ends_with("/env") { words.next().unwrap_or_default() } else { first };
    let base = prog.rsplit('/').next().unwrap_or_default();
    !(base == "node" || base == "nodejs" || base == "bun" || base.starts_with("node"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A temp dir with a `bin/` of fake interpreters on PATH and a `work/` base dir.
    struct Fixture {
        dir: tempfile::TempDir,
        path: String,
    }

    impl Fixture {
        fn new(bins: &[&str]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::create_dir_all(dir.path().join("work")).unwrap();
            for b in bins {
                exe(&bin.join(b), b"#!/bin/sh\n");
            }
            let path = bin.to_string_lossy().into_owned();
            Fixture { dir, path }
        }
        fn work(&self) -> PathBuf {
            self.dir.path().join("work")
        }
        fn resolve(&self, script: &str, interp: Option<&str>) -> (Option<Resolved>, Reporter) {
            let var = |k: &str| (k == "PATH").then(|| self.path.clone());
            let host = Host { base_dir: self.work(), var: &var };
            let mut rep = Reporter::new("f.yml");
            let args = vec!["a1".to_string()];
            let t = Target {
                path: "apps[0]",
                script,
                script_pos: None,
                script_key: "apps[0].script".into(),
                cwd: None,
                interpreter: interp.map(|i| (i, None, "apps[0].interpreter".to_string())),
                interpreter_args: &[],
                args: &args,
            };
            (resolve(&t, &host, &mut rep), rep)
        }
    }

    fn exe(p: &Path, content: &[u8]) {
        fs::write(p, content).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn interpreter_by_extension() {
        let f = Fixture::new(&["node", "bash", "python3", "python", "ruby", "php", "perl"]);
        let w = f.work();
        for (file, content) in [
            ("a.js", &b"1"[..]),
            ("a.cjs", b"1"),
            ("a.mjs", b"1"),
            ("a.sh", b"echo"),
            ("a.py", b"print(1)"),
            ("a.rb", b"1"),
            ("a.php", b"1"),
            ("a.pl", b"1"),
            ("a.ts", b"1"),
            ("plain", b"console.log(1)"),
        ] {
            fs::write(w.join(file), content).unwrap();
        }
        exe(&w.join("shebang"), b"#!/bin/sh\necho\n");
        fs::write(w.join("shebang-not-exec"), b"#!/bin/sh\necho\n").unwrap();
        exe(&w.join("next"), b"#!/usr/bin/env node\nrequire('../server')\n");
        exe(&w.join("nuxt"), b"#!/usr/bin/env -S node --no-warnings\nimport('x')\n");
        exe(&w.join("binary"), b"\x7fELF\0\0\0");
        exe(&w.join("binary-no-nul"), &[0x7f, b'E', b'L', b'F', 0xff, 0xfe, 0x90, 0x91].repeat(20));
        exe(&w.join("utf8"), "// café ünïcødé ✓ — text\nconsole.log(1)\n".as_bytes());
        let table = [
            ("a.js", "node"),
            ("a.cjs", "node"),
            ("a.mjs", "node"),
            ("a.sh", "bash"),
            ("a.py", "python3"),
            ("a.rb", "ruby"),
            ("a.php", "php"),
            ("a.pl", "perl"),
            ("a.ts", "node"),
            ("plain", "node"),
            ("shebang", "none"),
            ("shebang-not-exec", "node"),
            ("next", "node"),
            ("nuxt", "node"),
            ("binary", "none"),
            ("binary-no-nul", "none"),
            ("utf8", "node"),
        ];
        for (script, want) in table {
            let (r, rep) = f.resolve(script, None);
            let r = r.unwrap_or_else(|| panic!("{script}: {:?}", rep.errors));
            assert_eq!(r.command.interpreter, want, "{script}");
            assert_eq!(r.exec_path, w.join(script));
            if want == "none" {
                assert_eq!(r.command.program, w.join(script));
                assert_eq!(r.command.argv, ["a1"]);
            } else {
                assert_eq!(r.command.program, f.dir.path().join("bin").join(want));
                assert_eq!(r.command.argv, [w.join(script).to_string_lossy().as_ref(), "a1"]);
            }
            assert_eq!(r.command.is_node, want == "node", "{script}");
        }
    }

    #[test]
    fn ts_never_picks_bun_from_path_and_python_falls_back() {
        let f = Fixture::new(&["bun", "node", "python"]);
        fs::write(f.work().join("a.ts"), "1").unwrap();
        fs::write(f.work().join("a.py"), "1").unwrap();
        let (r, _) = f.resolve("a.ts", None);
        let r = r.unwrap();
        assert_eq!(r.command.interpreter, "node");
        assert!(r.command.is_node);
        let (r, _) = f.resolve("a.ts", Some("bun"));
        assert_eq!(r.unwrap().command.interpreter, "bun");
        let (r, _) = f.resolve("a.py", None);
        assert_eq!(r.unwrap().command.interpreter, "python");
    }

    /// Which Node runs which TypeScript file, by `node --version` (a fake node that prints it).
    #[test]
    fn typescript_needs_a_node_with_type_stripping() {
        let table = [
            ("v26.1.0", "a.ts", &[][..], true),
            ("v24.0.0", "a.mts", &[], true),
            ("v23.6.0", "a.cts", &[], true),
            ("v23.5.0", "a.ts", &[], false),
            ("v22.18.0", "a.ts", &[], true),
            ("v22.17.1", "a.ts", &[], false),
            ("v20.20.2", "a.ts", &[], false),
            ("v22.6.0", "a.ts", &["--experimental-strip-types"], true),
            ("v20.20.2", "a.ts", &["--import", "tsx"], true),
            ("v20.20.2", "a.ts", &["--require=ts-node/register"], true),
            ("v26.1.0", "a.tsx", &[], false),
            ("v20.20.2", "a.js", &[], true),
        ];
        for (version, script, args, ok) in table {
            let dir = tempfile::tempdir().unwrap();
            let node = dir.path().join("node");
            exe(&node, format!("#!/bin/sh\necho {version}\n").as_bytes());
            let script = dir.path().join(script);
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let problem = typescript_problem(&script, &node, &args);
            assert_eq!(problem.is_none(), ok, "{version} {script:?} {args:?}: {problem:?}");
            if let Some(p) = problem {
                assert!(p.contains("interpreter: bun") && p.contains("tsx"), "{p}");
            }
        }
    }

    #[test]
    fn a_directory_runs_its_package_main_or_index_js() {
        let f = Fixture::new(&["node"]);
        let w = f.work();
        for (dir, files, want) in [
            (
                "main",
                &[("package.json", r#"{"main": "lib/server.js"}"#), ("lib/server.js", "1"), ("index.js", "1")][..],
                Some("lib/server.js"),
            ),
            ("main-no-ext", &[("package.json", r#"{"main": "./server"}"#), ("server.js", "1")], Some("server.js")),
            ("main-dir", &[("package.json", r#"{"main": "lib"}"#), ("lib/index.js", "1")], Some("lib/index.js")),
            ("main-missing", &[("package.json", r#"{"main": "nope.js"}"#), ("index.js", "1")], Some("index.js")),
            ("index", &[("index.js", "1")], Some("index.js")),
            ("ts-main", &[("package.json", r#"{"type": "module", "main": "src/app.mts"}"#), ("src/app.mts", "1")], Some("src/app.mts")),
            ("empty", &[], None),
        ] {
            for (name, body) in files {
                let p = w.join(dir).join(name);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, body).unwrap();
            }
            fs::create_dir_all(w.join(dir)).unwrap();
            let (r, rep) = f.resolve(&format!("{dir}/"), None);
            match want {
                Some(file) => {
                    let r = r.unwrap_or_else(|| panic!("{dir}: {:?}", rep.errors));
                    assert_eq!(r.exec_path, w.join(dir).join(file), "{dir}");
                    assert_eq!(r.command.interpreter, "node");
                    assert_eq!(r.command.argv[0], w.join(dir).join(file).to_string_lossy(), "{dir}");
                }
                None => {
                    assert!(r.is_none());
                    assert!(rep.errors[0].contains("is a directory with neither a package.json"), "{:?}", rep.errors);
                }
            }
        }
        fs::create_dir_all(w.join("bad")).unwrap();
        fs::write(w.join("bad/package.json"), "{").unwrap();
        let (_, rep) = f.resolve("./bad", None);
        assert!(rep.errors[0].contains("package.json is not valid JSON"), "{:?}", rep.errors);
    }

    #[test]
    fn missing_interpreter_and_script() {
        let f = Fixture::new(&[]);
        fs::write(f.work().join("a.rb"), "1").unwrap();
        let (r, rep) = f.resolve("a.rb", None);
        assert!(r.is_none());
        assert_eq!(rep.errors, ["f.yml: apps[0].script: interpreter \"ruby\" is not available in PATH"]);
        let (_, rep) = f.resolve("a.rb", Some("ruby3"));
        assert_eq!(rep.errors, ["f.yml: apps[0].interpreter: interpreter \"ruby3\" is not available in PATH"]);
        let (r, rep) = f.resolve("nope.js", None);
        assert!(r.is_none());
        let want = format!("f.yml: apps[0].script: script not found: {}", f.work().join("nope.js").display());
        assert_eq!(rep.errors, [want]);
    }

    #[test]
    fn script_in_path_and_shell_command() {
        let f = Fixture::new(&["mytool", "bash"]);
        let (r, _) = f.resolve("mytool", None);
        let r = r.unwrap();
        assert_eq!(r.command.interpreter, "none");
        assert_eq!(r.exec_path, f.dir.path().join("bin/mytool"));

        let (r, rep) = f.resolve("python3 -m http.server 8000", None);
        let r = r.unwrap();
        assert!(r.shell);
        assert_eq!(r.command.program, f.dir.path().join("bin/bash"));
        assert_eq!(r.command.argv, ["-c", "python3 -m http.server 8000"]);
        assert_eq!(r.command.interpreter, "none");
        assert_eq!(r.exec_path, PathBuf::from("python3 -m http.server 8000"));
        assert_eq!(rep.warnings.len(), 1, "args are ignored");
    }

    /// `script: npm` (found in PATH, a JS file without extension): node runs it, with the
    /// interpreter args before it, as PM2 does.
    #[test]
    fn node_cli_in_path_runs_with_node() {
        let f = Fixture::new(&["node"]);
        exe(&f.dir.path().join("bin/npm"), b"#!/usr/bin/env node\nrequire('../lib/cli.js')(process)\n");
        let var = |k: &str| (k == "PATH").then(|| f.path.clone());
        let host = Host { base_dir: f.work(), var: &var };
        let mut rep = Reporter::new("f.yml");
        let node_args = vec!["--max-old-space-size=64".to_string()];
        let args = vec!["start".to_string()];
        let t = Target {
            path: "apps[0]",
            script: "npm",
            script_pos: None,
            script_key: "apps[0].script".into(),
            cwd: None,
            interpreter: None,
            interpreter_args: &node_args,
            args: &args,
        };
        let r = resolve(&t, &host, &mut rep).unwrap();
        let npm = f.dir.path().join("bin/npm");
        assert_eq!(r.command.interpreter, "node");
        assert!(r.command.is_node);
        assert_eq!(r.command.program, f.dir.path().join("bin/node"));
        assert_eq!(r.command.argv, ["--max-old-space-size=64", npm.to_str().unwrap(), "start"]);
        assert_eq!(r.exec_path, npm);
    }

    #[test]
    fn binary_test_table() {
        let table: [(&[u8], bool); 7] = [
            (b"", false),
            (b"plain text\n", false),
            (b"a\0b", true),
            (b"\xEF\xBB\xBFtext with BOM \x01\x02", false),
            ("ünïcødé ✓ ✓ ✓".as_bytes(), false),
            (&[0xff; 64], true),
            // A few stray bytes in a long text stay text (≤ 10%).
            (b"\x01\x02 a long enough line of ordinary text to dilute two odd bytes", false),
        ];
        for (bytes, want) in table {
            assert_eq!(is_binary(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn explicit_none_needs_executable() {
        let f = Fixture::new(&[]);
        fs::write(f.work().join("prog"), "x").unwrap();
        let (r, rep) = f.resolve("prog", Some("none"));
        assert!(r.is_none());
        assert!(rep.errors[0].contains("is not executable"), "{:?}", rep.errors);
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
