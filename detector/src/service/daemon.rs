//! `detector run`'s main loop: the shared pipeline fed from the kernel (or
//! a paced replay), with the store, log and metrics sinks, until SIGTERM or
//! SIGINT; SIGHUP reloads the configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::config::Loaded;
use super::http;
use super::log::{FindingLog, LogHandle};
use super::notify::Notifier;
use super::reload::reload;
use super::store::Store;
use super::stored::StoreSink;
use crate::clock::{monotonic_ns, realtime_ns};
use crate::engine::{Engine, EngineConfig};
use crate::event::StackTable;
use crate::kernel::attach::{HookOutcome, LoadOptions};
use crate::kernel::reader::{Batch, ReaderTotals};
use crate::metrics::Metrics;
use crate::session::live::{Health, Live, LiveInput, announcement};
use crate::session::replay::{Item, Paced, PacedBatch, ReplayFile};
use crate::session::{Session, SessionOptions, Stacks};

/// How often metrics and the status line are brought up to date.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// A debug knob for the watchdog test (`cargo xtask vm-test --service`):
/// set to 1, the loop wedges for good after the first batch, as a pipeline
/// stuck in a lock would, so the watchdog pings stop and systemd must
/// restart the service. Not in the configuration file: nobody should find
/// it there.
const STALL_READER_ENV: &str = "DETECTOR_DEBUG_STALL_READER";

/// Blocks the loop's thread for good (the metrics server, on other
/// threads, goes on answering: the watchdog is what must notice).
fn stall_reader_on_purpose() -> ! {
    tracing::warn!("{STALL_READER_ENV}=1: the reader stalls on purpose now");
    loop {
        std::thread::park();
    }
}

/// What the daemon needs besides its source.
pub struct Daemon {
    pub loaded: Loaded,
    /// Where SIGHUP re-reads the configuration, and whether the user named
    /// it (a named file must exist).
    pub config_path: PathBuf,
    pub config_explicit: bool,
    pub metrics: Arc<Metrics>,
    pub log: LogHandle,
    pub notifier: Notifier,
}

/// Where events come from.
pub enum Source {
    Live(Box<Live>),
    Replay(Box<Paced>),
}

enum Input {
    Batch(Box<Batch>),
    Modules { attached: Option<&'static str> },
    Replayed(PacedBatch),
}

impl Source {
    pub fn open(replay: Option<&PathBuf>, loaded: &Loaded) -> Result<(Self, Box<dyn Stacks>)> {
        match replay {
            Some(path) => {
                let file = ReplayFile::open(path)?;
                Ok((
                    Source::Replay(Box::new(Paced::new(file))),
                    Box::new(StackTable::new()),
                ))
            }
            None => {
                let kernel = &loaded.config.kernel;
                let opts = LoadOptions {
                    ring_bytes: kernel.ring_buffer_size.0,
                    stack_budget: kernel.stack_budget,
                    task_map_entries: kernel.task_map_entries.0,
                    syscall_hooks: kernel.syscall_hooks_policy(),
                    ..LoadOptions::default()
                };
                let (live, stacks) = Live::start(opts)?;
                Ok((Source::Live(Box::new(live)), Box::new(stacks)))
            }
        }
    }

    /// Cancel-safe; pends forever once a replay is over.
    async fn next(&mut self) -> Option<Input> {
        match self {
            Source::Live(live) => match live.next().await? {
                LiveInput::Batch(b) => Some(Input::Batch(b)),
                LiveInput::Modules { attached } => Some(Input::Modules { attached }),
            },
            Source::Replay(paced) if paced.done() => std::future::pending().await,
            Source::Replay(paced) => Some(Input::Replayed(paced.next().await)),
        }
    }

