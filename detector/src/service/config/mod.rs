//! `detector run`'s configuration: a TOML file, every key optional with a
//! documented default (`detector config default` prints them all). A bad
//! file is one message naming the file, the line and the key.

mod template;
mod values;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use template::default_file;
pub use values::{Bytes, ListenAddr, LogLevel, RingSize, Seconds, TaskMapEntries, parse_size};

use crate::cli::EngineArgs;
use crate::engine::Rule;
use crate::event::Dev;
use crate::filter::EventFilter;
use crate::kernel::syscall_hooks::{Policy, When};

/// Where `detector run` looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/detector/detector.toml";
/// The metrics port. 9975, first meant, lies in 9100-9999, the range of
/// Prometheus' default port allocations, which has been fully allocated
/// since 2023; 19975 is outside it and below Linux's ephemeral ports.
pub const DEFAULT_METRICS_PORT: u16 = 19975;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Rule name -> on/off; rules not listed are on (all are listed by
    /// default, so the default file shows them).
    pub rules: BTreeMap<Rule, bool>,
    pub thresholds: Thresholds,
    pub filter: Filter,
    pub kernel: Kernel,
    pub metrics: Metrics,
    pub findings: Findings,
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rules: Rule::ALL.into_iter().map(|r| (r, true)).collect(),
            thresholds: Thresholds::default(),
            filter: Filter::default(),
            kernel: Kernel::default(),
            metrics: Metrics::default(),
            findings: Findings::default(),
            log: Log::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Thresholds {
    pub lost_wakeup_after: Seconds,
    pub stuck_handler_after: Seconds,
    pub lost_io_after: Seconds,
}

impl Default for Thresholds {
    fn default() -> Self {
        // The same defaults as `trace`'s flags.
        Self {
            lost_wakeup_after: Seconds(Duration::from_secs(5)),
            stuck_handler_after: Seconds(Duration::from_secs(2)),
            lost_io_after: Seconds(Duration::from_secs(30)),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Filter {
    pub devices: Vec<Dev>,
    pub exclude_devices: Vec<Dev>,
    pub pids: Vec<u32>,
    pub exclude_pids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Kernel {
    pub ring_buffer_size: RingSize,
    pub stack_budget: u32,
    /// Entries of each per-task map (as `trace --task-map-entries`).
    pub task_map_entries: TaskMapEntries,
    /// When sys_exit/sys_enter are attached (as `trace --syscall-hooks`).
    pub syscall_hooks: When,
    /// As `trace --syscall-hooks-idle`.
    pub syscall_hooks_idle: Seconds,
}

impl Kernel {
    /// The policy `syscall-hooks` and `syscall-hooks-idle` ask for.
    pub fn syscall_hooks_policy(&self) -> Policy {
        Policy::new(self.syscall_hooks, self.syscall_hooks_idle.0)
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Self {
            ring_buffer_size: RingSize(16 << 20),
            stack_budget: 10_000,
            task_map_entries: TaskMapEntries(65536),
            syscall_hooks: When::OnDemand,
            syscall_hooks_idle: Seconds(Duration::from_secs(10)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Metrics {
    pub address: Spanned<ListenAddr>,
}

impl Default for Metrics {
    fn default() -> Self {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT));
        Self {
            address: Spanned::new(0..0, ListenAddr(addr)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Findings {
    pub path: Spanned<PathBuf>,
    pub rotate_size: Bytes,
    pub keep: u32,
}

impl Default for Findings {
    fn default() -> Self {
        Self {
            path: Spanned::new(0..0, PathBuf::from("/var/lib/detector/findings.jsonl")),
            rotate_size: Bytes(64 << 20),
            keep: 5,
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// The journal's native protocol when stderr is the journal
    /// (`JOURNAL_STREAM`), plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines on stderr (no timestamps under the journal: it adds them).
    Plain,
    /// One JSON object per line on stderr.
    Json,
    /// The journal's native protocol, fields and all.
    Journal,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Log {
    pub format: LogFormat,
    pub level: LogLevel,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: LogLevel("info".into()),
        }
    }
}

/// The smallest rotation size: below it a single large finding (both
/// stacks) could rotate the file at every write.
const MIN_ROTATE_SIZE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{}", located(path, *line, key.as_deref(), message))]
    Invalid {
        path: PathBuf,
        /// 1-based; 0 when the problem has no place in the file (a default).
        line: usize,
        key: Option<String>,
        message: String,
    },
}

fn located(path: &Path, line: usize, key: Option<&str>, message: &str) -> String {
    let place = match (line, key) {
        (0, Some(key)) => format!("{}: key {key} (default)", path.display()),
        (0, None) => path.display().to_string(),
        (line, Some(key)) => format!("{} line {line}, key {key}", path.display()),
        (line, None) => format!("{} line {line}", path.display()),
    };
    format!("bad configuration: {place}: {message}")
}

/// A configuration as read from a file (or the defaults), with what is
/// needed to point at its lines.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file it came from; `None`: built-in defaults.
    pub path: Option<PathBuf>,
    text: String,
}

impl Loaded {
    /// The built-in defaults.
    pub fn defaults() -> Self {
        Self {
            config: Config::default(),
            path: None,
            text: String::new(),
        }
    }

    /// Reads `path`; `explicit` says the user named it (otherwise a
    /// missing default file means the defaults).
    pub fn read(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::defaults());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let config = parse(path, &text)?;
        Ok(Self {
            config,
            path: Some(path.to_owned()),
            text,
        })
    }

    /// The same file's place, holding `config` instead.
    pub fn with_config(self, config: Config) -> Self {
        Self { config, ..self }
    }

    /// The name to quote in messages.
    pub fn name(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("(built-in defaults)"))
    }

    /// An error about the value of `key`, whose value spans `span`.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: String,
    ) -> ConfigError {
        let line = if span.is_empty() {
            0
        } else {
            line_of(&self.text, span.start)
        };
        ConfigError::Invalid {
            path: self.name(),
            line,
            key: Some(key.to_owned()),
            message,
        }
    }

    /// Checks what the file cannot say by itself, without changing
    /// anything: the findings file's directory can be written.
    pub fn check_environment(&self) -> Result<(), ConfigError> {
        let path = self.config.findings.path.get_ref();
        crate::service::store::check_writable(path).map_err(|message| {
            self.error_at(self.config.findings.path.span(), "findings.path", message)
        })
    }
}

/// Parses `text` (the contents of `path`).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |line, key, message| ConfigError::Invalid {
        path: path.to_owned(),
        line,
        key,
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        invalid(line, key_at(text, line), e.message().trim().to_owned())
    })?;
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let e = e.into_inner();
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        let key = key_at(text, line).or_else(|| (at != ".").then_some(at));
        invalid(line, key, e.message().trim().to_owned())
    })?;
    let rotate = config.findings.rotate_size.0;
    if rotate < MIN_ROTATE_SIZE {
        let line = line_of_key(text, "findings", "rotate-size");
        return Err(invalid(
            line,
            Some("findings.rotate-size".into()),
            format!("{rotate} bytes is too small: at least 64K"),
        ));
    }
    if config.findings.keep == 0 {
        let line = line_of_key(text, "findings", "keep");
        return Err(invalid(
            line,
            Some("findings.keep".into()),
            "0 would delete findings at every rotation: keep at least 1 file".into(),
        ));
    }
    Ok(config)
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// The dotted key assigned on line `line` (1-based), with the table the
/// line is in: `thresholds.lost-wakeup-after`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or_default().trim();
            table = name.to_owned();
            if i + 1 == line {
                return Some(table);
            }
            continue;
        }
        if i + 1 == line {
            let key = trimmed.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() || key.starts_with('#') {
                return (!table.is_empty()).then_some(table);
            }
            return Some(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    None
}

/// The line where `key` of `[table]` is set; 0 when it is not.
fn line_of_key(text: &str, table: &str, key: &str) -> usize {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            current = header.trim_end_matches(']').trim().to_owned();
        } else if current == table
            && trimmed
                .split('=')
                .next()
                .is_some_and(|k| k.trim().trim_matches('"') == key)
        {
            return i + 1;
        }
    }
    0
}

impl Config {
    /// The engine's thresholds and rules, in the shape `trace`'s flags
    /// give them.
    pub fn engine_args(&self) -> EngineArgs {
        EngineArgs {
            lost_wakeup_after: self.thresholds.lost_wakeup_after.0,
            stuck_handler_after: self.thresholds.stuck_handler_after.0,
            lost_io_after: self.thresholds.lost_io_after.0,
            disabled_rules: self
                .rules
                .iter()
                .filter(|(_, on)| !**on)
                .map(|(rule, _)| rule.name().to_owned())
                .collect(),
        }
    }

    /// Which rules the file leaves on.
    pub fn enabled(&self, rule: Rule) -> bool {
        self.rules.get(&rule).copied().unwrap_or(true)
    }

    /// The findings filter.
    pub fn event_filter(&self) -> EventFilter {
        let f = &self.filter;
        EventFilter::new(f.pids.clone(), f.devices.clone())
            .excluding(f.exclude_pids.clone(), f.exclude_devices.clone())
    }

    /// What differs from `new` and cannot change without a restart, as
    /// `key: old -> new` lines.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let mut changes = Vec::new();
        let mut check = |key: &str, old: String, new: String| {
            if old != new {
                changes.push(format!("{key}: {old} -> {new}"));
            }
        };
        check(
            "kernel.ring-buffer-size",
            self.kernel.ring_buffer_size.0.to_string(),
            new.kernel.ring_buffer_size.0.to_string(),
        );
        check(
            "kernel.stack-budget",
            self.kernel.stack_budget.to_string(),
            new.kernel.stack_budget.to_string(),
        );
        check(
            "kernel.task-map-entries",
            self.kernel.task_map_entries.0.to_string(),
            new.kernel.task_map_entries.0.to_string(),
        );
        check(
            "kernel.syscall-hooks",
            format!("{:?}", self.kernel.syscall_hooks_policy()),
            format!("{:?}", new.kernel.syscall_hooks_policy()),
        );
        check(
            "metrics.address",
            self.metrics.address.get_ref().0.to_string(),
            new.metrics.address.get_ref().0.to_string(),
        );
        check(
            "findings.path",
            self.findings.path.get_ref().display().to_string(),
            new.findings.path.get_ref().display().to_string(),
        );
        check(
            "findings.rotate-size",
            self.findings.rotate_size.0.to_string(),
            new.findings.rotate_size.0.to_string(),
        );
        check(
            "findings.keep",
            self.findings.keep.to_string(),
            new.findings.keep.to_string(),
        );
        check(
            "log.format",
            format!("{:?}", self.log.format).to_lowercase(),
            format!("{:?}", new.log.format).to_lowercase(),
        );
        changes
    }

    /// `new` with what cannot change live taken from `self`.
    pub fn live_part_of(&self, new: &Config) -> Config {
        Config {
            rules: new.rules.clone(),
            thresholds: new.thresholds.clone(),
            filter: new.filter.clone(),
            log: Log {
                format: self.log.format,
                level: new.log.level.clone(),
            },
            kernel: self.kernel.clone(),
            metrics: self.metrics.clone(),
            findings: self.findings.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
