//! JavaScript runtimes and module systems as users run them: ESM projects (`"type": "module"`),
//! TypeScript, a directory as `script`, `env_file`, secret files.

use std::time::Duration;

use crate::scenario::*;

const T: Duration = Duration::from_secs(20);

/// PM2_HOME inside an ESM project (`PM2_HOME=/app/.pm2`, `/app/package.json` says
/// `"type": "module"`): the preload must still load as CommonJS, in fork and cluster mode.
#[test]
fn pm2_home_inside_an_esm_project_does_not_break_the_preload() {
    let port = free_port();
    let s = Scenario::new()
        .file("package.json", r#"{ "name": "esm-app", "type": "module" }"#)
        .file(
            "app.js",
            "import http from 'node:http';\n\
             setTimeout(() => Promise.reject(new Error('rejected-on-purpose')), 100);\n\
             setTimeout(() => console.log(`${process.env.name} still up`), 400);\n\
             if (process.env.PORT) http.createServer((q, r) => r.end('esm')).listen(process.env.PORT, '127.0.0.1');\n\
             setInterval(() => {}, 1000);\n",
        )
        .file(
            "e.yml",
            &format!(
                "apps:\n  - name: f\n    script: app.js\n  - name: c\n    script: app.js\n    exec_mode: cluster\n    instances: 2\n    env:\n      PORT: {port}\n"
            ),
        );
    let mut r = s.start(&["e.yml"]);
    poll("three 'still up' lines", T, || ((r.stdout().matches("still up").count()) >= 3).then_some(()));
    assert_eq!(wait_http(port, T), "esm");
    let err = r.stderr();
    assert!(!err.contains("require is not defined"), "{err}");
    assert_eq!(err.matches("Error: rejected-on-purpose").count(), 3, "the preload handled every rejection:\n{err}");
    assert!(!r.stdout().contains("exited with code"), "{}", r.stdout());
    assert!(s.path().join(".pm2/pm-runtime-preload.cjs").exists());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0));
}

/// A TypeScript app with types that only type stripping removes (an interface, annotations,
/// `satisfies`): an HTTP server, in fork and in cluster mode with wait_ready.
const TS_APP: &str = r#"
import http from 'node:http';
interface Reply { pid: number; runtime: string }
const port: number = Number(process.env.PORT);
const body = (): string => JSON.stringify({ pid: process.pid, runtime: process.version } satisfies Reply);
http.createServer((_q, r) => r.end(body())).listen(port, '127.0.0.1', () => process.send?.('ready'));
"#;

#[test]
fn typescript_runs_on_node_with_type_stripping_in_fork_and_cluster_mode() {
    let node = crate::node_versions::node(26);
    let (fork_port, cluster_port) = (free_port(), free_port());
    let s = Scenario::new().file("src/app.ts", TS_APP).file("src/esm.mts", TS_APP).file(
        "e.yml",
        &format!(
            "apps:\n  - name: f\n    script: src/app.ts\n    interpreter: {node}\n    wait_ready: true\n    env:\n      PORT: {fork_port}\n  \
             - name: c\n    script: src/esm.mts\n    interpreter: {node}\n    exec_mode: cluster\n    instances: 2\n    wait_ready: true\n    env:\n      PORT: {cluster_port}\n",
            node = node.display()
        ),
    );
    let mut r = s.start(&["e.yml"]);
    poll("three instances ready", T, || (r.stdout().matches("online (ready)").count() >= 3).then_some(()));
    for port in [fork_port, cluster_port] {
        let body = wait_http(port, T);
        assert!(body.contains("\"runtime\":\"v26."), "{body}");
    }
    assert!(!r.stdout().contains("exited with code"), "{}\n{}", r.stdout(), r.stderr());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0));
}

