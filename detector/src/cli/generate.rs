//! `detector generate DIR` (hidden): the man pages and shell completions the
//! package ships, generated from the clap definitions so that they never
//! drift from the flags the binary accepts.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

pub fn run(dir: &Path) -> Result<ExitCode> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut cmd = without_help_subcommands(Cli::command());
    cmd.build();
    // detector(1) and one page per visible subcommand, nested ones too
    // (detector-config-check(1)); hidden ones (this one) get none.
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "detector", &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `help` is clap's own subcommand: `detector help run` is `detector run
/// --help`, which needs no page or completion of its own.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .iter()
        .fold(cmd.disable_help_subcommand(true), |cmd, name| {
            cmd.mut_subcommand(name, without_help_subcommands)
        })
}
