//! The container's limits, from the cgroup the runtime lives in (v1 or v2), next to the /proc
//! reader: memory limit and usage, the OOM killer's count, `memory.oom.group`, the CPU quota.
//!
//! Every path is taken under a root (`/` in production) so that tests feed fake v1 and v2
//! trees. The cgroup is found as the kernel says: `proc/self/cgroup` gives the path in each
//! hierarchy, `proc/self/mountinfo` where the hierarchy is mounted (and which part of it, inside
//! a cgroup namespace). A limit set on an ancestor applies too: the tightest one up to the mount
//! wins. A v1 memory controller is preferred over an empty v2 mount (hybrid machines).
//!
//! Reads only; never writes a cgroup file. Every read is of a small file: cheap enough for the
//! sampler to look at the usage each sweep.

use std::fs;
use std::path::{Path, PathBuf};

/// Above this a v1 limit means "none" (the kernel's PAGE_COUNTER_MAX rounded to pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// Which cgroup interface the memory numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Where the runtime's cgroup files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub version: Version,
    /// The memory controller's directory (v2: the unified one).
    memory: PathBuf,
    /// Its mount point: ancestors are looked at up to here.
    memory_mount: PathBuf,
    /// The CPU controller's directory, if any.
    cpu: Option<PathBuf>,
    cpu_mount: PathBuf,
}

/// The container's limits, as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// `memory.max` / `memory.limit_in_bytes` (the tightest up the tree); `None`: unlimited.
    pub memory: Option<u64>,
    /// v2 `memory.high` (throttling, not killing); `None`: unset.
    pub memory_high: Option<u64>,
    /// v2 `memory.oom.group`: one OOM kills every process of the cgroup, the runtime included.
    pub oom_group: bool,
    /// CPUs the quota allows (`cpu.max` / `cfs_quota_us ÷ cfs_period_us`); `None`: no quota.
    pub cpu: Option<f64>,
}

/// How much of its memory the container uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `memory.current` / `memory.usage_in_bytes`, page cache included.
    pub bytes: u64,
    /// Minus the inactive file cache (the kernel reclaims it before killing): what the OOM
    /// killer counts, as the kubelet's `working_set`.
    pub working_set: u64,
}

/// The runtime's own cgroup, found once (the apps live in it too: the runtime does not move them).
pub fn current() -> Option<&'static Cgroup> {
    static CURRENT: std::sync::OnceLock<Option<Cgroup>> = std::sync::OnceLock::new();
    CURRENT.get_or_init(Cgroup::detect).as_ref()
}

impl Cgroup {
    /// The runtime's own cgroup (under `/`); `None` outside any cgroup with a memory controller.
    pub fn detect() -> Option<Cgroup> {
        Self::detect_under(Path::new("/"))
    }

    /// The cgroup of process `pid` (another process of the runtime's container).
    pub fn detect_for(pid: u32) -> Option<Cgroup> {
        Self::detect_in(Path::new("/"), &pid.to_string())
    }

    /// The cgroup of the process whose `proc/self` is under `root`, with mount points under `root`.
    pub fn detect_under(root: &Path) -> Option<Cgroup> {
        Self::detect_in(root, "self")
    }