    /// The kernel's stack size and the hooks the session has.
    pub fn hooks(&self) -> (u32, Option<Vec<HookOutcome>>) {
        match self {
            Source::Live(live) => (
                live.probes.config().thread_size,
                Some(live.probes.outcomes.clone()),
            ),
            Source::Replay(paced) => match paced.file().header() {
                Some(h) => (h.thread_size, Some(HookOutcome::from_labels(&h.hooks))),
                None => (16 * 1024, None),
            },
        }
    }

    /// The engine configuration the daemon's configuration gives here.
    pub fn engine_config(&self, loaded: &Loaded) -> Result<EngineConfig> {
        let (thread_size, hooks) = self.hooks();
        loaded
            .config
            .engine_args()
            .engine_config(thread_size, hooks.as_deref())
    }

    fn totals(&self) -> Option<ReaderTotals> {
        match self {
            Source::Live(live) => Some(live.totals()),
            Source::Replay(_) => None,
        }
    }

    /// When the session starts, where findings happen and its wall clock.
    fn origin(&self) -> (u64, String, u64) {
        match self {
            Source::Live(live) => (
                live.start_ns,
                crate::kernel::facts::hostname(),
                realtime_ns().saturating_sub(monotonic_ns()),
            ),
            Source::Replay(paced) => match paced.file().header() {
                Some(h) => (h.started_ns, h.hostname.clone(), h.boot_time_offset_ns),
                None => (0, crate::kernel::facts::hostname(), 0),
            },
        }
    }

