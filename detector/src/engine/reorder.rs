//! Merging events by timestamp within a window.
//!
//! Each CPU's events are in order, but the reader sees CPUs interleaved up
//! to a drain interval apart. Events wait here until the newest timestamp
//! seen (or the clock) is a window ahead of them; then they are released
//! in `(ts, class, arrival)` order. Loss markers sort before other events of
//! the same instant, so that what they cover is known before it is judged.
//!
//! An event is large (the biggest kind sets its size) and moving one costs
//! a copy of all of it, so each is written once, in arrival order, into a
//! ring of held events and stays there until it has been processed; only
//! small keys are ordered. The input is nearly sorted, so a deque of keys
//! with binary-search insertion costs O(1) moves per event in practice.
//!
//! Events wait a window (tens of milliseconds: megabytes of them on a busy
//! host) before they are read again, so an event is out of the CPU's
//! caches by then, and the reader's sleep between drains lets the traced
//! work evict the rest. Held in arrival order, which is nearly the order
//! of release, they are written and read as two sequential streams that
//! the CPU fetches ahead by itself; the events about to be released are
//! also fetched a few ahead explicitly. Before, each event took a slot
//! of a slab from a free list, anywhere in megabytes, and the cache and
//! TLB misses of writing and reading it were a third of the live path's
//! time under fio.

use std::collections::VecDeque;

use crate::event::{Event, EventKind};

/// A held event: its arrival number, which places it in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u64);

/// The release order of a held event and where it is.
#[derive(Clone, Copy)]
struct Key {
    ts: u64,
    /// Class in the top bit (loss markers 0, first), arrival below it.
    rank: u64,
    slot: Slot,
}

impl Key {
    fn order(&self) -> (u64, u64) {
        (self.ts, self.rank)
    }
}

const CLASS_EVENT: u64 = 1 << 63;

pub struct Reorder {
    window: u64,
    max_held: usize,
    /// Keys of the held events in release order.
    held: VecDeque<Key>,
    /// Events in arrival order from arrival number `first`, held or
    /// processed (`done`); processed ones leave from the front once every
    /// earlier arrival has been processed too.
    arrived: VecDeque<Event>,
    done: VecDeque<bool>,
    first: u64,
    /// The next arrival number.
    seq: u64,
    /// Newest event time pushed, or clock time advanced to.
    newest: u64,
    /// Everything at or before this has been released.
    released_to: Option<u64>,
    /// Events released before their window passed because the buffer was full.
    pub forced: u64,
}

