//! The end-of-session summary: what was seen, per kind and per device, what
//! was lost, and which bios were still in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::event::{Addr, Dev, Event, EventKind, LossCause};
use crate::heartbeat::{Heartbeat, SilentCpu};

/// A CPU silent this long while others report is named in the summary
/// (half the kernel's default soft-lockup threshold of 20 s).
pub const SILENT_CPU_AFTER_NS: u64 = 10_000_000_000;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeviceStats {
    pub submitted: u64,
    pub completed: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Bios submitted during the session and not seen completing.
    pub in_flight: u64,
}

#[derive(Debug)]
pub struct Summary {
    first_ts: Option<u64>,
    last_ts: u64,
    /// Events by [`EventKind::index`]: an array, as this runs per event.
    counts: [u64; EventKind::NAMES.len()],
    pub lost: u64,
    /// Lost events by cause (`ring_buffer_full`, `entry_args_map_full`, ...).
    pub lost_by_cause: BTreeMap<&'static str, u64>,
    /// Spans marked lost because a CPU's ring stayed stuck past the
    /// reader's limit: how many events they hid is not known.
    pub stalled_spans: u64,
    devices: BTreeMap<Dev, DeviceStats>,
    /// Bio -> (disk, sector), for bios submitted during the session.
    in_flight: FxHashMap<Addr, (Dev, u64)>,
    /// Devices some completion was seen for: a device missing here never
    /// reported completions this kernel's hooks can see.
    completion_seen: BTreeSet<Dev>,
    /// Fed every event, shown or not (see [`Summary::heartbeat`]).
    pub heartbeat: Heartbeat,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            first_ts: None,
            last_ts: 0,
            counts: [0; EventKind::NAMES.len()],
            lost: 0,
            lost_by_cause: BTreeMap::new(),
            stalled_spans: 0,
            devices: BTreeMap::new(),
            in_flight: FxHashMap::default(),
            completion_seen: BTreeSet::new(),
            heartbeat: Heartbeat::new(SILENT_CPU_AFTER_NS),
        }
    }
}

/// The summary as JSON (`--json` sessions print it to stderr as text and
/// nowhere as JSON; `detector replay --summary-json` prints this).
#[derive(Debug, Serialize)]
pub struct SummaryJson {
    pub duration_ns: u64,
    pub events: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub lost: u64,
    pub lost_by_cause: BTreeMap<&'static str, u64>,
    /// Spans marked lost for a CPU's ring stuck past the reader's limit.
    pub stalled_spans: u64,
    pub devices: BTreeMap<String, DeviceStats>,
    pub in_flight: u64,
    /// CPUs that stopped reporting events while others went on.
    pub silent_cpus: Vec<SilentCpu>,
}

impl Summary {
    pub fn new() -> Self {
        Self::default()
    }

    fn complete(&mut self, bio: Addr, error: bool) {
        if let Some((dev, _)) = self.in_flight.remove(&bio) {
            let stats = self.devices.entry(dev).or_default();
            stats.completed += 1;
            stats.errors += error as u64;
            self.completion_seen.insert(dev);
        }
    }

    pub fn observe(&mut self, ev: &Event) {
        self.first_ts.get_or_insert(ev.ts);
        self.last_ts = self.last_ts.max(ev.ts);
        self.counts[ev.kind.index()] += 1;
        match &ev.kind {
            EventKind::BioQueue {
                bio,
                disk,
                size,
                sector,
                ..
            } => {
                let stats = self.devices.entry(*disk).or_default();
                // A resubmission of an in-flight bio (remap, split) is not a
                // new I/O.
                if self.in_flight.insert(*bio, (*disk, *sector)).is_none() {
                    stats.submitted += 1;
                    stats.bytes += *size as u64;
                }
            }
            EventKind::BioEndio {
                bio,
                is_final: true,
                status,
                disk,
                ..
            } => {
                self.completion_seen.insert(*disk);
                self.complete(*bio, *status != 0);
            }
            EventKind::BioComplete {
                bio, error, disk, ..
            } => {
                self.completion_seen.insert(*disk);
                self.complete(*bio, *error != 0);
            }
            EventKind::RqComplete {
                disk,
                bios,
                error,
                truncated,
                sector,
                nr_bytes,
                ..
            } => {
                self.completion_seen.insert(*disk);
                for bio in bios {
                    self.complete(*bio, *error != 0);
                }
                if *truncated {
                    // The walk stopped early: every bio of this disk in the
                    // completed range is done too.
                    let end = sector + (*nr_bytes as u64).div_ceil(512);
                    let done: Vec<Addr> = self
                        .in_flight
                        .iter()
                        .filter(|(_, (d, s))| d == disk && (*sector..end).contains(s))
                        .map(|(b, _)| *b)
                        .collect();
                    for bio in done {
                        self.complete(bio, *error != 0);
                    }
                }
            }
            EventKind::Lost {
                cause: LossCause::RingStalled,
                ..
            } => self.stalled_spans += 1,
            EventKind::Lost { count, cause, .. } => {
                self.lost += count;
                *self.lost_by_cause.entry(cause.name()).or_default() += count;
            }
            _ => {}
        }
    }

