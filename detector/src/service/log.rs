//! Logging through `tracing`: plain lines or JSON on stderr, or the
//! journal's native protocol under systemd, so that a finding's fields
//! (RULE, SEVERITY, FINDING_ID...) are journal fields and
//! `journalctl -u detector RULE=lost-wakeup` finds it. The level can change
//! on reload. `log` records (aya-log's kernel diagnostics, aya's own
//! warnings) are forwarded into the same log.

use std::io::{self, IsTerminal as _};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use super::config::{Log, LogFormat};
use crate::engine::Severity;
use crate::session::{Emitted, Sink};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log level {level:?}: {message}")]
    Level { level: String, message: String },
    #[error("cannot write to the journal (log.format = \"journal\"): {0}")]
    Journal(#[source] io::Error),
    #[error("cannot set up logging: {0}")]
    Init(String),
}

/// Changes the level of the running log.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// Where logs go, for the startup line.
    pub destination: &'static str,
}

impl LogHandle {
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = env_filter(level)?;
        self.filter
            .reload(filter)
            .map_err(|e| LogError::Init(e.to_string()))
    }
}

fn env_filter(level: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(level).map_err(|e| LogError::Level {
        level: level.to_owned(),
        message: e.to_string(),
    })
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// device and inode of the stream it connects, which a redirection changes.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat fills a zeroed stat for fd 2; nothing else is touched.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

type Output = Box<dyn Layer<Registry> + Send + Sync>;

fn plain(timestamps: bool) -> Output {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    if timestamps {
        Box::new(layer)
    } else {
        Box::new(layer.without_time())
    }
}

fn journal() -> io::Result<Output> {
    let layer = tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("detector".into());
    Ok(Box::new(layer))
}

/// Sets up the daemon's log as `cfg` says.
pub fn init_for_service(cfg: &Log) -> Result<LogHandle, LogError> {
    let under_journal = stderr_is_journal();
    let (output, destination) = match cfg.format {
        LogFormat::Json => (
            Box::new(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(io::stderr),
            ) as Output,
            "JSON lines on stderr",
        ),
        LogFormat::Plain => (plain(!under_journal), "plain lines on stderr"),
        LogFormat::Journal => (journal().map_err(LogError::Journal)?, "the journal"),
        LogFormat::Auto if under_journal => match journal() {
            Ok(layer) => (layer, "the journal"),
            // stderr is the journal too, only without fields.
            Err(_) => (
                plain(false),
                "plain lines on stderr (journal socket unavailable)",
            ),
        },
        LogFormat::Auto => (plain(true), "plain lines on stderr"),
    };
    let (filter, handle) = reload::Layer::new(env_filter(&cfg.level.0)?);
    tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init()
        .map_err(|e| LogError::Init(e.to_string()))?;
    Ok(LogHandle {
        filter: handle,
        destination,
    })
}

/// Logging for the interactive commands: warnings and worse on stderr
/// (`RUST_LOG` can ask for more), where the programs' diagnostics show.
pub fn init_for_terminal() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(plain(false).with_filter(filter))
        .try_init();
}

/// The log sink: each finding once, at its severity's level (critical
/// ones at error), with its facts as fields (journal fields under
/// systemd).
pub struct FindingLog;

impl Sink for FindingLog {
    fn finding(&mut self, found: &Emitted<'_>) -> io::Result<()> {
        let f = found.finding;
        let object = format!("{} {}", f.object.kind.name(), f.object.addr);
        let device = f
            .object
            .dev
            .or(f.object.disk)
            .map(|d| d.to_string())
            .unwrap_or_default();
        let pids = join(f.sides.iter().filter(|s| s.pid != 0).map(|s| s.pid));
        let comms = join(f.sides.iter().map(|s| &s.comm));
        macro_rules! log_finding {
            ($level:ident) => {
                tracing::$level!(
                    rule = f.kind.rule().name(),
                    finding = f.kind.name(),
                    severity = f.severity.name(),
                    finding_id = found.id,
                    object = object.as_str(),
                    device = device.as_str(),
                    pids = pids.as_str(),
                    comms = comms.as_str(),
                    "{} [{}] {}{}: {}",
                    f.kind,
                    f.severity.name(),
                    object,
                    if device.is_empty() {
                        String::new()
                    } else {
                        format!(" on {device}")
                    },
                    f.explanation
                )
            };
        }
        match f.severity {
            Severity::Info => log_finding!(info),
            Severity::Warning => log_finding!(warn),
            Severity::Error | Severity::Critical => log_finding!(error),
        }
        Ok(())
    }
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        let text = item.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    seen.join(",")
}
