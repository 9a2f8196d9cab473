//! Debian packages for the guest: the stock kernel, its headers, mdadm.
//!
//! Packages are fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into the cache, never installed on the host, except the
//! kernel headers, which the test module builds against (apt puts them under
//! /usr/src, where kbuild expects them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{output, run as run_cmd};

/// The kernel flavour the bench boots: whatever Debian's `linux-image-amd64`
/// currently points at.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";

/// Marks an unpacked package directory as complete (unpacking may be
/// interrupted).
const UNPACKED_STAMP: &str = ".unpacked";

/// The kernel release `linux-image-amd64` depends on, e.g. `6.1.0-56-amd64`.
///
/// Falls back to the newest release already in the cache when apt cannot
/// tell (no package lists, no network).
pub fn kernel_release(cache: &Path) -> Result<String> {
    let resolve = || -> Option<String> {
        let out = output(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE])).ok()?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find_map(|dep| dep.strip_prefix("linux-image-"))
            .map(str::to_owned)
    };
    if let Some(release) = resolve() {
        return Ok(release);
    }
    eprintln!("vm: apt does not know {KERNEL_META_PACKAGE}; updating the package lists");
    if run_cmd(Command::new("apt-get").args(["update", "-qq"])).is_ok()
        && let Some(release) = resolve()
    {
        return Ok(release);
    }
    cached_kernel_release(cache).with_context(|| {
        format!("cannot resolve {KERNEL_META_PACKAGE} with apt and no kernel is cached")
    })
}

fn cached_kernel_release(cache: &Path) -> Option<String> {
    let mut releases: Vec<String> = fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("kernel-").map(str::to_owned))
        .filter(|r| {
            cache
                .join(format!("kernel-{r}"))
                .join(UNPACKED_STAMP)
                .exists()
        })
        .collect();
    releases.sort();
    releases.pop()
}

/// Downloads (once) and unpacks (once) `package` into `dest`.
pub fn unpacked(cache: &Path, package: &str, dest: &Path) -> Result<PathBuf> {
    if dest.join(UNPACKED_STAMP).exists() {
        return Ok(dest.to_path_buf());
    }
    let deb = download(cache, package)?;
    if dest.exists() {
        fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    fs::create_dir_all(dest)?;
    eprintln!("vm: unpacking {}", deb.display());
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dest))?;
    fs::write(dest.join(UNPACKED_STAMP), b"")?;
    Ok(dest.to_path_buf())
}

/// The `.deb` of `package` in `<cache>/debs`, downloaded if missing.
fn download(cache: &Path, package: &str) -> Result<PathBuf> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let find = || -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(&debs)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            }))
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    eprintln!("vm: downloading {package}");
    // apt's sandbox user cannot write into the cache; root downloading
    // unsandboxed is fine (and only warns).
    run_cmd(
        Command::new("apt-get")
            .current_dir(&debs)
            .args(["download", "-q", package]),
    )?;
    find()?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            debs.display()
        )
    })
}

/// Installs `linux-headers-<release>` with apt unless kbuild's tree is there.
pub fn kernel_headers(release: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(format!("/usr/src/linux-headers-{release}"));
    if dir.join("Makefile").exists() {
        return Ok(dir);
    }
    eprintln!("vm: installing linux-headers-{release} (the test module builds against them)");
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .arg(format!("linux-headers-{release}"))
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !dir.join("Makefile").exists() {
        bail!(
            "linux-headers-{release} installed but {} has no Makefile",
            dir.display()
        );
    }
    Ok(dir)
}
