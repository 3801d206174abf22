//! `pm-runtime`: a shell around [`pm_runtime::run`] that maps its outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    pm_runtime::run(std::env::args().collect()).into()
}
