//! The I/O figures: fio IOPS untraced, with detector and with the bpftrace
//! peer, rounds interleaved (untraced, detector, bpftrace, untraced, ...)
//! so that the host's drift hits all three alike; per-program BPF cost and
//! detector's userspace CPU per I/O on the tmpfs loop.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::Plan;
use super::bpfstats::{self, ProgCost};
use super::fio::{self, Op, Target, TargetKind};
use super::procs::{self, DetectorBin, Tracer};
use super::table::{Row, median, si};

#[derive(Default)]
struct Samples {
    /// (target, op, tracer) -> IOPS per round.
    iops: BTreeMap<(TargetKind, Op, Tracer), Vec<f64>>,
    /// (target, op, tracer) -> traced/untraced per round.
    ratios: BTreeMap<(TargetKind, Op, Tracer), Vec<f64>>,
    /// detector's CPU ns per I/O fio did, per tmpfs run: what pairing in
    /// the kernel saves shows here (the cost per shipped event is
    /// measured where every event is shipped: `load`).
    cpu_per_io: Vec<f64>,
    lost: u64,
    /// BPF cost on the tmpfs loop, per tracer, summed over runs, and the
    /// I/Os those runs did.
    bpf: BTreeMap<Tracer, (BTreeMap<String, ProgCost>, f64)>,
}

pub fn measure(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Vec<Row>> {
    let mut s = Samples::default();
    for kind in TargetKind::ALL {
        let target = Target::new(kind, dir)?;
        // Warm-up, not counted: caches, block allocation, CPU frequency.
        fio::iops(&target, Op::RandWrite, plan.fio_seconds.min(2.0), 0)?;
        for round in 1..=plan.rounds {
            for op in Op::ALL {
                let mut untraced = f64::NAN;
                for tracer in Tracer::ALL {
                    let iops = run_one(plan, bin, dir, &target, op, tracer, &mut s)?;
                    if tracer == Tracer::Untraced {
                        untraced = iops;
                    }
                    s.ratios
                        .entry((kind, op, tracer))
                        .or_default()
                        .push(iops / untraced);
                    eprintln!(
                        "bench: round {round} {} {:?} {tracer:?}: {iops:.0} IOPS",
                        kind.label(),
                        op
                    );
                }
            }
        }
    }
    Ok(rows(&s))
}

fn run_one(
    plan: &Plan,
    bin: &DetectorBin,
    dir: &Path,
    target: &Target,
    op: Op,
    tracer: Tracer,
    s: &mut Samples,
) -> Result<f64> {
    let running = procs::start(tracer, bin, dir)?;
    let watch_bpf = target.kind == TargetKind::TmpfsLoop;
    let before = running.pid().map(bpfstats::snapshot);
    let iops = fio::iops(target, op, plan.fio_seconds, 0)?;
    let after = running.pid().map(bpfstats::snapshot);
    let end = running.stop()?;
    s.iops
        .entry((target.kind, op, tracer))
        .or_default()
        .push(iops);
    if tracer == Tracer::Detector {
        s.lost += end.lost;
        if watch_bpf {
            s.cpu_per_io
                .push(end.cpu_ns as f64 / (iops * plan.fio_seconds).max(1.0));
        }
    }
    if let (true, Some(before), Some(after)) = (watch_bpf, before, after) {
        let (total, ios) = s.bpf.entry(tracer).or_default();
        bpfstats::add(total, &bpfstats::delta(&before, &after));
        *ios += iops * plan.fio_seconds;
    }
    Ok(iops)
}

fn goal_for(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::TmpfsLoop => ">= 0.90 (aim 0.95), above the peer",
        TargetKind::DiskFile => ">= 0.98, above the peer",
    }
}

/// A traced/untraced ratio above this is a broken measurement. The disk
/// is not the bench's own: a write-back stall of the host can slow one
/// untraced run of `--quick`'s single second to half or less (CI saw
/// 2.2 for random writes, the peer 2.4), while the tmpfs loop is only
/// CPU-bound.
fn sane_ratio_below(kind: TargetKind) -> f64 {
    match kind {
        TargetKind::TmpfsLoop => 2.0,
        TargetKind::DiskFile => 5.0,
    }
}

