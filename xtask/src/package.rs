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
    verify(&deb)?;
    lintian(&deb)?;
    println!("{}", deb.display());
    Ok(())
}

/// Paths every package must hold (man pages: one per subcommand too).
const SHIPPED: &[&str] = &[
    "./usr/bin/detector",
    "./usr/lib/systemd/system/detector.service",
    "./etc/detector/detector.toml",
    "./usr/share/doc/detector/README.md",
    "./usr/share/doc/detector/alerts.yml",
    "./usr/share/doc/detector/prometheus-scrape.yml",
    "./usr/share/doc/detector/copyright",
    "./usr/share/man/man1/detector.1.gz",
    "./usr/share/man/man1/detector-run.1.gz",
    "./usr/share/man/man1/detector-config-check.1.gz",
    "./usr/share/bash-completion/completions/detector",
    "./usr/share/zsh/vendor-completions/_detector",
    "./usr/share/fish/vendor_completions.d/detector.fish",
];

/// The package holds what it must, its conffile is the packaged binary's
/// own `config default`, and its unit passes `systemd-analyze verify`.
pub fn verify(deb: &Path) -> Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let missing: Vec<&&str> = SHIPPED.iter().filter(|p| !paths.contains(p)).collect();
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}", deb.display());
    }
    let conffiles = output(
        Command::new("dpkg-deb")
            .args(["--info"])
            .arg(deb)
            .arg("conffiles"),
    )?;
    if conffiles.trim() != "/etc/detector/detector.toml" {
        bail!("conffiles of {}: {conffiles:?}", deb.display());
    }
    let dir = workspace_root().join("target/debian/verify");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
    let packaged = dir.join("usr/bin/detector");
    let default = output(Command::new(&packaged).args(["config", "default"]))?;
    if fs::read_to_string(dir.join("etc/detector/detector.toml"))? != default {
        bail!("the packaged /etc/detector/detector.toml is not `detector config default`");
    }
    let unit = dir.join("usr/lib/systemd/system/detector.service");
    // The man pages named in Documentation= are the package's. ExecStart=
    // names /usr/bin/detector, which this build host need not have: the
    // service test runs verify again where the package is installed.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.join("usr/share/man"))
        .output()
        .context("systemd-analyze")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let not_installed = "Command /usr/bin/detector is not executable";
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(not_installed) || Path::new("/usr/bin/detector").exists())
        .collect();
    if !complaints.is_empty() {
        bail!(
            "systemd-analyze verify {}: {}",
            unit.display(),
            complaints.join("\n")
        );
    }
    let security = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&unit),
    )?;
    if let Some(score) = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    {
        eprintln!(
            "package: systemd-analyze security: {}",
            score.trim_start_matches(['→', ' '])
        );
    }
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
