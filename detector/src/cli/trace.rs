//! `detector trace`: the live session.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::TraceArgs;
use crate::clock::{monotonic_ns, realtime_ns};
use crate::engine::Engine;
use crate::filter::EventFilter;
use crate::kernel::attach::{HookStatus, LoadOptions, Probes};
use crate::kernel::coverage::{RuleState, coverage};
use crate::kernel::loss::{LossCounters, Programs};
use crate::kernel::reader::Reader;
use crate::kernel::stacks::StackResolver;
use crate::record::{FORMAT_VERSION, RecordHeader};
use crate::session::{EventOutput, Session, SessionOptions, findings_summary};

/// How often the reader drains the ring buffer when not woken.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// How often record data is pushed to disk.
const RECORD_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often loaded modules are checked (md_mod may load mid-session).
const MODULE_POLL_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    // Threads inherit this: the reader must be free to run on any CPU, so
    // that one CPU stuck in a kernel bug cannot hold it.
    unpin_from_cpus();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(trace(args))
}

/// Allows this thread (and the threads it starts) on every CPU.
fn unpin_from_cpus() {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it;
    // sched_setaffinity reads it. Failure leaves the inherited mask.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_CONF).clamp(1, libc::CPU_SETSIZE as i64);
        for cpu in 0..cpus as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// How long the main loop waits for the reader at the end, and how long
/// without a batch from it before saying so: a reader stuck on a CPU that
/// a kernel bug holds must not hang the session.
const READER_STALL: Duration = Duration::from_secs(5);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Tells the user, on stderr, what is hooked and which rules that leaves.
fn announce(probes: &Probes) {
    let mut by_mech: BTreeMap<&str, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    for o in &probes.outcomes {
        match &o.status {
            HookStatus::Attached { mechanism, .. } => {
                *by_mech.entry(mechanism.name()).or_default() += 1
            }
            HookStatus::Failed => missing.push(o.name),
            _ => {}
        }
    }
    let attached: Vec<String> = by_mech.iter().map(|(m, n)| format!("{n} {m}")).collect();
    eprintln!(
        "detector: kernel {}; attached {} hooks ({})",
        probes.facts().release,
        by_mech.values().sum::<usize>(),
        attached.join(", ")
    );
    if !missing.is_empty() {
        eprintln!(
            "detector: could not attach {} hooks on this kernel ({}{}); `detector check` says why",
            missing.len(),
            missing
                .iter()
                .take(4)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 4 { ", ..." } else { "" }
        );
    }
    for r in coverage(&probes.outcomes) {
        let state = match &r.state {
            RuleState::Active => "active".to_owned(),
            RuleState::Degraded { effect, .. } => format!("degraded: {effect}"),
            RuleState::Inactive { .. } => "inactive (hooks missing)".to_owned(),
            RuleState::WaitingForModule { module } => format!("waiting for {module}"),
        };
        eprintln!("detector:   rule {:<28} {state}", r.rule);
    }
}

async fn trace(args: TraceArgs) -> Result<ExitCode> {
    let opts = LoadOptions {
        ring_bytes: args.buffer_size,
        stack_budget: args.stack_budget,
        task_map_entries: args.task_map_entries,
        ..LoadOptions::default()
    };
    let mut probes = Probes::load(opts)?;
    if probes.outcomes.iter().all(|o| o.attached().is_none()) {
        return Err(anyhow!(
            "no hook could be attached on this kernel; `detector check` says why"
        ));
    }
    announce(&probes);
    let ring = probes
        .take_events()
        .context("the ring buffer map is missing")?;
    let counters = probes
        .take_counters()
        .context("the counters map is missing")?;
    let stack_map = probes.take_stacks().context("the stack map is missing")?;
    let programs: Programs = Arc::new(Mutex::new(probes.attached_programs()));
    let loss = LossCounters::new(counters, programs.clone());
    let task_maps = probes.take_task_maps();
    let reader = Reader::new(ring, loss, Some(task_maps), DRAIN_EVERY)
        .context("cannot poll the ring buffer")?;

    let start_ns = monotonic_ns();
    let json = args.output.json;
    let events = match (json, args.output.events) {
        (true, _) => EventOutput::Json,
        (false, true) => EventOutput::Lines,
        (false, false) => EventOutput::None,
    };
    let engine_config = args
        .engine
        .engine_config(probes.config().thread_size, Some(&probes.outcomes))?;
    let mut session = Session::new(
        SessionOptions {
            events,
            inline_stacks: args.output.stacks,
            filter: EventFilter::new(args.output.pids.clone(), args.output.devs.clone()),
            start_ns,
        },
        StackResolver::new(stack_map),
        Engine::new(engine_config),
    );
    if let Some(path) = &args.record {
        let header = RecordHeader {
            format_version: FORMAT_VERSION,
            detector_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: probes.facts().release.clone(),
            machine: probes.facts().machine.clone(),
            hostname: hostname(),
            boot_time_offset_ns: realtime_ns().saturating_sub(start_ns),
            started_ns: start_ns,
            thread_size: probes.config().thread_size,
            hooks: probes
                .outcomes
                .iter()
                .map(|o| (o.name.to_owned(), o.status.label().to_owned()))
                .collect(),
            filters: vec![],
        };
        session
            .record_to(path, header)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }

    let (tx, mut rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_task = tokio::spawn(reader.run(tx, stop_rx));
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

    let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut module_poll = tokio::time::interval(MODULE_POLL_EVERY);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_record_flush = Instant::now();
    let mut last_status = (Instant::now(), 0u64);
    let mut last_batch = Instant::now();
    let mut warned_stall = false;
    let mut warned_silent: Vec<u32> = Vec::new();
    let mut health_tick = tokio::time::interval(Duration::from_secs(1));

    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                last_batch = Instant::now();
                warned_stall = false;
                for ev in batch.events {
                    session.event(ev).context("writing the record file")?;
                }
                session.tick(batch.now);
                session.flush();
                if last_record_flush.elapsed() >= RECORD_FLUSH_EVERY {
                    session.sync_record().context("writing the record file")?;
                    last_record_flush = Instant::now();
                }
                if session.output_closed() {
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            _ = module_poll.tick() => {
                // Modules come and go: symbolize with the current ones.
                session.stacks.refresh_modules();
                if probes.attach_module("md_mod") {
                    if let Ok(mut watched) = programs.lock() {
                        *watched = probes.attached_programs();
                    }
                    eprintln!("detector: md_mod loaded; md hooks attached");
                }
            }
            _ = health_tick.tick() => {
                let stalled = last_batch.elapsed();
                if stalled >= READER_STALL && !warned_stall {
                    warned_stall = true;
                    eprintln!(
                        "\ndetector: no events read for {}s: the reader is not running (its CPU may be stuck)",
                        stalled.as_secs()
                    );
                }
                let silent = session.summary.heartbeat.silent();
                for cpu in &silent {
                    if !warned_silent.contains(&cpu.cpu) {
                        eprintln!("\ndetector: {}", cpu.describe());
                    }
                }
                warned_silent = silent.iter().map(|c| c.cpu).collect();
            }
            _ = status_tick.tick(), if status_line => {
                let (at, before) = last_status;
                let now = session.summary.events();
                let rate = (now - before) as f64 / at.elapsed().as_secs_f64().max(1e-3);
                last_status = (Instant::now(), now);
                eprint!(
                    "\r\x1b[K{:>5.0}s  {:>9.0} events/s  {} lost  {} bios in flight  {} findings",
                    Duration::from_nanos(monotonic_ns() - start_ns).as_secs_f64(),
                    rate,
                    session.summary.lost,
                    session.summary.in_flight(),
                    session.findings_shown,
                );
            }
        }
    }
    // Stop the reader, then take everything it still had; a reader that
    // does not answer (stuck on a CPU) is left behind, and said so.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(READER_STALL, async {
        while let Some(batch) = rx.recv().await {
            for ev in batch.events {
                session.event(ev)?;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let totals = match drained {
        Ok(result) => {
            result.context("writing the record file")?;
            tokio::time::timeout(READER_STALL, reader_task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        }
        Err(_) => {
            eprintln!(
                "\ndetector: the event reader did not stop within {}s (its CPU may be stuck); \
                 events after its last drain are missing",
                READER_STALL.as_secs()
            );
            Default::default()
        }
    };
    let records = session.finish().context("finishing the record file")?;
    if status_line {
        eprint!("\r\x1b[K");
    }
    eprint!("\n{}", session.summary.render());
    eprint!("{}", findings_summary(&session.engine_stats()));
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
    if totals.decode_errors > 0 || totals.read_errors > 0 {
        eprintln!(
            "  records that did not decode: {}; kernel reads that failed: {}",
            totals.decode_errors, totals.read_errors
        );
    }
    if let (Some(path), Some(n)) = (&args.record, records) {
        eprintln!("  recorded {n} records to {}", path.display());
    }
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}
