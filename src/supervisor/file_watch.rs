//! `watch`: restart every instance of an app when files under its watched paths change.
//!
//! - Directories are registered one by one (non-recursively) while walking the tree, and ignored
//!   trees are never entered: `node_modules` costs no inotify watch. New directories are added
//!   as they appear.
//! - `ignore_watch` replaces PM2's default (dotfiles and `node_modules`). An entry with glob
//!   characters is matched against the path relative to the app's cwd and against the file
//!   name; any other entry matches a path component or a relative path prefix. The app's own
//!   log and pid files are always ignored (else writing a log line would restart the app).
//! - A burst of changes gives one restart: events are collected for `max(watch_delay, 200 ms)`.
//! - `watch_options: { usePolling: true, interval: 1000 }` polls instead of using inotify, for
//!   bind mounts where inotify sees nothing.
//!
//! The watcher only sends the app's index to the coordinator; it never touches a process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{Config, Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{App, Watch};

const MIN_QUIET: Duration = Duration::from_millis(200);

/// Decides which paths do not count.
pub struct Ignore {
    base: PathBuf,
    globs: GlobSet,
    plain: Vec<String>,
    defaults: bool,
    exact: Vec<PathBuf>,
}

impl Ignore {
    pub fn new(base: &Path, patterns: &[String], exact: Vec<PathBuf>) -> Self {
        let mut globs = GlobSetBuilder::new();
        let mut plain = Vec::new();
        for p in patterns {
            let p = p.trim_start_matches("./").trim_end_matches('/');
            if p.contains(['*', '?', '[', '{']) {
                if let Ok(g) = Glob::new(p) {
                    globs.add(g);
                }
            } else if !p.is_empty() {
                plain.push(p.to_string());
            }
        }
        Self {
            base: base.to_path_buf(),
            globs: globs.build().unwrap_or_else(|_| GlobSet::empty()),
            plain,
            defaults: patterns.is_empty(),
            exact,
        }
    }

    pub fn is_ignored(&self, path: &Path) -> bool {
        if self.exact.iter().any(|e| e == path) {
            return true;
        }
        let rel = path.strip_prefix(&self.base).unwrap_or(path);
        let comps: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if self.defaults {
            return comps.iter().any(|c| (c.starts_with('.') && c != "." && c != "..") || c == "node_modules");
        }
        let rel_str = rel.to_string_lossy();
        if self.plain.iter().any(|p| comps.iter().any(|c| c == p) || rel_str == p.as_str() || rel_str.starts_with(&format!("{p}/"))) {
            return true;
        }
        self.globs.is_match(rel) || path.file_name().is_some_and(|n| self.globs.is_match(n))
    }
}

/// The paths an app watches (absolute).
pub fn roots(app: &App) -> Vec<PathBuf> {
    match &app.watch {
        Watch::Off => Vec::new(),
        Watch::Cwd => vec![app.cwd.clone()],
        Watch::Paths(ps) => ps.iter().map(|p| if p.is_absolute() { p.clone() } else { app.cwd.join(p) }).collect(),
    }
}

fn polling(app: &App) -> Option<Duration> {
    let opts = app.watch_options.as_ref()?;
    let on = opts.get("usePolling").and_then(|v| v.as_bool()).unwrap_or(false);
    on.then(|| Duration::from_millis(opts.get("interval").and_then(|v| v.as_u64()).unwrap_or(1000)))
}

/// Registers `dir` and every non-ignored directory below it. Returns how many were added.
fn add_tree(watcher: &mut dyn Watcher, path: &Path, ignore: &Ignore) -> usize {
    if ignore.is_ignored(path) {
        return 0;
    }
    if !path.is_dir() {
        return usize::from(watcher.watch(path, RecursiveMode::NonRecursive).is_ok());
    }
    let mut added = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
            added += 1;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) && !ignore.is_ignored(&p) {
                    stack.push(p);
                }
            }
        }
    }
    added
}

/// Starts watching for `app`; every settled burst of changes sends `app_index` on `restarts`.
pub fn spawn(app_index: usize, app: &App, own_files: Vec<PathBuf>, restarts: mpsc::UnboundedSender<usize>) -> Result<(), notify::Error> {
    let roots = roots(app);
    if roots.is_empty() {
        return Ok(());
    }
    let ignore = Ignore::new(&app.cwd, &app.ignore_watch, own_files);
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<Event>>();
    let handler = move |res| {
        let _ = tx.send(res);
    };
    let mut watcher: Box<dyn Watcher + Send> = match polling(app) {
        Some(every) => Box::new(PollWatcher::new(handler, Config::default().with_poll_interval(every))?),
        None => Box::new(RecommendedWatcher::new(handler, Config::default())?),
    };
    let mut count = 0;
    for r in &roots {
        count += add_tree(watcher.as_mut(), r, &ignore);
    }
    tracing::debug!(app = %app.name, "watching {count} path(s)");
    let name = app.name.clone();
    let quiet = app.watch_delay.max(MIN_QUIET);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let Some(changed) = relevant(&first, &ignore, watcher.as_mut()) else { continue };
            // Collect the rest of the burst.
            let settle = tokio::time::sleep(quiet);
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    _ = &mut settle => break,
                    more = rx.recv() => match more {
                        Some(ev) => { relevant(&ev, &ignore, watcher.as_mut()); }
                        None => return,
                    }
                }
            }
            tracing::info!(app = %name, "Change detected on path {} for app {name} - restarting", changed.display());
            if restarts.send(app_index).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The first non-ignored path of an event (registering new directories on the way).
fn relevant(ev: &notify::Result<Event>, ignore: &Ignore, watcher: &mut dyn Watcher) -> Option<PathBuf> {
    let ev = ev.as_ref().ok()?;
    if matches!(ev.kind, EventKind::Access(_)) {
        return None;
    }
    let mut first = None;
    for p in &ev.paths {
        if ignore.is_ignored(p) {
            continue;
        }
        if matches!(ev.kind, EventKind::Create(_)) && p.is_dir() {
            add_tree(watcher, p, ignore);
        }
        first.get_or_insert_with(|| p.clone());
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_rules() {
        let base = Path::new("/app");
        let default = Ignore::new(base, &[], vec![PathBuf::from("/app/out.log")]);
        let custom = Ignore::new(base, &["client/img".into(), "*.log".into(), "tmp".into()], vec![]);
        let table: [(&Ignore, &str, bool); 10] = [
            (&default, "/app/index.js", false),
            (&default, "/app/node_modules/x/y.js", true),
            (&default, "/app/.git/HEAD", true),
            (&default, "/app/src/.hidden", true),
            (&default, "/app/out.log", true),
            (&custom, "/app/node_modules/x.js", false),
            (&custom, "/app/client/img/a.png", true),
            (&custom, "/app/client/app.js", false),
            (&custom, "/app/logs/a.log", true),
            (&custom, "/app/src/tmp/x", true),
        ];
        for (ig, path, want) in table {
            assert_eq!(ig.is_ignored(Path::new(path)), want, "{path}");
        }
    }
}
