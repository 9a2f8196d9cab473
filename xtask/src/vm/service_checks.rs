//! The host's verdict on what the service guest left in its share
//! (tests/vm/debian/service-guest writes one file per fact).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::vm::debian_guest::GuestDir;

const RULE: &str = "bio-double-complete";

pub fn judge(guest: &GuestDir) -> Result<()> {
    let out = guest.out();
    let status = read(&out, "status").unwrap_or_default();
    if let Ok(problems) = read(&out, "problems") {
        bail!(
            "the service guest ended {}: {}\n(its files: {}; serial log: {})",
            status.trim(),
            problems.trim(),
            out.display(),
            guest.log().display()
        );
    }
    ensure!(
        status.trim() == "done",
        "the guest ended {:?}",
        status.trim()
    );
    readiness(&out)?;
    hooks_as_unconfined(&out, &fs::read_to_string(guest.dir.join("metrics.txt"))?)?;
    finding_everywhere(&out)?;
    reload_kill_stop(&out)?;
    crate::vm::service_caps::each_capability_is_needed(&out)?;
    let security = read(&out, "security.txt")?;
    let score = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .context("systemd-analyze security printed no score")?;
    eprintln!("vm: in the guest, {}", score.trim_start_matches(['→', ' ']));
    Ok(())
}

fn read(dir: &Path, name: &str) -> Result<String> {
    fs::read_to_string(dir.join(name)).with_context(|| format!("{}/{name}", dir.display()))
}

/// `KEY=value` lines of `systemctl show`.
fn show(dir: &Path, name: &str) -> Result<BTreeMap<String, String>> {
    Ok(read(dir, name)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// After `dpkg -i`, the unit is enabled and active, Type=notify: systemd
/// counted it started when detector sent READY=1.
fn readiness(out: &Path) -> Result<()> {
    ensure!(
        read(out, "is-active.txt")?.trim() == "active",
        "not active after dpkg -i"
    );
    ensure!(
        read(out, "is-enabled.txt")?.trim() == "enabled",
        "not enabled by dpkg -i"
    );
    let s = show(out, "show-ready.txt")?;
    ensure!(s.get("Type").map(String::as_str) == Some("notify"), "{s:?}");
    let verify = read(out, "verify.txt")?;
    ensure!(
        verify.trim() == "0",
        "systemd-analyze verify in the guest:\n{verify}"
    );
    let man = read(out, "man-path.txt")?;
    ensure!(man.contains("detector-run.1"), "man detector-run: {man}");
    Ok(())
}

/// The service, sandboxed by its unit, attached every hook an unconfined
/// root `detector check` attaches, by the same mechanisms.
fn hooks_as_unconfined(out: &Path, metrics: &str) -> Result<()> {
    let check: Value = serde_json::from_str(&read(out, "check.json")?).context("check.json")?;
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for hook in check["hooks"]
        .as_array()
        .context("check.json has no hooks")?
    {
        if hook["status"] == "attached" {
            let mechanism = hook["mechanism"].as_str().unwrap_or_default().to_owned();
            *expected.entry(mechanism).or_default() += 1.0;
        }
    }
    let mut served: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("detector_hooks_attached{mechanism=\"") else {
            continue;
        };
        let (mechanism, value) = rest.split_once("\"} ").context("a hooks_attached line")?;
        let v: f64 = value.trim().parse()?;
        if v > 0.0 {
            served.insert(mechanism.to_owned(), v);
        }
    }
    ensure!(
        !expected.is_empty() && expected == served,
        "hooks attached by mechanism: unconfined `detector check` {expected:?}, the service {served:?}"
    );
    eprintln!(
        "vm: the sandboxed service attached what an unconfined root process does: {served:?}"
    );
    Ok(())
}

/// The race's finding: one JSON line in the findings file, a journal entry
/// with its fields, and `detector findings` renders it.
fn finding_everywhere(out: &Path) -> Result<()> {
    let first = read(out, "findings-1.jsonl")?;
    let ids: Vec<String> = first
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["finding"] == RULE)
        .map(|v| v["id"].to_string())
        .collect();
    ensure!(
        ids.len() == 1,
        "{RULE} lines in the findings file: {ids:?}\n{first}"
    );
    symbolized_stacks(&first)?;
    let journal = read(out, "journal-1.json")?;
    let entry = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["RULE"] == RULE)
        .with_context(|| format!("no journal entry with RULE={RULE}"))?;
    for field in ["FINDING", "SEVERITY", "FINDING_ID", "OBJECT", "MESSAGE"] {
        ensure!(
            entry[field].is_string(),
            "journal entry without {field}: {entry}"
        );
    }
    let rendered = read(out, "findings-rendered.txt")?;
    ensure!(
        rendered.contains(RULE),
        "detector findings printed:\n{rendered}"
    );
    let by_rule = read(out, "findings-rule.jsonl")?;
    ensure!(
        by_rule.lines().count() == 1,
        "detector findings --rule {RULE} --json:\n{by_rule}"
    );
    Ok(())
}