    fn detect_in(root: &Path, pid: &str) -> Option<Cgroup> {
        let membership = fs::read_to_string(root.join(format!("proc/{pid}/cgroup"))).ok()?;
        let mountinfo = fs::read_to_string(root.join(format!("proc/{pid}/mountinfo"))).ok()?;
        let mounts = parse_mountinfo(&mountinfo);
        let mut v1_memory = None;
        let mut v1_cpu = None;
        let mut v2 = None;
        for line in membership.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
            if controllers.is_empty() {
                v2 = Some(path);
            }
            for c in controllers.split(',') {
                match c {
                    "memory" => v1_memory = Some(path),
                    "cpu" => v1_cpu = Some(path),
                    _ => {}
                }
            }
        }
        let place = |path: &str, is_mount: &dyn Fn(&Mount) -> bool| -> Option<(PathBuf, PathBuf)> {
            let m = mounts.iter().find(|m| is_mount(m))?;
            let mount = under(root, &m.point);
            let rel = path.strip_prefix(m.root.as_str()).unwrap_or("");
            let dir = mount.join(rel.trim_start_matches('/'));
            // Outside the mount's view (another namespace): the mount itself is ours.
            Some(if dir.is_dir() { (dir, mount) } else { (mount.clone(), mount) })
        };
        let v1 = |name: &'static str| move |m: &Mount| m.fstype == "cgroup" && m.options.split(',').any(|o| o == name);
        let v2_place = v2.and_then(|p| place(p, &|m: &Mount| m.fstype == "cgroup2"));
        if let Some((memory, memory_mount)) = v1_memory.and_then(|p| place(p, &v1("memory"))) {
            let (cpu, cpu_mount) = match v1_cpu.and_then(|p| place(p, &v1("cpu"))) {
                Some((d, m)) => (Some(d), m),
                None => (None, PathBuf::new()),
            };
            return Some(Cgroup { version: Version::V1, memory, memory_mount, cpu, cpu_mount });
        }
        let (dir, mount) = v2_place?;
        // A v2 hierarchy without the memory controller (a hybrid machine's empty mount) says nothing.
        let controllers = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return None;
        }
        Some(Cgroup { version: Version::V2, memory: dir.clone(), memory_mount: mount.clone(), cpu: Some(dir), cpu_mount: mount })
    }

    /// The limits now (read again each call: a resize in place shows at the next look).
    pub fn limits(&self) -> Limits {
        match self.version {
            Version::V1 => Limits {
                memory: tightest(&self.memory, &self.memory_mount, |d| {
                    read_u64(&d.join("memory.limit_in_bytes")).filter(|&v| v < V1_UNLIMITED)
                }),
                memory_high: None,
                oom_group: false,
                cpu: self.cpu.as_ref().and_then(|d| {
                    tightest_f(d, &self.cpu_mount, |d| {
                        let quota = fs::read_to_string(d.join("cpu.cfs_quota_us")).ok()?.trim().parse::<i64>().ok()?;
                        let period = read_u64(&d.join("cpu.cfs_period_us"))?;
                        (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
                    })
                }),
            },
            Version::V2 => Limits {
                memory: tightest(&self.memory, &self.memory_mount, |d| read_u64(&d.join("memory.max"))),
                memory_high: tightest(&self.memory, &self.memory_mount, |d| read_u64(&d.join("memory.high"))),
                oom_group: read_u64(&self.memory.join("memory.oom.group")) == Some(1),
                cpu: tightest_f(&self.memory, &self.memory_mount, |d| parse_cpu_max(&fs::read_to_string(d.join("cpu.max")).ok()?)),
            },
        }
    }

    /// The memory in use now; `None` when the files cannot be read.
    pub fn usage(&self) -> Option<Usage> {
        let (current, stat, inactive) = match self.version {
            Version::V1 => ("memory.usage_in_bytes", "memory.stat", "total_inactive_file"),
            Version::V2 => ("memory.current", "memory.stat", "inactive_file"),
        };
        let bytes = read_u64(&self.memory.join(current))?;
        let stat = fs::read_to_string(self.memory.join(stat)).unwrap_or_default();
        let inactive = field(&stat, inactive).unwrap_or(0);
        Some(Usage { bytes, working_set: bytes.saturating_sub(inactive) })
    }

    /// How many processes the OOM killer has killed in this cgroup so far (v2 `memory.events`,
    /// v1 `memory.oom_control`); `None` when the kernel does not say.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        field(&fs::read_to_string(self.memory.join(file)).ok()?, "oom_kill")
    }

    /// The memory controller's directory (for messages).
    pub fn memory_dir(&self) -> &Path {
        &self.memory
    }
}

