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
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::loss::{Counts, LossCounters};
use super::taskmaps::TaskMaps;
use crate::clock::monotonic_ns;
use crate::event::decode::decode;
use crate::event::{Event, LossCause};

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
    /// the commit lag of in-flight records (microseconds).
    pub now: u64,
}

/// Totals over the session.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderTotals {
    pub events: u64,
    pub dropped: u64,
    pub decode_errors: u64,
    pub read_errors: u64,
    pub stack_errors: u64,
    /// Stacks not taken because a CPU's stack budget was spent.
    pub stacks_over_budget: u64,
    /// Every counter by index (`detector_common::counter`), loss or not.
    pub counters: Counts,
}

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    loss: LossCounters,
    task_maps: Option<TaskMaps>,
    drain_every: Duration,
    last_drain: u64,
    pub totals: ReaderTotals,
}

impl Reader {
    pub fn new(
        ring: RingBuf<MapData>,
        loss: LossCounters,
        task_maps: Option<TaskMaps>,
        drain_every: Duration,
    ) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
        // for as long as it lives; the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            ring,
            loss,
            task_maps,
            drain_every,
            last_drain: monotonic_ns(),
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
                guard = self.ring.readable_mut() => {
                    if let Ok(mut guard) = guard {
                        guard.clear_ready();
                    }
                    false
                }
                _ = tick.tick() => false,
            };
            let batch = self.drain();
            if tx.send(batch).await.is_err() || stopping || *stop.borrow() {
                break;
            }
        }
        self.totals
    }

    /// Empties the ring buffer now.
    pub fn drain(&mut self) -> Batch {
        let mut batch = Batch::default();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(event) => batch.events.push(event),
                Err(_) => batch.decode_errors += 1,
            }
        }
        let now = monotonic_ns();
        self.account_losses(&mut batch.events, now);
        self.totals.events += batch.events.len() as u64;
        self.totals.decode_errors += batch.decode_errors;
        batch.now = now;
        self.last_drain = now;
        batch
    }

    fn account_losses(&mut self, events: &mut Vec<Event>, now: u64) {
        self.loss.poll(self.last_drain, now, events);
        let c = self.loss.totals;
        self.totals.counters = c;
        self.totals.dropped = c.get(counter::DROPPED);
        self.totals.read_errors = c.get(counter::READ_ERRORS);
        self.totals.stack_errors = c.get(counter::STACK_ERRORS);
        self.totals.stacks_over_budget = c.get(counter::STACKS_OVER_BUDGET);
    }
}

/// `count` events were lost to a full ring buffer on `cpu` at some moment
/// in `[since, until]` (other causes: [`super::loss::lost_marker`]).
pub fn lost_marker(cpu: u32, count: u64, since: u64, until: u64) -> Event {
    super::loss::lost_marker(cpu, count, since, until, LossCause::RingBufferFull)
}
