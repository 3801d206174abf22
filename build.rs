//! Link settings for the static release binary (the one npm/build.sh ships).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/layout.ld");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // Static glibc (static-pie): relative relocations packed as DT_RELR (a bitmap per 63 words
    // instead of 24 bytes per pointer): the binary is about 200 KB smaller and start-up has that
    // much less to read. glibc >= 2.36 applies them in its static-pie start-up code, and the
    // binary carries its own glibc, so the system's does not matter. Dynamic builds are left
    // as they are: there a DT_RELR binary would need glibc >= 2.36 on the machine it runs on.
    if os == "linux" && features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Optional features' code and start-up-only code out of the pages the running supervisor
    // maps (see link/layout.ld). Every Linux build, so that tests run the same layout.
    if os == "linux" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link/layout.ld");
    }
}