/// What a relative memory size is relative to: the container's limit, else the machine's memory.
pub fn memory_total() -> Option<u64> {
    current().and_then(|c| c.limits().memory).or_else(machine_memory).map(|t| t.min(machine_memory().unwrap_or(u64::MAX)))
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), bytes.
pub fn machine_memory() -> Option<u64> {
    field(&fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:").map(|kb| kb * 1024)
}

/// One line of `mountinfo`: what part of a file system is mounted where.
#[derive(Debug)]
struct Mount {
    root: String,
    point: String,
    fstype: String,
    /// The super options (v1: the controllers).
    options: String,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(l.get(3)?),
                point: unescape(l.get(4)?),
                fstype: r.first()?.to_string(),
                options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The smallest value `read` finds from `dir` up to `mount` (both included).
fn tightest(dir: &Path, mount: &Path, read: impl Fn(&Path) -> Option<u64>) -> Option<u64> {
    ancestors(dir, mount).filter_map(read).min()
}

fn tightest_f(dir: &Path, mount: &Path, read: impl Fn(&Path) -> Option<f64>) -> Option<f64> {
    ancestors(dir, mount).filter_map(read).reduce(f64::min)
}

fn ancestors<'a>(dir: &'a Path, mount: &'a Path) -> impl Iterator<Item = &'a Path> {
    dir.ancestors().take_while(move |d| d.starts_with(mount))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// v2 `cpu.max`: `<quota|max> <period>`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut f = text.split_whitespace();
    let quota: f64 = f.next()?.parse().ok()?;
    let period: f64 = f.next().unwrap_or("100000").parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// The number after `key` on its line of a `key value` file.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == key).then(|| f.next()?.parse().ok()).flatten()
    })
}

