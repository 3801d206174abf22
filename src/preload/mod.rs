//! The preload given to Node apps (`node --require $PM2_HOME/pm-runtime-preload.cjs …`): the
//! behaviour PM2's process container wraps around an app, which apps rely on without knowing
//! it (an unhandled rejection is logged and not fatal, an uncaught exception is logged and
//! exits 1, `process.title`), plus the keep-alive drain of a retiring cluster worker. The
//! script itself is `preload.js`, embedded in the binary and written to PM2_HOME at start.
//!
//! Apps whose interpreter is `node` or `bun` get it, and `deno` when allowed to read the
//! environment (not shell commands); per app, `pm_runtime_preload: false` turns it off and the
//! runtime's defaults apply.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{App, JsRuntime};

/// The file name in PM2_HOME. `.cjs`, so Node loads it as CommonJS whatever the nearest
/// `package.json` says: a PM2_HOME inside an ESM project (`"type": "module"`) would otherwise
/// make a `.js` preload an ES module, where `require` does not exist and every app dies at start.
pub const FILE_NAME: &str = "pm-runtime-preload.cjs";

/// The preload's source.
pub const SOURCE: &str = include_str!("preload.js");

/// The hang watchdog's part of the preload (see the end of `preload.js`): the env variable that
/// turns its heartbeat on (milliseconds of `watchdog`), and the IPC message type of a heartbeat.
pub const WATCHDOG_ENV: &str = "PM_RUNTIME_WATCHDOG_MS";
pub const HEARTBEAT: &str = "pm-runtime:heartbeat";

/// The IPC message type the preload sends once the app's main module has run (its servers
/// listen, or in a cluster worker have asked to): the start schedule's "up" (`supervisor::schedule`).
pub const STARTED: &str = "pm-runtime:started";

/// True when `app` is started with the preload: a Node or Bun app (Bun takes `--require` as
/// its `--preload`), or a Deno app allowed to read the environment (`-A`, `--allow-all`,
/// `--allow-env`: the preload reads it, and Deno would stop the app otherwise), that did not
/// turn it off. Not shell commands nor other interpreters.
pub fn wants(app: &App) -> bool {
    let allowed = match app.command.js_runtime() {
        Some(JsRuntime::Node | JsRuntime::Bun) => true,
        Some(JsRuntime::Deno) => app.interpreter_args.iter().any(|a| matches!(a.as_str(), "-A" | "--allow-all" | "--allow-env")),
        None => false,
    };
    app.pm_runtime_preload && allowed
}

/// The node arguments with the preload in front: `--require <preload> <node_args…> <script> <args…>`.
/// Before the app's own `node_args`, so ours is loaded first (its handlers are registered
/// before any other preload's).
pub fn with_preload(argv: &[String], preload: &Path) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 2);
    out.push("--require".to_string());
    out.push(preload.to_string_lossy().into_owned());
    out.extend(argv.iter().cloned());
    out
}

/// True when `app` is started with the preload (it was installed and put on its command line).
pub fn given(app: &App) -> bool {
    matches!(app.command.argv.as_slice(), [flag, path, ..] if flag == "--require" && path.ends_with(FILE_NAME))
}

/// Writes the preload into `dir` (created if needed) unless it is already there with the same
/// content, mode 0644 (apps may run as another uid), through [`replace_file`].
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(FILE_NAME);
    if std::fs::read(&path).is_ok_and(|old| old == SOURCE.as_bytes()) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    replace_file(&path, SOURCE.as_bytes(), 0o644)?;
    Ok(path)
}

/// Replaces `path` with a file holding `bytes` (mode `mode`), atomically: a temporary file in
/// the same directory, renamed over it. The temporary name is random and the file is created
/// with `O_EXCL|O_NOFOLLOW`, so a name planted in advance (a symlink to another file, or
/// anything else) makes the write fail instead of writing through it; `rename` replaces a
/// symlink at `path` itself, never its target.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())));
    };
    let random = crate::ids::uuid_v4();
    let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), &random[..18]));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The creation mode is masked by the umask: set it exactly, on the file we created.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Installs the preload if any app wants it and adds it to those apps' command lines: in
