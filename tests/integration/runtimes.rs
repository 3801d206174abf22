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
    let server = "require('http').createServer((q, r) => r.end(`${process.env.name} ${__filename}`)).listen(process.env.PORT, '127.0.0.1');\n";
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
