//! Every libc call that needs `unsafe`, and the small OS facts around them.
//!
//! This is the only file of the crate with `unsafe` code. Each block says why it is sound.
//! Nothing here keeps state except the two signal counters, which are written from a signal
//! handler and therefore are plain atomics.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How many SIGTERM/SIGINT the runtime has received, counted inside the signal handler itself.
///
/// The supervisor reads it when an app exits: Heroku and `docker kill` send SIGTERM to every
/// process at once, so an app may exit before the runtime's own signal task has run. Reading a
/// counter set synchronously by the handler closes that race: such an exit is never restarted.
static STOP_SIGNALS: AtomicU32 = AtomicU32::new(0);

/// Installs the synchronous stop-signal counter for SIGTERM and SIGINT. Call once, before any
/// app is spawned. tokio's own handlers (registered through the same registry) keep working.
pub fn install_stop_counter() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the action only performs an atomic add, which is async-signal-safe; it does
        // not allocate, lock or call into libc. signal-hook-registry chains it with tokio's.
        unsafe {
            signal_hook_registry::register(sig, || {
                STOP_SIGNALS.fetch_add(1, Ordering::SeqCst);
            })?;
        }
    }
    Ok(())
}

/// Number of SIGTERM/SIGINT received so far.
pub fn stop_signals_received() -> u32 {
    STOP_SIGNALS.load(Ordering::SeqCst)
}