/// `home` (PM2_HOME, mode 0700), or for apps that run as another user (`uid`/`gid`) in a
/// directory of ours that they can read ([`shared_dir`]). If it cannot be written, the apps run
/// without it, with a warning saying what that means.
pub fn apply(apps: &mut [App], home: &Path) {
    let mut installed: [Option<Option<PathBuf>>; 2] = [None, None];
    for app in apps.iter_mut().filter(|a| wants(a)) {
        let other_user = app.uid.is_some() || app.gid.is_some();
        let slot = &mut installed[usize::from(other_user)];
        let path = slot.get_or_insert_with(|| {
            let dir = if other_user { shared_dir() } else { Ok(home.to_path_buf()) };
            match dir.and_then(|d| install(&d)) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(
                        "cannot write {FILE_NAME}: {e}; Node apps{} run without pm-runtime's preload (an unhandled rejection ends them, as in plain Node)",
                        if other_user { " with uid/gid" } else { "" }
                    );
                    None
                }
            }
        });
        if let Some(p) = path {
            app.command.argv = with_preload(&app.command.argv, p);
        }
    }
}

/// A directory only we can write and everyone can read, for apps that run as another user:
/// `$TMPDIR/pm-runtime-<euid>`, mode 0755, refused if it exists and is not ours, is a symlink,
/// or is writable by others.
fn shared_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let euid = nix::unistd::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("pm-runtime-{euid}"));
    match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!("{} is not a directory of ours (or others can write it)", dir.display())));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which runtime gets the preload: node and bun always, deno only when allowed to read env.
    #[test]
    fn wants_by_runtime_and_permission() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.yml");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        for name in ["node", "bun", "deno", "python3"] {
            std::fs::write(bin.join(name), "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(dir.path().join("a.js"), "1").expect("script");
        for (interpreter, args, off, want) in [
            ("node", "[]", false, true),
            ("bun", "[]", false, true),
            ("deno", "[]", false, false),
            ("deno", "[--allow-net]", false, false),
            ("deno", "[-A]", false, true),
            ("deno", "[--allow-all]", false, true),
            ("deno", "[--allow-env, --allow-net]", false, true),
            ("python3", "[]", false, false),
            ("node", "[]", true, false),
        ] {
            let yaml = format!(
                "apps:\n  - name: a\n    script: {}\n    interpreter: {}\n    node_args: {args}\n    pm_runtime_preload: {}\n",
                dir.path().join("a.js").display(),
                bin.join(interpreter).display(),
                !off
            );
            std::fs::write(&path, yaml).expect("write");
            let eco = crate::config::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(wants(&eco.apps[0]), want, "{interpreter} {args} off={off}");
        }
    }

    #[test]
    fn preload_goes_before_node_args_and_script() {
        let argv: Vec<String> = ["--max-old-space-size=64", "/app/server.js", "--port", "1"].map(String::from).to_vec();
        let out = with_preload(&argv, Path::new("/h/pm-runtime-preload.cjs"));
        assert_eq!(out, ["--require", "/h/pm-runtime-preload.cjs", "--max-old-space-size=64", "/app/server.js", "--port", "1"]);
    }

    #[test]
    fn the_preload_sends_the_message_types_the_runtime_reads() {
        for kind in [HEARTBEAT, STARTED] {
            assert!(SOURCE.contains(&format!("type: '{kind}'")), "{kind}");
        }
    }

    #[test]
    fn shared_dir_is_ours_and_readable_by_everyone() {
        use std::os::unix::fs::MetadataExt;
        let dir = shared_dir().expect("shared dir");
        assert_eq!(shared_dir().expect("again"), dir);
        let meta = std::fs::symlink_metadata(&dir).expect("meta");
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o755);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn install_writes_once_and_replaces_a_stale_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let p = install(&home).expect("install");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), SOURCE);
        assert_eq!(std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777, 0o644);
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).expect("meta"));
        // Same content: left alone.
        install(&home).expect("again");
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).expect("meta")), inode);
        // Stale content: replaced.
        std::fs::write(&p, "old").expect("write");
        install(&home).expect("replace");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), SOURCE);
        assert_eq!(std::fs::read_dir(&home).expect("dir").count(), 1, "no temporary file left behind");
    }

    #[test]
    fn replace_file_never_writes_through_a_link() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        // The old predictable temporary names, and the target itself, all point at the victim.
        for name in [format!(".{FILE_NAME}.{}", std::process::id()), format!(".{FILE_NAME}.1"), FILE_NAME.to_string()] {
            std::os::unix::fs::symlink(&victim, home.join(name)).expect("symlink");
        }
        let p = install(&home).expect("install");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
        assert_eq!(std::fs::metadata(&victim).expect("meta").mode() & 0o777, 0o600);
        assert!(!std::fs::symlink_metadata(&p).expect("meta").file_type().is_symlink(), "the link itself was replaced");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), SOURCE);
    }
}
