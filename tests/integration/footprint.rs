//! The runtime's own memory: a guard against an accidental cache or buffer, not a benchmark
//! (bench/footprint.py measures the shipped binary).

use std::time::{Duration, Instant};

use crate::scenario::{Scenario, pids_with, poll, require_tool};

/// Anonymous memory the runtime may hold with 4 idle apps, beyond the relocated data of the
/// binary and its libraries (which depends on the build, not on what the runtime keeps). The
/// release binary holds about 1 MB; a debug build a little more. Generous on purpose.
const ANON_BOUND_KB: u64 = 3 * 1024;

/// (Anonymous kB of the whole process from smaps_rollup, Anonymous kB of its file mappings).
fn anonymous_kb(pid: u32) -> (u64, u64) {
    let field = |line: &str| line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("read smaps_rollup");
    let total = rollup.lines().find(|l| l.starts_with("Anonymous:")).map(field).expect("Anonymous in smaps_rollup");
    // Copy-on-write pages of file mappings (relocations, .data): every mapping header names a
    // file when its sixth field is a path.
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mut in_file = false;
    let mut of_files = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_file = line.split_whitespace().nth(5).is_some_and(|p| p.starts_with('/'));
        } else if in_file && first == "Anonymous:" {
            of_files += field(line);
        }
    }
    (total, of_files)
}

/// The runtime with 4 idle Node apps running `script` (a name of its own per test: the apps are
/// found by it among every process of the machine).
fn four_idle_apps(script: &str) -> (Scenario, crate::scenario::Running) {
    let eco = format!(r#"{{"apps":[{{"name":"fp","script":"{script}","instances":4,"exec_mode":"fork"}}]}}"#);
    let sc = Scenario::new().file(script, "setInterval(() => {}, 1000);\n").file("eco.json", &eco);
    let r = sc.start(&["start", "eco.json"]);
    poll("4 idle apps running", Duration::from_secs(30), || (pids_with(script).len() >= 4).then_some(()));
    (sc, r)
}

#[test]
fn runtime_with_four_idle_apps_keeps_its_anonymous_memory_small() {
    require_tool("node", &["--version"]);
    let (_sc, r) = four_idle_apps("idle-footprint.js");
    // Start-up may briefly hold more (it gives back what it freed once the apps run): the bound
    // must hold within a generous deadline, and keep holding while the apps idle.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut within = 0;
    while within < 5 {
        let (total, of_files) = anonymous_kb(r.pid());
        let own = total - of_files;
        within = if own <= ANON_BOUND_KB { within + 1 } else { 0 };
        assert!(
            within > 0 || Instant::now() < deadline,
            "pm-runtime holds {own} kB of anonymous memory with 4 idle apps (bound {ANON_BOUND_KB} kB; smaps_rollup Anonymous {total} kB, of which {of_files} kB are copy-on-write pages of the binary and its libraries)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (file offset, size) of the section `name` of the ELF file `path` (64-bit little endian).
fn elf_section(path: &str, name: &str) -> Option<(u64, u64)> {
    let elf = std::fs::read(path).expect("read the runtime's binary");
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let u32_at = |o: usize| u64::from(u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()));
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28) as usize, u16_at(0x3a) as usize, u16_at(0x3c) as usize, u16_at(0x3e) as usize);
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 24) as usize;
    (0..shnum).find_map(|i| {
        let h = header(i);
        let at = strtab + u32_at(h) as usize;
        let end = at + elf[at..].iter().position(|&b| b == 0)?;
        (&elf[at..end] == name.as_bytes()).then(|| (u64_at(h + 24), u64_at(h + 32)))
    })
}

/// How many pages of the file range [offset, offset + size) of the runtime's binary are mapped
/// in `pid` (its executable mapping, from /proc/PID/maps and the present bits of pagemap).
fn resident_pages_of(pid: u32, binary: &str, offset: u64, size: u64) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let real = std::fs::canonicalize(binary).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).expect("open pagemap");
    let mut resident = 0;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || std::path::Path::new(f[5]) != real {
            continue;
        }
        let (lo, hi) = f[0].split_once('-').unwrap();
        let (lo, hi) = (u64::from_str_radix(lo, 16).unwrap(), u64::from_str_radix(hi, 16).unwrap());
        let map_off = u64::from_str_radix(f[2], 16).unwrap();
        // The part of the section inside this mapping, as addresses.
        let from = (offset.max(map_off) - map_off + lo).max(lo);
        let to = (offset + size).min(map_off + (hi - lo)).saturating_sub(map_off) + lo;
        let mut page = from / 4096;
        while page * 4096 < to {
            let mut entry = [0u8; 8];
            pagemap.seek(SeekFrom::Start(page * 8)).unwrap();
            pagemap.read_exact(&mut entry).unwrap();
            resident += usize::from(u64::from_le_bytes(entry) >> 63 == 1);
            page += 1;
        }
    }
    resident
}

/// With --web and PM2 Plus off, none of their code is mapped once start-up is over: the binary
/// keeps the optional features' code apart (link/layout.ld), and the start-up code is unmapped
/// after start (trim_code). A page of it still mapped means a running path shares its pages.
#[test]
fn off_features_have_no_code_page_mapped_after_start() {
    require_tool("node", &["--version"]);
    let bin = crate::scenario::BIN;
    let (offset, size) = elf_section(bin, ".text.features").expect("the binary has a .text.features section (link/layout.ld)");
    assert!(size > 64 * 1024, "the features' code is {size} bytes: link/layout.ld matched too little");
    let (_sc, r) = four_idle_apps("idle-code.js");
    // The code is unmapped 3 s after start; from then on no feature page may come back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clean = 0;
    while clean < 10 {
        let pages = resident_pages_of(r.pid(), bin, offset, size);
        clean = if pages == 0 { clean + 1 } else { 0 };
        assert!(
            clean > 0 || Instant::now() < deadline,
            "{pages} pages of the optional features' code are mapped with --web and PM2 Plus off"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
