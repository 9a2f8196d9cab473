//! Which lines of the nested eBPF build reach the terminal.
//!
//! aya-build runs `cargo build` for the eBPF crate and forwards every line
//! it prints, cargo's progress included ("Compiling core v0.0.0 ..."), as
//! `cargo:warning=` lines: cargo then shows each as a build-script warning,
//! and a clean first build looks like dozens of warnings. Progress lines
//! are dropped; rustc's diagnostics (warnings and errors, with their
//! source excerpts) and anything else stay visible. A failed nested build
//! shows everything it printed.

/// cargo's status verbs, right-aligned in a 12-column field.
const CARGO_PROGRESS: &[&str] = &[
    "Adding",
    "Blocking",
    "Compiling",
    "Downloaded",
    "Downloading",
    "Finished",
    "Fresh",
    "Locking",
    "Updating",
    "Waiting",
];

/// Whether a `cargo:warning=` line forwarded from the nested build is
/// cargo's progress rather than something a person should read.
pub fn is_progress(line: &str) -> bool {
    let indent = line.len() - line.trim_start().len();
    let verb = line.trim_start().split(' ').next().unwrap_or_default();
    // cargo right-aligns its verbs; a diagnostic's source excerpt that
    // starts with one of these words is not indented that way.
    indent > 0 && indent + verb.len() == 12 && CARGO_PROGRESS.contains(&verb)
}

/// What the build script prints of aya-build's output: every line but the
/// progress of a successful nested build.
pub fn filter(captured: &str, build_failed: bool) -> Vec<&str> {
    captured
        .lines()
        .filter(|line| {
            build_failed || !line.strip_prefix("cargo:warning=").is_some_and(is_progress)
        })
        .collect()
}