    pub fn events(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Events by kind name, kinds seen only.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        EventKind::NAMES
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (*name, n))
            .collect()
    }

    pub fn duration_ns(&self) -> u64 {
        self.first_ts.map_or(0, |f| self.last_ts - f)
    }

    fn device_table(&self) -> BTreeMap<Dev, DeviceStats> {
        let mut devices = self.devices.clone();
        for (dev, _) in self.in_flight.values() {
            devices.entry(*dev).or_default().in_flight += 1;
        }
        devices
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.len() as u64
    }

    pub fn to_json(&self) -> SummaryJson {
        SummaryJson {
            duration_ns: self.duration_ns(),
            events: self.events(),
            by_kind: self.by_kind(),
            lost: self.lost,
            lost_by_cause: self.lost_by_cause.clone(),
            stalled_spans: self.stalled_spans,
            devices: self
                .device_table()
                .into_iter()
                .map(|(d, s)| (d.to_string(), s))
                .collect(),
            in_flight: self.in_flight(),
            silent_cpus: self.heartbeat.silent(),
        }
    }

    /// The human table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.duration_ns() as f64 / 1e9;
        let _ = writeln!(
            out,
            "{} events in {secs:.1}s, {} lost{}",
            self.events(),
            self.lost,
            if self.lost > 0 || self.stalled_spans > 0 {
                " (verdicts on objects alive then are indeterminate)"
            } else {
                ""
            }
        );
        for (cause, n) in &self.lost_by_cause {
            let _ = writeln!(out, "  lost ({cause}): {n}");
        }
        if self.stalled_spans > 0 {
            let _ = writeln!(
                out,
                "  spans marked lost for a CPU ring stuck past the reader's limit: {}",
                self.stalled_spans
            );
        }
        for cpu in self.heartbeat.silent() {
            let _ = writeln!(out, "  {}", cpu.describe());
        }
        let by_kind = self.by_kind();
        if !by_kind.is_empty() {
            let _ = writeln!(out, "\n  {:<22} {:>10}", "EVENT", "COUNT");
            for (kind, n) in &by_kind {
                let _ = writeln!(out, "  {kind:<22} {n:>10}");
            }
        }
        let devices = self.device_table();
        if !devices.is_empty() {
            let _ = writeln!(
                out,
                "\n  {:<10} {:>10} {:>10} {:>12} {:>7} {:>9}",
                "DEVICE", "SUBMITTED", "COMPLETED", "BYTES", "ERRORS", "INFLIGHT"
            );
            for (dev, s) in &devices {
                let note = if self.completion_seen.contains(dev) {
                    ""
                } else {
                    "  (no completions observable)"
                };
                let _ = writeln!(
                    out,
                    "  {:<10} {:>10} {:>10} {:>12} {:>7} {:>9}{note}",
                    dev.to_string(),
                    s.submitted,
                    s.completed,
                    s.bytes,
                    s.errors,
                    s.in_flight
                );
            }
        }
        let _ = writeln!(
            out,
            "\n  bios still in flight at the end: {}",
            self.in_flight()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::event::samples::event as ev;

    fn queue(bio: u64) -> EventKind {
        EventKind::BioQueue {
            bio: Addr(bio),
            dev: Dev::new(8, 1),
            disk: Dev::new(8, 0),
            sector: 0,
            size: 4096,
            opf: 1,
            end_io: Addr(0),
            private: Addr(0),
            disk_relative: false,
            episode_start: false,
            episode_unbounded: false,
        }
    }

    #[test]
    fn counts_by_kind_device_and_in_flight() {
        let mut s = Summary::new();
        s.observe(&ev(10, queue(1)));
        s.observe(&ev(11, queue(2)));
        s.observe(&ev(12, queue(2))); // resubmitted, still one I/O
        s.observe(&ev(
            20,
            EventKind::RqComplete {
                rq: Addr(9),
                disk: Dev::new(8, 0),
                sector: 0,
                nr_bytes: 4096,
                error: 0,
                bios: smallvec::smallvec![Addr(1)],
                truncated: false,
            },
        ));
        s.observe(&ev(
            30,
            EventKind::Lost {
                count: 5,
                until: 31,
                cause: crate::event::LossCause::RingBufferFull,
            },
        ));
        s.observe(&ev(
            32,
            EventKind::Lost {
                count: 2,
                until: 33,
                cause: crate::event::LossCause::RecursionMisses,
            },
        ));
        assert_eq!(s.by_kind()["bio_queue"], 3);
        assert_eq!(s.lost, 7);
        assert_eq!(s.lost_by_cause["ring_buffer_full"], 5);
        assert_eq!(s.lost_by_cause["recursion_misses"], 2);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.duration_ns(), 22);
        let dev = &s.device_table()[&Dev::new(8, 0)];
        assert_eq!((dev.submitted, dev.completed, dev.in_flight), (2, 1, 1));
        let text = s.render();
        assert!(text.contains("8:0") && text.contains("7 lost"), "{text}");
        assert!(text.contains("lost (recursion_misses): 2"), "{text}");
        assert_eq!(s.to_json().lost_by_cause["ring_buffer_full"], 5);
        assert_eq!(s.to_json().devices["8:0"].bytes, 8192);
        // A stalled ring's span: counted apart, its events unknown.
        s.observe(&ev(
            34,
            EventKind::Lost {
                count: 0,
                until: 40,
                cause: crate::event::LossCause::RingStalled,
            },
        ));
        assert_eq!((s.lost, s.stalled_spans), (7, 1));
        assert!(!s.lost_by_cause.contains_key("ring_stalled"));
        let text = s.render();
        assert!(text.contains("stuck past the reader's limit: 1"), "{text}");
    }
}
