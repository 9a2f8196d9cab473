//! `cargo xtask package`: the Debian package, built by cargo-deb from the
//! release binary and what the binary generates about itself (man pages,
//! completions, the commented default configuration), then checked with
//! lintian.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{build_detector_release, output, run as run_cmd, workspace_root};

/// Builds `target/debian/detector_<version>_amd64.deb` and returns its path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let detector = build_detector_release()?;
    generate(&detector, &root.join("target/generated"))?;
    let out = output(Command::new("cargo").current_dir(&root).args([
        "deb",
        "--package",
        "detector",
        "--no-build",
        "--locked",
    ]))
    .context("cargo deb (cargo xtask setup installs it)")?;
    let deb = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb printed no package path")?;
    if !deb.exists() {
        bail!("cargo deb named {} but it does not exist", deb.display());
    }
    Ok(deb)
}

/// `cargo xtask package`: build, then lintian (errors fail; warnings are
/// printed and justified in docs/deployment.md).
pub fn run() -> Result<()> {
    let deb = build()?;
    lintian(&deb)?;
    println!("{}", deb.display());
    Ok(())
}

/// What the package ships beside the binary, made by the binary itself so
/// that it always matches its flags and defaults.
fn generate(detector: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    run_cmd(Command::new(detector).arg("generate").arg(dir))?;
    let config = output(Command::new(detector).args(["config", "default"]))?;
    fs::write(dir.join("detector.toml"), config)?;
    Ok(())
}

/// Fails on any lintian error; prints the rest.
pub fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--display-info"])
        .arg(deb)
        .output()
        .context("cannot start lintian (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        eprintln!("lintian: {line}");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    if !errors.is_empty() {
        bail!(
            "lintian found {} error(s) in {}",
            errors.len(),
            deb.display()
        );
    }
    if !out.status.success() && text.trim().is_empty() {
        bail!(
            "lintian failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
