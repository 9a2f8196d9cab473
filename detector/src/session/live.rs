//! Events from the running kernel: the programs loaded and attached, the
//! ring buffer drained into batches with the kernel side's loss counters,
//! md hooks attached when md_mod loads, the programs' own diagnostics
//! (aya-log) forwarded to the log, and a watch on the reader itself. Both
//! `trace` and `run` read the kernel through this.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::monotonic_ns;
use crate::heartbeat::Heartbeat;
use crate::kernel::attach::{HookStatus, LoadError, LoadOptions, Probes};
use crate::kernel::coverage::{RuleState, coverage};
use crate::kernel::loss::{LossCounters, Programs};
use crate::kernel::reader::{Batch, Reader, ReaderTotals};
use crate::kernel::stacks::StackResolver;
use crate::kernel::syscall_hooks::{Policy, SyscallHooks};

/// How often the reader drains the ring buffer when not woken: with the
/// reorder window, what a deadline finding waits before it is emitted.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often loaded modules are checked (md_mod may load mid-session, and
/// stacks are symbolized with the modules loaded now).
const MODULE_POLL_EVERY: Duration = Duration::from_secs(1);
/// Batches waiting for the pipeline; past it the reader waits, and the
/// kernel's ring buffer takes up the slack (and counts what it drops).
/// Batches come every drain interval, mostly small; full ones bound what a
/// stop must still take through the engine to this many times
/// `reader::MAX_BATCH` events.
const BATCHES_IN_FLIGHT: usize = 64;
/// How long without a batch before the reader counts as stuck (its CPU held
/// by a kernel bug, say): said once, and at the end a stuck reader is left
/// behind instead of hanging the session.
pub const READER_STALL: Duration = Duration::from_secs(5);

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
    Batch(Box<Batch>),
    /// The module poll came round: symbolize with the modules loaded now;
    /// `attached` names a module whose hooks were just attached.
    Modules {
        attached: Option<&'static str>,
    },
}

/// A live session's source. Dropping it detaches every program.
pub struct Live {
    pub probes: Probes,
    /// CLOCK_MONOTONIC when every hook was attached: the session's start.
    pub start_ns: u64,
    programs: Programs,
    rx: mpsc::Receiver<Batch>,
    stop_tx: watch::Sender<bool>,
    reader: JoinHandle<ReaderTotals>,
    logger: Option<JoinHandle<()>>,
    module_poll: tokio::time::Interval,
    totals: ReaderTotals,
    last_batch: Instant,
    syscall_hooks: SyscallHooks,
}

