//! `cargo xtask vm-test --blktests DIR`: the block layer's own test suite
//! (a blktests checkout the user provides and builds; never part of this
//! repository) in the Debian guest, with detector attached.
//!
//! Each group gets one `detector trace` session; each test runs on its own
//! between markers (`tests/vm/debian/blktests.sh`). The host replays each
//! group's recording and reports, per test: blktests' own verdict (per test
//! device for device tests), the events detector saw while it ran, and
//! every finding fired then. Findings fail the run: healthy kernel
//! behaviour must give none (tests that would give true findings, such as
//! block/011's disabled bus mastering, are skipped with their reason).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::vm::debian_guest::GuestDir;
use crate::vm::markers::Markers;
use crate::vm::qemu::Outcome;
use crate::vm::scenarios::DETECTOR_FLAGS;
use crate::vm::tally::{Tally, finding_ts};

/// What the bench runs by default (Debian's 6.1 has no nvme-loop: the
/// nvme group runs over TCP).
pub const GROUPS: &[&str] = &["block", "loop", "scsi", "md", "dm", "throtl", "nvme"];

/// Tests left out, and why: they wedge the guest, or this kernel cannot
/// run them without a real bug taking the guest down.
pub const SKIPPED: &[(&str, &str)] = &[
    (
        "block/011",
        "turns off the disk's PCI bus mastering: a virtio disk stays wedged for good",
    ),
    (
        "throtl/004",
        "hits a WARNING in blk-throttle and a soft lockup in throtl_pending_timer_fn on 6.1",
    ),
    (
        "throtl/006",
        "soft lockups and the guest's OOM killer under emulation on 6.1, taking the nvme group down",
    ),
];

/// The guest's directory under `.vm-cache/`.
pub const GUEST: &str = "debian-blktests";

/// Seconds a single test may run before `timeout` kills it.
pub const PER_TEST_TIMEOUT_SECS: u64 = 900;

/// Whether `./check` ended by timeout(1): 124 when the time ran out, 137
/// after its KILL.
fn killed_by_timeout(exit: Option<i32>) -> bool {
    matches!(exit, Some(124 | 137))
}

/// The checkout is blktests, and its C helpers are built.
pub fn check_checkout(dir: &Path) -> Result<()> {
    if !dir.join("check").is_file() || !dir.join("tests").is_dir() {
        bail!(
            "{} is not a blktests checkout (no check script or tests/)",
            dir.display()
        );
    }
    if !dir.join("src/loblksize").is_file() {
        bail!(
            "blktests' helpers are not built in {0}: run `make -C {0}` first",
            dir.display()
        );
    }
    Ok(())
}

