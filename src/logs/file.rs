//! Per-app log files (`out_file`, `error_file`, `log_file`) with built-in size rotation, PM2's
//! default file names, and pid files.
//!
//! Owns: opening (append, parent directories created), writing whole lines, rotating, reopening
//! and truncating one log file; PM2's naming rules as pure functions; writing/removing pid files.
//!
//! Must never: split a line across two files, lose a line at a rotation, write to `/dev/null` /
//! PM2's `NULL` (those are no-op sinks), resolve `~` or relative paths (the caller does that,
//! against the app's cwd), or decide which files an app has (files exist only when configured).
//!
//! Rotation (`log_max_size`, `log_retain`): before a write that would take the file past
//! `max_size`, the file is rotated: `x.log.<retain-1>` → `x.log.<retain>` (the old
//! `x.log.<retain>` is deleted), …, `x.log.1` → `x.log.2`, `x.log` → `x.log.1`, and a fresh
//! `x.log` is opened. So at most `retain + 1` files exist and `.1` is the newest rotated one.
//! `retain == 0` keeps no rotated file (the full file is deleted). Writes are split at line
//! boundaries: as many whole lines as fit go to the current file, the rest after the rotation.
//! A file exceeds `max_size` only when a single line is longer than `max_size` (it then goes
//! alone into a fresh file). `max_size` of `None` or 0 means no rotation.
//!
//! A final symlink is followed only when no other user can have planted it
//! ([`super::safe_open`]); rotation renames and removes links, never their targets.
//!
//! `reopen` follows an external rotation (SIGUSR2 / `reloadLogs`); `truncate` empties the file
//! (`pm2 flush`). If something else truncated the file (logrotate `copytruncate`), the real size
//! is re-read before rotating, so no needless rotation happens.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use crate::config::is_null_path as is_null;
pub use crate::config::{default_pid_file_name, sanitize_name};

#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    /// `None` for a null sink.
    file: Option<File>,
    size: u64,
    max_size: Option<u64>,
    retain: u32,
}

impl FileLog {
    /// Opens `path` for appending, creating missing parent directories. `/dev/null` and `NULL`
    /// give a sink that writes nothing.
    pub fn open(path: &Path, max_size: Option<u64>, retain: u32) -> io::Result<FileLog> {
        let mut log = FileLog { path: path.to_path_buf(), file: None, size: 0, max_size: max_size.filter(|&m| m > 0), retain };
        log.reopen()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_sink(&self) -> bool {
        is_null(&self.path)
    }

    /// Bytes in the current file, as far as this writer knows.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path of rotated file number `n` (`x.log.n`).
    pub fn rotated_path(&self, n: u32) -> PathBuf {
        numbered(&self.path, n)
    }

    /// (Re)opens the path for appending (creating it and its directories): after an external
    /// rotation, on SIGUSR2 / `reloadLogs`.
    pub fn reopen(&mut self) -> io::Result<()> {
        if is_null(&self.path) {
            return Ok(());
        }
        self.file = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = super::safe_open::open(&self.path, OpenOptions::new().create(true).append(true))?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Reopens when the path no longer names the open file (deleted or replaced while the app
    /// was stopped): an app that starts again writes where the user looks. True if reopened.
    pub fn reopen_if_replaced(&mut self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        if is_null(&self.path) {
            return Ok(false);
        }
        let same = match (&self.file, fs::metadata(&self.path)) {
            (Some(f), Ok(on_disk)) => f.metadata().is_ok_and(|open| open.dev() == on_disk.dev() && open.ino() == on_disk.ino()),
            _ => false,
        };
        if same {
            return Ok(false);
        }
        self.reopen()?;
        Ok(true)
    }

    /// Appends `buf`, which holds whole lines (each ending in `\n`; a missing final `\n` is
    /// treated as the end of a line), rotating between lines when needed.
    pub fn write_lines(&mut self, buf: &[u8]) -> io::Result<()> {
        if is_null(&self.path) {
            return Ok(());
        }
        if self.file.is_none() {
            // A previous rotation or reopen failed: try again rather than stay silent forever.
            self.reopen()?;
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let n = match self.max_size {
                None => rest.len(),
                Some(max) => {
                    let room = max.saturating_sub(self.size);
                    if (rest.len() as u64) <= room {
                        rest.len()
                    } else {
                        // Whole lines that fit.
                        let fit = memchr::memrchr(b'\n', &rest[..room as usize]).map_or(0, |i| i + 1);
                        if fit > 0 {
                            fit
                        } else if self.size == 0 {
                            // One line longer than max_size: alone in its own file.
                            memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1)
                        } else if self.refresh_size()? {
                            continue; // the file was truncated behind our back: retry
                        } else {
                            self.rotate()?;
                            continue;
                        }
                    }
                }
            };
            let f = self.file.as_mut().ok_or_else(|| io::Error::other("log file not open"))?;
            f.write_all(&rest[..n])?;
            self.size += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Empties the file (`pm2 flush`). Rotated files are left alone.
    pub fn truncate(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.set_len(0)?;
            self.size = 0;
        }
        Ok(())
    }

    /// Re-reads the file's size; true if it is smaller than we thought.
    fn refresh_size(&mut self) -> io::Result<bool> {
        let Some(f) = &self.file else { return Ok(false) };
        let real = f.metadata()?.len();
        let smaller = real < self.size;
        self.size = real;
        Ok(smaller)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.retain == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            fs::remove_file(numbered(&self.path, self.retain)).or_else(ignore_missing)?;
            for n in (1..self.retain).rev() {
                fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)).or_else(ignore_missing)?;
            }
            fs::rename(&self.path, numbered(&self.path, 1)).or_else(ignore_missing)?;
        }
        self.reopen()
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// Which of an app's log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// `out_file`: `<name>-out.log`
    Out,
    /// `error_file`: `<name>-error.log`
    Err,
    /// `log_file` (both streams): `<name>.log`
    Combined,
}

/// PM2's default file name of one of an app's logs (before any `-<pm_id>` suffix):
/// `<name>-out.log`, `<name>-error.log`, `<name>.log`.
pub fn default_log_file_name(app_name: &str, kind: LogKind) -> String {
    let n = sanitize_name(app_name);
    match kind {
        LogKind::Out => format!("{n}-out.log"),
        LogKind::Err => format!("{n}-error.log"),
        LogKind::Combined => format!("{n}.log"),
    }
}

/// Writes `pid` (and a newline) to `path`, creating directories.
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    // Emptied only once safe_open has checked what was opened (O_TRUNC would act before).
    let mut f = super::safe_open::open(path, OpenOptions::new().create(true).write(true))?;
    f.set_len(0)?;
    f.write_all(format!("{pid}\n").as_bytes())
}

