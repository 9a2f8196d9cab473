//! Loss is data: what the engine no longer knows.
//!
//! A `Lost { count, until }` marker says events vanished at some moment in
//! `[ts, until]`. Every object alive during that interval, or with an event
//! in it, may be missing the very event that would clear it, so its verdict
//! becomes "indeterminate" instead of a finding. Rather than visit every
//! object at each loss, each object remembers the loss epoch of its birth
//! ([`Seen`]): an object is tainted when a loss was processed after it was
//! born, or when it was born inside a loss interval. Events are processed in
//! time order, so "processed after" means "happened after".
//!
//! Evicting a live object for lack of room is the engine's own loss of
//! knowledge and is handled the same way.

/// When an object (or a piece of evidence) entered the engine's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    epoch: u32,
    in_loss: bool,
}

#[derive(Debug, Default)]
pub struct Loss {
    /// Bumped by every loss marker, late event, event forced out of a full
    /// reorder buffer (at most once a window) and eviction of live state.
    epoch: u32,
    /// End of the latest loss interval.
    until: Option<u64>,
    /// `Lost` records and their event counts.
    pub records: u64,
    pub events: u64,
}

impl Loss {
    /// Stamps an object born at `ts`.
    pub fn seen(&self, ts: u64) -> Seen {
        Seen {
            epoch: self.epoch,
            in_loss: self.until.is_some_and(|until| ts <= until),
        }
    }

    /// Whether events about an object born at `seen` may have been lost.
    pub fn tainted(&self, seen: Seen) -> bool {
        seen.in_loss || seen.epoch != self.epoch
    }

    /// Events were lost somewhere in `[from, until]`.
    pub fn lost(&mut self, count: u64, from: u64, until: u64) {
        self.records += 1;
        self.events += count;
        self.gap(from, until);
    }

    /// Whether `ts` lies inside the latest loss interval: an object born
    /// then is tainted already.
    pub fn covers(&self, ts: u64) -> bool {
        self.until.is_some_and(|until| ts <= until)
    }

    /// The order of events in `[from, until]` is unknown (an event arrived
    /// after the reorder window had passed it, or was forced out of the
    /// reorder buffer before its window passed): as good as a loss.
    pub fn gap(&mut self, from: u64, until: u64) {
        self.epoch = self.epoch.wrapping_add(1);
        let end = until.max(from);
        self.until = Some(self.until.map_or(end, |u| u.max(end)));
    }

    /// The engine dropped live state (eviction): whatever depended on it is
    /// no longer known.
    pub fn forgot(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_by_epoch_and_by_interval() {
        let mut loss = Loss::default();
        let before = loss.seen(10);
        assert!(!loss.tainted(before));
        loss.lost(5, 20, 30);
        assert!(loss.tainted(before), "alive during the loss");
        let inside = loss.seen(25);
        assert!(loss.tainted(inside), "born inside the loss interval");
        let after = loss.seen(31);
        assert!(!loss.tainted(after), "born after it");
        loss.forgot();
        assert!(loss.tainted(after));
    }
}
