//! `detector trace`: the live session on a terminal.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use super::TraceArgs;
use crate::clock::{monotonic_ns, realtime_ns};
use crate::engine::Engine;
use crate::kernel::attach::LoadOptions;
use crate::kernel::reader::{Batch, ReaderTotals};
use crate::kernel::stacks::StackResolver;
use crate::kernel::syscall_hooks::Policy;
use crate::record::RecordHeader;
use crate::report::stats::{CpuTime, StatsJson};
use crate::service::log;
use crate::session::live::{Health, Live, LiveInput, announcement, unpin_from_cpus};
use crate::session::recorder::Recorder;
use crate::session::terminal::Terminal;
use crate::session::{Session, SessionOptions, findings_summary};

/// How often record data is pushed to disk.
const RECORD_FLUSH_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    log::init_for_terminal();
    // Threads inherit this: the reader must be free to run on any CPU.
    unpin_from_cpus();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(trace(args))
}

/// The header of a record file of this live session.
fn record_header(live: &Live, filters: Vec<String>) -> RecordHeader {
    let probes = &live.probes;
    RecordHeader {
        kernel_release: probes.facts().release.clone(),
        machine: probes.facts().machine.clone(),
        hostname: crate::kernel::facts::hostname(),
        boot_time_offset_ns: realtime_ns().saturating_sub(monotonic_ns()),
        started_ns: live.start_ns,
        thread_size: probes.config().thread_size,
        hooks: probes
            .outcomes
            .iter()
            .map(|o| (o.name.to_owned(), o.status.label().to_owned()))
            .collect(),
        filters,
        ..RecordHeader::current()
    }
}

fn feed(session: &mut Session<StackResolver>, batch: Batch) -> std::io::Result<()> {
    for ev in batch.events {
        session.event(ev)?;
    }
    session.tick(batch.now)?;
    session.flush()
}

