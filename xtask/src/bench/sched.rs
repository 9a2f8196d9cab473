//! `perf bench sched messaging` (Debian's linux-perf): the scheduler-heavy
//! load that detector's sched_switch and wakeup hooks tax most.

use std::path::Path;
use std::process::Command;

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

pub fn measure(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Row> {
    let (mut detector, mut peer) = (Vec::new(), Vec::new());
    let mut untraced_secs = Vec::new();
    for _ in 0..plan.rounds {
        let mut untraced = f64::NAN;
        for tracer in Tracer::ALL {
            let running = procs::start(tracer, bin, dir)?;
            let secs = messaging_seconds(plan.perf_loops)?;
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
    Ok(Row::new(
        format!(
            "`perf bench sched messaging` time, traced vs untraced (untraced {:.3} s)",
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
