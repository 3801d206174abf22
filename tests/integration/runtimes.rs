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
