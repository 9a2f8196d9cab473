//! `detector run`: the daemon. Everything that can be wrong with its
//! configuration or environment (the file, the findings path, the metrics
//! port) is found before any program is loaded.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::RunArgs;
use crate::metrics::Metrics;
use crate::service::config::{DEFAULT_PATH, Loaded};
use crate::service::daemon::{self, Daemon};
use crate::service::log;
use crate::service::notify::Notifier;
use crate::service::store::{Repair, Store};

/// The configuration file to read, and whether the user named it.
pub fn config_path(given: Option<&PathBuf>) -> (PathBuf, bool) {
    match given {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    }
}

fn report_repairs(store: &Store, repairs: Vec<Repair>) {
    for repair in repairs {
        match repair {
            Repair::TornTail {
                bytes,
                offset,
                aside,
            } => tracing::warn!(
                "{}: the last line was cut short ({bytes} bytes at offset {offset}, a write \
                 interrupted by a crash or power loss); moved to {} and left out",
                store.path().display(),
                aside.display()
            ),
            Repair::BadLine { line, error } => tracing::warn!(
                "{} line {line} is not a stored finding ({error}); left in place, skipped by readers",
                store.path().display()
            ),
        }
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let (config_path, config_explicit) = config_path(args.config.as_ref());
    let loaded = Loaded::read(&config_path, config_explicit)?;
    let config = &loaded.config;
    let log = log::init_for_service(&config.log)?;
    let findings = &config.findings;
    let (store, repairs) = Store::open(
        findings.path.get_ref(),
        findings.rotate_size.0,
        findings.keep,
    )
    .map_err(|e| loaded.error_at(findings.path.span(), "findings.path", e.to_string()))?;
    report_repairs(&store, repairs);
    let addr = config.metrics.address.get_ref().0;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        loaded.error_at(
            config.metrics.address.span(),
            "metrics.address",
            format!("cannot listen on {addr}: {e}"),
        )
    })?;
    let metrics = Arc::new(Metrics::new()?);
    // Threads inherit this: the reader must be free to run on any CPU.
    crate::session::live::unpin_from_cpus();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let daemon = Daemon {
        loaded,
        config_path,
        config_explicit,
        metrics,
        log,
        notifier: Notifier::from_env(),
    };
    runtime.block_on(daemon::run(daemon, store, listener, args.replay))?;
    Ok(ExitCode::SUCCESS)
}
