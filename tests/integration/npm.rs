//! pm-runtime as Node users get it: the npm packages made by `npm/build.sh`, published to a
//! throwaway verdaccio on 127.0.0.1 (`npm/local-registry.sh`, no uplinks: nothing leaves the
//! machine), installed into fresh projects with npm, pnpm and yarn, and run the ways they run
//! it (npx, `npm start`, `node_modules/.bin`, PID 1 of a PID namespace, a Heroku dyno).
//!
//! The release binary is slow to build: with `PM_RUNTIME_NPM_LINUX_X64=<static binary>` (CI
//! sets it to the one its Docker build compiled) the packages carry that binary; otherwise
//! `npm/build.sh` builds it once (cargo reuses it afterwards).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scenario::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` to completion (bounded); panics with its output unless it exits 0. Returns stdout.
fn ok(cmd: Command, timeout: Duration) -> String {
    let what = format!("{cmd:?}");
    let mut r = Running::start(cmd);
    let status = r.wait(timeout).unwrap_or_else(|| panic!("{what} did not finish in {timeout:?}\n{}\n{}", r.stdout(), r.stderr()));
    assert!(status.success(), "{what}: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}", r.stdout(), r.stderr());
    r.stdout()
}

/// Runs `cmd` to completion (bounded) and returns (status, stdout, stderr).
fn run(cmd: Command, timeout: Duration) -> (std::process::ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    let mut r = Running::start(cmd);
    let status = r.wait(timeout).unwrap_or_else(|| panic!("{what} did not finish in {timeout:?}"));
    (status, r.stdout(), r.stderr())
}

fn is_elf(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF"))
}

/// kill(2); a negative pid is a process group.
fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process (or a process group) this test started.
    unsafe { libc::kill(pid, sig) };
}

/// `pid` and everything under it, parents first.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, r)| r.trim_start().starts_with('Z'))
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

fn zombie_children(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next().unwrap_or(""), f.next().and_then(|p| p.parse::<u32>().ok()));
        if state == "Z" && ppid == Some(pid) {
            n += 1;
        }
    }
    n
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process group started by the test (npm start, a dyno): everything in it is killed on drop.
struct Group(Running);

impl Group {
    fn start(mut cmd: Command) -> Self {
        cmd.process_group(0);
        Group(Running::start(cmd))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill(-(self.0.pid() as i32), libc::SIGKILL);
    }
}

/// The packed packages, published to a verdaccio of this test's own.
struct Registry {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
    tools: PathBuf,
}

impl Registry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("dist");
        let mut build = Command::new(repo().join("npm/build.sh"));
        build.args(["--out".as_ref(), dist.as_os_str(), "--platforms".as_ref(), "linux-x64".as_ref()]);
        if let Some(bin) = std::env::var_os("PM_RUNTIME_NPM_LINUX_X64") {
            let mut arg = std::ffi::OsString::from("linux-x64=");
            arg.push(bin);
            build.arg("--binary").arg(arg);
        }
        ok(build, Duration::from_secs(1800));
        let mut tools = Command::new(repo().join("npm/local-registry.sh"));
        tools.arg("tools");
        let tools = PathBuf::from(ok(tools, Duration::from_secs(600)).trim());

        let port = free_port();
        let log = std::fs::File::create(dir.path().join("verdaccio.log")).unwrap();
        let server = Command::new(repo().join("npm/local-registry.sh"))
            .args(["serve".as_ref(), dir.path().as_os_str(), port.to_string().as_ref()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry { dir, server, port, tools };
        let mut publish = Command::new(repo().join("npm/local-registry.sh"));
        publish.args(["publish".as_ref(), reg.dir.path().as_os_str(), port.to_string().as_ref()]);
        // The platform package first: the main one depends on it.
        publish.arg(dist.join(format!("pm-runtime-linux-x64-{VERSION}.tgz"))).arg(dist.join(format!("pm-runtime-{VERSION}.tgz")));
        ok(publish, Duration::from_secs(120));
        reg
    }

    /// A fresh project folder with `package.json` and the given files.
    fn project(&self, name: &str, package_json: &str, files: &[(&str, &str)]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("package.json"), package_json).unwrap();
        for (f, body) in files {
            std::fs::write(p.join(f), body).unwrap();
        }
        p
    }

    /// `program` in `project`, configured for this registry only (no user config, own cache).
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>, project: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(project)
            .env("NPM_CONFIG_USERCONFIG", self.dir.path().join("npmrc"))
            .env("npm_config_cache", self.dir.path().join("npm-cache"))
            .env("PM2_HOME", project.join(".pm2"))
            .env_remove("PM_RUNTIME_BINARY_PATH")
            .env_remove("PM_RUNTIME_LOG");
        c
    }

    fn npm(&self, project: &Path, args: &[&str]) -> String {
        let mut c = self.cmd("npm", project);
        c.args(args);
        ok(c, Duration::from_secs(300))
    }
}

