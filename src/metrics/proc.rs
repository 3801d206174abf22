//! RSS and CPU time of one process tree.

use std::fs;

/// Direct children of `pid`, across all its threads.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        let path = t.path().join("children");
        if let Ok(s) = fs::read_to_string(path) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        for c in children(all[i]) {
            if !all.contains(&c) {
                all.push(c);
            }
        }
        i += 1;
    }
    all
}

/// Resident set size of one process in bytes (0 when it is gone).
pub fn rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * crate::process::unix::page_size())
}

/// Resident set size of a whole tree in bytes.
pub fn tree_rss(pid: u32) -> u64 {
    tree(pid).into_iter().map(rss).sum()
}

/// CPU time (user + system) of one process in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after the command: state(0) ppid(1) … utime(11) stime(12).
    get(11) + get(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_tree() {
        let me = std::process::id();
        assert!(rss(me) > 0);
        assert!(tree_rss(me) > 0);
        assert_eq!(rss(u32::MAX), 0);
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(tree(me).contains(&child.id()));
        child.kill().unwrap();
        let _ = child.wait();
    }
}