/// A pid file that is removed when dropped (the process exited).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: &Path, pid: u32) -> io::Result<PidFile> {
        write_pid_file(path, pid)?;
        Ok(PidFile { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(paths: &[PathBuf]) -> Vec<String> {
        let mut all = String::new();
        for p in paths {
            if let Ok(s) = fs::read_to_string(p) {
                all.push_str(&s);
            }
        }
        all.lines().map(str::to_owned).collect()
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }

    /// The scenario: 30 MB through a 10 MB limit with retain 2 leaves at most 3 files,
    /// and every line is there exactly once, in order (64-byte lines fill 10 MiB exactly).
    #[test]
    fn rotation_30mb_10mb_retain_2_keeps_every_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("deep/dir/app-out.log");
        let max = 10 << 20;
        let mut log = FileLog::open(&path, Some(max), 2).unwrap();
        let total_lines = 3 * max / 64;
        let mut buf = Vec::with_capacity(70 * 1024);
        for i in 0..total_lines {
            buf.extend_from_slice(format!("line {i:>058}\n").as_bytes());
            if buf.len() >= 64 * 1024 {
                log.write_lines(&buf).unwrap();
                buf.clear();
            }
        }
        log.write_lines(&buf).unwrap();
        let files = files_in(path.parent().unwrap());
        assert_eq!(files, [path.clone(), log.rotated_path(1), log.rotated_path(2)]);
        for f in &files {
            assert_eq!(fs::metadata(f).unwrap().len(), max, "{f:?}");
        }
        let lines = lines_of(&[log.rotated_path(2), log.rotated_path(1), path.clone()]);
        assert_eq!(lines.len() as u64, total_lines);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("line {i:>058}"), "line {i}");
        }
    }

    /// Uneven sizes: more data than the retained files hold. What is kept is a contiguous run of
    /// whole lines ending with the last one written; no file is over the limit.
    #[test]
    fn rotation_keeps_a_contiguous_suffix_of_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        let mut log = FileLog::open(&path, Some(1000), 3).unwrap();
        let mut n = 0u32;
        for batch in 0..200 {
            let mut buf = Vec::new();
            for _ in 0..(batch % 7 + 1) {
                buf.extend_from_slice(format!("{n} {}\n", "x".repeat((n % 23) as usize)).as_bytes());
                n += 1;
            }
            log.write_lines(&buf).unwrap();
        }
        assert_eq!(files_in(d.path()).len(), 4);
        let order = [log.rotated_path(3), log.rotated_path(2), log.rotated_path(1), path.clone()];
        for (i, f) in order.iter().enumerate() {
            let len = fs::metadata(f).unwrap().len();
            // Rotated files were filled as far as whole lines allow (lines are < 40 bytes).
            assert!(len <= 1000 && (i == 3 || len > 960), "{f:?}: {len}");
            assert!(fs::read(f).unwrap().ends_with(b"\n"));
        }
        let nums: Vec<u32> = lines_of(&order).iter().map(|l| l.split(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(*nums.last().unwrap(), n - 1);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no duplicate, no torn line");
    }

    #[test]
    fn a_line_longer_than_the_limit_goes_alone_into_a_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        let mut log = FileLog::open(&path, Some(10), 5).unwrap();
        log.write_lines(b"ab\nthis line is long\ncd\n").unwrap();
        assert_eq!(fs::read_to_string(log.rotated_path(2)).unwrap(), "ab\n");
        assert_eq!(fs::read_to_string(log.rotated_path(1)).unwrap(), "this line is long\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "cd\n");
    }

    #[test]
    fn retain_zero_keeps_only_the_current_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        let mut log = FileLog::open(&path, Some(8), 0).unwrap();
        log.write_lines(b"1234567\n").unwrap();
        log.write_lines(b"abc\n").unwrap();
        assert_eq!(files_in(d.path()), std::slice::from_ref(&path));
        assert_eq!(fs::read_to_string(&path).unwrap(), "abc\n");
    }

    #[test]
    fn existing_file_size_counts_and_no_limit_means_no_rotation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        fs::write(&path, "old1\nold2\n").unwrap();
        let mut log = FileLog::open(&path, Some(12), 1).unwrap();
        assert_eq!(log.size(), 10);
        log.write_lines(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(log.rotated_path(1)).unwrap(), "old1\nold2\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        let mut unlimited = FileLog::open(&d.path().join("b.log"), Some(0), 1).unwrap();
        for _ in 0..100 {
            unlimited.write_lines(b"0123456789\n").unwrap();
        }
        assert_eq!(files_in(d.path()).len(), 3);
    }

    #[test]
    fn reopen_after_external_rename_and_truncate() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        let mut log = FileLog::open(&path, None, 0).unwrap();
        log.write_lines(b"one\n").unwrap();
        fs::rename(&path, d.path().join("a.log.old")).unwrap();
        log.write_lines(b"still old\n").unwrap(); // before reopen: into the renamed file
        log.reopen().unwrap();
        log.write_lines(b"two\n").unwrap();
        assert_eq!(fs::read_to_string(d.path().join("a.log.old")).unwrap(), "one\nstill old\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        log.truncate().unwrap();
        log.write_lines(b"three\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn external_copytruncate_does_not_cause_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        let mut log = FileLog::open(&path, Some(10), 2).unwrap();
        log.write_lines(b"12345678\n").unwrap();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        log.write_lines(b"abcdefgh\n").unwrap();
        assert_eq!(files_in(d.path()), std::slice::from_ref(&path));
        assert_eq!(fs::read_to_string(&path).unwrap(), "abcdefgh\n");
    }

    #[test]
    fn dev_null_is_a_sink() {
        for p in ["/dev/null", "NULL"] {
            let mut log = FileLog::open(Path::new(p), Some(1), 1).unwrap();
            assert!(log.is_sink());
            log.write_lines(b"x\nyy\n").unwrap();
            log.reopen().unwrap();
            log.truncate().unwrap();
        }
        assert!(!Path::new("NULL").exists());
    }

    #[test]
    fn pm2_names() {
        assert_eq!(sanitize_name("my app@v2/x\\y.z"), "my-app-v2-x\\y.z");
        assert_eq!(default_log_file_name("web", LogKind::Out), "web-out.log");
        assert_eq!(default_log_file_name("web", LogKind::Err), "web-error.log");
        assert_eq!(default_log_file_name("my app", LogKind::Combined), "my-app.log");
        assert_eq!(default_pid_file_name("web", 3), "web-3.pid");
    }

    #[test]
    fn pid_file_is_written_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pids/web-0.pid");
        {
            let pf = PidFile::create(&path, 4242).unwrap();
            assert_eq!(fs::read_to_string(pf.path()).unwrap(), "4242\n");
        }
        assert!(!path.exists());
    }
}
