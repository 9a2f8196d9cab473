//! The guests' small C programs (tests/vm/helpers/*.c), built static on
//! the host with the C compiler the test module needs anyway, so that they
//! run on busybox's bare root file system.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::util::run as run_cmd;

/// Builds each `src/NAME.c` into `build/NAME` (again only when the source
/// is newer); returns the programs.
pub fn build(src: &Path, build: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(build)?;
    let mut built = Vec::new();
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
        else {
            continue;
        };
        let out = build.join(name);
        if !is_newer(&out, &path) {
            run_cmd(
                Command::new("cc")
                    .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
                    .arg(&out)
                    .arg(&path),
            )
            .with_context(|| format!("building {} (packages gcc, libc6-dev)", path.display()))?;
        }
        built.push(out);
    }
    built.sort();
    Ok(built)
}

/// Whether `file` exists and was modified after `than`.
fn is_newer(file: &Path, than: &Path) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(file), modified(than)), (Some(f), Some(t)) if f > t)
}