fn rows(s: &Samples) -> Vec<Row> {
    let mut rows = Vec::new();
    for kind in TargetKind::ALL {
        for op in Op::ALL {
            let iops = |t| median(s.iops.get(&(kind, op, t)).cloned().unwrap_or_default());
            let ratio = |t| median(s.ratios.get(&(kind, op, t)).cloned().unwrap_or_default());
            let cell = |t| format!("{:.3} ({} IOPS)", ratio(t), si(iops(t)));
            rows.push(
                Row::new(
                    format!(
                        "fio 4 KiB {}, {}: IOPS traced/untraced (untraced {} IOPS)",
                        op.fio_name(),
                        kind.label(),
                        si(iops(Tracer::Untraced))
                    ),
                    ratio(Tracer::Detector),
                    cell(Tracer::Detector),
                )
                .peer(cell(Tracer::Bpftrace))
                .goal(goal_for(kind))
                .sane(0.0..sane_ratio_below(kind)),
            );
        }
    }
    let per_io = median(s.cpu_per_io.clone());
    rows.push(
        Row::new(
            "userspace CPU per I/O (utime+stime / fio's I/Os), tmpfs loop",
            per_io,
            format!("{per_io:.0} ns"),
        )
        .sane(1.0..1e6),
    );
    rows.push(
        Row::new(
            "events lost during the fio runs",
            s.lost as f64,
            s.lost.to_string(),
        )
        .goal("0")
        .sane(0.0..f64::INFINITY),
    );
    rows.extend(bpf_rows(s));
    rows
}

/// The kernel-side budget a program falls under (issue 9): bio and
/// completion hooks 150 ns, hooks that mostly see events no rule wants
/// 50 ns. Hooks on a task's exit or rename run a few times a second:
/// their cost per run is shown, but no budget is about them.
fn program_goal(name: &str) -> &'static str {
    if name.contains("process_exit") || name.contains("task_rename") {
        "none (rare)"
    } else if name.contains("sched") || name.contains("sys_exit") {
        "<= 50 ns/run"
    } else {
        "<= 150 ns/run"
    }
}

fn bpf_rows(s: &Samples) -> Vec<Row> {
    let mut rows = Vec::new();
    let per_io = |t: Tracer| {
        s.bpf
            .get(&t)
            .map(|(progs, ios)| progs.values().map(|c| c.ns).sum::<u64>() as f64 / ios)
            .unwrap_or(f64::NAN)
    };
    rows.push(
        Row::new(
            "BPF run time per I/O, all programs (tmpfs loop, kernel.bpf_stats_enabled)",
            per_io(Tracer::Detector),
            format!("{:.0} ns", per_io(Tracer::Detector)),
        )
        .peer(format!("{:.0} ns", per_io(Tracer::Bpftrace))),
    );
    let Some((progs, _)) = s.bpf.get(&Tracer::Detector) else {
        return rows;
    };
    let mut by_time: Vec<(&String, &ProgCost)> = progs.iter().collect();
    by_time.sort_by_key(|(_, c)| std::cmp::Reverse(c.ns));
    for (name, c) in by_time {
        let avg = c.ns as f64 / c.runs as f64;
        rows.push(
            Row::new(
                format!("`{name}` per run (tmpfs loop)"),
                avg,
                format!("{avg:.0} ns ({} runs)", si(c.runs as f64)),
            )
            .goal(program_goal(name)),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::program_goal;

    #[test]
    fn each_program_is_held_to_its_budget() {
        assert_eq!(program_goal("raw_block_bio_queue"), "<= 150 ns/run");
        assert_eq!(program_goal("raw_sched_switch"), "<= 50 ns/run");
        assert_eq!(program_goal("tp_sys_exit"), "<= 50 ns/run");
        assert_eq!(program_goal("raw_sched_process_exit"), "none (rare)");
        assert_eq!(program_goal("raw_task_rename"), "none (rare)");
    }
}
