//! Two cluster apps on one port: PM2's single Node cluster primary shares the socket between
//! them; so does pm-runtime.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::scenario::*;

fn app(tag: &str) -> String {
    format!(
        "require('http').createServer((q, r) => r.end('{tag} ' + process.pid)).listen(process.env.PORT, () => console.log('{tag} listening'));\n"
    )
}

#[test]
fn two_cluster_apps_share_one_port() {
    let port = free_port();
    let s = Scenario::new().file("api.js", &app("api")).file("web.js", &app("web")).file(
        "e.yml",
        &format!(
            "apps:\n  - name: api\n    script: api.js\n    exec_mode: cluster\n    instances: 2\n    env:\n      PORT: {port}\n  - name: web\n    script: web.js\n    exec_mode: cluster\n    instances: 2\n    env:\n      PORT: {port}\n"
        ),
    );
    let r = s.start(&["e.yml"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while r.stdout().matches("online (listening").count() < 4 {
        assert!(Instant::now() < deadline, "four workers did not come online:\n{}\n{}", r.stdout(), r.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 {
        assert!(Instant::now() < deadline, "not every worker answered: {seen:?}");
        if let Some(body) = http_get(port) {
            seen.insert(body);
        }
    }
    let apps: BTreeSet<&str> = seen.iter().filter_map(|b| b.split(' ').next()).collect();
    assert_eq!(apps, BTreeSet::from(["api", "web"]), "{seen:?}");
    assert!(!r.stderr().contains("EADDRINUSE") && !r.stdout().contains("errored"), "{}\n{}", r.stdout(), r.stderr());
}
