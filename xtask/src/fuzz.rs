//! Short fuzzing runs of the decoders, as a smoke test.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::util::run as run_cmd;

/// Every fuzz target under `fuzz/`.
const TARGETS: &[&str] = &["record_file", "ring_record"];

pub fn smoke(root: &Path, seconds: u32) -> Result<()> {
    for target in TARGETS {
        eprintln!("test: fuzzing {target} for {seconds}s");
        run_cmd(
            Command::new("cargo")
                .current_dir(root)
                .args(["+nightly", "fuzz", "run", target, "--"])
                // The fuzzed decoders do not need the eBPF object.
                .env("AYA_BUILD_SKIP", "1")
                .arg(format!("-max_total_time={seconds}")),
        )?;
    }
    Ok(())
}