/// Makes this process the reaper of its orphaned descendants (what PID 1 is anyway).
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// True when we are the init of our PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Prepares `cmd` to run as an app instance: its own process group (so a stop signal reaches
/// everything the app started), SIGTERM if the runtime dies without stopping it (so an app is
/// never left running after a `kill -9` of the runtime), and, for Node apps, the IPC channel
/// mapped to fd 3.
///
/// std already resets the signal mask and SIGPIPE's disposition in the child. The parent-death
/// signal follows the thread that forks: every spawn happens on the runtime's main thread,
/// which lives as long as the process.
pub fn prepare_child(cmd: &mut Command, ipc_child_end: Option<OwnedFd>) {
    cmd.process_group(0);
    let parent = std::process::id();
    // SAFETY: runs in the forked child before exec; prctl and getppid are plain syscalls,
    // async-signal-safe, no allocation or locking. std applies uid/gid before pre_exec hooks,
    // so the setting survives the credential change (which would otherwise clear it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The runtime died between fork and prctl: behave as if the signal had come.
            if libc::getppid() as u32 != parent {
                libc::_exit(143);
            }
            Ok(())
        });
    }
    if let Some(fd) = ipc_child_end {
        // SAFETY: the closure runs in the forked child before exec and only calls dup2 and
        // fcntl, both async-signal-safe; it neither allocates nor takes locks. `fd` is moved
        // into the closure and stays open in the parent until `cmd` is dropped (after spawn).
        unsafe {
            cmd.pre_exec(move || {
                let raw = fd.as_raw_fd();
                if raw == IPC_FD {
                    let flags = libc::fcntl(raw, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, IPC_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Prepares `cmd` to evaluate a JS config: its own process group (so everything it starts can be
/// killed at once when the evaluation is cancelled), and SIGKILL (not SIGTERM, which a config
/// could catch) when the runtime dies first.
pub fn prepare_evaluator(cmd: &mut Command) {
    cmd.process_group(0);
    let parent = std::process::id();
    // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are plain
    // syscalls, async-signal-safe, with no allocation or locking.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// The fd number of Node's IPC channel in the child (`NODE_CHANNEL_FD`).
pub const IPC_FD: i32 = 3;

/// Sends `sig` to a process group. ESRCH (the group is gone) is not an error.
pub fn signal_group(pgid: u32, sig: Signal) {
    let _ = signal::killpg(Pid::from_raw(pgid as i32), sig);
}

/// Sends `sig` to one process. ESRCH is not an error.
pub fn signal_pid(pid: u32, sig: Signal) {
    let _ = signal::kill(Pid::from_raw(pid as i32), sig);
}

/// True while a process group still has a member (zombies included).
pub fn group_alive(pgid: u32) -> bool {
    signal::killpg(Pid::from_raw(pgid as i32), None).is_ok()
}

/// As PID 1 only: sends `sig` to every process of the namespace but ourselves.
/// On a host this would hit every process we may signal, so it refuses unless we are PID 1.
pub fn signal_everyone_as_pid1(sig: Signal) -> bool {
    if !is_pid1() {
        return false;
    }
    signal::kill(Pid::from_raw(-1), sig).is_ok()
}

/// The system's page size in bytes (for /proc/<pid>/statm).
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions and only reads system configuration.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 { n as u64 } else { 4096 }
    })
}

/// The most bytes of arguments and environment (strings and their pointers) exec accepts
/// (`ARG_MAX`: a quarter of the stack limit on Linux).
pub fn arg_max() -> usize {
    // SAFETY: sysconf has no preconditions and only reads system configuration.
    let n = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    if n > 0 { n as usize } else { 128 * 1024 }
}

/// Takes ownership of a file descriptor the kernel just installed for a received SCM_RIGHTS
/// message (`recvmsg` on a worker's IPC channel).
pub fn own_received_fd(raw: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was installed in our fd table by recvmsg for this message a moment ago;
    // nothing else in the process knows the number, so taking sole ownership (closing it on
    // drop) is sound. Callers pass only numbers read from a ControlMessageOwned::ScmRights.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Unmaps the runtime's own code and read-only data, and drops their page cache, so that only
/// the pages it runs from now on come back, one small page at a time. Returns the bytes advised.
///
/// Why: the kernel caches a binary in large folios (up to 2 MiB) and maps a whole folio, or 64 KiB
/// around the faulting page, on a fault; start-up alone maps most of the file. Here every
/// read-only mapping of the executable gets `MADV_RANDOM` (no read-ahead: pages come back as
/// single pages) and `MADV_DONTNEED` (unmapped), the file's cache is dropped
/// (`POSIX_FADV_DONTNEED`, so pages come back small), and `MADV_PAGEOUT` reclaims the folio this
/// code runs from, mapped again meanwhile (the kernel skips it when we may not write the file).
/// Pages another process maps stay as they are.
///
/// Only mappings of the executable that are private, not writable and hold no anonymous
/// (copy-on-write) page are touched: their content is exactly the file's, so nothing is lost.
/// The relocated RELRO pages are anonymous and left alone.
pub fn trim_code() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).map(std::path::Path::new);
            let ours = path == Some(exe.as_path()) && perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
            current = ours.then_some((lo, hi));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && fields.next() == Some("0")
        {
            ranges.push(range);
        }
    }
    let file = std::fs::File::open(&exe)?;
    let evict = || nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(io::Error::from);
    let advise = |advice: libc::c_int| -> io::Result<()> {
        for &(lo, hi) in &ranges {
            // SAFETY: [lo, hi) is a whole mapping of our own executable that /proc/self/smaps
            // listed as private, not writable and without anonymous pages, so every page in it
            // is an unmodified view of the file. MADV_RANDOM only changes the fault policy;
            // PAGEOUT and DONTNEED only drop page-table entries (and clean page cache): the next
            // access maps the same file content again. No memory content changes, no reference
            // is invalidated.
            if unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, advice) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    advise(libc::MADV_RANDOM)?;
    // Unmapped, the file's cache can go; what stays is the folio this code runs from (mapped
    // again at once), which PAGEOUT then reclaims (Linux < 5.4 has no PAGEOUT: EINVAL, ignored).
    advise(libc::MADV_DONTNEED)?;
    evict()?;
    let _ = advise(libc::MADV_PAGEOUT);
    advise(libc::MADV_DONTNEED)?;
    evict()?;
    let bytes = ranges.iter().map(|(lo, hi)| hi - lo).sum();
    Ok(bytes)
}
