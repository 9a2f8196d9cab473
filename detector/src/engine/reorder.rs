//! Merging events by timestamp within a window.
//!
//! Each CPU's events are in order, but the reader sees CPUs interleaved up
//! to a drain interval apart. Events wait here until the newest timestamp
//! seen (or the clock) is a window ahead of them; then they are released
//! in `(ts, class, arrival)` order. Loss markers sort before other events of
//! the same instant, so that what they cover is known before it is judged.
//!
//! The input is nearly sorted, so a deque with binary-search insertion
//! costs O(1) moves per event in practice and keeps events inline.

use std::collections::VecDeque;

use crate::event::{Event, EventKind};

struct Held {
    ts: u64,
    class: u8,
    seq: u64,
    ev: Event,
}

impl Held {
    fn key(&self) -> (u64, u8, u64) {
        (self.ts, self.class, self.seq)
    }
}

/// What [`Reorder::insert`] did with an event.
pub enum Admit {
    Held,
    /// The release point had already passed the event's time: it is handed
    /// back to be processed at once, out of order.
    Late(Event),
}

pub struct Reorder {
    window: u64,
    max_held: usize,
    held: VecDeque<Held>,
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

    pub fn insert(&mut self, ev: Event) -> Admit {
        if self.released_to.is_some_and(|r| ev.ts < r) {
            return Admit::Late(ev);
        }
        self.newest = self.newest.max(ev.ts);
        let class = if matches!(ev.kind, EventKind::Lost { .. }) {
            0
        } else {
            1
        };
        let held = Held {
            ts: ev.ts,
            class,
            seq: self.seq,
            ev,
        };
        self.seq += 1;
        let key = held.key();
        let at = if self.held.back().is_none_or(|b| b.key() <= key) {
            self.held.len()
        } else {
            self.held.partition_point(|h| h.key() <= key)
        };
        self.held.insert(at, held);
        Admit::Held
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

    /// The next event due at `watermark` (or forced out by the cap).
    pub fn pop_due(&mut self, watermark: u64) -> Option<Event> {
        let front = self.held.front()?;
        let due = front.ts <= watermark;
        let forced = !due && self.held.len() > self.max_held;
        if !due && !forced {
            return None;
        }
        if forced {
            self.forced += 1;
        }
        let held = self.held.pop_front()?;
        self.released_to = Some(self.released_to.map_or(held.ts, |r| r.max(held.ts)));
        Some(held.ev)
    }

    /// Everything, at the end of the stream.
    pub fn pop_any(&mut self) -> Option<Event> {
        let held = self.held.pop_front()?;
        self.released_to = Some(self.released_to.map_or(held.ts, |r| r.max(held.ts)));
        Some(held.ev)
    }

    /// Marks `to` as released even if no event was there, so that later
    /// events older than it count as late.
    pub fn release_to(&mut self, to: u64) {
        self.released_to = Some(self.released_to.map_or(to, |r| r.max(to)));
    }
}