#[test]
fn typescript_on_a_node_without_type_stripping_is_a_clear_error() {
    let node = crate::node_versions::node(20);
    let s = Scenario::new()
        .file("app.ts", TS_APP)
        .file("e.yml", &format!("apps:\n  - name: t\n    script: app.ts\n    interpreter: {}\n", node.display()));
    let (status, out, err) = s.run(&["e.yml"], T);
    assert_ne!(status.code(), Some(0));
    let all = out + &err;
    assert!(all.contains("e.yml") && all.contains("apps[0].interpreter"), "{all}");
    assert!(all.contains("is TypeScript, which Node 20."), "{all}");
    for option in ["interpreter: bun", "--import tsx", "--experimental-strip-types"] {
        assert!(all.contains(option), "{option}: {all}");
    }
}

/// `script: dist/` runs what `node dist/` runs (package.json `main`), fork and cluster mode;
/// `script: ./api` runs its index.js.
#[test]
fn a_directory_as_script_runs_as_node_runs_it() {
    let (p1, p2) = (free_port(), free_port());
    let server =
        "require('http').createServer((q, r) => r.end(`${process.env.name} ${__filename}`)).listen(process.env.PORT, '127.0.0.1');\n";
    let s = Scenario::new()
        .file("dist/package.json", r#"{ "main": "server.js" }"#)
        .file("dist/server.js", server)
        .file("api/index.js", server)
        .file(
            "e.yml",
            &format!(
                "apps:\n  - script: dist/\n    exec_mode: cluster\n    instances: 2\n    env:\n      PORT: {p1}\n  \
                 - script: ./api\n    env:\n      PORT: {p2}\n"
            ),
        );
    let mut r = s.start(&["e.yml"]);
    assert_eq!(wait_http(p1, T), format!("dist {}", s.path().join("dist/server.js").display()));
    assert_eq!(wait_http(p2, T), format!("api {}", s.path().join("api/index.js").display()));
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0));
}

/// Prints the variables named in SHOW as one JSON line (`env <app> {...}`), then idles.
const PRINT_ENV: &str = r#"
const keys = (process.env.SHOW || '').split(',');
console.log(`env ${process.env.name} ` + JSON.stringify(Object.fromEntries(keys.map((k) => [k, process.env[k] ?? null]))));
setInterval(() => {}, 1000);
"#;

fn printed_env(r: &Running, app: &str) -> serde_json::Value {
    let line = poll(&format!("the env line of {app}"), T, || {
        r.stdout().lines().find(|l| l.contains(&format!("env {app} {{"))).map(str::to_string)
    });
    serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn env_file_grammar_and_precedence() {
    let dotenv = "# a comment line\n\
                  export PLAIN=plain value # trailing comment\n\
                  SINGLE='literal ${RUNTIME_VAR} # kept'\n\
                  DOUBLE=\"tab\\there\\nnewline \\\"quoted\\\" \\$RUNTIME_VAR\"\n\
                  MULTI=\"line1\nline2\"\n\
                  \n\
                  EXPANDED=${RUNTIME_VAR}/x\n\
                  EARLIER=\"${PLAIN}!\"\n\
                  DEFAULTED=${NOT_SET:-fallback}\n\
                  LAYER=file\n\
                  LAYER_ENV=file\n\
                  LAYER_NAMED=file\n";
    let keys = "PLAIN,SINGLE,DOUBLE,MULTI,EXPANDED,EARLIER,DEFAULTED,LAYER,LAYER_ENV,LAYER_NAMED,ONLY_RUNTIME,FROM_NODE";
    let s = Scenario::new()
        .file("app.js", PRINT_ENV)
        .file(".env", dotenv)
        .file("extra.env", "LAYER=${LAYER}+extra\n")
        .file("node.env", "FROM_NODE=node's own --env-file\n")
        .file(
            "e.yml",
            &format!(
                "apps:\n  - name: dotenv\n    script: app.js\n    env_file: [.env, extra.env, {{ path: missing.env, required: false }}]\n    \
                 env:\n      SHOW: {keys}\n      LAYER_ENV: env\n      LAYER_NAMED: env\n    env_production:\n      LAYER_NAMED: production\n  \
                 - name: nodeflag\n    script: app.js\n    interpreter: {}\n    node_args: --env-file=node.env\n    env:\n      SHOW: {keys}\n",
                crate::node_versions::node(22).display()
            ),
        );
    let mut cmd = s.command(&["e.yml", "--env", "production"]);
    cmd.env("RUNTIME_VAR", "/rt").env("LAYER", "runtime").env("ONLY_RUNTIME", "rt");
    let mut r = Running::start(cmd);
    let env = printed_env(&r, "dotenv");
    let want = serde_json::json!({
        "PLAIN": "plain value",
        "SINGLE": "literal ${RUNTIME_VAR} # kept",
        "DOUBLE": "tab\there\nnewline \"quoted\" $RUNTIME_VAR",
        "MULTI": "line1\nline2",
        "EXPANDED": "/rt/x",
        "EARLIER": "plain value!",
        "DEFAULTED": "fallback",
        // runtime < .env < extra.env (which sees .env's value) < env < env_production
        "LAYER": "file+extra",
        "LAYER_ENV": "env",
        "LAYER_NAMED": "production",
        "ONLY_RUNTIME": "rt",
        "FROM_NODE": null,
    });
    assert_eq!(env, want);
    // `node_args: --env-file=…` is Node's own and passes through unchanged.
    let env = printed_env(&r, "nodeflag");
    assert_eq!(env["FROM_NODE"], "node's own --env-file");
    assert_eq!(env["LAYER"], "runtime");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0));
}

