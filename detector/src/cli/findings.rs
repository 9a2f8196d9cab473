//! `detector findings`: what a `detector run` stored, rendered as `trace`
//! shows findings, or as the stored JSON lines.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::FindingsArgs;
use super::args::parse_duration;
use crate::engine::{FindingKind, Rule};
use crate::report;
use crate::service::config::Loaded;
use crate::service::store::{read_lines, rotated_files};

/// `--since`: a duration before now, or a time (UTC).
fn parse_since(text: &str) -> Result<SystemTime> {
    if let Ok(ago) = parse_duration(text) {
        return Ok(SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?} is neither a duration (30m, 2h, 7d) nor a time \
             (2026-11-29T03:00:00Z or 2026-11-29 03:00:00, UTC)"
        )
    })
}

/// `--rule`: finding kinds and rules, checked against the known names.
fn parse_rules(names: &[String]) -> Result<Vec<String>> {
    for name in names {
        let known = FindingKind::ALL.iter().any(|k| k.name() == name)
            || Rule::ALL.iter().any(|r| r.name() == name);
        if !known {
            let kinds: Vec<&str> = FindingKind::ALL.iter().map(|k| k.name()).collect();
            bail!(
                "--rule {name:?} is neither a finding kind ({}) nor a rule ({})",
                kinds.join(", "),
                Rule::ALL.map(Rule::name).join(", ")
            );
        }
    }
    Ok(names.to_vec())
}

fn selected(value: &Value, since: Option<SystemTime>, rules: &[String]) -> bool {
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
    if !rules.is_empty()
        && !rules
            .iter()
            .any(|r| r == field("finding") || r == field("rule"))
    {
        return false;
    }
    match since {
        None => true,
        Some(since) => humantime::parse_rfc3339_weak(field("wall_time")).is_ok_and(|t| t >= since),
    }
}

fn findings_file(args: &FindingsArgs) -> Result<PathBuf> {
    if let Some(file) = &args.file {
        return Ok(file.clone());
    }
    let (path, explicit) = super::run::config_path(args.config.as_ref());
    let loaded = Loaded::read(&path, explicit)?;
    Ok(loaded.config.findings.path.into_inner())
}

/// The rendering of one stored line, as `trace` prints findings.
fn render(value: &Value) -> Result<String, report::json::ParseError> {
    let (finding, stacks) = report::json::parse(value)?;
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("?");
    Ok(format!(
        "# {} on {}, id {}\n{}\n",
        field("wall_time"),
        field("host"),
        field("id"),
        report::human::render(&finding, &stacks).trim_end()
    ))
}

pub fn run(args: FindingsArgs) -> Result<ExitCode> {
    let path = findings_file(&args)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let rules = parse_rules(&args.rules)?;
    let mut files = rotated_files(&path);
    if path.exists() || files.is_empty() {
        files.push(path.clone());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut shown = 0u64;
    let mut damaged = false;
    for file in &files {
        let problems = read_lines(file, |line, text, value| {
            if !selected(&value, since, &rules) {
                return;
            }
            let text = if args.json {
                format!("{text}\n")
            } else {
                match render(&value) {
                    Ok(text) => format!("{text}\n"),
                    Err(e) => {
                        eprintln!("detector: {} line {line}: {e}", file.display());
                        damaged = true;
                        return;
                    }
                }
            };
            shown += 1;
            // A closed stdout (| head) ends the listing quietly.
            let _ = out.write_all(text.as_bytes());
        })
        .with_context(|| format!("cannot read the findings file {}", show(file)))?;
        for p in problems {
            if p.torn {
                eprintln!(
                    "detector: {} line {}: the last line was cut short ({}): skipped; \
                     `detector run` sets it aside when it starts",
                    p.file.display(),
                    p.line,
                    p.error
                );
            } else {
                damaged = true;
                eprintln!(
                    "detector: {} line {}: not a stored finding: {}",
                    p.file.display(),
                    p.line,
                    p.error
                );
            }
        }
    }
    let _ = out.flush();
    if shown == 0 {
        eprintln!("detector: no findings in {}", show(&path));
    }
    Ok(if damaged {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn show(path: &Path) -> String {
    path.display().to_string()
}