/// How a live source ended.
pub struct Stopped {
    pub totals: ReaderTotals,
    /// The first error the pipeline gave while taking the last batches.
    pub result: io::Result<()>,
    /// Set when the reader did not answer (stuck on a CPU): what is
    /// missing.
    pub reader_stuck: Option<String>,
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
        let rings = probes
            .take_events()
            .ok_or(LiveError::MissingMap("EVENTS"))?;
        let counters = probes
            .take_counters()
            .ok_or(LiveError::MissingMap("COUNTERS"))?;
        let stacks = probes
            .take_stacks()
            .ok_or(LiveError::MissingMap("STACKS"))?;
        let programs: Programs = Arc::new(Mutex::new(probes.attached_programs()));
        let loss = LossCounters::new(counters, programs.clone());
        let task_maps = probes.take_task_maps();
        let held = probes.take_held_bios();
        let paired_times = probes.take_paired_times();
        let reader = Reader::new(
            rings,
            held,
            paired_times,
            loss,
            Some(task_maps),
            DRAIN_EVERY,
        )
        .map_err(LiveError::Poll)?;
        let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
        let (stop_tx, stop_rx) = watch::channel(false);
        let reader = tokio::spawn(reader.run(tx, stop_rx));
        let mut module_poll = tokio::time::interval(MODULE_POLL_EVERY);
        module_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Everything is reported under --full: the hooks stay.
        let policy = if probes.options().full {
            Policy::Always
        } else {
            probes.options().syscall_hooks
        };
        let syscall_hooks = SyscallHooks::new(&probes, policy);
        let live = Self {
            probes,
            start_ns: monotonic_ns(),
            programs,
            rx,
            stop_tx,
            reader,
            logger,
            module_poll,
            totals: ReaderTotals::default(),
            last_batch: Instant::now(),
            syscall_hooks,
        };
        Ok((live, StackResolver::new(stacks)))
    }

    /// The next batch, or the module poll's turn. Cancel-safe: nothing is
    /// lost when another branch of a `select!` wins. `None` once the reader
    /// is gone.
    pub async fn next(&mut self) -> Option<LiveInput> {
        tokio::select! {
            batch = self.rx.recv() => {
                let mut batch = batch?;
                let paired = batch.totals.counters.get(detector_common::counter::BIOS_PAIRED);
                self.syscall_hooks
                    .after_batch(&mut self.probes, &mut batch.events, paired);
                batch.totals.syscall_hooks = self.syscall_hooks.toggles;
                self.totals = batch.totals;
                self.last_batch = Instant::now();
                Some(LiveInput::Batch(Box::new(batch)))
            }
            _ = self.module_poll.tick() => {
                let attached = self.probes.attach_module("md_mod").then_some("md_mod");
                if attached.is_some()
                    && let Ok(mut watched) = self.programs.lock()
                {
                    // Their recursion misses count as losses too.
                    *watched = self.probes.attached_programs();
                }
                Some(LiveInput::Modules { attached })
            }
        }
    }

    /// The reader's totals as of the last batch.
    pub fn totals(&self) -> ReaderTotals {
        self.totals
    }

    /// How long since the reader last handed over a batch (it does every
    /// drain interval, empty or not).
    pub fn since_last_batch(&self) -> Duration {
        self.last_batch.elapsed()
    }

    /// Stops reading; hands every batch still queued to `each` (the ring
    /// buffer is drained a last time), then detaches. A reader that hands
    /// nothing over for [`READER_STALL`] is left behind.
    pub async fn stop(mut self, mut each: impl FnMut(Batch) -> io::Result<()>) -> Stopped {
        let _ = self.stop_tx.send(true);
        let mut result = Ok(());
        let mut reader_stuck = None;
        loop {
            match tokio::time::timeout(READER_STALL, self.rx.recv()).await {
                Ok(Some(batch)) => {
                    if let Err(e) = each(batch)
                        && result.is_ok()
                    {
                        result = Err(e);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    reader_stuck = Some(format!(
                        "the event reader did not stop within {}s (its CPU may be stuck); \
                         events after its last drain are missing",
                        READER_STALL.as_secs()
                    ));
                    break;
                }
            }
        }
        let totals = if reader_stuck.is_none() {
            tokio::time::timeout(READER_STALL, &mut self.reader)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(self.totals)
        } else {
            self.totals
        };
        if let Some(logger) = self.logger.take() {
            logger.abort();
        }
        let totals = ReaderTotals {
            syscall_hooks: self.syscall_hooks.toggles,
            ..totals
        };
        Stopped {
            totals,
            result,
            reader_stuck,
        }
    }
}

/// Notices about the session's own health, each said once: a reader that
/// stopped handing over batches, CPUs that went silent while others report
/// (a CPU held by a kernel bug runs no traced code).
#[derive(Default)]
pub struct Health {
    warned_stall: bool,
    warned_silent: Vec<u32>,
}

impl Health {
    /// What is new to say now.
    pub fn check(&mut self, live: &Live, heartbeat: &Heartbeat) -> Vec<String> {
        let mut notes = Vec::new();
        let stalled = live.since_last_batch();
        if stalled < READER_STALL {
            self.warned_stall = false;
        } else if !std::mem::replace(&mut self.warned_stall, true) {
            notes.push(format!(
                "no events read for {}s: the reader is not running (its CPU may be stuck)",
                stalled.as_secs()
            ));
        }
        let silent = heartbeat.silent();
        for cpu in &silent {
            if !self.warned_silent.contains(&cpu.cpu) {
                notes.push(cpu.describe());
            }
        }
        self.warned_silent = silent.iter().map(|c| c.cpu).collect();
        notes
    }
}

/// Allows this thread (and the threads it starts) on every CPU: the reader
/// must be free to run anywhere, so that one CPU stuck in a kernel bug
/// cannot hold it. Call before starting the runtime.
pub fn unpin_from_cpus() {
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
    lines.push(format!(
        "events: a ring buffer per CPU, {} x {} KiB (--buffer-size is shared out)",
        probes.ring_cpus,
        probes.ring_bytes >> 10
    ));
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
    if let Policy::OnDemand { idle } = probes.options().syscall_hooks
        && !probes.options().full
        && probes.is_attached("sys_exit")
    {
        lines.push(format!(
            "sys_exit/sys_enter stay attached only while a task submits I/O or uses an \
             on-stack completion, and for {}s after (--syscall-hooks)",
            idle.as_secs_f64()
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