/// The sandbox left detector the real addresses in /proc/kallsyms: the
/// finding's stacks name kernel functions, not just addresses.
fn symbolized_stacks(findings: &str) -> Result<()> {
    let frames: Vec<String> = findings
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["finding"] == RULE)
        .flat_map(|v| v["interleaving"].as_array().cloned().unwrap_or_default())
        .flat_map(|step| step["stack"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    let named = frames.iter().filter(|f| f.contains("bio_endio")).count();
    ensure!(
        named > 0,
        "no frame of the {RULE} finding names bio_endio (no kernel symbols?): {frames:?}"
    );
    Ok(())
}

/// The instance that stalled its reader on purpose was killed by systemd's
/// watchdog and replaced.
fn watchdog(out: &Path) -> Result<()> {
    let stalled = read(out, "pid-after-kill.txt")?;
    let replaced = read(out, "pid-after-watchdog.txt")?;
    ensure!(
        stalled.trim() != replaced.trim(),
        "the stalled instance {stalled} still runs"
    );
    let log = read(out, "watchdog.txt")?;
    ensure!(
        log.contains("stalls on purpose") && log.contains("Watchdog timeout"),
        "the journal does not show the stall and systemd's watchdog timeout:\n{log}"
    );
    let restarts = show(out, "show-after-watchdog.txt")?;
    ensure!(
        restarts
            .get("NRestarts")
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2)),
        "systemd did not restart it after the watchdog: {restarts:?}"
    );
    Ok(())
}

/// Reload kept the process; SIGKILL got a new one that holds as many BPF
/// objects as the old (none left behind) and continued the findings file
/// (the next race added one line); stop ended cleanly with every program
/// gone.
fn reload_kill_stop(out: &Path) -> Result<()> {
    let reload = read(out, "reload.txt")?;
    ensure!(
        reload.contains("configuration reloaded"),
        "reload:\n{reload}"
    );
    let (before, after) = (
        read(out, "pid-before-kill.txt")?,
        read(out, "pid-after-kill.txt")?,
    );
    ensure!(
        before.trim() != after.trim(),
        "same pid after SIGKILL: {before}"
    );
    let restarts = show(out, "show-after-kill.txt")?;
    ensure!(
        restarts
            .get("NRestarts")
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1)),
        "systemd did not restart it: {restarts:?}"
    );
    watchdog(out)?;
    let (bpf_before, bpf_after) = (
        read(out, "bpf-before-kill.txt")?,
        read(out, "bpf-after-kill.txt")?,
    );
    ensure!(
        bpf_before.trim() == bpf_after.trim(),
        "BPF programs and links before the kill {bpf_before}, after the restart {bpf_after}: the killed process left some behind"
    );
    let first = read(out, "findings-1.jsonl")?;
    let second = read(out, "findings-2.jsonl")?;
    ensure!(
        second.starts_with(&first),
        "the findings file was not continued"
    );
    let count = |t: &str| {
        t.lines()
            .filter(|l| l.contains(&format!("\"{RULE}\"")))
            .count()
    };
    ensure!(
        count(&second) == count(&first) + 1,
        "{} {RULE} findings after the second race (before it {})",
        count(&second),
        count(&first)
    );
    let stopped = show(out, "show-stopped.txt")?;
    ensure!(
        stopped.get("Result").map(String::as_str) == Some("success")
            && stopped.get("ExecMainStatus").map(String::as_str) == Some("0"),
        "systemctl stop: {stopped:?}"
    );
    let (baseline, after_stop) = (
        read(out, "bpf-baseline.txt")?,
        read(out, "bpf-after-stop.txt")?,
    );
    ensure!(
        baseline.trim() == after_stop.trim(),
        "BPF programs and links before install {baseline}, after stop {after_stop}"
    );
    Ok(())
}
