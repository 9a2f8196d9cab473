//! `detector config check FILE` and `detector config default`.

use std::process::ExitCode;

use anyhow::Result;

use super::ConfigCommand;
use crate::service::config::{Loaded, default_file};

pub fn run(command: ConfigCommand) -> Result<ExitCode> {
    match command {
        ConfigCommand::Default => print!("{}", default_file()),
        ConfigCommand::Check { file } => {
            let loaded = Loaded::read(&file, true)?;
            loaded.check_environment()?;
            let c = &loaded.config;
            println!(
                "{}: valid; metrics on {}, findings in {}",
                file.display(),
                c.metrics.address.get_ref().0,
                c.findings.path.get_ref().display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