/// The tests to run, in group order: every `tests/GROUP/NNN` of the groups
/// (or of `only`: groups or single tests), less the skipped ones, which
/// are returned apart.
pub fn plan(dir: &Path, only: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let groups: Vec<&str> = if only.is_empty() {
        GROUPS.to_vec()
    } else {
        let mut g: Vec<&str> = only
            .iter()
            .map(|o| o.split('/').next().unwrap_or_default())
            .collect();
        g.dedup();
        g
    };
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for group in groups {
        let gdir = dir.join("tests").join(group);
        let mut tests: Vec<String> = fs::read_dir(&gdir)
            .with_context(|| format!("no group {group} in {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .map(|n| format!("{group}/{n}"))
            .collect();
        tests.sort();
        for t in tests {
            let wanted = only.is_empty() || only.iter().any(|o| o == group || *o == t);
            if !wanted || run.contains(&t) {
                continue;
            }
            if SKIPPED.iter().any(|(s, _)| *s == t) {
                skipped.push(t);
            } else {
                run.push(t);
            }
        }
    }
    if run.is_empty() {
        bail!("no blktests test selected (groups or tests: {only:?})");
    }
    Ok((run, skipped))
}

/// Seconds a timed test runs in a quick run (blktests' TIMEOUT).
const QUICK_TIMEOUT_SECS: u64 = 20;

pub fn settings(tests: &[String], quick: bool, attach_timeout: u64) -> String {
    let quick = if quick {
        format!("BLKTESTS_QUICK={QUICK_TIMEOUT_SECS}\n")
    } else {
        String::new()
    };
    format!(
        "BLKTESTS_TESTS='{}'\nPER_TEST_TIMEOUT={PER_TEST_TIMEOUT_SECS}\n{quick}\
         DETECTOR_FLAGS='{DETECTOR_FLAGS}'\nATTACH_TIMEOUT={attach_timeout}\n",
        tests.join(" ")
    )
}

/// One test's line in `./check`'s output: "block/003 => vdb (desc) [passed]".
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    device: Option<String>,
    status: String,
    /// The indented lines after it (runtime, or why it did not run or
    /// failed).
    detail: Vec<String>,
}

fn parse_check_log(log: &str) -> Vec<Verdict> {
    let mut out: Vec<Verdict> = Vec::new();
    for line in log.lines() {
        let status = ["passed", "failed", "not run"]
            .into_iter()
            .find(|s| line.trim_end().ends_with(&format!("[{s}]")));
        if let Some(status) = status {
            let device = line
                .split_once(" => ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(str::to_owned);
            out.push(Verdict {
                device,
                status: status.to_owned(),
                detail: Vec::new(),
            });
        } else if line.starts_with("    ")
            && let Some(last) = out.last_mut()
        {
            last.detail.push(line.trim().to_owned());
        }
    }
    out
}

/// What one group's session showed, and the tests' reports.
struct Group {
    tally: Option<Tally>,
    problems: Vec<String>,
    tests: Vec<Value>,
}

/// Judges every group, writes `report.json` and `report.txt` beside the
/// share, prints the text; fails on findings or an unfinished guest.
pub fn judge(
    guest: &GuestDir,
    outcome: &Outcome,
    tests: &[String],
    skipped: &[String],
    detector: &Path,
) -> Result<()> {
    let mut text = String::new();
    let mut problems = Vec::new();
    if outcome.timed_out {
        problems.push("the guest did not finish within its time limit".to_owned());
    } else if !guest.finished() {
        problems.push(format!(
            "the guest stopped before finishing (qemu exit {:?}): a test may have wedged it",
            outcome.code
        ));
    }
    let mut groups = Vec::new();
    let mut order: Vec<&str> = tests
        .iter()
        .map(|t| t.split('/').next().unwrap_or(""))
        .collect();
    order.dedup();
    for group in order {
        let mine: Vec<&String> = tests
            .iter()
            .filter(|t| t.starts_with(&format!("{group}/")))
            .collect();
        let g = judge_group(guest, group, &mine, detector);
        writeln!(text, "== {group}")?;
        match &g.tally {
            Some(t) => writeln!(
                text,
                "   session: {} events, {} lost, {} findings",
                t.events,
                t.lost,
                t.findings.len()
            )?,
            None => writeln!(text, "   session: no recording to replay")?,
        }
        for t in &g.tests {
            writeln!(text, "   {}", test_line(t))?;
        }
        for p in &g.problems {
            writeln!(text, "   PROBLEM: {p}")?;
            problems.push(format!("{group}: {p}"));
        }
        groups.push(json!({
            "group": group,
            "events": g.tally.as_ref().map(|t| t.events),
            "lost": g.tally.as_ref().map(|t| t.lost),
            "by_kind": g.tally.as_ref().map(|t| &t.by_kind),
            "tests": g.tests,
            "problems": g.problems,
        }));
    }
    for t in skipped {
        let reason = SKIPPED.iter().find(|(s, _)| s == t).map_or("", |(_, r)| *r);
        writeln!(text, "   {t:<12} skipped: {reason}")?;
    }
    let report = json!({
        "groups": groups,
        "skipped": skipped.iter().map(|t| json!({
            "test": t,
            "reason": SKIPPED.iter().find(|(s, _)| s == t).map_or("", |(_, r)| *r),
        })).collect::<Vec<_>>(),
        "problems": problems,
    });
    fs::write(
        guest.dir.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    fs::write(guest.dir.join("report.txt"), &text)?;
    eprint!("{text}");
    eprintln!(
        "vm: blktests report: {}",
        guest.dir.join("report.txt").display()
    );
    if problems.is_empty() {
        return Ok(());
    }
    bail!("blktests under detector failed:\n{}", problems.join("\n"))
}

fn judge_group(guest: &GuestDir, group: &str, tests: &[&String], detector: &Path) -> Group {
    let dir = guest.out().join("blktests").join(group);
    if !dir.exists() {
        return Group {
            tally: None,
            problems: vec!["the guest never reached this group".to_owned()],
            tests: Vec::new(),
        };
    }
    let mut problems = Vec::new();
    let markers = Markers::load(&dir.join("markers.tsv")).unwrap_or_default();
    let index: BTreeMap<&str, usize> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let slot = |ts: u64| {
        markers
            .at(ts)
            .and_then(|s| index.get(s.name.as_str()).copied())
    };
    let tally = match Tally::replay(
        detector,
        &dir.join("trace.rec"),
        DETECTOR_FLAGS,
        &dir.join("replay.err"),
        slot,
    ) {
        Ok(t) => {
            problems.extend(t.error.clone());
            Some(t)
        }
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    if fs::read_to_string(dir.join("trace.rc"))
        .unwrap_or_default()
        .trim()
        != "0"
    {
        problems.push("detector trace did not exit cleanly (trace.rc is not 0)".to_owned());
    }
    let mut findings: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for f in tally.iter().flat_map(|t| &t.findings) {
        let during = finding_ts(f)
            .and_then(|ts| markers.at(ts))
            .map_or_else(|| "(between tests)".to_owned(), |s| s.name.clone());
        findings.entry(during).or_default().push(f);
    }
    let mut reports = Vec::new();
    for (i, test) in tests.iter().enumerate() {
        let num = test.split('/').nth(1).unwrap_or_default();
        let log =
            fs::read_to_string(dir.join("logs").join(format!("{num}.log"))).unwrap_or_default();
        let span = markers.spans.iter().find(|s| s.name == **test);
        let verdicts = parse_check_log(&log);
        let mine = findings.remove(test.as_str()).unwrap_or_default();
        reports.push(json!({
            "test": test,
            "ran": span.is_some(),
            "finished": span.is_some_and(|s| s.end.is_some()),
            "check_exit": span.and_then(|s| s.status),
            "seconds": span.and_then(|s| Some((s.end? - s.start) as f64 / 1e9)),
            "results": verdicts.iter().map(|v| json!({
                "device": v.device, "status": v.status, "detail": v.detail,
            })).collect::<Vec<_>>(),
            "events": tally.as_ref().map(|t| t.events_by_slot.get(&i).copied().unwrap_or(0)),
            "findings": summarize(&mine),
        }));
        if !mine.is_empty() {
            problems.push(format!("{} finding(s) during {test}", mine.len()));
        }
        let killed = span.is_some_and(|s| killed_by_timeout(s.status));
        if verdicts.is_empty() && span.is_some_and(|s| s.end.is_some()) && !killed {
            // blktests itself did not run it: the harness is broken
            problems.push(format!(
                "{test}: ./check printed no verdict (logs/{num}.log)"
            ));
        }
    }
    for (during, fs) in findings {
        problems.push(format!("{} finding(s) {during}", fs.len()));
        reports.push(json!({ "test": during, "findings": summarize(&fs) }));
    }
    Group {
        tally,
        problems,
        tests: reports,
    }
}

/// Findings by kind: count and the first one's explanation.
fn summarize(findings: &[&Value]) -> Vec<Value> {
    let mut by: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for f in findings {
        let kind = f.get("finding").and_then(Value::as_str).unwrap_or("?");
        let text = f.get("explanation").and_then(Value::as_str).unwrap_or("");
        by.entry(kind).or_insert((0, text)).0 += 1;
    }
    by.into_iter()
        .map(
            |(kind, (count, example))| json!({"finding": kind, "count": count, "example": example}),
        )
        .collect()
}

/// "block/001    passed   12.3s  45210 events  findings: none".
fn test_line(t: &Value) -> String {
    let name = t.get("test").and_then(Value::as_str).unwrap_or("?");
    let results: Vec<String> = t
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let status = r.get("status").and_then(Value::as_str).unwrap_or("?");
            match r.get("device").and_then(Value::as_str) {
                Some(dev) => format!("{status} ({dev})"),
                None => status.to_owned(),
            }
        })
        .collect();
    let check_exit = t
        .get("check_exit")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok());
    let status = if results.is_empty() && killed_by_timeout(check_exit) {
        format!("killed after {PER_TEST_TIMEOUT_SECS}s")
    } else if results.is_empty() {
        match (
            t.get("ran").and_then(Value::as_bool),
            t.get("finished").and_then(Value::as_bool),
        ) {
            (Some(false), _) => "never started".to_owned(),
            (_, Some(false)) => "never finished (the guest stopped inside)".to_owned(),
            (None, _) => String::new(),
            _ => "no verdict in its log".to_owned(),
        }
    } else {
        results.join(", ")
    };
    let findings: Vec<String> = t
        .get("findings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} x{}: {}",
                f.get("finding").and_then(Value::as_str).unwrap_or("?"),
                f.get("count").and_then(Value::as_u64).unwrap_or(0),
                f.get("example").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    format!(
        "{name:<12} {status:<28} {:>7} {:>9} events  findings: {}",
        t.get("seconds")
            .and_then(Value::as_f64)
            .map_or_else(String::new, |s| format!("{s:.1}s")),
        t.get("events").and_then(Value::as_u64).unwrap_or(0),
        if findings.is_empty() {
            "none".to_owned()
        } else {
            findings.join("; ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_checks_verdicts_with_devices_and_reasons() {
        let log = "block/001 (stress device hot-remove and hot-add)           [passed]\n\
                   \x20   runtime    ...  21.3s\n\
                   block/003 => vdb (run various discard sizes)               [not run]\n\
                   \x20   device does not support discard\n\
                   block/003 => sda (run various discard sizes)               [failed]\n\
                   \x20   exited with status 1\n";
        let v = parse_check_log(log);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].device, None);
        assert_eq!(v[0].status, "passed");
        assert_eq!(v[1].device.as_deref(), Some("vdb"));
        assert_eq!(v[1].detail, ["device does not support discard"]);
        assert_eq!(v[2].status, "failed");
    }

    #[test]
    fn plans_groups_less_the_skipped_tests() {
        let dir = std::env::temp_dir().join(format!("blktests-plan-{}", std::process::id()));
        for f in [
            "tests/block/001",
            "tests/block/001.out",
            "tests/block/011",
            "tests/block/rc",
            "tests/loop/002",
        ] {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "").unwrap();
        }
        let (run, skipped) = plan(&dir, &["block".into(), "loop/002".into()]).unwrap();
        assert_eq!(run, ["block/001", "loop/002"]);
        assert_eq!(skipped, ["block/011"]);
        assert!(plan(&dir, &["nvme".into()]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unbuilt_checkout_is_refused_with_the_command_to_run() {
        let dir = std::env::temp_dir().join(format!("blktests-unbuilt-{}", std::process::id()));
        fs::create_dir_all(dir.join("tests")).unwrap();
        fs::write(dir.join("check"), "").unwrap();
        let e = check_checkout(&dir).unwrap_err();
        assert!(format!("{e}").contains("make -C"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