#[test]
fn env_file_errors_name_the_file_and_line_and_a_missing_file_is_an_error() {
    let s = Scenario::new().file("app.js", PRINT_ENV).file("bad.env", "GOOD=1\nMULTI=\"never closed\n\nMORE=1\n").file(
        "e.yml",
        "apps:\n  - name: a\n    script: app.js\n    env_file: bad.env\n  - name: b\n    script: app.js\n    env_file: [missing.env]\n",
    );
    let (status, out, err) = s.run(&["e.yml"], T);
    assert_eq!(status.code(), Some(78), "{out}\n{err}");
    let bad = s.path().join("bad.env");
    assert!(err.contains(&format!("{}:2:1: apps[0].env_file: the value quoted with \" is never closed", bad.display())), "{err}");
    assert!(err.contains("e.yml:7:16: apps[1].env_file[0]: cannot read env file") && err.contains("missing.env"), "{err}");
    assert!(err.contains("required: false"), "{err}");
}

#[test]
fn secret_files_reach_the_app_and_nothing_the_runtime_shows_contains_them() {
    const SECRET: &str = "Sup3r-S3cret-Value";
    const TOKEN: &str = "tok-from-run-secrets-1234";
    // A Docker/Compose secret: NAME_FILE pointing into /run/secrets (we are root in tests).
    std::fs::create_dir_all("/run/secrets").unwrap();
    let mounted = format!("/run/secrets/pm-runtime-test-{}", std::process::id());
    std::fs::write(&mounted, format!("{TOKEN}\n")).unwrap();
    let _cleanup = Cleanup(mounted.clone());
    let app = format!(
        "console.log(`db-ok=${{process.env.DB_PASSWORD === '{SECRET}'}} token-ok=${{process.env.API_TOKEN === '{TOKEN}'}}`);\n\
         if (process.env.LEAK) console.log(`password is ${{process.env.DB_PASSWORD}}; token ${{process.env.API_TOKEN}}`);\n\
         setInterval(() => {{}}, 1000);\n"
    )
    .replace("'Sup3r-S3cret-Value'", "['Sup3r', 'S3cret', 'Value'].join('-')")
    .replace(&format!("'{TOKEN}'"), "['tok', 'from', 'run', 'secrets', '1234'].join('-')");
    let s = Scenario::new().file("app.js", &app).file("db_password", &format!("{SECRET}\n")).file(
        "e.yml",
        &format!(
            "apps:\n  - name: quiet\n    script: app.js\n    secrets:\n      DB_PASSWORD: db_password\n    env:\n      API_TOKEN_FILE: {mounted}\n  \
             - name: leaky\n    script: app.js\n    mask_secrets: true\n    out_file: leaky.log\n    secrets:\n      DB_PASSWORD: db_password\n    \
             env:\n      API_TOKEN_FILE: {mounted}\n      LEAK: '1'\n"
        ),
    );
    let mut r = s.start(&["e.yml"]);
    poll("both apps report", T, || (r.stdout().matches("db-ok=true token-ok=true").count() == 2).then_some(()));
    r.wait_for("password is", T);
    let (_, jlist, _) = s.cli(&["jlist"]);
    let (_, show, _) = s.cli(&["show", "quiet"]);
    let v: serde_json::Value = serde_json::from_str(&jlist).unwrap();
    for p in v.as_array().unwrap() {
        assert_eq!(p["pm2_env"]["env"]["DB_PASSWORD"], "[redacted]", "{p}");
        assert_eq!(p["pm2_env"]["env"]["API_TOKEN"], "[redacted]", "{p}");
        assert_eq!(p["pm2_env"]["env"]["API_TOKEN_FILE"], mounted.as_str(), "{p}");
    }
    let leaky_line = lines_with(&r.stdout(), "password is").join("\n");
    assert!(leaky_line.ends_with("password is [redacted]; token [redacted]"), "{leaky_line}");
    let log = std::fs::read_to_string(s.path().join("leaky.log")).unwrap();
    assert!(log.contains("password is [redacted]; token [redacted]"), "{log}");
    r.signal(libc::SIGTERM);
    r.wait(T).unwrap();
    for (what, text) in [("stdout", r.stdout()), ("stderr", r.stderr()), ("jlist", jlist), ("show", show), ("log file", log)] {
        assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{what} shows a secret:\n{text}");
    }
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An ESM project (`"type": "module"`, PM2_HOME inside it) with top-level await before
/// `listen`: cluster mode with wait_ready, a reload under load that fails no request, and the
/// preload's rejection handling, on `major`.
fn esm_cluster(major: u32) {
    let node = crate::node_versions::node(major);
    let port = free_port();
    let app = "import http from 'node:http';\n\
               import cluster from 'node:cluster';\n\
               // Top-level await before listen: a config that loads asynchronously.\n\
               const config = await new Promise((ok) => setTimeout(() => ok({ greeting: 'esm' }), 200));\n\
               const server = http.createServer((q, r) => r.end(`${config.greeting} ${cluster.worker.id} ${process.version}`));\n\
               server.listen(Number(process.env.PORT), '127.0.0.1', () => process.send('ready'));\n\
               Promise.reject(new Error('esm rejection'));\n";
    let s = Scenario::new().file("package.json", r#"{ "name": "esm", "type": "module" }"#).file("server.js", app).file(
        "e.yml",
        &format!(
            "apps:\n  - name: esm\n    script: server.js\n    interpreter: {}\n    exec_mode: cluster\n    instances: 2\n    wait_ready: true\n    \
             listen_timeout: 8000\n    env:\n      PORT: {port}\n",
            node.display()
        ),
    );
    let mut r = s.start(&["e.yml"]);
    poll("two workers ready", T, || (r.stdout().matches("online (ready)").count() >= 2).then_some(()));
    let body = wait_http(port, T);
    assert!(body.starts_with("esm ") && body.contains(&format!("v{major}.")), "{body}");
    assert_eq!(r.stderr().matches("Error: esm rejection").count(), 2, "{}", r.stderr());

    let load = crate::node_cluster::Load::start(port, 2, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = s.cli(&["reload", "esm"]);
    assert_eq!(code, 0, "{err}");
    poll("both old workers gone", T, || (r.stdout().matches("exited with code [0]").count() >= 2).then_some(()));
    poll("two new workers ready", T, || (r.stdout().matches("online (ready)").count() >= 4).then_some(()));
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failures) = load.finish();
    assert!(failures.is_empty() && ok > 20, "Node {major}: reload: {ok} ok, failed {failures:?}\n{}", r.stdout());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0), "{}", r.stdout());
}

