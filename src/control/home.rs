//! Whose `PM2_HOME` it is. The control socket lives there, so whoever may write in it can
//! replace the socket and impersonate the runtime to its clients (and receive the ecosystems
//! `startOrRestart` sends). The runtime and the client verbs therefore use a `PM2_HOME` only
//! if it belongs to their own uid. A `PM2_HOME` that is a symlink is used through the link
//! (its target must be ours too, and writable by nobody else) and its target's mode is left
//! alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What `PM2_HOME` is on disk, once found acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// Does not exist yet: the runtime creates it (mode 0700).
    Missing,
    /// A directory of ours: the runtime may restrict it to 0700.
    Own,
    /// A symlink to a directory of ours: used as is, its target's mode untouched.
    Link,
}

/// Why a `PM2_HOME` is not used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot inspect PM2_HOME {}: {source}", path.display())]
    Inspect { path: PathBuf, source: std::io::Error },
    #[error("PM2_HOME {} is a symlink that leads nowhere usable: {source}", path.display())]
    DanglingLink { path: PathBuf, source: std::io::Error },
    #[error("PM2_HOME {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "PM2_HOME {} belongs to uid {owner}, not to this user (uid {me}): that user could replace the control socket, so it is not used; chown it or set PM2_HOME to a directory you own",
        path.display()
    )]
    NotOurs { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "PM2_HOME {} is a symlink to a directory others may write to (mode {mode:o}): they could replace the control socket and the preload every Node app loads; chmod go-w it or set PM2_HOME elsewhere",
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Checks that `PM2_HOME` is ours (`me` is the effective uid).
pub fn check(pm2_home: &Path, me: u32) -> Result<Home, HomeError> {
    let path = || pm2_home.to_path_buf();
    let lmeta = match std::fs::symlink_metadata(pm2_home) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Home::Missing),
        Err(source) => return Err(HomeError::Inspect { path: path(), source }),
    };
    let (kind, meta) = if lmeta.file_type().is_symlink() {
        match std::fs::metadata(pm2_home) {
            Ok(m) => (Home::Link, m),
            Err(source) => return Err(HomeError::DanglingLink { path: path(), source }),
        }
    } else {
        (Home::Own, lmeta)
    };
    if !meta.is_dir() {
        return Err(HomeError::NotADirectory { path: path() });
    }
    if meta.uid() != me {
        return Err(HomeError::NotOurs { path: path(), owner: meta.uid(), me });
    }
    // A directory of ours is made 0700 by the runtime; a link's target is left as it is, so it
    // must already be private enough.
    if kind == Home::Link && meta.mode() & 0o022 != 0 {
        return Err(HomeError::Writable { path: path(), mode: meta.mode() & 0o7777 });
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_and_links() {
        let d = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let home = d.path().join("home");
        assert_eq!(check(&home, me).unwrap(), Home::Missing);
        std::fs::create_dir(&home).unwrap();
        assert_eq!(check(&home, me).unwrap(), Home::Own);
        let e = check(&home, me + 1).unwrap_err();
        assert!(matches!(e, HomeError::NotOurs { owner, .. } if owner == me), "{e}");
        let e = e.to_string();
        assert!(e.contains(&format!("belongs to uid {me}, not to this user (uid {})", me + 1)), "{e}");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&home, &link).unwrap();
        assert_eq!(check(&link, me).unwrap(), Home::Link);
        use std::os::unix::fs::PermissionsExt;
        for mode in [0o775, 0o757, 0o1777] {
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check(&link, me).unwrap_err();
            assert!(matches!(e, HomeError::Writable { mode: m, .. } if m == mode), "{e}");
        }
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&link, me).unwrap(), Home::Link);
        std::fs::write(d.path().join("file"), "").unwrap();
        let e = check(&d.path().join("file"), me).unwrap_err();
        assert!(matches!(e, HomeError::NotADirectory { .. }), "{e}");
        assert_eq!(e.to_string(), format!("PM2_HOME {} is not a directory", d.path().join("file").display()));
    }
}
