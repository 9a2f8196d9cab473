//! Judging a guest run from what it left in the 9p share.
//!
//! Each guest's share layout (written by tests/vm/init and lib.sh):
//!   status                      running | done | failed
//!   check-{base,md}.{json,err,rc}   `detector check` before/after md_mod
//!                               (the phases the guest was given)
//!   md-functions.txt            md_mod's symbols in /proc/kallsyms
//!   scenarios/NAME/verdict      the guest's own verdict: "ok" or why not
//!   scenarios/NAME/module.txt   the test module's verdict lines
//!   scenarios/NAME/steps.log, dmesg.txt
//!   scenarios/NAME/trace.rec, live.jsonl, trace.err, trace.rc
//!                               the `detector trace` session

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Result, bail};

use crate::vm::assertions::{self, Ctx, StackCoverage};
use crate::vm::events::Trace;
use crate::vm::guests::Guest;
use crate::vm::qemu::{self, Outcome};
use crate::vm::scenarios::{DETECTOR_FLAGS, Scenario};

/// One guest's run, to judge.
pub struct GuestRun<'a> {
    pub guest: &'a Guest,
    pub outcome: &'a Outcome,
}

fn read(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Passes, or fails with every problem found and the failing guests' logs.
/// `detector`: the build that recorded, to replay with (`None`: the guests
/// ran without it).
pub fn judge(runs: &[GuestRun], detector: Option<&Path>) -> Result<()> {
    let mut problems = String::new();
    let mut stacks = StackCoverage::default();
    for run in runs {
        let mine = judge_guest(run, detector, &mut stacks)?;
        if !mine.is_empty() {
            let log = run.guest.log();
            write!(
                problems,
                "{mine}\n--- guest {} serial log (last 400 lines of {}) ---\n{}\n",
                run.guest.number,
                log.display(),
                qemu::log_tail(&log, 400)
            )?;
        }
    }
    if detector.is_some()
        && let Err(e) = stacks.check()
    {
        writeln!(problems, "stacks: {e:#}")?;
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!("VM bench failed:\n{problems}")
}

/// One guest's problems (empty: none).
fn judge_guest(
    run: &GuestRun,
    detector: Option<&Path>,
    stacks: &mut StackCoverage,
) -> Result<String> {
    let share = run.guest.share();
    let mut problems = String::new();
    if run.outcome.timed_out {
        writeln!(
            problems,
            "guest {} did not finish within its time limit",
            run.guest.number
        )?;
    } else if !run.guest.finished() {
        writeln!(
            problems,
            "guest {} stopped before finishing (qemu exit {:?}; a panic or oops ends it)",
            run.guest.number, run.outcome.code
        )?;
    }

    if detector.is_some() {
        for phase in &run.guest.checks {
            match assertions::check_output(&share, phase) {
                Ok(table) => eprintln!("vm: detector check ({phase}) in the guest:\n{table}"),
                Err(e) => writeln!(problems, "detector check ({phase}): {e:#}")?,
            }
        }
    }

    for s in &run.guest.scenarios {
        match judge_scenario(&share, detector, s, stacks) {
            Ok(summary) => eprintln!("vm: {:<30} ok  {summary}", s.name),
            Err(e) => {
                eprintln!("vm: {:<30} FAILED", s.name);
                writeln!(
                    problems,
                    "\n=== scenario {} ({}) ===\n{e:#}",
                    s.name, s.about
                )?;
                let dir = share.join("scenarios").join(s.name);
                for file in ["module.txt", "steps.log", "trace.err", "dmesg.txt"] {
                    let text = read(&dir.join(file));
                    if !text.trim().is_empty() {
                        writeln!(problems, "--- {file} ---\n{}", text.trim_end())?;
                    }
                }
            }
        }
    }
    Ok(problems)
}

fn judge_scenario(
    share: &Path,
    detector: Option<&Path>,
    s: &Scenario,
    stacks: &mut StackCoverage,
) -> Result<String> {
    let dir = share.join("scenarios").join(s.name);
    let verdict = read(&dir.join("verdict"));
    if verdict.trim() != "ok" {
        if verdict.trim().is_empty() {
            bail!("the guest never finished this scenario");
        }
        bail!("in the guest: {}", verdict.trim());
    }
    let module = read(&dir.join("module.txt"));
    let Some(detector) = detector else {
        // what the module (or the script, for lost_io) says happened
        let steps = read(&dir.join("steps.log"));
        let said = module.lines().chain(steps.lines()).last();
        return Ok(said.unwrap_or("").to_owned());
    };

    let rc = read(&dir.join("trace.rc"));
    if rc.trim() != "0" {
        bail!(
            "detector trace exited with {} (0 expected after SIGINT)",
            rc.trim()
        );
    }
    if dir.join("md-loaded-mid-session").exists()
        && !read(&dir.join("trace.err")).contains("md_mod loaded; md hooks attached")
    {
        bail!("md_mod loaded mid-session but detector did not say it attached the md hooks");
    }
    let trace = Trace::replay(detector, &dir.join("trace.rec"), DETECTOR_FLAGS)?;
    stacks.add(&trace);
    let ctx = Ctx {
        trace: &trace,
        module: &module,
    };
    // what happened in the kernel
    (s.check)(&ctx)?;

    let attach = read(&dir.join("attach-seconds"));
    let summary = format!(
        "{} events, findings [{}], attach {}s",
        trace.events.len(),
        trace.finding_kinds().join(", "),
        attach.trim()
    );
    match findings_mismatch(s, &trace) {
        None => Ok(summary),
        Some(text) => bail!(text),
    }
}

/// What is wrong with the findings and indeterminate verdicts (`None`:
/// nothing).
fn findings_mismatch(s: &Scenario, trace: &Trace) -> Option<String> {
    let got = trace.finding_kinds();
    let missing: Vec<&str> = s
        .findings
        .iter()
        .copied()
        .filter(|k| !got.iter().any(|g| g == k))
        .collect();
    let unexpected: Vec<&String> = got
        .iter()
        .filter(|g| !s.findings.contains(&g.as_str()) && !s.also.contains(&g.as_str()))
        .collect();
    let undecided: Vec<&str> = s
        .indeterminate
        .iter()
        .copied()
        .filter(|rule| trace.indeterminate.get(*rule).copied().unwrap_or(0) == 0)
        .collect();
    if missing.is_empty() && unexpected.is_empty() && undecided.is_empty() {
        return None;
    }
    let mut text = format!(
        "findings: expected [{}]{}, detector replay reported [{}]",
        s.findings.join(", "),
        if s.also.is_empty() {
            String::new()
        } else {
            format!(" (and maybe [{}])", s.also.join(", "))
        },
        got.join(", ")
    );
    if !s.indeterminate.is_empty() {
        let counted: Vec<String> = trace
            .indeterminate
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        text.push_str(&format!(
            "; indeterminate verdicts expected from [{}], replay counted [{}]",
            s.indeterminate.join(", "),
            counted.join(", ")
        ));
    }
    for f in trace.findings.iter().take(10) {
        text.push_str(&format!("\n  {}", finding_line(f)));
    }
    if trace.findings.len() > 10 {
        text.push_str(&format!("\n  ... {} findings in all", trace.findings.len()));
    }
    Some(text)
}

/// A finding, on one line: kind and explanation.
fn finding_line(f: &serde_json::Value) -> String {
    let kind = f.get("finding").and_then(|k| k.as_str()).unwrap_or("?");
    let text = f
        .get("explanation")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    format!("{kind}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(
        findings: &'static [&'static str],
        indeterminate: &'static [&'static str],
    ) -> Scenario {
        Scenario {
            name: "t",
            about: "",
            findings,
            also: &[],
            indeterminate,
            check: |_| Ok(()),
        }
    }

    fn trace(findings: &[&str], indeterminate: &[(&str, u64)]) -> Trace {
        let lines: Vec<String> = findings
            .iter()
            .map(|f| format!(r#"{{"finding":"{f}","explanation":"x"}}"#))
            .collect();
        let mut t = Trace::parse(&lines.join("\n")).unwrap();
        t.indeterminate = indeterminate
            .iter()
            .map(|(r, n)| ((*r).to_owned(), *n))
            .collect();
        t
    }

    #[test]
    fn findings_must_match_exactly() {
        let racy = scenario(&["bio-double-complete"], &[]);
        assert!(findings_mismatch(&racy, &trace(&["bio-double-complete"], &[])).is_none());
        assert!(findings_mismatch(&racy, &trace(&[], &[])).is_some());
        let benign = scenario(&[], &[]);
        let extra = findings_mismatch(&benign, &trace(&["lost-wakeup"], &[])).unwrap();
        assert!(extra.contains("lost-wakeup"), "{extra}");
    }

    #[test]
    fn an_expected_indeterminate_verdict_must_be_counted() {
        let lossy = scenario(&[], &["bio-double-complete"]);
        assert!(findings_mismatch(&lossy, &trace(&[], &[("bio-double-complete", 1)])).is_none());
        let missing = findings_mismatch(&lossy, &trace(&[], &[("lost-wakeup", 2)])).unwrap();
        assert!(missing.contains("indeterminate"), "{missing}");
        // a definite finding is no substitute
        assert!(
            findings_mismatch(
                &lossy,
                &trace(&["bio-double-complete"], &[("bio-double-complete", 1)])
            )
            .is_some()
        );
    }
}
