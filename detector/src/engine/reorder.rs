//! Merging events by timestamp within a window.
//!
//! Each CPU's events are in order, but the reader sees CPUs interleaved up
//! to a drain interval apart. Events wait here until the newest timestamp
//! seen (or the clock) is a window ahead of them; then they are released
//! in `(ts, class, arrival)` order. Loss markers sort before other events of
//! the same instant, so that what they cover is known before it is judged.
//!
//! An event is large (the biggest kind sets its size) and moving one costs
//! a copy of all of it, so each is written once into a slot of a slab and
//! stays there until it has been processed; only small keys are ordered.
//! The input is nearly sorted, so a deque of keys with binary-search
//! insertion costs O(1) moves per event in practice.

use std::collections::VecDeque;

use crate::event::{Event, EventKind};

/// Where a held event lives in the slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(usize);

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
    /// The held events, and in the slots listed in `free` processed ones,
    /// dropped when the slot is reused (writing an empty value instead
    /// would cost as much as moving an event).
    slab: Vec<Event>,
    free: Vec<usize>,
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
            slab: Vec::new(),
            free: Vec::new(),
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
        self.seq += 1;
        let ts = ev.ts;
        let slot = self.store(ev);
        let key = Key { ts, rank, slot };
        let order = key.order();
        if self.held.back().is_none_or(|b| b.order() <= order) {
            self.held.push_back(key);
        } else {
            let at = self.held.partition_point(|h| h.order() <= order);
            self.held.insert(at, key);
        }
    }

    #[inline]
    fn store(&mut self, ev: Event) -> Slot {
        match self.free.pop() {
            Some(i) => {
                self.slab[i] = ev;
                Slot(i)
            }
            None => {
                let i = self.slab.len();
                self.slab.push(ev);
                Slot(i)
            }
        }
    }

    /// The held event in `slot` (released by [`Reorder::pop_due`] or
    /// [`Reorder::pop_any`], not yet [`Reorder::discard`]ed).
    pub fn event(&self, slot: Slot) -> &Event {
        &self.slab[slot.0]
    }

    /// The event in `slot` has been processed: its slot may be reused.
    pub fn discard(&mut self, slot: Slot) {
        self.free.push(slot.0);
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
        self.released_to = Some(self.released_to.map_or(key.ts, |r| r.max(key.ts)));
        Some(key.slot)
    }

    /// Marks `to` as released even if no event was there, so that later
    /// events older than it count as late.
    pub fn release_to(&mut self, to: u64) {
        self.released_to = Some(self.released_to.map_or(to, |r| r.max(to)));
    }
}
