//! `--pid` and `--dev`: which events a session shows and records.
//!
//! A race has two sides, and the other side is rarely the same process
//! (completions run in interrupts and kworkers), so the filter keeps what is
//! *related* to the selected processes or devices, not only their own
//! events: the completions of bios they submitted, wakeups aimed at their
//! threads, operations on completions they used. The engine itself always
//! sees every event; filters only shape output and recordings.

use std::collections::{BTreeSet, HashSet};

use crate::engine::Finding;
use crate::event::{Addr, Dev, Event, EventKind};

/// Related objects remembered per set before it is reset, to bound memory
/// on long sessions (an object forgotten this way may lose a later event).
const MAX_REMEMBERED: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct EventFilter {
    pids: BTreeSet<u32>,
    devs: BTreeSet<Dev>,
    /// Never shown, whatever the selection: their own events, and findings
    /// they take part in (pids) or whose object is on them (devices).
    excluded_pids: BTreeSet<u32>,
    excluded_devs: BTreeSet<Dev>,
    bios: HashSet<Addr>,
    tids: HashSet<u32>,
    objects: HashSet<Addr>,
}

fn remember<T: std::hash::Hash + Eq>(set: &mut HashSet<T>, item: T) {
    if set.len() >= MAX_REMEMBERED {
        set.clear();
    }
    set.insert(item);
}

