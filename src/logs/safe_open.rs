//! Opening a log or pid file without following a symlink another user planted.
//!
//! The runtime often runs as root and writes where the configuration says, sometimes in a
//! shared directory (`/tmp`, a volume) or one another user created first. A final symlink there
//! is followed only when it cannot be someone else's trap (the rule of the kernel's
//! `protected_symlinks`, of systemd-tmpfiles and of logrotate, applied whatever the host's
//! sysctl says, and stricter):
//! - the link belongs to the runtime's own uid, or
//! - the link belongs to the owner of its directory, that owner is the runtime's uid or root,
//!   and nobody else may write in that directory (no group/other write bit). A link of
//!   another user in that user's own directory is refused: it could point at any of our files.
//!
//! Hard links are not symlinks (`O_NOFOLLOW` does not see them), so what was opened is checked
//! too ([`may_write`]): a file with more than one link is refused unless its directory is ours
//! alone (with the host's `protected_hardlinks=0`, anyone can hard-link a root file into
//! `/tmp`), and in a directory others may write to, a file of another user is refused (it
//! would read what the apps print). Nothing is truncated before that check: callers that
//! empty a file do it on the checked descriptor.
//!
//! Anything else is refused with an error that says which file, whose, and why. `/dev/stdout`
//! (root's link in root's `/dev`) is followed by anyone. Intermediate directories are not
//! checked: the configuration names them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` with `opts` (which should create the file if needed), following a final
/// symlink only as the module doc says.
pub fn open(path: &Path, opts: &OpenOptions) -> io::Result<File> {
    let mut nofollow = opts.clone();
    nofollow.custom_flags(libc::O_NOFOLLOW);
    let first = match nofollow.open(path) {
        Ok(f) => return checked(path, f),
        Err(e) => e,
    };
    // ELOOP, or EACCES in a sticky directory: is the final component a symlink to judge?
    let link = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => m,
        _ => return Err(first),
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir_meta = std::fs::metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if let Err(why) = may_follow(me, link.uid(), dir_meta.uid(), dir_meta.mode()) {
        let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to follow the symlink {} -> {target}: {why}", path.display()),
        ));
    }
    checked(path, opts.open(path)?)
}

/// `file`, opened at `path`, if [`may_write`] allows it.
fn checked(path: &Path, file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        // /dev/stdout, a pipe: no link count to judge.
        return Ok(file);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir_meta = std::fs::metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    may_write(me, meta.uid(), meta.nlink(), dir_meta.uid(), dir_meta.mode())
        .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, format!("refusing to write to {}: {why}", path.display())))?;
    Ok(file)
}

/// Why an opened file is not written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileRefusal {
    #[error(
        "it has {links} hard links, in a directory that is not this runtime's alone (owner uid {dir_uid}, mode {:o}): it may be another file's second name; remove it or use another path",
        dir_mode & 0o7777
    )]
    HardLinked { links: u64, dir_uid: u32, dir_mode: u32 },
    #[error(
        "it belongs to uid {file_uid}, not to this runtime (uid {me}), in a directory others may write to (mode {:o}); remove it or use another path",
        dir_mode & 0o7777
    )]
    ForeignFile { file_uid: u32, me: u32, dir_mode: u32 },
}

/// The policy for what was opened, as a pure function: may a process of uid `me` write to a
/// regular file owned by `file_uid` with `links` hard links, in a directory owned by `dir_uid`
/// with mode `dir_mode`?
pub fn may_write(me: u32, file_uid: u32, links: u64, dir_uid: u32, dir_mode: u32) -> Result<(), FileRefusal> {
    let shared = dir_mode & 0o022 != 0;
    if links > 1 && (dir_uid != me || shared) {
        return Err(FileRefusal::HardLinked { links, dir_uid, dir_mode });
    }
    if shared && file_uid != me {
        return Err(FileRefusal::ForeignFile { file_uid, me, dir_mode });
    }
    Ok(())
}

/// Why a symlink is not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "it belongs to uid {link_uid}, not to this runtime (uid {me}), in a directory others may write to (mode {:o}); remove it or use another path",
        dir_mode & 0o7777
    )]
    SharedDirectory { link_uid: u32, me: u32, dir_mode: u32 },
    #[error(
        "it belongs to uid {link_uid}, neither this runtime (uid {me}) nor the directory's owner (uid {dir_uid}); remove it or use another path"
    )]
    ForeignOwner { link_uid: u32, me: u32, dir_uid: u32 },
}

