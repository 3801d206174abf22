//! Optional log files (`out_file`, `error_file`, `log_file`) with built-in size rotation.
//!
//! Files exist only when an app configures them (unlike pm2-runtime's ecosystem form, which
//! fills `$PM2_HOME/logs`). `/dev/null` (or PM2's `NULL`) is a sink that writes nothing.
//! Rotation (our keys `log_max_size`, `log_retain`): before a write that would take the file
//! past `log_max_size`, `x.log` is renamed `x.log.1` (`.1` → `.2`, …; the oldest beyond
//! `log_retain` is deleted) and a new `x.log` is started. Writes hold whole lines, so a line is
//! never split across two files. `reopen` follows an external rotation (SIGUSR2,
//! `reloadLogs`); `truncate` empties the file (`flush`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct FileLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: Option<u64>,
    retain: u32,
}

/// True for the paths PM2 treats as "no file".
pub fn is_null(path: &Path) -> bool {
    path == Path::new("/dev/null") || path == Path::new("NULL")
}

impl FileLog {
    pub fn open(path: &Path, max_size: Option<u64>, retain: u32) -> io::Result<Self> {
        let mut log = Self { path: path.to_path_buf(), file: None, size: 0, max_size, retain };
        if !is_null(path) {
            log.reopen()?;
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (Re)opens the path for appending, creating missing directories.
    pub fn reopen(&mut self) -> io::Result<()> {
        if is_null(&self.path) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends whole lines.
    pub fn write_lines(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() || buf.is_empty() {
            return Ok(());
        }
        if let Some(max) = self.max_size
            && self.size > 0
            && self.size + buf.len() as u64 > max
        {
            self.rotate()?;
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(buf)?;
            self.size += buf.len() as u64;
        }
        Ok(())
    }

    /// Empties the file (PM2's `flush`).
    pub fn truncate(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.set_len(0)?;
            self.size = 0;
        }
        Ok(())
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.retain == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            fs::remove_file(self.numbered(self.retain)).or_else(ignore_missing)?;
            for n in (1..self.retain).rev() {
                fs::rename(self.numbered(n), self.numbered(n + 1)).or_else(ignore_missing)?;
            }
            fs::rename(&self.path, self.numbered(1)).or_else(ignore_missing)?;
        }
        self.reopen()
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// Writes `pid` to `path` (directories created). The caller removes it when the process exits.
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, format!("{pid}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_retain_plus_one_files_and_every_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("logs/app.log");
        let mut log = FileLog::open(&path, Some(10_000), 2).unwrap();
        let mut written = 0;
        for batch in 0..300 {
            let mut buf = Vec::new();
            for i in 0..10 {
                buf.extend_from_slice(format!("line {:05}\n", batch * 10 + i).as_bytes());
            }
            log.write_lines(&buf).unwrap();
            written += 10;
        }
        let mut files: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        for f in &files {
            assert!(fs::metadata(f).unwrap().len() <= 10_000);
        }
        // The newest lines are all there, in order, across .2, .1 and the current file.
        let mut all = String::new();
        for f in [d.path().join("logs/app.log.2"), d.path().join("logs/app.log.1"), path.clone()] {
            all.push_str(&fs::read_to_string(f).unwrap());
        }
        let nums: Vec<usize> = all.lines().map(|l| l[5..].parse().unwrap()).collect();
        assert_eq!(*nums.last().unwrap(), written - 1);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no tear");
    }

    #[test]
    fn reopen_after_external_rename_and_truncate() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        let mut log = FileLog::open(&path, None, 0).unwrap();
        log.write_lines(b"one\n").unwrap();
        fs::rename(&path, d.path().join("a.log.old")).unwrap();
        log.reopen().unwrap();
        log.write_lines(b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        log.truncate().unwrap();
        log.write_lines(b"three\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn dev_null_is_a_sink() {
        let mut log = FileLog::open(Path::new("/dev/null"), Some(1), 1).unwrap();
        log.write_lines(b"x\n").unwrap();
        log.reopen().unwrap();
    }
}
