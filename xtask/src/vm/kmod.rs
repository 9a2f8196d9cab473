//! Building the test module (tests/kmod) against the guest kernel's headers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::util::run as run_cmd;

/// Builds in `build` (a copy of `src`, so the source tree stays clean);
/// only changed files are copied, so make's rebuild check still works.
pub fn build(src: &Path, build: &Path, headers: &Path) -> Result<PathBuf> {
    fs::create_dir_all(build)?;
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let wanted =
            name.ends_with(".c") || name.ends_with(".h") || name == "Kbuild" || name == "Makefile";
        if !wanted {
            continue;
        }
        let contents = fs::read(&path)?;
        let to = build.join(name);
        if fs::read(&to).ok().as_deref() != Some(&contents[..]) {
            fs::write(&to, contents)?;
        }
    }
    run_cmd(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", build.display()))
            .arg("modules"),
    )
    .context("building the test module (tests/kmod)")?;
    let ko = build.join("racebench.ko");
    anyhow::ensure!(ko.exists(), "make left no {}", ko.display());
    Ok(ko)
}
