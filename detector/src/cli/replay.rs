//! `detector replay`: a recorded session through the same pipeline.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow};

use super::ReplayArgs;
use crate::engine::Engine;
use crate::event::{Event, StackTable};
use crate::filter::EventFilter;
use crate::kernel::attach::HookOutcome;
use crate::record::{MAGIC, Record, RecordReader};
use crate::report::stats::{CpuTime, StatsJson};
use crate::session::{EventOutput, Session, SessionOptions, findings_summary};

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let path = &args.file;
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 8];
    let n = file
        .read(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let events = match (args.output.json, args.output.events) {
        (true, _) => EventOutput::Json,
        (false, true) => EventOutput::Lines,
        (false, false) => EventOutput::None,
    };
    let opts = SessionOptions {
        events,
        inline_stacks: args.output.stacks,
        filter: EventFilter::new(args.output.pids.clone(), args.output.devs.clone()),
        start_ns: 0,
        measure_latency: false,
    };
    let mut failure = None;
    let mut session;
    if n == 8 && &magic == MAGIC {
        let mut reader = RecordReader::new(BufReader::new(file))
            .with_context(|| format!("{} is not a readable record file", path.display()))?;
        let header = reader.header().clone();
        // Rules the recorded session could not feed stay off, as they were.
        let hooks = HookOutcome::from_labels(&header.hooks);
        let engine = Engine::new(
            args.engine
                .engine_config(header.thread_size, Some(&hooks))?,
        );
        session = Session::new(
            SessionOptions {
                start_ns: header.started_ns,
                ..opts
            },
            StackTable::new(),
            engine,
        );
        eprintln!(
            "detector: replaying {} (kernel {}, host {}, recorded by detector {})",
            path.display(),
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
        for record in reader.by_ref() {
            match record {
                Ok(Record::Stack { id, stack }) => {
                    session.stacks.insert(id, stack);
                }
                Ok(Record::Symbol { addr, name }) => session.stacks.insert_symbol(addr, name),
                Ok(Record::Event(ev)) => session.event(ev)?,
                Err(e) => {
                    failure = Some(anyhow!("{}: {e}", path.display()));
                    break;
                }
            }
            if session.output_closed() {
                break;
            }
        }
    } else {
        // JSON lines: one event per line, as `trace --json` prints them;
        // finding lines, blank lines and `#` comments are skipped. There is
        // no header saying which hooks ran: every rule runs.
        let engine = Engine::new(args.engine.engine_config(16 * 1024, None)?);
        session = Session::new(opts, StackTable::new(), engine);
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let value: serde_json::Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    failure = Some(anyhow!(
                        "{} line {}: not a record file and not JSON lines: {e}",
                        path.display(),
                        i + 1
                    ));
                    break;
                }
            };
            if value.get("finding").is_some() {
                continue;
            }
            match serde_json::from_value::<Event>(value) {
                Ok(ev) => session.event(ev)?,
                Err(e) => {
                    failure = Some(anyhow!(
                        "{} line {}: not an event: {e}",
                        path.display(),
                        i + 1
                    ));
                    break;
                }
            }
            if session.output_closed() {
                break;
            }
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
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
