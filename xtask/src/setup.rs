//! Makes a fresh machine able to build and test detector.
//!
//! Every step first checks whether it is needed, so a second run takes a
//! few hundred milliseconds.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{output, run as run_cmd};

/// Debian packages the tests use: fio and e2fsprogs for the live benign
/// workload, bpftool to cross-check program stats, qemu and busybox for the
/// VM bench (qemu-utils is already installed, newer, and must not be
/// replaced), cpio to pack its initramfs, xz-utils to unpack its kernel,
/// make to build its test module (the kernel headers it builds against are
/// installed by `cargo xtask vm-test`: their version follows the kernel),
/// gcc and libc6-dev to build its static helpers, dmsetup for its
/// device-mapper scenarios (copied into the guest with its libraries);
/// debootstrap builds the Debian guest's root file system, e2fsprogs'
/// mkfs.ext4 packs it into an image. `cargo xtask bench` compares detector
/// with a bpftrace script, runs `perf bench` (linux-perf), stages a stalled
/// device behind a FUSE file system (bindfs) and pins single-core runs with
/// taskset (util-linux). The service tests run a real Prometheus server and
/// promtool (prometheus) and use a mount namespace (util-linux's unshare).
/// `cargo xtask package` checks its .deb with lintian; the Debian service
/// guest alerts through a real Alertmanager (prometheus-alertmanager).
const PACKAGES: &[&str] = &[
    "bindfs",
    "bpftool",
    "bpftrace",
    "busybox-static",
    "cpio",
    "debootstrap",
    "dmsetup",
    "e2fsprogs",
    "fio",
    "gcc",
    "libc6-dev",
    "lintian",
    "linux-perf",
    "make",
    "prometheus",
    "prometheus-alertmanager",
    "qemu-system-x86",
    "util-linux",
    "xz-utils",
];

pub fn run() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_tool("fuzz", "cargo-fuzz")?;
    cargo_tool("deb", "cargo-deb")?;
    debian_packages()?;
    Ok(())
}

fn nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: installing nightly with rust-src (eBPF programs build with -Z build-std)");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}

/// bpf-linker must link against the same LLVM as nightly rustc; there is no
/// system LLVM of that version, so it is built against rustc's own libLLVM.
/// A nightly update changes that library, so "installed" is not enough: it
/// has to run.
fn bpf_linker() -> Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib_dir.display()))?;
    let llvm_link = llvm
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_owned();
    let major = llvm_link
        .trim_start_matches("LLVM-")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default()
        .to_owned();
    if major.is_empty() {
        bail!("cannot tell the LLVM version from {llvm}");
    }
    eprintln!("setup: building bpf-linker against nightly's {llvm} (about a minute)");
    let lib = lib_dir.display();
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major},no-llvm-linking"))
            .env(
                "RUSTFLAGS",
                format!(
                    "-C link-arg=-L{lib} -C link-arg=-l{llvm_link} -C link-arg=-Wl,-rpath,{lib}"
                ),
            ),
    )?;
    if !cargo_bin("bpf-linker").exists() {
        bail!(
            "bpf-linker was built but is not in {}",
            cargo_bin("").display()
        );
    }
    Ok(())
}

/// A cargo subcommand (`cargo fuzz`, `cargo deb`) from crates.io.
fn cargo_tool(subcommand: &str, krate: &str) -> Result<()> {
    let works = Command::new("cargo")
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    eprintln!("setup: installing {krate}");
    run_cmd(Command::new("cargo").args(["install", krate, "--locked"]))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
