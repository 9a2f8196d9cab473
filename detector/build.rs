//! Builds the eBPF programs (detector-ebpf, nightly, bpfel-unknown-none) and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

#[path = "build/nested_output.rs"]
mod nested_output;

fn main() -> anyhow::Result<()> {
    // AYA_BUILD_SKIP=1 (fuzzing, quick checks) skips the eBPF build; leave an
    // empty object so the crate still compiles. Loading it fails clearly.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        std::fs::write(out.join("detector"), [])?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "detector-ebpf")
        .ok_or_else(|| anyhow!("detector-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("detector-ebpf's manifest has no parent directory"))?;
    let (result, captured) = capture_stdout(|| {
        aya_build::build_ebpf(
            [Package {
                name: ebpf.name.as_str(),
                root_dir: root_dir.as_str(),
                ..Default::default()
            }],
            Toolchain::default(),
        )
    })?;
    for line in nested_output::filter(&captured, result.is_err()) {
        println!("{line}");
    }
    result
}

/// Runs `f` with this process's stdout (where aya-build prints its
/// `cargo:` lines) going into a pipe, and returns what it printed.
fn capture_stdout<T>(f: impl FnOnce() -> T) -> anyhow::Result<(T, String)> {
    std::io::stdout().flush()?;
    let (mut reader, writer) = std::io::pipe()?;
    // SAFETY: dup and dup2 on descriptors this process owns; fd 1 is
    // restored before returning, and `saved` owns the duplicate.
    let saved = unsafe {
        let fd = libc::dup(1);
        anyhow::ensure!(fd >= 0, "dup(1): {}", std::io::Error::last_os_error());
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    // SAFETY: as above.
    anyhow::ensure!(
        unsafe { libc::dup2(writer.as_raw_fd(), 1) } >= 0,
        "dup2: {}",
        std::io::Error::last_os_error()
    );
    drop(writer);
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        reader.read_to_string(&mut text).map(|_| text)
    });
    let result = f();
    std::io::stdout().flush()?;
    // SAFETY: as above; this closes the pipe's last write end, so the
    // drain thread sees the end of the output.
    anyhow::ensure!(
        unsafe { libc::dup2(saved.as_raw_fd(), 1) } >= 0,
        "dup2: {}",
        std::io::Error::last_os_error()
    );
    let text = drain
        .join()
        .map_err(|_| anyhow!("the output reader panicked"))??;
    Ok((result, text))
}