    fn kernel(&self) -> String {
        match self {
            Source::Live(live) => live.probes.facts().release.clone(),
            Source::Replay(paced) => paced
                .file()
                .header()
                .map_or_else(|| "unknown".into(), |h| h.kernel_release.clone()),
        }
    }
}

fn feed(session: &mut Session<Box<dyn Stacks>>, batch: Batch) -> std::io::Result<()> {
    for ev in batch.events {
        session.event(ev)?;
    }
    session.tick(batch.now)
}

fn replayed(session: &mut Session<Box<dyn Stacks>>, batch: PacedBatch) -> Result<()> {
    for item in batch.items {
        match item {
            Item::Event(ev) => session.event(ev)?,
            Item::Stack(id, stack) => session.stacks.add_stack(id, stack),
            Item::Symbol(addr, name) => session.stacks.add_symbol(addr, name),
        }
    }
    if batch.now > 0 {
        session.tick(batch.now)?;
    }
    if let Some(e) = batch.error {
        tracing::error!("replay stopped: {e}");
    }
    if batch.end {
        session.finish()?;
        tracing::info!(
            "replay finished: {} findings; serving metrics until stopped",
            session.findings_shown
        );
    }
    Ok(())
}

/// A one-line state for systemd's STATUS=.
struct Status {
    last: (Instant, u64),
}

impl Status {
    fn line(&mut self, session: &Session<Box<dyn Stacks>>) -> String {
        let stats = session.engine_stats();
        let (at, before) = self.last;
        let rate =
            stats.events.saturating_sub(before) as f64 / at.elapsed().as_secs_f64().max(1e-3);
        self.last = (Instant::now(), stats.events);
        format!(
            "{rate:.0} events/s, {} findings, {} events lost",
            session.findings_shown, stats.lost_events
        )
    }
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    mut daemon: Daemon,
    store: Store,
    listener: std::net::TcpListener,
    replay: Option<PathBuf>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, daemon.metrics.clone(), stop_rx));
    let mut sigterm = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;
    let (mut source, stacks) = Source::open(replay.as_ref(), &daemon.loaded)?;
    if let Source::Live(live) = &source {
        for line in announcement(&live.probes) {
            tracing::info!("{line}");
        }
        // The programs read these fields as zero: say so once, here.
        for m in &live.probes.missing_fields {
            tracing::warn!(
                field = m.field.as_str(),
                "kernel offset {}{} could not be resolved from BTF: {}",
                m.module.map(|m| format!("[{m}] ")).unwrap_or_default(),
                m.field,
                m.reason
            );
        }
    }
    let engine_config = source.engine_config(&daemon.loaded)?;
    daemon.metrics.set_thresholds(&engine_config);
    let engine = Engine::new(engine_config);
    let (start_ns, host, boot_offset_ns) = source.origin();
    let mut session = Session::new(
        SessionOptions {
            filter: daemon.loaded.config.event_filter(),
            start_ns,
            summary: false,
            measure_latency: matches!(source, Source::Live(_)),
        },
        stacks,
        engine,
    );
    let metrics = daemon.metrics.clone();
    session.attach(Box::new(StoreSink::new(
        store,
        host,
        boot_offset_ns,
        metrics.clone(),
    )));
    session.attach(Box::new(FindingLog));
    session.attach(Box::new(metrics.sink()));
    metrics.set_build_info(&source.kernel());
    let config = &daemon.loaded.config;
    metrics.set_coverage(source.hooks().1.as_deref(), |r| config.enabled(r));
    metrics.config_loaded(true);
    let mut status = Status {
        last: (Instant::now(), 0),
    };
    daemon.notifier.ready(&status.line(&session));
    tracing::info!(
        "ready: metrics on http://{}/metrics, findings in {}, logs to {}",
        daemon.loaded.config.metrics.address.get_ref().0,
        daemon.loaded.config.findings.path.get_ref().display(),
        daemon.log.destination
    );
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    let mut health = Health::default();
    let stall_reader = std::env::var(STALL_READER_ENV).is_ok_and(|v| v == "1");
    let result: Result<()> = async {
        loop {
            // Signals and the publication timer before input: a pipeline
            // that falls behind still reloads, stops and reports at once.
            tokio::select! {
                biased;
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => {
                    reload(&mut daemon, &mut session, &source);
                    let line = status.line(&session);
                    daemon.notifier.reloaded(&line);
                }
                _ = publish.tick() => {
                    if let Source::Live(live) = &source {
                        for note in health.check(live, &session.summary.heartbeat) {
                            tracing::warn!("{note}");
                        }
                    }
                    metrics.publish(&session.engine_stats(), source.totals().as_ref());
                    let line = status.line(&session);
                    daemon.notifier.status(&line);
                    if matches!(&source, Source::Replay(_)) {
                        // A replay reads no kernel: the loop's own turns are
                        // its sign of life (a recording may pause longer
                        // than the watchdog's period, and it ends).
                        daemon.notifier.alive();
                    }
                }
                input = source.next() => match input {
                    None => {
                        tracing::error!("the ring-buffer reader stopped");
                        break;
                    }
                    Some(Input::Batch(batch)) => {
                        feed(&mut session, *batch)?;
                        if stall_reader {
                            stall_reader_on_purpose();
                        }
                        daemon.notifier.alive();
                    }
                    Some(Input::Modules { attached }) => {
                        // Modules come and go: symbolize with the current ones.
                        session.stacks.modules_changed();
                        if let Some(module) = attached {
                            let config = &daemon.loaded.config;
                            metrics.set_coverage(source.hooks().1.as_deref(), |r| config.enabled(r));
                            tracing::info!("{module} loaded; md hooks attached");
                        }
                    }
                    Some(Input::Replayed(batch)) => {
                        replayed(&mut session, batch)?;
                        daemon.notifier.alive();
                    }
                },
            }
        }
        Ok(())
    }
    .await;
    daemon.notifier.stopping();
    tracing::info!("stopping: draining the ring buffer, flushing findings");
    let drained = match source {
        Source::Live(live) => {
            let stopped = live.stop(|batch| feed(&mut session, batch)).await;
            if let Some(note) = &stopped.reader_stuck {
                tracing::error!("{note}");
            }
            stopped.result
        }
        Source::Replay(_) => Ok(()),
    };
    let finished = session.finish();
    metrics.publish(&session.engine_stats(), None);
    let _ = stop_tx.send(true);
    let _ = server.await;
    result?;
    drained?;
    finished?;
    tracing::info!("stopped: {} findings this run", session.findings_shown);
    Ok(())
}