async fn trace(args: TraceArgs) -> Result<ExitCode> {
    let opts = LoadOptions {
        ring_bytes: args.buffer_size,
        stack_budget: args.stack_budget,
        task_map_entries: args.task_map_entries,
        full: args.full,
        syscall_hooks: Policy::new(args.syscall_hooks, args.syscall_hooks_idle),
        ..LoadOptions::default()
    };
    let (live, stacks) = Live::start(opts)?;
    for line in announcement(&live.probes) {
        eprintln!("detector: {line}");
    }
    let start_ns = live.start_ns;
    let json = args.output.json;
    let engine_config = args.engine.engine_config(
        live.probes.config().thread_size,
        Some(&live.probes.outcomes),
    )?;
    let filter = args.output.filter();
    let filters = filter.describe();
    let mut session = Session::new(
        SessionOptions {
            filter,
            start_ns,
            summary: true,
            measure_latency: true,
        },
        stacks,
        Engine::new(engine_config),
    );
    session.attach(Box::new(Terminal::new(
        args.output.event_output(),
        args.output.stacks,
        start_ns,
    )));
    if let Some(path) = &args.record {
        let recorder = Recorder::create(path, &record_header(&live, filters))
            .with_context(|| format!("cannot create {}", path.display()))?;
        session.attach(Box::new(recorder));
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot create the ready file {}", path.display()))?;
    }
    let status_line = !args.quiet && !json && std::io::stderr().is_terminal();
    match args.duration {
        Some(d) => eprintln!(
            "detector: tracing for {}s; Ctrl-C to stop early",
            d.as_secs_f64()
        ),
        None => eprintln!("detector: tracing; Ctrl-C to stop"),
    }
    let mut live = live;
    let result = trace_loop(&mut live, &mut session, &args, status_line).await;
    // Stop the reader, then take everything it still had; a reader that
    // does not answer (stuck on a CPU) is left behind, and said so.
    let stopped = live.stop(|batch| feed(&mut session, batch)).await;
    result?;
    stopped.result?;
    if let Some(note) = &stopped.reader_stuck {
        eprintln!("\ndetector: {note}");
    }
    let notes = session.finish()?;
    if status_line {
        eprint!("\r\x1b[K");
    }
    eprint!("\n{}", session.summary.render());
    eprint!("{}", findings_summary(&session.engine_stats()));
    print_reader_totals(&stopped.totals);
    for note in notes {
        eprintln!("  {note}");
    }
    if let Some(path) = &args.stats_json {
        StatsJson {
            reader: Some(stopped.totals),
            summary: session.summary.to_json(),
            engine: session.engine_stats(),
            detection_latency: session.latency(),
            cpu: CpuTime::of_this_process(),
        }
        .write(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_reader_totals(totals: &ReaderTotals) {
    let counters: Vec<String> = totals
        .counters
        .named()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if !counters.is_empty() {
        eprintln!("  kernel-side counters: {}", counters.join(", "));
    }
    if totals.stacks_over_budget > 0 {
        eprintln!(
            "  events without a stack (over --stack-budget): {}",
            totals.stacks_over_budget
        );
    }
    if totals.names_from_proc + totals.names_unknown > 0 {
        eprintln!(
            "  task names whose record was lost: {} read from /proc, {} unknown (shown as ?)",
            totals.names_from_proc, totals.names_unknown
        );
    }
    let stalls = &totals.ring_stalls;
    if stalls.episodes > 0 {
        eprintln!(
            "  CPU rings stuck behind a record being written: {} times, longest {:.1} ms \
             (judging waited for them{})",
            stalls.episodes,
            stalls.longest_ns as f64 / 1e6,
            match stalls.given_up {
                0 => String::new(),
                n => format!("; {n} past 2 s: marked lost, their records came late"),
            }
        );
    }
    if stalls.position_errors > 0 {
        eprintln!(
            "  ring positions that made no sense (not trusted): {}",
            stalls.position_errors
        );
    }
    let hooks = &totals.syscall_hooks;
    if hooks.detaches > 0 || hooks.failures > 0 {
        eprintln!(
            "  sys_exit/sys_enter: detached {} times while no task needed them, attached again {} \
             times{}",
            hooks.detaches,
            hooks.attaches,
            match hooks.failures {
                0 => String::new(),
                n => format!(" ({n} changes refused by the kernel)"),
            }
        );
    }
    if totals.decode_errors > 0 || totals.read_errors > 0 {
        eprintln!(
            "  records that did not decode: {}; kernel reads that failed: {}",
            totals.decode_errors, totals.read_errors
        );
    }
}

/// Reads until Ctrl-C, SIGTERM, --duration or a closed stdout.
async fn trace_loop(
    live: &mut Live,
    session: &mut Session<StackResolver>,
    args: &TraceArgs,
    status_line: bool,
) -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut health_tick = tokio::time::interval(Duration::from_secs(1));
    let mut health = Health::default();
    let mut last_sync = Instant::now();
    let mut last_status = (Instant::now(), 0u64);
    loop {
        // Signals first: a session that falls behind still stops at once.
        tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            _ = health_tick.tick() => {
                for note in health.check(live, &session.summary.heartbeat) {
                    eprintln!("\ndetector: {note}");
                }
            }
            _ = status_tick.tick(), if status_line => {
                let (at, before) = last_status;
                let now = session.summary.events();
                let rate = (now - before) as f64 / at.elapsed().as_secs_f64().max(1e-3);
                last_status = (Instant::now(), now);
                eprint!(
                    "\r\x1b[K{:>5.0}s  {:>9.0} events/s  {} lost  {} bios in flight  {} findings",
                    Duration::from_nanos(monotonic_ns() - live.start_ns).as_secs_f64(),
                    rate,
                    session.summary.lost,
                    session.summary.in_flight(),
                    session.findings_shown,
                );
            }
            input = live.next() => match input {
                None => break,
                Some(LiveInput::Batch(batch)) => {
                    feed(session, *batch)?;
                    if last_sync.elapsed() >= RECORD_FLUSH_EVERY {
                        session.sync()?;
                        last_sync = Instant::now();
                    }
                    if session.output_closed() {
                        break;
                    }
                }
                Some(LiveInput::Modules { attached }) => {
                    // Modules come and go: symbolize with the current ones.
                    session.stacks.refresh_modules();
                    if let Some(module) = attached {
                        // The VM bench waits for these words.
                        eprintln!("detector: {module} loaded; md hooks attached");
                    }
                }
            },
        }
    }
    Ok(())
}
