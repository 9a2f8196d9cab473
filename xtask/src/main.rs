//! `cargo xtask`: everything around building and testing detector.
//!
//! Each command prepares the machine itself (`setup`), so that on a fresh
//! machine `cargo xtask run -- trace` and `cargo xtask test` are single
//! commands.

mod bench;
mod fuzz;
mod package;
mod setup;
mod test;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run and test detector", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this machine able to build and test detector: nightly rust-src,
    /// bpf-linker built against nightly's LLVM, cargo-fuzz, Debian packages.
    /// Idempotent; quick when everything is in place.
    Setup,
    /// Build detector (release) and run it as root with the given arguments,
    /// e.g. `cargo xtask run -- trace --duration 10s`.
    Run {
        /// Arguments for detector.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit and replay tests, privileged live tests on this
    /// host, a fuzz smoke run, and the VM bench on Debian's stock kernel.
    Test(test::TestArgs),
    /// Boot Debian's stock kernel under qemu and run the race scenarios.
    VmTest(vm::VmTestArgs),
    /// Measure every cost figure of issue 9 in one table: fio IOPS ratios
    /// against untraced and a bpftrace peer, per-program BPF cost, CPU per
    /// event, perf bench slowdown, record size, engine scale, loss-free
    /// event rate, detection latency (`--quick`: a short smoke run).
    Bench(bench::BenchArgs),
    /// Build the Debian package (target/debian/detector_<version>_amd64.deb)
    /// with cargo-deb: the binary, the systemd unit, the default
    /// configuration, man pages and completions; then check it with lintian.
    Package,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Run { args } => {
            setup::run()?;
            let bin = util::build_detector_release()?;
            util::exec(&bin, &args)
        }
        Command::Test(args) => {
            setup::run()?;
            test::run(args)
        }
        Command::VmTest(args) => {
            setup::run()?;
            vm::run(args)
        }
        Command::Package => {
            setup::run()?;
            package::run()
        }
        Command::Bench(args) => {
            setup::run()?;
            bench::run(args)
        }
    }
}
