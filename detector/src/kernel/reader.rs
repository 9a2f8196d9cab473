//! Draining the ring buffer into decoded events.
//!
//! The programs wake the reader only past a fill threshold, so the reader
//! also drains on a short timer; after every drain it reads the per-CPU drop
//! counters and turns any increase into a [`EventKind::Lost`] marker that
//! covers the interval since the previous drain.

use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use detector_common::counter;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use crate::clock::monotonic_ns;
use crate::event::decode::decode;
use crate::event::{Addr, Event, EventKind, Hook};

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
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ReaderTotals {
    pub events: u64,
    pub dropped: u64,
    pub decode_errors: u64,
    pub read_errors: u64,
    pub stack_errors: u64,
    /// Stacks not taken because a CPU's stack budget was spent.
    pub stacks_over_budget: u64,
}

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    drain_every: Duration,
    dropped_per_cpu: Vec<u64>,
    last_drain: u64,
    pub totals: ReaderTotals,
}

impl Reader {
    pub fn new(
        ring: RingBuf<MapData>,
        counters: PerCpuArray<MapData, u64>,
        drain_every: Duration,
    ) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
        // for as long as it lives; the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            ring,
            counters,
            drain_every,
            dropped_per_cpu: Vec::new(),
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
        loop {
            let stopping = tokio::select! {
                _ = stop.changed() => true,
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
        let Ok(dropped) = self.counters.get(&counter::DROPPED, 0) else {
            return;
        };
        if self.dropped_per_cpu.len() < dropped.len() {
            self.dropped_per_cpu.resize(dropped.len(), 0);
        }
        for (cpu, (&total, seen)) in dropped
            .iter()
            .zip(self.dropped_per_cpu.iter_mut())
            .enumerate()
        {
            if total > *seen {
                let count = total - *seen;
                *seen = total;
                self.totals.dropped += count;
                events.push(lost_marker(cpu as u32, count, self.last_drain, now));
            }
        }
        let sum = |index| {
            self.counters
                .get(&index, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        self.totals.read_errors = sum(counter::READ_ERRORS);
        self.totals.stack_errors = sum(counter::STACK_ERRORS);
        self.totals.stacks_over_budget = sum(counter::STACKS_OVER_BUDGET);
    }
}

/// `count` events were lost on `cpu` at some moment in `[since, until]`.
pub fn lost_marker(cpu: u32, count: u64, since: u64, until: u64) -> Event {
    Event {
        ts: since,
        cpu,
        pid: 0,
        tid: 0,
        comm: Default::default(),
        hook: Hook::Detector,
        stack_base: Addr(0),
        sp: Addr(0),
        stack: None,
        kind: EventKind::Lost { count, until },
    }
}
