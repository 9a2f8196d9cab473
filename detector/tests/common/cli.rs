//! Running the built `detector` binary from command-line tests.

use std::process::{Command, Output};

/// `detector ARGS...`, its output captured.
pub fn detector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(args)
        .output()
        .expect("detector runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
