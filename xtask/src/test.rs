//! `cargo xtask test`: every test the project has, in one command.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::util::{run as run_cmd, workspace_root};

#[derive(Args)]
pub struct TestArgs {
    /// Skip the VM bench and the benign suite (they boot a kernel under
    /// emulation: minutes).
    #[arg(long)]
    skip_vm: bool,
    /// Skip the fuzz smoke run.
    #[arg(long)]
    skip_fuzz: bool,
    /// Skip the bench smoke run (`cargo xtask bench --quick`).
    #[arg(long)]
    skip_bench: bool,
    /// Seconds for each fuzz target's smoke run.
    #[arg(long, default_value_t = 20)]
    fuzz_seconds: u32,
}

pub fn run(args: TestArgs) -> Result<()> {
    let root = workspace_root();
    eprintln!("test: unit, replay and property tests");
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["test", "--workspace"]),
    )?;
    eprintln!("test: privileged tests on this host's kernel (root, one at a time)");
    run_cmd(Command::new("cargo").current_dir(&root).args([
        "test",
        "--package",
        "detector",
        "--test",
        "live",
        "--test",
        "service",
        "--",
        "--ignored",
        "--test-threads=1",
    ]))?;
    eprintln!("test: the Debian package (contents, conffile, unit, lintian)");
    crate::package::run()?;
    if !args.skip_fuzz {
        crate::fuzz::smoke(&root, args.fuzz_seconds)?;
    }
    if !args.skip_bench {
        // Every figure produced and sane; how fast is not a test result.
        eprintln!("test: bench smoke run (cargo xtask bench --quick)");
        crate::bench::run(crate::bench::BenchArgs {
            quick: true,
            ..Default::default()
        })?;
    }
    if !args.skip_vm {
        crate::vm::run(crate::vm::VmTestArgs::default())?;
        eprintln!("test: the benign suite in a Debian guest (zero findings)");
        crate::vm::run(crate::vm::VmTestArgs::benign_suite())?;
        eprintln!(
            "test: detector as a service on a Debian test server (the .deb, systemd, Prometheus, Alertmanager)"
        );
        crate::vm::run(crate::vm::VmTestArgs::service_test())?;
    }
    eprintln!("test: all passed");
    Ok(())
}
