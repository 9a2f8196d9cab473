//! Events from the running kernel: the programs loaded and attached, the
//! ring buffer drained into batches, md hooks attached when md_mod loads,
//! and the programs' own diagnostics (aya-log) forwarded to the log. Both
//! `trace` and `run` read the kernel through this.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::monotonic_ns;
use crate::kernel::attach::{HookStatus, LoadError, LoadOptions, Probes};
use crate::kernel::coverage::{RuleState, coverage};
use crate::kernel::reader::{Batch, Reader, ReaderTotals};
use crate::kernel::stacks::StackResolver;

/// How often the reader drains the ring buffer when not woken.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// How often loaded modules are checked (md_mod may load mid-session).
const MODULE_POLL_EVERY: Duration = Duration::from_secs(1);
/// Batches waiting for the pipeline; past it the reader waits, and the
/// kernel's ring buffer takes up the slack (and counts what it drops).
/// Batches come every drain interval, mostly small; full ones bound what a
/// stop must still take through the engine to this many times
/// `reader::MAX_BATCH` events.
const BATCHES_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no hook could be attached on this kernel; `detector check` says why")]
    NothingAttached,
    #[error("the eBPF object lacks map {0} (build mismatch)")]
    MissingMap(&'static str),
    #[error("cannot poll the ring buffer: {0}")]
    Poll(#[source] io::Error),
}

/// What the kernel side produced.
pub enum LiveInput {
    Batch(Batch),
    /// A module's hooks were attached (it loaded during the session).
    ModuleLoaded(&'static str),
}

/// A live session's source. Dropping it detaches every program.
pub struct Live {
    pub probes: Probes,
    /// CLOCK_MONOTONIC when every hook was attached: the session's start.
    pub start_ns: u64,
    rx: mpsc::Receiver<Batch>,
    stop_tx: watch::Sender<bool>,
    reader: JoinHandle<ReaderTotals>,
    logger: Option<JoinHandle<()>>,
    module_poll: tokio::time::Interval,
    totals: ReaderTotals,
}

impl Live {
    /// Loads and attaches the programs and starts draining their ring
    /// buffer. Must run inside the tokio runtime (it spawns the reader).
    pub fn start(opts: LoadOptions) -> Result<(Self, StackResolver), LiveError> {
        let mut probes = Probes::load(opts)?;
        if probes.outcomes.iter().all(|o| o.attached().is_none()) {
            return Err(LiveError::NothingAttached);
        }
        let logger = probes.take_logger().map(forward_logs);
        let ring = probes
            .take_events()
            .ok_or(LiveError::MissingMap("EVENTS"))?;
        let counters = probes
            .take_counters()
            .ok_or(LiveError::MissingMap("COUNTERS"))?;
        let stacks = probes
            .take_stacks()
            .ok_or(LiveError::MissingMap("STACKS"))?;
        let reader = Reader::new(ring, counters, DRAIN_EVERY).map_err(LiveError::Poll)?;
        let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
        let (stop_tx, stop_rx) = watch::channel(false);
        let reader = tokio::spawn(reader.run(tx, stop_rx));
        let mut module_poll = tokio::time::interval(MODULE_POLL_EVERY);
        module_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let live = Self {
            probes,
            start_ns: monotonic_ns(),
            rx,
            stop_tx,
            reader,
            logger,
            module_poll,
            totals: ReaderTotals::default(),
        };
        Ok((live, StackResolver::new(stacks)))
    }

    /// The next batch, or a module's hooks attached. Cancel-safe: nothing
    /// is lost when another branch of a `select!` wins. `None` once the
    /// reader is gone.
    pub async fn next(&mut self) -> Option<LiveInput> {
        loop {
            tokio::select! {
                batch = self.rx.recv() => {
                    let batch = batch?;
                    self.totals = batch.totals;
                    return Some(LiveInput::Batch(batch));
                }
                _ = self.module_poll.tick() => {
                    if self.probes.attach_module("md_mod") {
                        return Some(LiveInput::ModuleLoaded("md_mod"));
                    }
                }
            }
        }
    }

    /// The reader's totals as of the last batch.
    pub fn totals(&self) -> ReaderTotals {
        self.totals
    }

    /// Stops reading; hands every batch still queued to `each` (the ring
    /// buffer is drained a last time), then detaches. Returns the totals and
    /// the first error `each` gave.
    pub async fn stop(
        mut self,
        mut each: impl FnMut(Batch) -> io::Result<()>,
    ) -> (ReaderTotals, io::Result<()>) {
        let _ = self.stop_tx.send(true);
        let mut result = Ok(());
        while let Some(batch) = self.rx.recv().await {
            if let Err(e) = each(batch)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        let totals = self.reader.await.unwrap_or(self.totals);
        if let Some(logger) = self.logger.take() {
            logger.abort();
        }
        (totals, result)
    }
}

/// Forwards the programs' aya-log records to the `log` facade (and from
/// there to `tracing`) whenever the log ring buffer has data. The programs
/// rate-limit what they write; this only moves it.
fn forward_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring buffer's fd and keeps it open,
        // unchanged, for as long as it lives; the AsyncFd owns the logger.
        let registered =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
        let Ok(mut fd) = registered else {
            tracing::debug!(
                "the programs' log buffer cannot be polled; kernel diagnostics are off"
            );
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    })
}

/// What is hooked and which rules that leaves, as lines for people.
pub fn announcement(probes: &Probes) -> Vec<String> {
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
    let mut lines = vec![format!(
        "kernel {}; attached {} hooks ({})",
        probes.facts().release,
        by_mech.values().sum::<usize>(),
        attached.join(", ")
    )];
    if !missing.is_empty() {
        lines.push(format!(
            "could not attach {} hooks on this kernel ({}{}); `detector check` says why",
            missing.len(),
            missing
                .iter()
                .take(4)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 4 { ", ..." } else { "" }
        ));
    }
    for r in coverage(&probes.outcomes) {
        let state = match &r.state {
            RuleState::Active => "active".to_owned(),
            RuleState::Degraded { effect, .. } => format!("degraded: {effect}"),
            RuleState::Inactive { .. } => "inactive (hooks missing)".to_owned(),
            RuleState::WaitingForModule { module } => format!("waiting for {module}"),
        };
        lines.push(format!("  rule {:<28} {state}", r.rule));
    }
    lines
}
