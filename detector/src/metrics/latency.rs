//! Timing bios (submission to completion) and completion handlers
//! (`bio_endio` entry to return) from the event stream, for the
//! histograms. Both tables are bounded: on a host whose completions
//! detector cannot see (bio-based devices on a tracepoint-only kernel) bios
//! would otherwise pile up for weeks.

use crate::engine::hash::FastMap;
use crate::event::{Addr, Event, EventKind};

/// Bios timed at once; past it the table starts over (a few histogram
/// samples lost, memory bounded).
const MAX_BIOS: usize = 1 << 17;
/// Open `bio_endio` calls per context (they nest when devices stack).
const MAX_DEPTH: usize = 64;
/// Contexts with open calls.
const MAX_CONTEXTS: usize = 1 << 14;

fn secs(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e9
}

/// Submission times of bios in flight.
#[derive(Default)]
pub struct BioLatency {
    queued: FastMap<Addr, u64>,
}

impl BioLatency {
    /// The in-flight time of a bio `ev` completes, in seconds.
    pub fn observe(&mut self, ev: &Event) -> Option<f64> {
        match &ev.kind {
            EventKind::BioQueue { bio, .. } => {
                if self.queued.len() >= MAX_BIOS {
                    self.queued.clear();
                }
                // A resubmission (remap, split) is the same I/O: keep the
                // first submission.
                self.queued.entry(*bio).or_insert(ev.ts);
                None
            }
            EventKind::BioEndio {
                bio,
                is_final,
                remaining,
                ..
            } if *is_final && *remaining <= 1 => self.done(*bio, ev.ts),
            EventKind::BioComplete { bio, .. } => self.done(*bio, ev.ts),
            EventKind::RqComplete { bios, .. } => {
                // A request completes its bios together: one sample for
                // the oldest, the others are the same completion.
                bios.iter()
                    .filter_map(|b| self.queued.remove(b))
                    .min()
                    .map(|queued| secs(queued, ev.ts))
            }
            EventKind::BioInit { bio } => {
                // Reused for another I/O: the old one is gone unseen.
                self.queued.remove(bio);
                None
            }
            _ => None,
        }
    }

    fn done(&mut self, bio: Addr, ts: u64) -> Option<f64> {
        self.queued.remove(&bio).map(|queued| secs(queued, ts))
    }
}

/// Open `bio_endio` calls by (CPU, thread): a call returns in the context
/// it entered (interrupt handlers do not migrate; a task in process
/// context rarely does between entry and return, and such a call is
/// dropped, not mis-timed).
#[derive(Default)]
pub struct HandlerTime {
    open: FastMap<(u32, u32), Vec<(Addr, u64)>>,
}

impl HandlerTime {
    /// The run time of a `bio_endio` call `ev` ends, in seconds.
    pub fn observe(&mut self, ev: &Event) -> Option<f64> {
        let key = (ev.cpu, ev.tid);
        match &ev.kind {
            EventKind::BioEndio {
                bio, chain_depth, ..
            } if *chain_depth == 0 => {
                if self.open.len() >= MAX_CONTEXTS && !self.open.contains_key(&key) {
                    self.open.clear();
                }
                let stack = self.open.entry(key).or_default();
                if stack.len() >= MAX_DEPTH {
                    stack.remove(0);
                }
                stack.push((*bio, ev.ts));
                None
            }
            EventKind::BioEndioExit { bio } => {
                let stack = self.open.get_mut(&key)?;
                let at = match bio {
                    Some(bio) => stack.iter().rposition(|(b, _)| b == bio)?,
                    // A kretprobe cannot see the argument: the innermost.
                    None => stack.len().checked_sub(1)?,
                };
                let (_, entered) = stack.remove(at);
                // Calls nested deeper that never returned are over too.
                stack.truncate(at);
                if stack.is_empty() {
                    self.open.remove(&key);
                }
                Some(secs(entered, ev.ts))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Dev;
    use crate::event::samples::event;

    fn queue(ts: u64, bio: u64) -> Event {
        event(
            ts,
            EventKind::BioQueue {
                bio: Addr(bio),
                dev: Dev::new(8, 0),
                disk: Dev::new(8, 0),
                sector: 0,
                size: 4096,
                opf: 1,
                end_io: Addr(0),
                private: Addr(0),
                disk_relative: false,
                episode_start: false,
                episode_unbounded: false,
            },
        )
    }

    fn endio(ts: u64, bio: u64, depth: u8) -> Event {
        event(
            ts,
            EventKind::BioEndio {
                bio: Addr(bio),
                end_io: Addr(0),
                private: Addr(0),
                dev: Dev::new(8, 0),
                disk: Dev::new(8, 0),
                sector: 0,
                size: 4096,
                status: 0,
                flags: 0,
                remaining: 1,
                is_final: true,
                chain_depth: depth,
                opf: 0,
                has_blkg: false,
                integrity: false,
            },
        )
    }

    #[test]
    fn a_bio_is_timed_from_first_submission_to_completion() {
        let mut t = BioLatency::default();
        assert_eq!(t.observe(&queue(1_000_000, 0x10)), None);
        assert_eq!(t.observe(&queue(2_000_000, 0x10)), None, "resubmitted");
        assert_eq!(t.observe(&endio(4_000_000, 0x10, 0)), Some(0.003));
        assert_eq!(t.observe(&endio(5_000_000, 0x10, 0)), None, "only once");
    }

    #[test]
    fn handlers_are_timed_by_context_and_nest() {
        let mut t = HandlerTime::default();
        let exit = |ts, bio| {
            event(
                ts,
                EventKind::BioEndioExit {
                    bio: Some(Addr(bio)),
                },
            )
        };
        assert_eq!(t.observe(&endio(1_000, 0x10, 0)), None);
        assert_eq!(t.observe(&endio(2_000, 0x20, 0)), None);
        assert_eq!(
            t.observe(&endio(2_500, 0x30, 1)),
            None,
            "a chained parent: same call"
        );
        assert_eq!(t.observe(&exit(5_000, 0x20)), Some(3e-6));
        assert_eq!(t.observe(&exit(9_000, 0x10)), Some(8e-6));
        assert_eq!(t.observe(&exit(9_500, 0x10)), None);
    }
}
