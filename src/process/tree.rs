//! Process trees from /proc: who descends from whom.
//!
//! Used to stop an app's whole tree (descendants that left the app's process group included)
//! and, on exit, to find stray processes. Reads only; never signals.

use std::collections::HashMap;
use std::fs;

/// One `/proc/<pid>/stat` line's fields we care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// `Z` for zombies.
    pub state: char,
}

/// Parses `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so fields are
/// taken after the *last* `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let pid = line.split_whitespace().next()?.parse().ok()?;
    let rest = &line[line.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    Some(Stat { pid, ppid, pgid, state })
}

/// Every process visible in /proc right now.
pub fn snapshot() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parse_stat(&fs::read_to_string(format!("/proc/{name}/stat")).ok()?)
    })
    .collect()
}

/// All descendants of `root` (not `root` itself) in `procs`, parents before children.
pub fn descendants(procs: &[Stat], root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(kids) = children.get(&pid) {
            for &k in kids {
                if k != root && !out.contains(&k) {
                    out.push(k);
                    stack.push(k);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let s = parse_stat("42 (my (weird) app) S 7 42 42 0 -1 4194560").unwrap();
        assert_eq!(s, Stat { pid: 42, ppid: 7, pgid: 42, state: 'S' });
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn walks_a_tree() {
        let st = |pid, ppid| Stat { pid, ppid, pgid: pid, state: 'S' };
        let procs = [st(1, 0), st(10, 1), st(11, 10), st(12, 11), st(20, 1), st(13, 10)];
        let mut d = descendants(&procs, 10);
        d.sort();
        assert_eq!(d, vec![11, 12, 13]);
        assert!(descendants(&procs, 99).is_empty());
    }

    #[test]
    fn sees_ourselves() {
        let me = std::process::id();
        assert!(snapshot().iter().any(|s| s.pid == me));
    }
}