impl Reorder {
    pub fn new(window: u64, max_held: usize) -> Self {
        Self {
            window,
            max_held: max_held.max(1),
            held: VecDeque::new(),
            arrived: VecDeque::new(),
            done: VecDeque::new(),
            first: 0,
            seq: 0,
            newest: 0,
            released_to: None,
            forced: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The time up to which events have been released.
    pub fn released_to(&self) -> Option<u64> {
        self.released_to
    }

    /// The release point has already passed `ts`: an event of that time
    /// cannot be held, it must be processed at once, out of order.
    pub fn is_late(&self, ts: u64) -> bool {
        self.released_to.is_some_and(|r| ts < r)
    }

    /// Holds `ev`, which is not late. Inlined so that the event is moved
    /// once, from the caller's frame into its slot.
    #[inline]
    pub fn insert(&mut self, ev: Event) {
        debug_assert!(!self.is_late(ev.ts));
        self.newest = self.newest.max(ev.ts);
        let class = if matches!(ev.kind, EventKind::Lost { .. }) {
            0
        } else {
            CLASS_EVENT
        };
        // Arrival numbers stay below the class bit for 2^63 events.
        let rank = class | (self.seq & !CLASS_EVENT);
        let slot = Slot(self.seq);
        self.seq += 1;
        let ts = ev.ts;
        self.arrived.push_back(ev);
        self.done.push_back(false);
        let key = Key { ts, rank, slot };
        let order = key.order();
        if self.held.back().is_none_or(|b| b.order() <= order) {
            self.held.push_back(key);
        } else {
            let at = self.held.partition_point(|h| h.order() <= order);
            self.held.insert(at, key);
        }
        if self.arrived.len() > 2 * self.held.len() + COMPACT_SLACK {
            self.compact();
        }
    }

    /// The held event in `slot` (released by [`Reorder::pop_due`] or
    /// [`Reorder::pop_any`], not yet [`Reorder::discard`]ed).
    pub fn event(&self, slot: Slot) -> &Event {
        &self.arrived[self.index(slot)]
    }

    /// The event in `slot` has been processed: it leaves the ring with the
    /// processed events that arrived just before and after it.
    pub fn discard(&mut self, slot: Slot) {
        let i = self.index(slot);
        self.done[i] = true;
        let gone = self.done.iter().take_while(|&&done| done).count();
        if gone > 0 {
            self.done.drain(..gone);
            self.arrived.drain(..gone);
            self.first += gone as u64;
        }
    }

    fn index(&self, slot: Slot) -> usize {
        (slot.0 - self.first) as usize
    }

    /// Keeps only the held events, renumbered in arrival order. Processed
    /// events leave only from the front, so one held event that arrived
    /// early and is released late keeps every later arrival, processed or
    /// not: with a steady stream released ahead of it (forced out by the
    /// cap, or a recording's crafted times) that would grow without
    /// bound. Amortised: at least `COMPACT_SLACK` arrivals between two.
    fn compact(&mut self) {
        let first = self.seq;
        let mut renumbered = vec![0u64; self.arrived.len()];
        let mut kept = VecDeque::with_capacity(self.held.len());
        let arrived = std::mem::take(&mut self.arrived);
        for ((i, ev), done) in arrived.into_iter().enumerate().zip(&self.done) {
            if !done {
                renumbered[i] = first + kept.len() as u64;
                kept.push_back(ev);
            }
        }
        for key in &mut self.held {
            key.slot = Slot(renumbered[(key.slot.0 - self.first) as usize]);
        }
        self.seq = first + kept.len() as u64;
        self.first = first;
        self.done = VecDeque::from(vec![false; kept.len()]);
        self.arrived = kept;
    }

    /// Events kept in arrival order (held or processed): what the buffer
    /// holds in memory.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.arrived.len()
    }

    /// The clock says no event older than `now - window` can still arrive.
    pub fn advance(&mut self, now: u64) {
        self.newest = self.newest.max(now);
    }

    /// The newest event time or clock time seen.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// The release point: events at or before it may go.
    pub fn watermark(&self) -> u64 {
        self.newest.saturating_sub(self.window)
    }

    /// The next event due at `watermark` (or forced out by the cap): its
    /// slot, to be read with [`Reorder::event`] and then discarded.
    pub fn pop_due(&mut self, watermark: u64) -> Option<Slot> {
        let front = self.held.front()?;
        let due = front.ts <= watermark;
        let forced = !due && self.held.len() > self.max_held;
        if !due && !forced {
            return None;
        }
        if forced {
            self.forced += 1;
        }
        self.pop_any()
    }

    /// Everything, at the end of the stream.
    pub fn pop_any(&mut self) -> Option<Slot> {
        let key = self.held.pop_front()?;
        if let Some(ahead) = self.held.get(PREFETCH_AHEAD) {
            prefetch(self.event(ahead.slot));
        }
        self.released_to = Some(self.released_to.map_or(key.ts, |r| r.max(key.ts)));
        Some(key.slot)
    }

    /// Marks `to` as released even if no event was there, so that later
    /// events older than it count as late.
    pub fn release_to(&mut self, to: u64) {
        self.released_to = Some(self.released_to.map_or(to, |r| r.max(to)));
    }
}

/// Arrivals past twice the held events before the ring is compacted.
const COMPACT_SLACK: usize = 4096;

/// How many events ahead of the one released its successor's slot is
/// fetched: enough for a memory access to finish while the events in
/// between are processed (a few hundred nanoseconds each).
const PREFETCH_AHEAD: usize = 4;

/// Asks the CPU to bring `ev`'s cache lines in; a hint, with no effect on
/// what the program computes.
#[inline(always)]
fn prefetch(ev: &Event) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = (ev as *const Event).cast::<i8>();
        for line in (0..size_of::<Event>()).step_by(64) {
            // SAFETY: SSE is part of x86_64's baseline, and a prefetch
            // reads nothing the program sees and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ev;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::event;

    fn exit_at(ts: u64) -> Event {
        event(ts, EventKind::TaskExit)
    }

    /// Releases everything due at `watermark`, returning the times.
    fn release(r: &mut Reorder, watermark: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(slot) = r.pop_due(watermark) {
            out.push(r.event(slot).ts);
            r.discard(slot);
        }
        out
    }

    #[test]
    fn events_leave_in_time_order_and_the_ring_empties() {
        let mut r = Reorder::new(100, 1000);
        for ts in [10, 30, 20, 50, 40] {
            r.insert(exit_at(ts));
        }
        assert_eq!(release(&mut r, 35), [10, 20, 30]);
        // 30 arrived before 20: both are gone, 50 and 40 are held.
        assert_eq!(r.arrived.len(), 2);
        assert_eq!(release(&mut r, 100), [40, 50]);
        assert!(r.arrived.is_empty() && r.done.is_empty());
    }

    #[test]
    fn an_event_held_behind_a_stream_released_ahead_of_it_keeps_memory_bounded() {
        // One event far ahead in time, then a steady stream the cap
        // forces out ahead of it, in time order, one by one.
        let mut r = Reorder::new(1_000_000, 8);
        r.insert(exit_at(900_000));
        let mut released = Vec::new();
        for ts in 0..50_000u64 {
            r.insert(exit_at(ts));
            released.extend(release(&mut r, 0));
        }
        assert!(r.kept() <= 2 * r.len() + COMPACT_SLACK, "{} kept", r.kept());
        assert!(r.forced > 0);
        assert!(released.windows(2).all(|w| w[0] <= w[1]));
        released.extend(release(&mut r, u64::MAX));
        assert_eq!(released.len(), 50_001);
        assert_eq!(released.last(), Some(&900_000));
        assert_eq!(r.kept(), 0);
    }

    #[test]
    fn an_early_arrival_released_late_holds_those_behind_it_until_it_goes() {
        let mut r = Reorder::new(100, 1000);
        for ts in [90, 10, 20] {
            r.insert(exit_at(ts));
        }
        assert_eq!(release(&mut r, 50), [10, 20]);
        // Processed, but behind the held 90 in arrival order.
        assert_eq!(r.arrived.len(), 3);
        r.insert(exit_at(95));
        assert_eq!(r.event(Slot(3)).ts, 95);
        assert_eq!(release(&mut r, 100), [90, 95]);
        assert!(r.arrived.is_empty());
        assert_eq!(r.first, 4);
    }
}