/// PATH with a given Node major first (tests/integration/node_versions.rs).
fn path_with_node(major: u32) -> std::ffi::OsString {
    let mut p = crate::node_versions::node(major).parent().unwrap().as_os_str().to_owned();
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

const APP: &str = "const http = require('http');\n\
http.createServer((q, s) => s.end(`hello from ${process.pid}\\n`)).listen(process.env.PORT, () => console.log('app listening'));\n\
process.on('SIGINT', () => { console.log('app stopping gracefully'); setTimeout(() => process.exit(0), 100); });\n";
const ECOSYSTEM: &str = "apps:\n  - name: web\n    script: app.js\n";

fn package_json(extra: &str) -> String {
    format!(
        "{{\n  \"name\": \"t\",\n  \"version\": \"1.0.0\",\n  \"private\": true,\n  \"scripts\": {{ \"start\": \"pm-runtime start ecosystem.config.yml\" }}{extra}\n}}\n"
    )
}

/// Starts `cmd` (a script that serves ecosystem.config.yml) with PORT, waits for an answer.
fn serve(mut cmd: Command) -> (Group, u16) {
    let port = free_port();
    cmd.env("PORT", port.to_string());
    let g = Group::start(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port).is_none() {
        assert!(Instant::now() < deadline, "nothing answered on {port}\n{}\n{}", g.0.stdout(), g.0.stderr());
        std::thread::sleep(Duration::from_millis(25));
    }
    (g, port)
}

#[test]
fn npm_versions_follow_cargo_toml_and_a_mismatch_fails_the_build() {
    let mut check = Command::new(repo().join("npm/build.sh"));
    check.arg("--check");
    ok(check, Duration::from_secs(30));

    // A copy of the packaging with one pinned platform version out of step.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("Cargo.toml"), copy.path().join("Cargo.toml")).unwrap();
    let mut cp = Command::new("cp");
    cp.arg("-R").arg(repo().join("npm")).arg(copy.path());
    ok(cp, Duration::from_secs(30));
    let main = copy.path().join("npm/pm-runtime/package.json");
    let text = std::fs::read_to_string(&main).unwrap();
    let bumped = text.replace(&format!("\"@pm-runtime/linux-x64\": \"{VERSION}\""), "\"@pm-runtime/linux-x64\": \"9.9.9\"");
    assert_ne!(text, bumped, "the main package pins @pm-runtime/linux-x64 to {VERSION}");
    std::fs::write(&main, bumped).unwrap();
    let (status, _, err) = run(Command::new(copy.path().join("npm/build.sh")), Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("optionalDependencies.@pm-runtime/linux-x64 9.9.9") && err.contains(VERSION), "{err}");
    // --set-version brings it back in step.
    let mut set = Command::new(copy.path().join("npm/build.sh"));
    set.arg("--set-version");
    ok(set, Duration::from_secs(30));
    let mut check = Command::new(copy.path().join("npm/build.sh"));
    check.arg("--check");
    ok(check, Duration::from_secs(30));
}

#[test]
fn npm_install_gives_the_binary_itself_for_npx_npm_start_npm_ci_and_pid1() {
    let reg = Registry::start();
    let orphans =
        "#!/bin/sh\ni=0\nwhile [ $i -lt 100 ]; do ( sleep 0.2 & ) ; i=$((i+1)); done\necho spawned 100 orphans\nexec sleep 3141\n";
    let proj = reg.project(
        "npm",
        &package_json(",\n  \"allowScripts\": { \"pm-runtime\": true }"),
        &[("app.js", APP), ("ecosystem.config.yml", ECOSYSTEM), ("orphans.sh", orphans)],
    );
    std::fs::set_permissions(proj.join("orphans.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    reg.npm(&proj, &["install", "pm-runtime"]);
    let bin = proj.join("node_modules/.bin/pm-runtime");
    assert!(is_elf(&bin), "after the postinstall step, node_modules/.bin/pm-runtime is the native binary");
    let pkg = std::fs::read_to_string(proj.join("package.json")).unwrap();
    assert!(pkg.contains(&format!("\"pm-runtime\": \"^{VERSION}\"")), "{pkg}");

    let mut npx = reg.cmd("npx", &proj);
    npx.args(["pm-runtime", "--version"]);
    assert_eq!(ok(npx, Duration::from_secs(60)).trim(), format!("pm-runtime {VERSION}"));

    // `npm start` runs the example; a terminal's Ctrl-C (SIGINT to the foreground group) stops
    // it gracefully: the app runs its handler, nothing is left behind.
    let mut start = reg.cmd("npm", &proj);
    start.arg("start");
    let (g, port) = serve(start);
    assert!(http_get(port).unwrap().starts_with("hello from"));
    g.0.wait_for("app listening", Duration::from_secs(5));
    let runtime = *tree(g.0.pid()).iter().find(|p| is_elf(&exe(**p)) && exe(**p).starts_with(&proj)).expect("pm-runtime under npm");
    kill(-(g.0.pid() as i32), libc::SIGINT);
    wait_until("pm-runtime has exited", Duration::from_secs(10), || gone(runtime));
    g.0.wait_for("app stopping gracefully", Duration::from_secs(1));
    g.0.wait_for("exited with code [0]", Duration::from_secs(1));
    assert!(!g.0.stderr().contains("killing every app now"), "{}", g.0.stderr());
    assert!(http_get(port).is_none());

    // `npm ci` from the lockfile gives the same.
    std::fs::remove_dir_all(proj.join("node_modules")).unwrap();
    reg.npm(&proj, &["ci"]);
    assert!(is_elf(&bin), "after npm ci too");
    let mut v = reg.cmd(&bin, &proj);
    v.arg("--version");
    assert_eq!(ok(v, Duration::from_secs(10)).trim(), format!("pm-runtime {VERSION}"));

    // As PID 1 of a PID namespace (a container's situation): node_modules/.bin/pm-runtime is
    // pm-runtime itself, not node, and it reaps the orphans it inherits.
    let mut ns = reg.cmd("unshare", &proj);
    ns.args(["--pid", "--fork", "--mount-proc", "node_modules/.bin/pm-runtime", "start", "orphans.sh"]);
    let mut r = Running::start(ns);
    r.wait_for("spawned 100 orphans", Duration::from_secs(20));
    let runtime = *children(r.pid()).first().expect("unshare's child");
    let status = std::fs::read_to_string(format!("/proc/{runtime}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")), "not PID 1: {status}");
    assert!(is_elf(&exe(runtime)) && !exe(runtime).ends_with("node"), "PID 1 is {:?}", exe(runtime));
    let cmdline = std::fs::read(format!("/proc/{runtime}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"node_modules/.bin/pm-runtime\0start\0"), "{}", String::from_utf8_lossy(&cmdline));
    // Every orphan has exited; none is left a zombie.
    wait_until("the orphans have exited", Duration::from_secs(10), || pids_with("sleep 0.2").is_empty());
    wait_until("no zombie is left under PID 1", Duration::from_secs(3), || zombie_children(runtime) == 0);
    kill(runtime as i32, libc::SIGTERM);
    let st = r.wait(Duration::from_secs(5)).expect("PID 1 exits on SIGTERM");
    assert_eq!(st.code(), Some(0), "{}\n{}", r.stdout(), r.stderr());
    assert!(pids_with("sleep 3141").is_empty());
}

#[test]
fn npm_launcher_without_install_scripts_forwards_signals_and_exit_status() {
    let reg = Registry::start();
    let proj = reg.project("launcher", &package_json(""), &[("app.js", APP), ("ecosystem.config.yml", ECOSYSTEM)]);
    reg.npm(&proj, &["install", "--ignore-scripts", "pm-runtime"]);
    let bin = proj.join("node_modules/.bin/pm-runtime");
    let text = std::fs::read_to_string(&bin).expect("the launcher is a text file");
    assert!(text.starts_with("#!/usr/bin/env node"), "{text}");
    let mut npx = reg.cmd("npx", &proj);
    npx.args(["pm-runtime", "--version"]);
    assert_eq!(ok(npx, Duration::from_secs(60)).trim(), format!("pm-runtime {VERSION}"));
    let platform_bin = std::fs::canonicalize(proj.join("node_modules/@pm-runtime/linux-x64/bin/pm-runtime")).unwrap();

    // Node 20 has no process.execve: the launcher spawns the binary and relays.
    let launcher = |node: u32, args: &[&str]| {
        let mut c = reg.cmd(&bin, &proj);
        c.args(args).env("PATH", path_with_node(node));
        c
    };
    let (g, _) = serve(launcher(20, &["start", "ecosystem.config.yml"]));
    let pid = g.0.pid();
    assert!(exe(pid).ends_with("node"), "the launcher runs in node: {:?}", exe(pid));
    let kids = children(pid);
    assert!(kids.iter().any(|k| exe(*k) == platform_bin), "the binary is the launcher's child: {kids:?}");
    // Every signal pm-runtime acts on is relayed: HUP restarts the app (fork mode), TERM stops it.
    let graceful = |g: &Group| g.0.stdout().matches("app stopping gracefully").count();
    kill(pid as i32, libc::SIGHUP);
    g.0.wait_for("SIGHUP received", Duration::from_secs(5));
    wait_until("the app was restarted", Duration::from_secs(10), || {
        graceful(&g) == 1 && g.0.stdout().matches("app listening").count() == 2
    });
    kill(pid as i32, libc::SIGTERM);
    let mut g = g;
    let st = g.0.wait(Duration::from_secs(10)).expect("the launcher exits after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}\n{}", g.0.stdout(), g.0.stderr());
    assert_eq!(graceful(&g), 2, "{}", g.0.stdout());
    assert!(!g.0.stderr().contains("killing every app now"), "one SIGTERM, one stop: {}", g.0.stderr());

    // The binary's exit code comes back; a binary killed by a signal kills the launcher with it.
    let (st, out, err) = run(launcher(20, &["start", "nowhere.yml"]), Duration::from_secs(20));
    assert_eq!(st.code(), Some(78), "a configuration error: {out}\n{err}");
    assert!(err.contains("nowhere.yml"), "{err}");
    let (g, _) = serve(launcher(20, &["start", "ecosystem.config.yml"]));
    let child = *children(g.0.pid()).iter().find(|k| exe(**k) == platform_bin).expect("the binary");
    kill(child as i32, libc::SIGKILL);
    let mut g = g;
    let st = g.0.wait(Duration::from_secs(10)).expect("the launcher follows its binary");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");

    // Node 22 has process.execve: the launcher becomes the binary (same pid).
    let (g, _) = serve(launcher(22, &["start", "ecosystem.config.yml"]));
    let pid = g.0.pid();
    assert_eq!(exe(pid), platform_bin, "the launcher's pid runs the binary now");
    kill(pid as i32, libc::SIGTERM);
    let mut g = g;
    let st = g.0.wait(Duration::from_secs(10)).expect("exits after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}\n{}", g.0.stdout(), g.0.stderr());
    assert!(g.0.stdout().contains("app stopping gracefully"), "{}", g.0.stdout());

    // PM_RUNTIME_BINARY_PATH wins; a wrong one is named.
    let fake = proj.join("fake-pm-runtime");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake pm-runtime $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = launcher(20, &["--version"]);
    c.env("PM_RUNTIME_BINARY_PATH", &fake);
    assert_eq!(ok(c, Duration::from_secs(10)).trim(), "fake pm-runtime --version");
    let mut c = launcher(20, &["--version"]);
    c.env("PM_RUNTIME_BINARY_PATH", proj.join("nowhere"));
    let (st, _, err) = run(c, Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("PM_RUNTIME_BINARY_PATH=") && err.contains("nowhere") && err.contains("not an executable"), "{err}");

    // `npm rebuild pm-runtime` runs the postinstall step again: it keeps the launcher while
    // PM_RUNTIME_BINARY_PATH is set (only the launcher reads it), and puts the binary otherwise.
    let mut rebuild = reg.cmd("npm", &proj);
    rebuild.args(["rebuild", "pm-runtime"]).env("PM_RUNTIME_BINARY_PATH", &fake);
    ok(rebuild, Duration::from_secs(60));
    assert!(!is_elf(&bin), "the launcher stays while PM_RUNTIME_BINARY_PATH is set");
    reg.npm(&proj, &["rebuild", "pm-runtime"]);
    assert!(is_elf(&bin), "npm rebuild put the binary in place");

    // Without the platform package, the error says which package and how to build from source.
    reg.npm(&proj, &["ci", "--ignore-scripts", "--omit=optional"]);
    assert!(!proj.join("node_modules/@pm-runtime/linux-x64").exists());
    let (st, out, err) = run(launcher(20, &["--version"]), Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(err.contains("@pm-runtime/linux-x64@") && err.contains("--omit=optional"), "{err}");
    assert!(err.contains("cargo build --release --locked") && err.contains("PM_RUNTIME_BINARY_PATH"), "{err}");
}

#[test]
fn npm_package_installs_and_runs_with_pnpm_and_yarn() {
    let reg = Registry::start();
    let files = [("app.js", APP), ("ecosystem.config.yml", ECOSYSTEM)];

    // pnpm runs dependency build scripts only when listed, as npm 11's allowScripts.
    let proj = reg.project("pnpm", &package_json(",\n  \"pnpm\": { \"onlyBuiltDependencies\": [\"pm-runtime\"] }"), &files);
    let mut add = reg.cmd(reg.tools.join("node_modules/.bin/pnpm"), &proj);
    add.args(["add", "pm-runtime", "--store-dir"]).arg(reg.dir.path().join("pnpm-store"));
    ok(add, Duration::from_secs(300));
    assert!(is_elf(&proj.join("node_modules/pm-runtime/bin/pm-runtime")), "the postinstall step ran under pnpm");
    let mut v = reg.cmd(reg.tools.join("node_modules/.bin/pnpm"), &proj);
    v.args(["exec", "pm-runtime", "--version"]);
    assert_eq!(ok(v, Duration::from_secs(60)).trim(), format!("pm-runtime {VERSION}"));
    let mut start = reg.cmd(reg.tools.join("node_modules/.bin/pnpm"), &proj);
    start.arg("start");
    let (g, port) = serve(start);
    assert!(http_get(port).unwrap().starts_with("hello from"));
    drop(g);

    // yarn 1 (classic): .bin/pm-runtime links to the binary.
    let proj = reg.project("yarn", &package_json(""), &files);
    let mut add = reg.cmd(reg.tools.join("node_modules/.bin/yarn"), &proj);
    add.args(["add", "pm-runtime", "--non-interactive", "--registry"])
        .arg(format!("http://127.0.0.1:{}/", reg.port))
        .arg("--cache-folder")
        .arg(reg.dir.path().join("yarn-cache"));
    ok(add, Duration::from_secs(300));
    assert!(is_elf(&proj.join("node_modules/.bin/pm-runtime")));
    let mut start = reg.cmd(reg.tools.join("node_modules/.bin/yarn"), &proj);
    start.arg("start");
    let (g, port) = serve(start);
    assert!(http_get(port).unwrap().starts_with("hello from"));
    drop(g);
}

#[test]
fn heroku_npm_example_runs_as_the_node_buildpack_and_dyno_manager_run_it() {
    let reg = Registry::start();
    let app = reg.dir.path().join("heroku-npm");
    let mut cp = Command::new("cp");
    cp.arg("-R").arg(repo().join("examples/heroku-npm")).arg(&app);
    ok(cp, Duration::from_secs(30));
    // Build: the Node buildpack installs the dependencies (npm install without a lockfile).
    reg.npm(&app, &["install"]);
    assert!(is_elf(&app.join("node_modules/.bin/pm-runtime")));

    // Run: node_modules/.bin on PATH, PORT set, the Procfile's web command through bash.
    let procfile = std::fs::read_to_string(app.join("Procfile")).unwrap();
    let web = procfile.lines().find_map(|l| l.strip_prefix("web:")).expect("a web process").trim().to_string();
    let mut path = app.join("node_modules/.bin").into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut dyno = reg.cmd("bash", &app);
    dyno.args(["-c", &web]).env("PATH", path).env("HOME", &app);
    let (g, port) = serve(dyno);
    let body = http_get(port).unwrap();
    assert!(body.contains(&format!("on port {port}")) && body.contains("worker"), "{body}");
    // instances: max → one worker per usable CPU.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let online = || g.0.stdout().matches("] online").count();
    wait_until(&format!("{cpus} workers are online"), Duration::from_secs(20), || online() == cpus);
    let workers = pids_with(&app.join("index.js").to_string_lossy());
    assert_eq!(workers.len(), cpus, "{}", g.0.stdout());

    // Shutdown: the dyno manager sends SIGTERM to every process of the dyno at once.
    let all = tree(g.0.pid());
    assert!(all.len() > cpus, "the runtime and its workers: {all:?}");
    let t = Instant::now();
    for pid in &all {
        kill(*pid as i32, libc::SIGTERM);
    }
    let mut g = g;
    let st = g.0.wait(Duration::from_secs(30)).expect("the dyno's process exits");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(st.code(), Some(0), "{}\n{}", g.0.stdout(), g.0.stderr());
    wait_until("no worker is left", Duration::from_secs(3), || pids_with(&app.join("index.js").to_string_lossy()).is_empty());
    assert_eq!(g.0.stdout().matches("starting in").count(), cpus, "nothing restarted during shutdown:\n{}", g.0.stdout());
}