#[test]
fn esm_cluster_node_18() {
    esm_cluster(18);
}

#[test]
fn esm_cluster_node_20() {
    esm_cluster(20);
}

#[test]
fn esm_cluster_node_22() {
    esm_cluster(22);
}

#[test]
fn esm_cluster_node_24() {
    esm_cluster(24);
}

#[test]
fn esm_cluster_node_26() {
    esm_cluster(26);
}

/// Polls the port until every one of `n` distinct pids has answered (an answer is `<pid> …`).
fn distinct_pids(port: u16, n: usize) -> std::collections::BTreeSet<String> {
    let mut pids = std::collections::BTreeSet::new();
    poll(&format!("{n} instances answering on {port}"), T, || {
        if let Some(body) = http_get(port) {
            pids.insert(body.split_whitespace().next().unwrap_or_default().to_string());
        }
        (pids.len() >= n).then_some(())
    });
    pids
}

/// Instances x4 of `app` on one port with wait_ready, then a reload under load: every
/// instance replaced, the port answering throughout. Returns (ok, failed) requests.
fn four_on_one_port_with_reload(interpreter: &std::path::Path, args: &str, script: &str, app: &str) -> (u64, Vec<String>) {
    let port = free_port();
    let s = Scenario::new().file(script, app).file(
        "e.yml",
        &format!(
            "apps:\n  - name: web\n    script: {script}\n    interpreter: {}\n    node_args: {args}\n    exec_mode: cluster\n    instances: 4\n    \
             wait_ready: true\n    listen_timeout: 10000\n    env:\n      PORT: {port}\n",
            interpreter.display()
        ),
    );
    let mut r = s.start(&["e.yml"]);
    poll("four instances ready", T, || (r.stdout().matches("online (ready)").count() >= 4).then_some(()));
    let before = distinct_pids(port, 4);
    let load = crate::node_cluster::Load::start(port, 2, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = s.cli(&["reload", "web"]);
    assert_eq!(code, 0, "{err}");
    poll("four replacements ready", T, || (r.stdout().matches("online (ready)").count() >= 8).then_some(()));
    poll("four old processes gone", T, || (r.stdout().matches("exited with code").count() >= 4).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    let result = load.finish();
    let after = distinct_pids(port, 4);
    assert!(before.is_disjoint(&after), "every instance was replaced: {before:?} / {after:?}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0), "{}", r.stdout());
    result
}

/// Fork-mode semantics of a JS runtime: wait_ready through Node's IPC channel, the stop signal
/// reaching the app (its own handler runs), exit codes, log lines, memory in jlist, and
/// (`preload`) pm-runtime's preload handling an unhandled rejection.
fn fork_semantics(interpreter: &std::path::Path, args: &str, preload: bool) {
    let app = "const http = require('node:http');\n\
               process.on('SIGINT', () => { console.log('app got SIGINT'); process.exit(0); });\n\
               if (process.env.CRASH) { console.error('crashing with 3'); process.exit(3); }\n\
               setTimeout(() => Promise.reject(new Error('rejected-on-purpose')), 50);\n\
               setTimeout(() => console.log('still up after the rejection'), 300);\n\
               http.createServer((q, r) => r.end(`${process.pid} up`)).listen(Number(process.env.PORT), '127.0.0.1', () => process.send('ready'));\n";
    let port = free_port();
    // An app that just ends must end: the IPC channel must not keep the runtime's process alive.
    let s = Scenario::new().file("app.cjs", app).file("ends.cjs", "console.log('ends by itself');\n").file(
        "e.yml",
        &format!(
            "apps:\n  - name: f\n    script: app.cjs\n    interpreter: {i}\n    node_args: {args}\n    wait_ready: true\n    env:\n      PORT: {port}\n  \
             - name: crash\n    script: app.cjs\n    interpreter: {i}\n    node_args: {args}\n    autorestart: false\n    env:\n      CRASH: '1'\n      PORT: {}\n  \
             - name: ends\n    script: ends.cjs\n    interpreter: {i}\n    node_args: {args}\n    autorestart: false\n",
            free_port(),
            i = interpreter.display()
        ),
    );
    let mut r = s.start(&["e.yml"]);
    r.wait_for("App [f:0] online (ready)", T);
    assert!(wait_http(port, T).ends_with(" up"));
    r.wait_for("App [crash:1] exited with code [3] via signal [none]", T);
    r.wait_for("App [ends:2] exited with code [0] via signal [none]", T);
    assert!(r.stderr().contains("crashing with 3"), "{}", r.stderr());
    if preload {
        r.wait_for("still up after the rejection", T);
        assert!(r.stderr().contains("rejected-on-purpose"), "{}", r.stderr());
        assert!(!r.stdout().contains("App [f:0] exited"), "{}", r.stdout());
    }
    let mem = poll("memory of f in jlist", T, || {
        let (_, out, _) = s.cli(&["jlist"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let f = v.as_array()?.iter().find(|p| p["name"] == "f")?.clone();
        f["monit"]["memory"].as_u64().filter(|m| *m > 0)
    });
    assert!(mem > 1 << 20, "{mem}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0));
    assert!(r.stdout().contains("app got SIGINT"), "{}", r.stdout());
    assert!(r.stdout().contains("App [f:0] exited with code [0] via signal [none]"), "{}", r.stdout());
}

#[test]
fn bun_fork_mode_has_nodes_semantics_and_the_preload() {
    fork_semantics(&crate::node_versions::js_runtime("bun"), "[]", true);
}

#[test]
fn deno_fork_mode_has_nodes_semantics_and_the_preload_with_allow_all() {
    fork_semantics(&crate::node_versions::js_runtime("deno"), "[-A]", true);
}

#[test]
fn deno_without_env_permission_runs_without_the_preload() {
    let deno = crate::node_versions::js_runtime("deno");
    let s = Scenario::new()
        .file("app.js", "console.log('plain deno app');\nsetInterval(() => {}, 1000);\n")
        .file("e.yml", &format!("apps:\n  - name: d\n    script: app.js\n    interpreter: {}\n", deno.display()));
    let mut r = s.start(&["e.yml"]);
    r.wait_for("plain deno app", T);
    let cmdline =
        std::fs::read_to_string(format!("/proc/{}/cmdline", pids_with(&s.path().join("app.js").display().to_string())[0])).unwrap();
    assert!(!cmdline.contains("preload"), "{cmdline}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(T).unwrap().code(), Some(0));
}

#[test]
fn bun_cluster_four_instances_on_one_port_with_reload() {
    let bun = crate::node_versions::js_runtime("bun");
    // TypeScript and ESM, which Bun runs itself.
    let app = "import http from 'node:http';\n\
               const port: number = Number(process.env.PORT);\n\
               http.createServer((q, r) => r.end(`${process.pid} bun`)).listen(port, '127.0.0.1', () => process.send!('ready'));\n";
    let (ok, failures) = four_on_one_port_with_reload(&bun, "[]", "server.ts", app);
    // SO_REUSEPORT: connections already queued on a retiring instance's own socket are reset
    // when it closes (a property of the kernel's per-socket queues; README, Differences).
    // Measured: about 5 in 2,500. Bounded here, never hidden.
    assert!(ok > 20 && failures.len() * 100 <= ok as usize, "bun: {ok} ok, failed {failures:?}");
}

#[test]
fn deno_cluster_four_instances_on_one_port_with_reuseport_and_reload() {
    let deno = crate::node_versions::js_runtime("deno");
    // TypeScript, which Deno runs itself.
    let app = "const port: number = Number(Deno.env.get('PORT'));\n\
               Deno.serve({ port, hostname: '127.0.0.1', reusePort: true, onListen: () => process.send!('ready') },\n\
               (): Response => new Response(`${Deno.pid} deno`));\n";
    let (ok, failures) = four_on_one_port_with_reload(&deno, "[-A, --unstable-net]", "server.ts", app);
    // SO_REUSEPORT: connections already queued on a retiring instance's own socket are reset
    // when it closes (a property of the kernel's per-socket queues; README, Differences).
    // Measured: about 5 in 2,500. Bounded here, never hidden.
    assert!(ok > 20 && failures.len() * 100 <= ok as usize, "deno: {ok} ok, failed {failures:?}");
}
