//! Shipping artifacts: the Heroku buildpack run as the platform runs it, `validate` over every
//! example, the Procfile line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenario::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn descendants(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

#[test]
fn heroku_buildpack_detect_compile_release_and_dyno_shutdown() {
    let work = tempfile::tempdir().unwrap();
    let (build, cache, env) = (work.path().join("build"), work.path().join("cache"), work.path().join("env"));
    copy_dir(&repo().join("examples/heroku-app"), &build);
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(env.join("PM_RUNTIME_BINARY_URL"), format!("file://{BIN}")).unwrap();
    let bp = repo().join("heroku/bin");

    let detect = Command::new(bp.join("detect")).arg(&build).output().unwrap();
    assert!(detect.status.success());
    assert_eq!(String::from_utf8_lossy(&detect.stdout).trim(), "pm-runtime");
    let empty = tempfile::tempdir().unwrap();
    assert!(!Command::new(bp.join("detect")).arg(empty.path()).status().unwrap().success(), "detect refuses an unrelated app");

    let compile = Command::new(bp.join("compile")).args([&build, &cache, &env]).output().unwrap();
    assert!(compile.status.success(), "{}", String::from_utf8_lossy(&compile.stderr));
    assert!(build.join(".heroku/pm-runtime/bin/pm-runtime").exists());
    let release = Command::new(bp.join("release")).arg(&build).output().unwrap();
    assert!(String::from_utf8_lossy(&release.stdout).contains("web: pm-runtime start ecosystem.config.yml"));

    // Run the Procfile's web command the way a dyno does: profile scripts, then the command, with PORT.
    let procfile = std::fs::read_to_string(build.join("Procfile")).unwrap();
    let web = procfile.lines().find_map(|l| l.strip_prefix("web:")).unwrap().trim().to_string();
    let port = free_port();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("for f in .profile.d/*.sh; do . \"$f\"; done; exec {web}")])
        .current_dir(&build)
        .env("HOME", &build)
        .env("PORT", port.to_string())
        .env("PM2_HOME", work.path().join("pm2"));
    let mut r = Running::start(cmd);
    let body = wait_http(port, Duration::from_secs(10));
    assert!(body.contains(&format!("port {port}")), "{body}");

    // The dyno manager sends SIGTERM to every process of the dyno at once.
    let t = Instant::now();
    for pid in descendants(r.pid()) {
        // SAFETY: plain kill(2) on processes of this test's own tree.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = r.wait(Duration::from_secs(30)).expect("clean exit well within 30 s");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(status.code(), Some(0), "{}\n{}", r.stdout(), r.stderr());
    assert_eq!(r.stdout().matches("starting in").count(), 1, "nothing restarted during shutdown:\n{}", r.stdout());
}

fn ecosystem_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() && name != "node_modules" {
            ecosystem_files(&p, out);
        } else if name.starts_with("ecosystem") && [".yml", ".yaml", ".json", ".config.js"].iter().any(|x| name.ends_with(x)) {
            out.push(p);
        }
    }
}

#[test]
fn validate_accepts_every_example_and_names_the_broken_field() {
    let mut files = vec![repo().join("ecosystem.config.yml")];
    ecosystem_files(&repo().join("examples"), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        // As their READMEs say: files that name `cwd: examples/…` run from the repository root,
        // the others from their own folder.
        let text = std::fs::read_to_string(f).unwrap();
        let dir = if text.contains("cwd: examples/") || f.parent() == Some(repo().as_path()) {
            repo()
        } else {
            f.parent().unwrap().to_path_buf()
        };
        let out = Command::new(BIN).arg("validate").arg(f).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{}: {}{}", f.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
    let s = Scenario::new().file("app.js", "").file("ecosystem.config.yml", "apps:\n  - name: a\n    script: app.js\n    env:\n      SECRET_TOKEN: hunter2\n  - name: b\n    script: app.js\n    max_restarts: many\n");
    let out = Command::new(BIN).args(["validate", "ecosystem.config.yml"]).current_dir(s.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ecosystem.config.yml:8:19: apps[1].max_restarts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A valid plan lists env keys, never values.
    let s = s.file("ecosystem.config.yml", "apps:\n  - name: a\n    script: app.js\n    env:\n      SECRET_TOKEN: hunter2\n");
    let out = Command::new(BIN).args(["validate", "ecosystem.config.yml"]).current_dir(s.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SECRET_TOKEN") && !text.contains("hunter2"), "{text}");
}

#[test]
fn procfile_line_is_the_documented_one() {
    assert_eq!(std::fs::read_to_string(repo().join("Procfile")).unwrap(), "web: pm-runtime start ecosystem.config.yml\n");
}
