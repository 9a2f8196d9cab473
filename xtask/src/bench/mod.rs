//! `cargo xtask bench`: every cost figure of issue 9 in one table, each
//! the median of interleaved rounds, with the machine and date. Ratios
//! come from runs back to back in one invocation (hosts are noisy; absolute
//! figures mean little across runs).
//!
//! `--quick` makes every figure from short runs, as a smoke test: it
//! checks that each was produced and is sane, never how fast anything is.

mod bpfstats;
mod fio;
mod io;
mod latency;
mod load;
mod machine;
mod procs;
mod scale;
mod sched;
mod table;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::util::{build_detector_release, workspace_root};
use procs::DetectorBin;
use table::Row;

#[derive(Args, Default)]
pub struct BenchArgs {
    /// Short runs of everything (a smoke test of the bench itself).
    #[arg(long)]
    pub quick: bool,
    /// Interleaved rounds per figure (default 3; 1 with --quick).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Bench this detector binary instead of building one (e.g. another
    /// branch's build, for a before/after table).
    #[arg(long, value_name = "PATH")]
    pub detector: Option<PathBuf>,
    /// Also write the table to FILE (Markdown).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// How long and how often each figure is measured.
pub struct Plan {
    pub rounds: u32,
    pub fio_seconds: f64,
    pub perf_loops: u32,
    pub synthetic_events: u64,
    pub memory_busy_events: u64,
    pub load_rates: Vec<u64>,
    pub load_seconds: f64,
    pub latency_findings: u32,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        if args.quick {
            Self {
                rounds: args.rounds.unwrap_or(1),
                fio_seconds: 1.0,
                perf_loops: 20,
                synthetic_events: 200_000,
                memory_busy_events: 200_000,
                load_rates: vec![20_000, 0],
                load_seconds: 1.0,
                latency_findings: 3,
            }
        } else {
            Self {
                rounds: args.rounds.unwrap_or(3),
                fio_seconds: 5.0,
                perf_loops: 400,
                synthetic_events: 10_000_000,
                memory_busy_events: 1_000_000,
                load_rates: vec![10_000, 25_000, 50_000, 100_000, 200_000, 0],
                load_seconds: 4.0,
                latency_findings: 20,
            }
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let plan = Plan::new(&args);
    let bin = DetectorBin::new(match &args.detector {
        Some(path) => path.clone(),
        None => build_detector_release()?,
    })?;
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let machine = machine::Machine::this();
    let _stats = bpfstats::StatsEnabled::new();

    let mut rows: Vec<Row> = Vec::new();
    let mut notes = vec![format!(
        "detector: `{}`; {} round(s) per figure, fio runs of {} s.",
        bin.path.display(),
        plan.rounds,
        plan.fio_seconds
    )];
    eprintln!("bench: fio on the tmpfs loop and the disk file");
    rows.extend(io::measure(&plan, &bin, &dir)?);
    eprintln!("bench: perf bench sched messaging");
    rows.extend(sched::measure(&plan, &bin, &dir)?);
    eprintln!("bench: a live busy-host recording");
    rows.extend(scale::live_recording(&plan, &bin, &dir)?);
    eprintln!("bench: the synthetic busy host");
    rows.extend(scale::synthetic(&plan, &bin, &dir)?);
    eprintln!("bench: event rate without loss");
    rows.extend(load::measure(&plan, &bin, &dir)?);
    eprintln!("bench: detection latency");
    match latency::measure(&plan, &bin, &dir) {
        Ok(row) => rows.push(row),
        // Builds before --stats-json cannot say; the table says so.
        Err(e) if !bin.stats_json => notes.push(format!("No detection latency: {e}.")),
        Err(e) => return Err(e),
    }

    let text = table::render(&machine.line(), &notes, &rows);
    println!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, &text)?;
    }
    let insane: Vec<&str> = rows
        .iter()
        .filter(|r| !r.is_sane())
        .map(|r| r.figure.as_str())
        .collect();
    if !insane.is_empty() {
        bail!("figures out of their sane range: {}", insane.join("; "));
    }
    Ok(())
}
