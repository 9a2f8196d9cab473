//! `perf bench sched messaging` (Debian's linux-perf): the scheduler-heavy
//! load that detector's sched_switch and wakeup hooks tax most.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::Plan;
use super::procs::{self, DetectorBin, Tracer};
use super::table::{Row, median};
use crate::util::output;

/// Seconds one `perf bench sched messaging` run reports.
fn messaging_seconds(loops: u32) -> Result<f64> {
    let text = output(Command::new("perf").args([
        "bench",
        "sched",
        "messaging",
        "--nr_loops",
        &loops.to_string(),
    ]))
    .context("perf bench (cargo xtask setup installs linux-perf)")?;
    parse_total(&text).with_context(|| format!("no total time in perf's output:\n{text}"))
}

/// "Total time: 0.563 [sec]".
fn parse_total(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Total time:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How detector runs during the messaging runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hooks {
    /// As left running: syscall hooks detached once no task needs them
    /// (a detector that cannot detach them runs as it is).
    Idle,
    /// Syscall hooks attached, as while some task on the host does I/O.
    Attached,
}

/// Two rows: detector left running on a host where no task does I/O (its
/// syscall hooks detached), and with them attached.
pub fn measure(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Vec<Row>> {
    let mut rows = vec![measure_with(plan, bin, dir, Hooks::Idle)?];
    if bin.syscall_hooks {
        rows.push(measure_with(plan, bin, dir, Hooks::Attached)?);
    }
    Ok(rows)
}

fn start_detector(bin: &DetectorBin, dir: &Path, hooks: Hooks) -> Result<(procs::Running, bool)> {
    if !bin.syscall_hooks {
        return Ok((procs::start(Tracer::Detector, bin, dir)?, false));
    }
    let args: &[&str] = match hooks {
        Hooks::Idle => &["--syscall-hooks-idle", "2s"],
        Hooks::Attached => &["--syscall-hooks", "always"],
    };
    let running = procs::start_detector(bin, dir, args)?;
    let detached = hooks == Hooks::Idle && running.wait_sys_exit_detached(Duration::from_secs(30));
    Ok((running, detached))
}

fn measure_with(plan: &Plan, bin: &DetectorBin, dir: &Path, hooks: Hooks) -> Result<Row> {
    let (mut detector, mut peer) = (Vec::new(), Vec::new());
    let mut untraced_secs = Vec::new();
    // Rounds whose detector had its syscall hooks detached when the run
    // started, and still at its end (a user task's I/O, perf's own reads
    // of its binary included, brings them back).
    let (mut detached_at_start, mut detached_throughout) = (0, 0);
    for _ in 0..plan.rounds {
        let mut untraced = f64::NAN;
        for tracer in Tracer::ALL {
            let (running, detached) = match tracer {
                Tracer::Detector => start_detector(bin, dir, hooks)?,
                other => (procs::start(other, bin, dir)?, false),
            };
            let secs = messaging_seconds(plan.perf_loops)?;
            if detached {
                detached_at_start += 1;
                detached_throughout += u32::from(!running.holds_sys_exit());
            }
            running.stop()?;
            match tracer {
                Tracer::Untraced => {
                    untraced = secs;
                    untraced_secs.push(secs);
                }
                Tracer::Detector => detector.push(secs / untraced),
                Tracer::Bpftrace => peer.push(secs / untraced),
            }
        }
    }
    let slowdown = |v: Vec<f64>| format!("{:+.1} %", (median(v) - 1.0) * 100.0);
    let ratio = median(detector.clone());
    let how = match (hooks, bin.syscall_hooks) {
        (Hooks::Idle, true) => format!(
            "detector left running, syscall hooks detached (no task doing I/O) when the run \
             started in {detached_at_start} of {} rounds, still at its end in {detached_throughout}",
            plan.rounds
        ),
        (Hooks::Idle, false) => "syscall hooks always attached".to_owned(),
        (Hooks::Attached, _) => "syscall hooks attached, as while a task does I/O".to_owned(),
    };
    Ok(Row::new(
        format!(
            "`perf bench sched messaging` time, traced vs untraced ({how}; untraced {:.3} s)",
            median(untraced_secs)
        ),
        ratio,
        slowdown(detector),
    )
    .peer(slowdown(peer))
    .goal("<= +5 %")
    .sane(0.0..10.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn total_time() {
        let text = "# 10 groups == 400 processes run\n\n     Total time: 0.563 [sec]\n";
        assert_eq!(super::parse_total(text), Some(0.563));
        assert_eq!(super::parse_total("nothing"), None);
    }
}
