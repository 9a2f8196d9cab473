use std::process::ExitCode;

use clap::Parser;
use detector::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
