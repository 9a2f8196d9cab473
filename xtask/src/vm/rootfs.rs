//! The Debian guest's root file system: Debian bookworm from Debian's own
//! packages (`debootstrap`), cached in `.vm-cache/` under a hash of the
//! package list (a new list builds a new one), with the bench kernel's
//! modules and config added, packed into an ext4 disk image with
//! `mkfs.ext4 -d` (no loop mount).
//!
//! The image is booted with qemu's `snapshot=on`: a guest's writes go to a
//! throwaway overlay, so every boot starts from the same cached image.
//! systemd is installed (not started by the bench's guests) so that a guest
//! can also boot it as PID 1 and run detector as a service.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use crate::util::{output, run as run_cmd};
use crate::vm::kernel::Kernel;
use crate::vm::mirror;

pub const SUITE: &str = "bookworm";

/// What the benign suite and blktests run, plus systemd for a guest that
/// boots as a server. `minbase` brings only Essential packages besides.
pub const PACKAGES: &[&str] = &[
    // init, device manager, module loading, loopback for nvme over TCP
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    // the workloads
    "fio",
    "e2fsprogs",
    "xfsprogs",
    "mdadm",
    "dmsetup",
    "util-linux",
    // blktests and its helpers' needs (bsdextrautils: column)
    "gawk",
    "bc",
    "bsdextrautils",
    "procps",
    "psmisc",
    "sg3-utils",
    "nvme-cli",
    "fdisk",
    "parted",
    "pciutils",
    // the service guest: which BPF programs and links the kernel holds,
    // man pages of the installed package
    "bpftool",
    "man-db",
];

/// The file system label the initramfs finds the root by.
pub const ROOT_LABEL: &str = "debian-root";

/// Bump when what `customize` or `install_kernel` writes changes: the
/// cached trees and images are rebuilt.
const LAYOUT: u32 = 1;

/// Marks a finished step (a build may be interrupted at any point).
const STAMP: &str = ".complete";

/// Free space the image gets beyond its contents: blktests and the
/// workloads write their files on the root file system.
const IMAGE_HEADROOM_BYTES: u64 = 3 << 30;

/// The cache directory of this package list: `debian-bookworm-<hash>`.
pub fn cache_dir(cache: &Path) -> PathBuf {
    cache.join(format!("debian-{SUITE}-{}", list_hash(PACKAGES)))
}

/// The first 16 hex digits of SHA-256 over the suite, layout and sorted
/// package list.
fn list_hash(packages: &[&str]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    h.update(format!("{SUITE}\nlayout {LAYOUT}\n{}\n", sorted.join("\n")));
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The root image for `kernel`, built if missing. Earlier package lists'
/// trees and images are removed (each is about a gigabyte).
pub fn image(cache: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let dir = cache_dir(cache);
    remove_other_lists(cache, &dir)?;
    let root = dir.join("root");
    if !root.join(STAMP).exists() {
        bootstrap(&dir, &root)?;
    }
    let image = dir.join(format!("root-{}.ext4", kernel.release));
    if image.exists() {
        return Ok(image);
    }
    install_kernel(&root, kernel)?;
    make_image(&dir, &root, &image)?;
    Ok(image)
}

fn remove_other_lists(cache: &Path, keep: &Path) -> Result<()> {
    let prefix = format!("debian-{SUITE}-");
    for entry in fs::read_dir(cache)? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix))
            && path != keep;
        if stale && path.is_dir() {
            eprintln!("vm: removing {} (another package list)", path.display());
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// debootstrap into `root` (started afresh if an earlier run stopped).
fn bootstrap(dir: &Path, root: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    let mirror = mirror::for_suite(SUITE)?;
    eprintln!(
        "vm: building a Debian {SUITE} root file system from {mirror} ({} packages; a minute or more)",
        PACKAGES.len()
    );
    let log = dir.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "--merged-usr"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(root)
        .arg(&mirror)
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(dir.join("debootstrap.err"))?)
        .status()
        .context("cannot start debootstrap (cargo xtask setup installs it)")?;
    if !status.success() {
        let err = fs::read_to_string(root.join("debootstrap/debootstrap.log"))
            .or_else(|_| fs::read_to_string(dir.join("debootstrap.err")))
            .unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        bail!(
            "debootstrap failed ({status}); its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    customize(root)?;
    fs::write(root.join(STAMP), b"")?;
    Ok(())
}

/// What a freshly bootstrapped system lacks to be a usable guest.
fn customize(root: &Path) -> Result<()> {
    fs::write(root.join("etc/hostname"), "detector-guest\n")?;
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tdetector-guest\n::1\tlocalhost ip6-localhost\n",
    )?;
    fs::write(
        root.join("etc/fstab"),
        format!("LABEL={ROOT_LABEL}\t/\text4\tdefaults\t0\t1\n"),
    )?;
    // downloaded packages and lists: 100+ MB the guest never reads
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let path = root.join(dir);
        for entry in fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))? {
            let p = entry?.path();
            if p.is_file() {
                fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

/// The bench kernel's modules (indexed, so the guest's modprobe finds
/// them) and its config (blktests reads `/boot/config-$(uname -r)`); any
/// other release's are removed.
fn install_kernel(root: &Path, kernel: &Kernel) -> Result<()> {
    let modules = root.join("usr/lib/modules");
    if modules.exists() {
        fs::remove_dir_all(&modules)?;
    }
    fs::create_dir_all(&modules)?;
    run_cmd(
        Command::new("cp")
            .arg("-a")
            .arg(kernel.modules_dir())
            .arg(&modules),
    )?;
    // the guest's own depmod: the index is in its kmod's format
    run_cmd(
        Command::new("chroot")
            .arg(root)
            .args(["depmod", "-a"])
            .arg(&kernel.release),
    )
    .context("depmod in the guest's root file system")?;
    let boot = root.join("boot");
    for entry in fs::read_dir(&boot)? {
        let p = entry?.path();
        if p.is_file() {
            fs::remove_file(&p)?;
        }
    }
    let config = format!("boot/config-{}", kernel.release);
    fs::copy(kernel.root.join(&config), root.join(&config))
        .with_context(|| format!("copying {config}"))?;
    Ok(())
}

/// `mkfs.ext4 -d`: the tree becomes the image's contents as root owns it.
fn make_image(dir: &Path, root: &Path, image: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "ext4") {
            fs::remove_file(&p)?;
        }
    }
    let used: u64 = output(Command::new("du").args(["-sb"]).arg(root))?
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")?;
    let size_mb = (used + used / 4 + IMAGE_HEADROOM_BYTES).div_ceil(1 << 20);
    eprintln!("vm: making the guest's root image ({size_mb} MiB, sparse)");
    let tmp = image.with_extension("tmp");
    run_cmd(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", ROOT_LABEL, "-E", "root_owner=0:0", "-d"])
            .arg(root)
            .arg(&tmp)
            .arg(format!("{size_mb}M")),
    )?;
    fs::rename(&tmp, image)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_the_list_not_its_order() {
        let a = list_hash(&["fio", "mdadm", "systemd"]);
        assert_eq!(a, list_hash(&["systemd", "fio", "mdadm", "fio"]));
        assert_ne!(a, list_hash(&["fio", "mdadm"]));
        assert_eq!(a.len(), 16);
    }
}
