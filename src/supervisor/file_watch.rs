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

use notify::{Config, Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{App, Watch};

const MIN_QUIET: Duration = Duration::from_millis(200);

/// Decides which paths do not count.
pub struct Ignore {
    base: PathBuf,
    /// Glob patterns, `{a,b}` alternatives expanded.
    globs: Vec<Vec<char>>,
    plain: Vec<String>,
    defaults: bool,
    exact: Vec<PathBuf>,
}

impl Ignore {
    pub fn new(base: &Path, patterns: &[String], exact: Vec<PathBuf>) -> Self {
        let mut globs = Vec::new();
        let mut plain = Vec::new();
        for p in patterns {
            let p = p.trim_start_matches("./").trim_end_matches('/');
            if p.contains(['*', '?', '[', '{']) {
                globs.extend(expand_braces(p).iter().flat_map(|g| compile_glob(g)));
            } else if !p.is_empty() {
                plain.push(p.to_string());
            }
        }
        Self { base: base.to_path_buf(), globs, plain, defaults: patterns.is_empty(), exact }
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
        let name = path.file_name().map(|n| n.to_string_lossy().chars().collect::<Vec<char>>());
        let rel: Vec<char> = rel_str.chars().collect();
        self.globs.iter().any(|g| glob_match(g, &rel) || name.as_ref().is_some_and(|n| glob_match(g, n)))
    }
}

/// `a{b,c}d` → `abd`, `acd` (alternatives may nest).
fn expand_braces(p: &str) -> Vec<String> {
    let Some(open) = p.find('{') else { return vec![p.to_string()] };
    // The matching close brace, and the top-level commas in between.
    let (mut depth, mut close, mut commas) = (0, None, Vec::new());
    for (i, c) in p.char_indices().skip_while(|&(i, _)| i < open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else { return vec![p.to_string()] };
    let (head, tail) = (&p[..open], &p[close + 1..]);
    let mut cuts = vec![open];
    cuts.extend(commas);
    cuts.push(close);
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let alt = &p[w[0] + 1..w[1]];
        out.extend(expand_braces(&format!("{head}{alt}{tail}")));
    }
    out
}

/// Shell-style glob match of the whole `text`: `*` any run of characters (`/` included), `?` one
/// character, `[abc]`, `[a-z]`, `[!x]`/`[^x]` one character of (or not of) a set; anything else,
/// and an unclosed `[`, literally. Linear backtracking (one star remembered): no pattern makes
/// it slow.
fn glob_match(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => match class_end(&p[pi..]) {
                Some(end) => class_has(&p[pi + 1..pi + end], t[ti]).then_some(end + 1),
                None => (t[ti] == '[').then_some(1),
            },
            Some(&c) => (c == t[ti]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(n), _) => {
                pi += n;
                ti += 1;
            }
            // Mismatch: the last star takes one more character.
            (None, Some((after, from))) => {
                pi = after;
                ti = from + 1;
                star = Some((after, from + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A glob as matched: `**` is `*` (which crosses `/` anyway), and each `**/` may also match no
/// directory at all, so `src/**/*.js` also gives `src/*.js`.
fn compile_glob(p: &str) -> Vec<Vec<char>> {
    let mut out = vec![String::new()];
    let mut rest = p;
    while let Some(i) = rest.find("**/") {
        let head = &rest[..i];
        out = out.into_iter().flat_map(|o| [format!("{o}{head}*/"), format!("{o}{head}")]).collect();
        rest = &rest[i + 3..];
    }
    out.into_iter().map(|o| format!("{o}{rest}").replace("**", "*").chars().collect()).collect()
}

/// Index of the `]` closing the class that starts `p` (a `]` right after `[`, `[!` or `[^` is a
/// member).
fn class_end(p: &[char]) -> Option<usize> {
    let mut i = 1;
    if matches!(p.get(i), Some('!' | '^')) {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1;
    }
    p[i..].iter().position(|&c| c == ']').map(|j| i + j)
}

/// Whether `c` is in the class body (between the brackets).
fn class_has(body: &[char], c: char) -> bool {
    let (negated, body) = match body.first() {
        Some('!' | '^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            hit |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    hit != negated
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

    #[test]
    fn globs() {
        let table: [(&str, &str, bool); 25] = [
            ("*.log", "a.log", true),
            ("*.log", "logs/a.log", true),
            ("*.log", "a.log.1", false),
            ("*.{js,ts}", "src/a.ts", true),
            ("*.{js,ts}", "src/a.css", false),
            ("src/**/*.js", "src/a.js", true),
            ("src/**/*.js", "src/x/y/a.js", true),
            ("src/**/*.js", "lib/a.js", false),
            ("**/tmp", "tmp", true),
            ("**/tmp", "a/b/tmp", true),
            ("logs/**", "logs/a/b", true),
            ("a/**/b/**/c", "a/b/c", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[ab]x", "bx", true),
            ("[ab]x", "cx", false),
            ("[!ab]x", "cx", true),
            ("[^ab]x", "ax", false),
            ("v[0-9]", "v7", true),
            ("v[0-9]", "vx", false),
            ("[]]", "]", true),
            ("a[b", "a[b", true),
            ("{a,b{c,d}}.txt", "bd.txt", true),
            ("{a,b{c,d}}.txt", "b.txt", false),
            ("*", "", true),
        ];
        // No pattern is slow: many stars against a long path that almost matches.
        let long: Vec<char> = "a".repeat(4000).chars().collect();
        let t0 = std::time::Instant::now();
        assert!(!glob_match(&"*a*a*a*a*a*a*a*a*b".chars().collect::<Vec<_>>(), &long));
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        for (pattern, text, want) in table {
            let chars: Vec<char> = text.chars().collect();
            let matched = expand_braces(pattern).iter().flat_map(|g| compile_glob(g)).any(|g| glob_match(&g, &chars));
            assert_eq!(matched, want, "{pattern} against {text}");
        }
    }
}