/// Bytes as a person reads them (`512 MiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// One line saying what the container allows, for `ls` and the start-up log.
pub fn describe(cg: Option<&Cgroup>) -> String {
    let Some(cg) = cg else { return "container: no cgroup memory controller found (no limit known)".to_string() };
    let l = cg.limits();
    let mut s = format!("container (cgroup {}): memory ", cg.version.as_str());
    match l.memory {
        Some(m) => s.push_str(&format!("limit {}", human(m))),
        None => s.push_str("unlimited"),
    }
    if let Some(u) = cg.usage() {
        s.push_str(&format!(", in use {}", human(u.working_set)));
    }
    if let Some(h) = l.memory_high {
        s.push_str(&format!(", high {}", human(h)));
    }
    if l.oom_group {
        s.push_str(", oom.group=1 (one OOM kills every process)");
    }
    match l.cpu {
        Some(c) => s.push_str(&format!("; cpu limit {c:.2}")),
        None => s.push_str("; cpu unlimited"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_reads_the_tightest_limit_usage_oom_kills_and_quota() {
        let t = tree(&[
            ("proc/self/cgroup", "4:memory:/pod/ctr\n2:cpu,cpuacct:/pod/ctr\n0::/\n"),
            ("proc/self/mountinfo", HYBRID_MOUNTS),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/memory/pod/memory.limit_in_bytes", "536870912\n"),
            ("sys/fs/cgroup/memory/pod/ctr/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/memory/pod/ctr/memory.usage_in_bytes", "300000000\n"),
            ("sys/fs/cgroup/memory/pod/ctr/memory.stat", "cache 1\ninactive_file 5\ntotal_inactive_file 100000000\n"),
            ("sys/fs/cgroup/memory/pod/ctr/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            ("sys/fs/cgroup/cpu,cpuacct/pod/ctr/cpu.cfs_quota_us", "150000\n"),
            ("sys/fs/cgroup/cpu,cpuacct/pod/ctr/cpu.cfs_period_us", "100000\n"),
            ("sys/fs/cgroup/unified/cgroup.controllers", ""),
        ]);
        let cg = Cgroup::detect_under(t.path()).expect("a v1 cgroup");
        assert_eq!(cg.version, Version::V1);
        let l = cg.limits();
        assert_eq!(l.memory, Some(512 << 20), "the parent's limit applies");
        assert_eq!(l.cpu, Some(1.5));
        assert!(!l.oom_group);
        assert_eq!(cg.usage(), Some(Usage { bytes: 300_000_000, working_set: 200_000_000 }));
        assert_eq!(cg.oom_kills(), Some(3));
        assert!(
            describe(Some(&cg)).contains("cgroup v1): memory limit 512 MiB, in use 191 MiB; cpu limit 1.50"),
            "{}",
            describe(Some(&cg))
        );
    }

    #[test]
    fn v1_unlimited_and_no_quota() {
        let t = tree(&[
            ("proc/self/cgroup", "4:memory:/\n2:cpu,cpuacct:/\n"),
            ("proc/self/mountinfo", HYBRID_MOUNTS),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
        ]);
        let l = Cgroup::detect_under(t.path()).unwrap().limits();
        assert_eq!(l, Limits::default());
    }

    #[test]
    fn v2_in_a_namespace_reads_max_high_group_events_and_cpu_max() {
        let t = tree(&[
            ("proc/self/cgroup", "0::/\n"),
            ("proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("sys/fs/cgroup/memory.max", "268435456\n"),
            ("sys/fs/cgroup/memory.high", "max\n"),
            ("sys/fs/cgroup/memory.oom.group", "1\n"),
            ("sys/fs/cgroup/memory.current", "1000\n"),
            ("sys/fs/cgroup/memory.stat", "anon 800\ninactive_file 100\n"),
            ("sys/fs/cgroup/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 1\n"),
            ("sys/fs/cgroup/cpu.max", "max 100000\n"),
        ]);
        let cg = Cgroup::detect_under(t.path()).expect("a v2 cgroup");
        assert_eq!(cg.version, Version::V2);
        let l = cg.limits();
        assert_eq!(l, Limits { memory: Some(256 << 20), memory_high: None, oom_group: true, cpu: None });
        assert_eq!(cg.usage(), Some(Usage { bytes: 1000, working_set: 900 }));
        assert_eq!(cg.oom_kills(), Some(2));
        fs::write(t.path().join("sys/fs/cgroup/cpu.max"), "250000 100000\n").unwrap();
        fs::write(t.path().join("sys/fs/cgroup/memory.max"), "max\n").unwrap();
        let l = cg.limits();
        assert_eq!((l.memory, l.cpu), (None, Some(2.5)), "read again: a resize in place shows");
    }

    #[test]
    fn v2_nested_path_without_namespace_and_an_escaped_mount_point() {
        let t = tree(&[
            ("proc/self/cgroup", "0::/kubepods/pod1/ctr\n"),
            ("proc/self/mountinfo", "30 25 0:26 / /sys/fs/cg\\040x rw - cgroup2 cgroup2 rw\n"),
            ("sys/fs/cg x/cgroup.controllers", "memory\n"),
            ("sys/fs/cg x/kubepods/memory.max", "max\n"),
            ("sys/fs/cg x/kubepods/pod1/memory.max", "1048576\n"),
            ("sys/fs/cg x/kubepods/pod1/ctr/memory.max", "2097152\n"),
        ]);
        let cg = Cgroup::detect_under(t.path()).unwrap();
        assert_eq!(cg.limits().memory, Some(1 << 20));
        assert!(cg.memory_dir().ends_with("kubepods/pod1/ctr"));
    }

    #[test]
    fn v1_inside_docker_sees_its_own_cgroup_at_the_mount() {
        // Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup names the host's
        // path, the mount shows only that subtree (mountinfo's root field).
        let t = tree(&[
            ("proc/self/cgroup", "12:memory:/docker/abc123\n3:cpu,cpuacct:/docker/abc123\n0::/system.slice/docker-abc123.scope\n"),
            (
                "proc/self/mountinfo",
                "700 690 0:60 /docker/abc123 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n\
                 701 690 0:61 /docker/abc123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n",
            ),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "100663296\n"),
            ("sys/fs/cgroup/memory/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
        ]);
        let cg = Cgroup::detect_under(t.path()).expect("the container's own cgroup");
        assert_eq!(cg.version, Version::V1);
        assert_eq!(cg.limits().memory, Some(96 << 20));
        assert_eq!(cg.limits().cpu, Some(0.5));
        assert_eq!(cg.oom_kills(), Some(1));
        assert!(cg.memory_dir().ends_with("sys/fs/cgroup/memory"));
    }

    #[test]
    fn nothing_without_a_memory_controller() {
        let t = tree(&[
            ("proc/self/cgroup", "1:cpu:/\n0::/\n"),
            ("proc/self/mountinfo", HYBRID_MOUNTS),
            ("sys/fs/cgroup/unified/cgroup.controllers", ""),
        ]);
        assert_eq!(Cgroup::detect_under(t.path()), None);
        assert!(Cgroup::detect_under(Path::new("/nonexistent")).is_none());
        assert!(describe(None).contains("no limit known"));
    }

    #[test]
    fn reads_this_machine() {
        // Whatever this machine has, detection must not fail when /proc/self/cgroup names a memory controller.
        let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if text.lines().any(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory"))) {
            let cg = Cgroup::detect().expect("the v1 memory controller is found");
            assert!(cg.usage().is_some_and(|u| u.bytes > 0));
        }
        assert!(machine_memory().is_some_and(|m| m > 0));
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(12), "12 B");
    }
}
