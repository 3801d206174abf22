//! `script: serve` and `pm-runtime serve`: PM2's static file server, as a supervised app.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::scenario::*;

/// One raw request (the target is sent as is, so traversal attempts reach the server
/// unnormalised); returns (status, head, body).
fn request(port: u16, target: &str, extra: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {resp:?}"));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().filter_map(|l| l.split_once(": ")).find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn site(s: Scenario) -> Scenario {
    let s = s
        .file("dist/index.html", "<h1>home</h1>")
        .file("dist/app.js", "console.log(1)")
        .file("dist/style.css", "body{}")
        .file("dist/404.html", "custom not found")
        .file("secret.txt", "TOP-SECRET");
    std::os::unix::fs::symlink(s.path(), s.path().join("dist/up")).unwrap();
    std::os::unix::fs::symlink(s.path().join("secret.txt"), s.path().join("dist/leak.txt")).unwrap();
    s
}

fn wait_serving(port: u16) {
    poll("the static server", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).ok());
}

const AUTH: &str = "Authorization: Basic dXNlcjpwYXNz\r\n"; // user:pass

#[test]
fn script_serve_in_an_ecosystem_with_spa_and_basic_auth() {
    let port = free_port();
    let s = site(Scenario::new()).file(
        "e.yml",
        &format!("apps:\n  - name: web\n    script: serve\n    env:\n      PM2_SERVE_PATH: dist\n      PM2_SERVE_PORT: {port}\n      PM2_SERVE_SPA: 'true'\n      PM2_SERVE_BASIC_AUTH: 'true'\n      PM2_SERVE_BASIC_AUTH_USERNAME: user\n      PM2_SERVE_BASIC_AUTH_PASSWORD: pass\n"),
    );
    let r = s.start(&["e.yml"]);
    wait_serving(port);
    r.wait_for("Exposing", Duration::from_secs(5));

    let (code, head, _) = request(port, "/", "");
    assert_eq!(code, 401, "{head}");
    assert!(header(&head, "WWW-Authenticate").is_some_and(|v| v.starts_with("Basic ")), "{head}");
    assert_eq!(request(port, "/", "Authorization: Basic dXNlcjp3cm9uZw==\r\n").0, 401, "wrong password");

    let (code, head, body) = request(port, "/", AUTH);
    assert_eq!((code, body.as_str()), (200, "<h1>home</h1>"), "{head}");
    assert!(header(&head, "Content-Type").is_some_and(|t| t.starts_with("text/html")), "{head}");
    assert_eq!(header(&head, "Access-Control-Allow-Origin"), Some("*"));
    let (code, head, body) = request(port, "/app.js", AUTH);
    assert_eq!((code, body.as_str()), (200, "console.log(1)"));
    assert!(header(&head, "Content-Type").is_some_and(|t| t.starts_with("text/javascript")), "{head}");
    // SPA: an unknown route gets the homepage.
    assert_eq!(request(port, "/some/client/route", AUTH).2, "<h1>home</h1>");

    for evil in ["/../secret.txt", "/%2e%2e/secret.txt", "/%2e%2e%2fsecret.txt", "/..%2f..%2fetc/passwd", "/up/secret.txt", "/leak.txt"] {
        let (code, _, body) = request(port, evil, AUTH);
        assert_eq!(code, 403, "{evil}: {body}");
        assert!(!body.contains("TOP-SECRET") && !body.contains("root:"), "{evil}: {body}");
    }

    // Supervised like any app: online in jlist, with the interpreter that runs it.
    let (_, out, _) = s.cli(&["jlist"]);
    let ps: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ps[0]["name"], "web");
    assert_eq!(ps[0]["pm2_env"]["status"], "online");
}

#[test]
fn serve_command_path_port_404_and_bad_requests() {
    let port = free_port();
    let s = site(Scenario::new());
    let r = s.start(&["serve", "dist", &port.to_string()]);
    wait_serving(port);
    r.wait_for("static-page-server-", Duration::from_secs(5));
    assert_eq!(request(port, "/", "").2, "<h1>home</h1>");
    let (code, head, _) = request(port, "/style.css", "");
    assert_eq!(code, 200);
    assert!(header(&head, "Content-Type").is_some_and(|t| t.starts_with("text/css")), "{head}");
    let (code, _, body) = request(port, "/missing.png", "");
    assert_eq!((code, body.as_str()), (404, "custom not found"), "no SPA: the root's 404.html");
    assert_eq!(request(port, "/%zz", "").0, 400);
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    assert_eq!(request(port, "/", &big).0, 431);
    let mut post = TcpStream::connect(("127.0.0.1", port)).unwrap();
    post.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    post.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    // Still serving after all that.
    assert_eq!(request(port, "/app.js", "").0, 200);
}

/// PM2's top-level `static` section: each entry is a static server app.
#[test]
fn static_section_runs_static_servers() {
    let port = free_port();
    let s = site(Scenario::new()).file("e.yml", &format!("apps: []\nstatic:\n  - path: dist\n    port: {port}\n    spa: true\n"));
    let _r = s.start(&["e.yml"]);
    wait_serving(port);
    assert_eq!(request(port, "/client/route", "").2, "<h1>home</h1>");
    let (_, out, _) = s.cli(&["jlist"]);
    let ps: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ps[0]["name"], format!("static-page-server-{port}"));
}
