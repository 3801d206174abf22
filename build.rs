//! Link settings for the static release binary (the one npm/build.sh and the Dockerfile ship).

use std::io::Write;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/layout.ld");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // Static glibc (static-pie): relative relocations packed as DT_RELR (a bitmap per 63 words
    // instead of 24 bytes per pointer): the binary is about 200 KB smaller and start-up has that
    // much less to read. glibc applies them in its static-pie start-up from 2.36 on, and the
    // binary carries the glibc it was linked with, so only that one matters: an older one
    // would leave the relocations undone, so it is asked. Dynamic builds are left as they are
    // (there the machine's glibc would have to be >= 2.36).
    if os == "linux" && env == "gnu" && features.split(',').any(|f| f == "crt-static") && linked_glibc() >= Some((2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Optional features' code and start-up-only code out of the pages the running supervisor
    // maps (see link/layout.ld). Every Linux build, so that tests run the same layout.
    if os == "linux" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link/layout.ld");
    }
}

/// The glibc version of the C library the binary links (the target's compiler driver, which
/// links it, preprocesses <features.h>); None when that cannot be told.
fn linked_glibc() -> Option<(u32, u32)> {
    let target = std::env::var("TARGET").ok()?;
    let var = format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace('-', "_"));
    let cc = std::env::var(var).unwrap_or_else(|_| "cc".into());
    let mut child = Command::new(cc)
        .args(["-E", "-P", "-x", "c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(b"#include <features.h>\nglibc_version __GLIBC__ __GLIBC_MINOR__\n").ok()?;
    let out = String::from_utf8(child.wait_with_output().ok()?.stdout).ok()?;
    let line = out.lines().find_map(|l| l.trim().strip_prefix("glibc_version "))?;
    let mut v = line.split_whitespace().map(|n| n.parse::<u32>().ok());
    Some((v.next()??, v.next()??))
}
