//! The git branch, commit and remote of an app's directory, as PM2's metadata shows them: read
//! as files (`.git/HEAD`, refs, `packed-refs`, `config`), never by running git. Read only when a
//! viewer asks (`monit`, the dashboard's app view).
//!
//! Must never: show credentials (a remote's `user:password@` is removed); block or read much
//! (the runtime's HTTP thread calls it: only regular files are read, at most [`MAX_READ`]
//! bytes each, so a FIFO or a device planted as `.git/HEAD` cannot hang supervision).

use std::io::Read;
use std::path::{Path, PathBuf};

/// Most bytes read from one file (a large `packed-refs` is cut: its ref may then be missed).
pub const MAX_READ: u64 = 1 << 20;

/// A regular file's text (following symlinks), at most [`MAX_READ`] bytes; `None` otherwise.
fn read_small(path: &Path) -> Option<String> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_READ).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The git state of a directory, as PM2's metadata pane shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Git {
    /// `None` when HEAD is detached.
    pub branch: Option<String>,
    /// The full commit hash, when it could be resolved.
    pub commit: Option<String>,
    /// The `origin` remote's URL, else the first remote's.
    pub remote: Option<String>,
}

/// The repository `dir` is in (its own or a parent's `.git`), read as files.
pub fn git(dir: &Path) -> Option<Git> {
    let (git_dir, common) = find_git_dir(dir)?;
    let head = read_small(&git_dir.join("HEAD"))?;
    let head = head.trim();
    let (branch, commit) = match head.strip_prefix("ref: ") {
        Some(r) => {
            let r = r.trim();
            let branch = r.strip_prefix("refs/heads/").unwrap_or(r).to_string();
            (Some(branch), resolve_ref(&git_dir, &common, r))
        }
        None => (None, Some(head.to_string())),
    };
    let remote = read_small(&common.join("config")).and_then(|c| remote_url(&c));
    Some(Git { branch, commit, remote })
}

/// `.git` as a directory, or as a file naming one (worktrees, submodules); with the common dir
/// where refs and config live (`commondir` in a worktree's git dir).
fn find_git_dir(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    for d in dir.ancestors() {
        let dot = d.join(".git");
        let git_dir = if dot.is_dir() {
            dot
        } else if dot.is_file() {
            let text = read_small(&dot)?;
            let p = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
            if p.is_absolute() { p } else { d.join(p) }
        } else {
            continue;
        };
        let common = match read_small(&git_dir.join("commondir")) {
            Some(c) => {
                let p = PathBuf::from(c.trim());
                if p.is_absolute() { p } else { git_dir.join(p) }
            }
            None => git_dir.clone(),
        };
        return Some((git_dir, common));
    }
    None
}

/// A ref's commit: its loose file, else its line in `packed-refs`.
fn resolve_ref(git_dir: &Path, common: &Path, name: &str) -> Option<String> {
    for d in [git_dir, common] {
        if let Some(t) = read_small(&d.join(name)) {
            return Some(t.trim().to_string());
        }
    }
    let packed = read_small(&common.join("packed-refs"))?;
    packed_ref(&packed, name)
}

fn packed_ref(packed: &str, name: &str) -> Option<String> {
    packed.lines().filter(|l| !l.starts_with('#') && !l.starts_with('^')).find_map(|l| {
        let (hash, r) = l.split_once(' ')?;
        (r.trim() == name).then(|| hash.to_string())
    })
}

/// The `url` of `[remote "origin"]`, else of the first remote.
fn remote_url(config: &str) -> Option<String> {
    let mut section = String::new();
    let mut first = None;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() != "url" || !section.starts_with("[remote ") {
            continue;
        }
        let url = v.trim().to_string();
        let url = without_credentials(&url);
        if section == "[remote \"origin\"]" {
            return Some(url);
        }
        first.get_or_insert(url);
    }
    first
}

/// `https://user:token@host/x` → `https://host/x` (scp-like `git@host:x` is kept).
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_refs_and_remotes() {
        let packed = "# pack-refs with: peeled\nabc123 refs/heads/main\n^def456\n999 refs/tags/v1\n";
        assert_eq!(packed_ref(packed, "refs/heads/main").as_deref(), Some("abc123"));
        assert_eq!(packed_ref(packed, "refs/heads/other"), None);
        let cfg = "[core]\n\turl = no\n[remote \"upstream\"]\n\turl = https://u/x.git\n[remote \"origin\"]\n\turl = git@h:o/r.git\n";
        assert_eq!(remote_url(cfg).as_deref(), Some("git@h:o/r.git"));
        assert_eq!(remote_url("[remote \"upstream\"]\nurl=https://u\n").as_deref(), Some("https://u"));
        assert_eq!(remote_url("[core]\n"), None);
        assert_eq!(
            remote_url("[remote \"origin\"]\nurl = https://bob:s3cret@example.org/r.git\n").as_deref(),
            Some("https://example.org/r.git")
        );
        assert_eq!(without_credentials("git@host:o/r.git"), "git@host:o/r.git");
    }

    #[test]
    fn git_of_a_subdirectory_a_detached_head_and_a_worktree() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".git");
        std::fs::create_dir_all(g.join("refs/heads")).unwrap();
        std::fs::write(g.join("HEAD"), "ref: refs/heads/feature/x\n").unwrap();
        std::fs::create_dir_all(g.join("refs/heads/feature")).unwrap();
        std::fs::write(g.join("refs/heads/feature/x"), "0123abcd\n").unwrap();
        std::fs::write(g.join("config"), "[remote \"origin\"]\n\turl = https://example.org/r.git\n").unwrap();
        let sub = d.path().join("app/src");
        std::fs::create_dir_all(&sub).unwrap();
        let got = git(&sub).unwrap();
        assert_eq!(got.branch.as_deref(), Some("feature/x"));
        assert_eq!(got.commit.as_deref(), Some("0123abcd"));
        assert_eq!(got.remote.as_deref(), Some("https://example.org/r.git"));

        // A worktree: `.git` is a file, refs live in the common dir.
        let wt = d.path().join("wt");
        let wt_git = g.join("worktrees/wt");
        std::fs::create_dir_all(&wt_git).unwrap();
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join(".git"), format!("gitdir: {}\n", wt_git.display())).unwrap();
        std::fs::write(wt_git.join("HEAD"), "ref: refs/heads/feature/x\n").unwrap();
        std::fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        let got = git(&wt).unwrap();
        assert_eq!(got.commit.as_deref(), Some("0123abcd"));
        assert_eq!(got.remote.as_deref(), Some("https://example.org/r.git"));

        std::fs::write(g.join("HEAD"), "fedcba98\n").unwrap();
        let got = git(&sub).unwrap();
        assert_eq!((got.branch, got.commit.as_deref()), (None, Some("fedcba98")));
        let none = tempfile::tempdir().unwrap();
        assert_eq!(git(none.path()), None);

        // A FIFO as HEAD is not read (reading it would block until a writer comes).
        std::fs::remove_file(g.join("HEAD")).unwrap();
        nix::unistd::mkfifo(&g.join("HEAD"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(git(&sub), None);
    }
}