/// The policy as a pure function: may a process of uid `me` follow a symlink owned by
/// `link_uid` in a directory owned by `dir_uid` with mode `dir_mode`?
pub fn may_follow(me: u32, link_uid: u32, dir_uid: u32, dir_mode: u32) -> Result<(), Refusal> {
    let shared = dir_mode & 0o022 != 0;
    if link_uid == me || (link_uid == dir_uid && (dir_uid == me || dir_uid == 0) && !shared) {
        return Ok(());
    }
    Err(if shared { Refusal::SharedDirectory { link_uid, me, dir_mode } } else { Refusal::ForeignOwner { link_uid, me, dir_uid } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_rule() {
        let table = [
            // (me, link, dir owner, dir mode, followed)
            (0, 0, 0, 0o755, true),          // root's own link
            (0, 65534, 0, 0o1777, false),    // another user's link in /tmp
            (0, 65534, 0, 0o777, false),     // …or in any world-writable directory
            (0, 65534, 0, 0o775, false),     // …or group-writable
            (0, 65534, 65534, 0o755, false), // another user's link in their own directory
            (0, 65534, 65534, 0o1777, false),
            (1000, 0, 0, 0o755, true),     // /dev/stdout for a non-root runtime
            (1000, 1000, 0, 0o1777, true), // our own link in /tmp
            (1000, 1001, 0, 0o755, false),
            (1000, 1001, 1001, 0o755, false),
        ];
        for (me, link, dir, mode, want) in table {
            assert_eq!(may_follow(me, link, dir, mode).is_ok(), want, "me={me} link={link} dir={dir} mode={mode:o}");
        }
        assert_eq!(
            may_follow(0, 65534, 0, 0o1777).unwrap_err().to_string(),
            "it belongs to uid 65534, not to this runtime (uid 0), in a directory others may write to (mode 1777); remove it or use another path"
        );
        assert_eq!(may_follow(1000, 1001, 0, 0o755).unwrap_err(), Refusal::ForeignOwner { link_uid: 1001, me: 1000, dir_uid: 0 });
        assert_eq!(
            may_follow(1000, 1001, 0, 0o755).unwrap_err().to_string(),
            "it belongs to uid 1001, neither this runtime (uid 1000) nor the directory's owner (uid 0); remove it or use another path"
        );
    }

    #[test]
    fn write_rule() {
        let table = [
            // (me, file owner, links, dir owner, dir mode, written)
            (0, 0, 1, 0, 0o755, true),
            (0, 0, 2, 0, 0o755, true),      // our own directory: our own links
            (0, 0, 2, 0, 0o1777, false),    // a second name of a root file, in /tmp
            (0, 0, 2, 65534, 0o755, false), // …or in another user's directory
            (0, 65534, 1, 65534, 0o755, true),
            (0, 65534, 1, 0, 0o1777, false), // another user's file in /tmp would read the logs
            (1000, 1000, 1, 0, 0o1777, true),
        ];
        for (me, file, links, dir, mode, want) in table {
            assert_eq!(may_write(me, file, links, dir, mode).is_ok(), want, "me={me} file={file} links={links} dir={dir} mode={mode:o}");
        }
        assert_eq!(
            may_write(0, 0, 2, 0, 0o1777).unwrap_err().to_string(),
            "it has 2 hard links, in a directory that is not this runtime's alone (owner uid 0, mode 1777): it may be another file's second name; remove it or use another path"
        );
    }

    #[test]
    fn opens_files_and_trusted_links_refuses_planted_ones() {
        let d = tempfile::tempdir().unwrap();
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        open(&d.path().join("plain.log"), &opts).unwrap();
        // Our own link is followed.
        std::fs::write(d.path().join("target"), "").unwrap();
        std::os::unix::fs::symlink(d.path().join("target"), d.path().join("mine.log")).unwrap();
        open(&d.path().join("mine.log"), &opts).unwrap();
        // Another user's link in a world-writable directory is not (the test runs as root; as
        // another user lchown fails and this part proves nothing, so it is required to pass).
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let planted = shared.join("out.log");
        std::os::unix::fs::symlink(d.path().join("target"), &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).expect("the tests run as root");
        let e = open(&planted, &opts).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("refusing to follow the symlink") && e.to_string().contains("uid 65534"), "{e}");
    }
}
