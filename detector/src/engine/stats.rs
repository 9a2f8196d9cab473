//! Counters the engine exports: what it holds, what it dropped, what it
//! could not decide and what it found.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::Rule;
use super::finding::FindingKind;

/// Objects tracked right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Live {
    pub bios_in_flight: u64,
    /// Bios tracked in total (in flight and completed ones kept to
    /// recognise a second completion).
    pub bios: u64,
    pub disks: u64,
    pub tasks: u64,
    /// Tasks asleep in iowait with all their I/O completed, waiting for
    /// their lost-wakeup deadline (or for their disks to go idle).
    pub sleepers_judged: u64,
    /// On-stack completions with a `complete()` not yet waited for.
    pub onstack_completions: u64,
    pub md_arrays: u64,
    /// `bio_endio` calls that have not returned.
    pub open_handlers: u64,
    /// Events held in the reorder window.
    pub buffered_events: u64,
}

/// Objects dropped for lack of room.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evictions {
    pub bios_in_flight: u64,
    pub bios_completed: u64,
    pub tasks: u64,
    pub completions: u64,
    pub md_arrays: u64,
    pub disks: u64,
    /// Disk removals (`del_gendisk`) remembered.
    pub removals: u64,
    pub handlers: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Events processed (loss markers included).
    pub events: u64,
    /// Events that arrived after the reorder window had passed them; the
    /// span they cover is treated like a loss.
    pub late_events: u64,
    /// Events released before their window passed (reorder buffer full);
    /// like a late event, each is treated as a loss.
    pub forced_releases: u64,
    /// Loss markers, and the events they say were lost.
    pub loss_records: u64,
    pub lost_events: u64,
    pub live: Live,
    pub evictions: Evictions,
    /// Verdicts the rule could not reach because evidence may be missing
    /// (loss, eviction, a device whose completions are not observable, an
    /// owner that may have waited where no hook sees it).
    pub indeterminate: BTreeMap<Rule, u64>,
    pub findings: BTreeMap<FindingKind, u64>,
}

impl EngineStats {
    pub fn indeterminate(&self, rule: Rule) -> u64 {
        self.indeterminate.get(&rule).copied().unwrap_or(0)
    }

    pub fn found(&self, kind: FindingKind) -> u64 {
        self.findings.get(&kind).copied().unwrap_or(0)
    }
}
