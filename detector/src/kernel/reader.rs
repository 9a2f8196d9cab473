//! Draining the ring buffer into decoded events.
//!
//! The programs wake the reader only past a fill threshold, so the reader
//! also drains on a short timer; after every drain it reads the loss
//! counters ([`super::loss`]) and turns any increase into an
//! [`EventKind::Lost`] marker that covers the interval since the previous
//! drain.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use detector_common::counter;
use tokio::sync::{mpsc, watch};

use super::held::{HeldBios, PairedTimes, PairedTimesMap};
use super::loss::{Counts, LossCounters};
use super::names::TaskNames;
use super::ring_progress::Stalls;
use super::rings::RingSet;
use super::taskmaps::TaskMaps;
use crate::clock::monotonic_ns;
use crate::event::{Event, LossCause};
use crate::kernel::syscall_hooks::HookToggles;

/// How often entries of tasks that no longer exist are dropped from the
/// programs' per-task maps.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// What one drain produced.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Records that did not decode (counted, never fatal).
    pub decode_errors: u64,
    /// CLOCK_MONOTONIC time of the drain: every event the kernel finished
    /// writing before this moment is in this batch or an earlier one, up to
    /// the commit lag of in-flight records (microseconds). 0 when the batch
    /// is full and the ring buffer still holds more: no time is known to be
    /// complete yet.
    pub now: u64,
    /// The session's totals as of this drain (for live metrics).
    pub totals: ReaderTotals,
}

/// Events per batch at most. A reader that fell behind drains the ring
/// buffer in several batches rather than one huge one, so that the
/// pipeline's backlog (batches in flight times this) stays bounded and a
/// signal waits for one batch at most.
pub const MAX_BATCH: usize = 1 << 16;

/// Totals over the session.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ReaderTotals {
    pub events: u64,
    pub dropped: u64,
    pub decode_errors: u64,
    pub read_errors: u64,
    pub stack_errors: u64,
    /// Stacks not taken because a CPU's stack budget was spent.
    pub stacks_over_budget: u64,
    /// Records that left their task's name out, filled in by the reader.
    pub names_filled: u64,
    /// Task names a record left out and the reader did not have (their
    /// first record was lost): read from `/proc`, or, for a thread gone
    /// by then, given as `?`.
    pub names_from_proc: u64,
    pub names_unknown: u64,
    /// Every counter by index (`detector_common::counter`), loss or not.
    pub counters: Counts,
    /// The syscall hooks' attachments (filled in by the live source).
    pub syscall_hooks: HookToggles,
    /// In-flight times of the bios paired in the kernel (never shipped):
    /// a count and a sum of ns per bucket of `IO_BUCKET_NS`.
    #[serde(skip)]
    pub paired_times: PairedTimes,
    /// Held submissions shipped by the reader: older than the hold limit
    /// (swept), or named by a shipped completion (released).
    pub held_swept: u64,
    pub held_released: u64,
    /// CPUs' rings stuck behind a record still being written, which held
    /// back how far the session was judged (`ring_progress`).
    pub ring_stalls: Stalls,
}

pub struct Reader {
    rings: RingSet,
    paired_times: Option<PairedTimesMap>,
    loss: LossCounters,
    task_maps: Option<TaskMaps>,
    drain_every: Duration,
    last_drain: u64,
    names: TaskNames,
    pub totals: ReaderTotals,
}

impl Reader {
    pub fn new(
        rings: Vec<RingBuf<MapData>>,
        held: Option<HeldBios>,
        paired_times: Option<PairedTimesMap>,
        loss: LossCounters,
        task_maps: Option<TaskMaps>,
        drain_every: Duration,
    ) -> std::io::Result<Self> {
        Ok(Self {
            rings: RingSet::new(rings)?.with_held(held),
            paired_times,
            loss,
            task_maps,
            drain_every,
            last_drain: monotonic_ns(),
            names: TaskNames::default(),
            totals: ReaderTotals::default(),
        })
    }

    /// Reads until `stop` flips, sending one batch per drain. Returns when
    /// stopped (after a final drain) or when the receiver is gone.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Batch>,
        mut stop: watch::Receiver<bool>,
    ) -> ReaderTotals {
        let mut tick = tokio::time::interval(self.drain_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = stop.changed() => true,
                _ = prune.tick() => {
                    if let Some(maps) = &mut self.task_maps {
                        maps.prune();
                    }
                    false
                }
                _ = self.rings.woken() => false,
                _ = tick.tick() => false,
            };
            if !self.send_all(&tx).await {
                return self.totals;
            }
            if stopping || *stop.borrow() {
                // The batches above may have waited for room in the channel
                // while the programs kept writing: one more pass takes
                // everything written before the stop, and what is held.
                self.rings.flush_held();
                self.send_all(&tx).await;
                break;
            }
        }
        self.totals
    }

    /// Empties the ring buffer, a batch at a time; false when the receiver
    /// is gone.
    async fn send_all(&mut self, tx: &mpsc::Sender<Batch>) -> bool {
        loop {
            let batch = self.drain();
            let more = batch.now == 0;
            if tx.send(batch).await.is_err() {
                return false;
            }
            if !more {
                return true;
            }
        }
    }

    /// Takes up to [`MAX_BATCH`] events from the ring buffer now; the
    /// batch's `now` is 0 when more remain (losses are accounted, and the
    /// clock given, only once the ring buffer was emptied).
    pub fn drain(&mut self) -> Batch {
        let mut batch = Batch::default();
        let emptied = self.rings.drain_into(
            MAX_BATCH,
            &mut self.names,
            &mut batch.events,
            &mut batch.decode_errors,
        );
        if emptied {
            let now = monotonic_ns();
            let read_to = self.rings.read_to().min(now);
            self.account_losses(&mut batch.events, now, read_to);
            batch.now = now;
            self.last_drain = now;
        }
        self.totals.events += batch.events.len() as u64;
        self.totals.decode_errors += batch.decode_errors;
        self.totals.names_filled = self.names.filled;
        self.totals.names_from_proc = self.names.from_proc;
        self.totals.names_unknown = self.names.unknown;
        batch.totals = self.totals;
        batch
    }

    fn account_losses(&mut self, events: &mut Vec<Event>, now: u64, read_to: u64) {
        self.loss.poll(self.last_drain, now, read_to, events);
        let c = self.loss.totals;
        self.totals.counters = c;
        self.totals.dropped = c.get(counter::DROPPED);
        self.totals.read_errors = c.get(counter::READ_ERRORS);
        self.totals.stack_errors = c.get(counter::STACK_ERRORS);
        self.totals.stacks_over_budget = c.get(counter::STACKS_OVER_BUDGET);
        if let Some(times) = &self.paired_times {
            self.totals.paired_times = times.read();
        }
        (self.totals.held_swept, self.totals.held_released) = self.rings.held_shipped();
        self.totals.ring_stalls = self.rings.stalls;
    }
}

/// `count` events were lost to a full ring buffer on `cpu` at some moment
/// in `[since, until]` (other causes: [`super::loss::lost_marker`]).
pub fn lost_marker(cpu: u32, count: u64, since: u64, until: u64) -> Event {
    super::loss::lost_marker(cpu, count, since, until, LossCause::RingBufferFull)
}