impl EventFilter {
    pub fn new(pids: impl IntoIterator<Item = u32>, devs: impl IntoIterator<Item = Dev>) -> Self {
        Self {
            pids: pids.into_iter().collect(),
            devs: devs.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The same filter, also leaving out these processes and devices.
    pub fn excluding(
        mut self,
        pids: impl IntoIterator<Item = u32>,
        devs: impl IntoIterator<Item = Dev>,
    ) -> Self {
        self.excluded_pids.extend(pids);
        self.excluded_devs.extend(devs);
        self
    }

    /// Whether everything passes.
    pub fn is_empty(&self) -> bool {
        self.selects_all() && self.excluded_pids.is_empty() && self.excluded_devs.is_empty()
    }

    fn selects_all(&self) -> bool {
        self.pids.is_empty() && self.devs.is_empty()
    }

    /// The filters as command-line words, for record headers.
    pub fn describe(&self) -> Vec<String> {
        let pids = self.pids.iter().map(|p| format!("--pid {p}"));
        let devs = self.devs.iter().map(|d| format!("--dev {d}"));
        let no_pids = self
            .excluded_pids
            .iter()
            .map(|p| format!("--exclude-pid {p}"));
        let no_devs = self
            .excluded_devs
            .iter()
            .map(|d| format!("--exclude-dev {d}"));
        pids.chain(devs).chain(no_pids).chain(no_devs).collect()
    }

    /// Whether `ev` is one of an excluded process or about an excluded
    /// device.
    fn excludes(&self, ev: &Event) -> bool {
        if self.excluded_pids.contains(&ev.pid) {
            return true;
        }
        if self.excluded_devs.is_empty() {
            return false;
        }
        let on = |dev: &Dev| self.excluded_devs.contains(dev);
        match &ev.kind {
            EventKind::BioQueue { dev, disk, .. }
            | EventKind::BioEndio { dev, disk, .. }
            | EventKind::BioComplete { dev, disk, .. } => on(dev) || on(disk),
            EventKind::RqComplete { disk, .. } => on(disk),
            EventKind::DelGendisk { dev, .. } | EventKind::DelGendiskExit { dev, .. } => on(dev),
            _ => false,
        }
    }

    fn dev_ok(&self, dev: Dev, disk: Dev) -> bool {
        self.devs.is_empty() || self.devs.contains(&dev) || self.devs.contains(&disk)
    }

    fn task_selected(&self, ev: &Event) -> bool {
        if self.pids.is_empty() {
            self.tids.contains(&ev.tid)
        } else {
            self.pids.contains(&ev.pid) || self.tids.contains(&ev.tid)
        }
    }

    /// Whether to show `finding`: one of its sides is a selected process,
    /// or its object is on a selected device.
    pub fn selects_finding(&self, finding: &Finding) -> bool {
        let devs = [finding.object.dev, finding.object.disk];
        let excluded = finding
            .sides
            .iter()
            .any(|s| self.excluded_pids.contains(&s.pid))
            || devs
                .iter()
                .flatten()
                .any(|d| self.excluded_devs.contains(d));
        if excluded {
            return false;
        }
        if self.selects_all() {
            return true;
        }
        let by_pid = finding.sides.iter().any(|s| self.pids.contains(&s.pid));
        let by_dev = devs.iter().flatten().any(|d| self.devs.contains(d));
        by_pid || by_dev
    }

    /// Whether to show and record `ev`.
    pub fn keep(&mut self, ev: &Event) -> bool {
        if self.is_empty()
            || matches!(
                ev.kind,
                EventKind::Lost { .. } | EventKind::SyscallHooks { .. }
            )
        {
            return true;
        }
        if self.excludes(ev) {
            return false;
        }
        if self.selects_all() {
            return true;
        }
        match &ev.kind {
            EventKind::BioQueue { bio, dev, disk, .. } => {
                let by_pid = self.pids.is_empty() || self.pids.contains(&ev.pid);
                let keep = by_pid && self.dev_ok(*dev, *disk);
                if keep {
                    remember(&mut self.bios, *bio);
                    remember(&mut self.tids, ev.tid);
                }
                keep
            }
            EventKind::BioEndio { bio, dev, disk, .. }
            | EventKind::BioComplete { bio, dev, disk, .. } => {
                self.bios.contains(bio) || (self.pids.is_empty() && self.dev_ok(*dev, *disk))
            }
            EventKind::BioEndioExit { bio: Some(bio) } | EventKind::BioInit { bio } => {
                self.bios.contains(bio)
            }
            EventKind::BioEndioExit { bio: None } => self.task_selected(ev),
            EventKind::RqComplete { disk, bios, .. } => {
                bios.iter().any(|b| self.bios.contains(b))
                    || (self.pids.is_empty() && self.dev_ok(*disk, *disk))
            }
            EventKind::DelGendisk { dev, .. } | EventKind::DelGendiskExit { dev, .. } => {
                self.pids.is_empty() && self.dev_ok(*dev, *dev)
            }
            EventKind::Complete { x, .. }
            | EventKind::CompleteAll { x, .. }
            | EventKind::CompletionInit { x, .. }
            | EventKind::WaitEnter { x, .. }
            | EventKind::WaitExit { x, .. } => {
                if self.task_selected(ev) {
                    remember(&mut self.objects, *x);
                    true
                } else {
                    self.objects.contains(x)
                }
            }
            EventKind::SchedWaking { target_tid, .. }
            | EventKind::SchedWakeup { target_tid, .. } => {
                self.task_selected(ev) || self.tids.contains(target_tid)
            }
            EventKind::SchedSwitch { next_tid, .. } => {
                self.task_selected(ev) || self.tids.contains(next_tid)
            }
            _ => {
                let keep = self.task_selected(ev);
                if keep && !self.pids.is_empty() {
                    remember(&mut self.tids, ev.tid);
                }
                keep
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pid: u32, tid: u32, kind: EventKind) -> Event {
        Event {
            pid,
            tid,
            ..crate::event::samples::event(1, kind)
        }
    }

    fn queue(pid: u32, bio: u64, dev: Dev) -> Event {
        ev(
            pid,
            pid,
            EventKind::BioQueue {
                bio: Addr(bio),
                dev,
                disk: dev,
                sector: 0,
                size: 512,
                opf: 1,
                end_io: Addr(0),
                private: Addr(0),
                disk_relative: false,
                episode_start: false,
                episode_unbounded: false,
            },
        )
    }

    fn endio(bio: u64, dev: Dev) -> Event {
        ev(
            0,
            0,
            EventKind::BioEndio {
                bio: Addr(bio),
                end_io: Addr(0),
                private: Addr(0),
                dev,
                disk: dev,
                sector: 0,
                size: 512,
                status: 0,
                flags: 0,
                remaining: 1,
                is_final: true,
                chain_depth: 0,
                opf: 0,
                has_blkg: false,
                integrity: false,
            },
        )
    }

    #[test]
    fn pid_keeps_its_bios_completions_from_interrupts() {
        let d = Dev::new(8, 0);
        let mut f = EventFilter::new([42], []);
        assert!(f.keep(&queue(42, 0x1000, d)));
        assert!(!f.keep(&queue(7, 0x2000, d)));
        assert!(f.keep(&endio(0x1000, d)), "its bio's completion, from irq");
        assert!(!f.keep(&endio(0x2000, d)));
        let wake = ev(
            0,
            0,
            EventKind::SchedWakeup {
                target_tid: 42,
                target_comm: "x".into(),
            },
        );
        assert!(f.keep(&wake), "a wakeup aimed at it");
    }

    #[test]
    fn dev_keeps_that_device_only() {
        let (a, b) = (Dev::new(8, 0), Dev::new(8, 16));
        let mut f = EventFilter::new([], [a]);
        assert!(f.keep(&queue(1, 0x1000, a)));
        assert!(!f.keep(&queue(1, 0x2000, b)));
        assert!(f.keep(&endio(0x3000, a)));
        assert!(!f.keep(&endio(0x4000, b)));
        assert_eq!(f.describe(), ["--dev 8:0"]);
    }

    #[test]
    fn excluded_devices_and_pids_stay_out() {
        let (a, b) = (Dev::new(8, 0), Dev::new(8, 16));
        let mut f = EventFilter::default().excluding([9], [b]);
        assert!(f.keep(&queue(1, 0x1000, a)));
        assert!(!f.keep(&queue(1, 0x2000, b)));
        assert!(!f.keep(&endio(0x2000, b)));
        assert!(!f.keep(&queue(9, 0x3000, a)), "an excluded process");
        assert_eq!(f.describe(), ["--exclude-pid 9", "--exclude-dev 8:16"]);
        // Excluding wins over selecting.
        let mut f = EventFilter::new([], [a, b]).excluding([], [b]);
        assert!(f.keep(&queue(1, 0x1000, a)));
        assert!(!f.keep(&queue(1, 0x2000, b)));
    }

    #[test]
    fn no_filter_keeps_everything() {
        let mut f = EventFilter::default();
        assert!(f.keep(&queue(1, 1, Dev::new(1, 1))));
    }
}
