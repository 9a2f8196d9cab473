//! `detector replay`: a recorded session through the same pipeline.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

use super::ReplayArgs;
use crate::engine::{Engine, EngineConfig};
use crate::event::StackTable;
use crate::kernel::attach::HookOutcome;
use crate::report::stats::{CpuTime, StatsJson};
use crate::session::replay::{Item, ReplayFile};
use crate::session::terminal::Terminal;
use crate::session::{Session, SessionOptions, Stacks, findings_summary};

/// The engine configuration for replaying `file` with these thresholds:
/// rules the recorded session could not feed stay off, as they were; JSON
/// lines carry no hook list, so every rule runs.
pub fn engine_config_for(file: &ReplayFile, args: &super::EngineArgs) -> Result<EngineConfig> {
    match file.header() {
        Some(header) => {
            let hooks = HookOutcome::from_labels(&header.hooks);
            args.engine_config(header.thread_size, Some(&hooks))
        }
        None => args.engine_config(16 * 1024, None),
    }
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let mut file = ReplayFile::open(&args.file)?;
    let engine = Engine::new(engine_config_for(&file, &args.engine)?);
    let start_ns = file.header().map_or(0, |h| h.started_ns);
    if let Some(header) = file.header() {
        eprintln!(
            "detector: replaying {} (kernel {}, host {}, recorded by detector {})",
            args.file.display(),
            header.kernel_release,
            header.hostname,
            header.detector_version
        );
        if !header.filters.is_empty() {
            eprintln!(
                "detector: the recording was filtered ({}): findings may be incomplete",
                header.filters.join(" ")
            );
        }
    }
    let mut session = Session::new(
        SessionOptions {
            filter: args.output.filter(),
            start_ns,
            summary: true,
            measure_latency: false,
        },
        StackTable::new(),
        engine,
    );
    session.attach(Box::new(Terminal::new(
        args.output.event_output(),
        args.output.stacks,
        start_ns,
    )));
    let mut failure = None;
    while let Some(item) = file.next_item() {
        match item {
            Ok(Item::Event(ev)) => session.event(ev)?,
            Ok(Item::Stack(id, stack)) => session.stacks.add_stack(id, stack),
            Ok(Item::Symbol(addr, name)) => session.stacks.add_symbol(addr, name),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if session.output_closed() {
            break;
        }
    }
    session.finish()?;
    eprint!("{}", session.summary.render());
    eprint!("{}", findings_summary(&session.engine_stats()));
    if let Some(path) = &args.stats_json {
        StatsJson {
            reader: None,
            summary: session.summary.to_json(),
            engine: session.engine_stats(),
            detection_latency: None,
            cpu: CpuTime::of_this_process(),
        }
        .write(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}
