//! The highest event rate detector sustains without loss at the default
//! ring-buffer size: fio on the tmpfs loop at rising rates, detector
//! counting what it read and what the kernel dropped, until loss starts or
//! the load generator can go no faster. Detector runs with `--full`: what
//! is measured is how many events the rings and the reader carry, and
//! without it most of fio's I/O is paired in the kernel and never offered.
//! The same runs give detector's userspace CPU per shipped event: read,
//! decode and engine, where every event is shipped.

use std::path::Path;

use anyhow::Result;

use super::Plan;
use super::fio::{self, Op, Target, TargetKind};
use super::procs::{self, DetectorBin};
use super::table::{Row, si};

struct Step {
    offered_iops: u64,
    events_per_s: f64,
    lost: u64,
    cpu_ns_per_event: f64,
}

pub fn measure(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Vec<Row>> {
    let target = Target::new(TargetKind::TmpfsLoop, dir)?;
    let mut steps = Vec::new();
    for &rate in &plan.load_rates {
        let running = procs::start_detector(bin, dir, &["--full"])?;
        fio::iops(&target, Op::RandRead, plan.load_seconds, rate)?;
        let end = running.stop()?;
        let step = Step {
            offered_iops: rate,
            events_per_s: end.events as f64 / plan.load_seconds,
            lost: end.lost,
            cpu_ns_per_event: end.cpu_ns as f64 / end.events.max(1) as f64,
        };
        eprintln!(
            "bench: load {} IOPS: {:.0} events/s, {} lost",
            if rate == 0 {
                "max".into()
            } else {
                rate.to_string()
            },
            step.events_per_s,
            step.lost
        );
        let lossy = step.lost > 0;
        steps.push(step);
        if lossy {
            break;
        }
    }
    let busiest = steps
        .iter()
        .filter(|s| s.lost == 0)
        .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
    let best = busiest.map_or(f64::NAN, |s| s.events_per_s);
    let first_loss = steps.iter().find(|s| s.lost > 0);
    let text = match first_loss {
        Some(s) => format!(
            "{} events/s (loss from {} events/s, fio at {})",
            si(best),
            si(s.events_per_s),
            if s.offered_iops == 0 {
                "full speed".into()
            } else {
                format!("{} IOPS", si(s.offered_iops as f64))
            }
        ),
        None => format!(
            ">= {} events/s (no loss up to the load generator's full speed)",
            si(best)
        ),
    };
    Ok(vec![
        cpu_per_event_row(busiest),
        Row::new(
            "highest sustained event rate with zero loss (default 16 MiB ring buffer, `--full`)",
            best,
            text,
        ),
    ])
}

/// The cost per shipped event in `busiest`, the step that shipped the
/// most without loss: the reader's fixed costs (its wakeups, the loss
/// poll) weigh least there.
fn cpu_per_event_row(busiest: Option<&Step>) -> Row {
    let (cpu, rate) = busiest.map_or((f64::NAN, f64::NAN), |s| {
        (s.cpu_ns_per_event, s.events_per_s)
    });
    Row::new(
        format!(
            "userspace CPU per shipped event (utime+stime / events read; `--full`, fio on the \
             tmpfs loop, {} events/s)",
            si(rate)
        ),
        cpu,
        format!("{cpu:.0} ns"),
    )
    .goal("<= 150 ns")
    .sane(1.0..1e6)
}
