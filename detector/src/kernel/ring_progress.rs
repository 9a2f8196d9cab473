//! How far in time each CPU's ring has been read.
//!
//! A ring hands its records over in the order they were reserved, and a
//! record reserved but not yet committed stops the reader there: the
//! records behind it wait, committed or not. A program commits within
//! microseconds, normally. But a CPU can leave one record uncommitted for
//! much longer while it goes on writing records behind it (seen for 585 ms
//! in a 2-CPU guest on a busy host, during a disk's removal), and the other
//! CPUs' records keep coming meanwhile. Had the reader said "everything
//! written before now has been read" all along, the engine would have
//! judged without that CPU's records: there, a bio's completion on the
//! other CPU was paired with a submission whose real completion, and the
//! bio's reuse for another disk, sat in the stalled ring.
//!
//! So after each drain that emptied the rings as far as they would go, the
//! reader reads each ring's consumer and producer positions (the ring's
//! first two pages, mapped read-only). A ring with nothing left is read up
//! to the moment of that look. A ring with bytes left (its head is being
//! written, or a record was committed just after the drain) is read up to
//! the later of the last look that found it empty and its last record
//! handed on, less [`SLACK_NS`]: every record still to come was reserved
//! after both, but its time stamp may be older than its reservation. A
//! program reads the clock before its stack walk, and a held submission
//! shipped by a completion (`detector-ebpf/src/pairing.rs`) carries its
//! submission's time, a few milliseconds old. The reader claims
//! completeness (the engine's loss horizon) only up to the lowest of
//! these. A ring whose head stays put past [`STALL_LIMIT_NS`] no longer
//! holds the claim back: at that look and every later one while it stays
//! put, the reader marks the span it leaves unread lost on its CPU
//! (`LossCause::RingStalled`), from the claim it held, before the engine
//! judges that span. What the ring gives later arrives late, which the
//! engine treats as a loss too: verdicts there are left open instead of
//! waiting forever. Empty rings are claimed less the slack as well, so
//! that a ring's claim never goes back (the engine keeps the highest).
//! (Holding back also fills the engine's reorder buffer; past its cap,
//! events are released anyway, which the engine treats as a loss.)

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How long a ring stuck behind one record may hold back every verdict.
pub const STALL_LIMIT_NS: u64 = 2_000_000_000;

/// How much older than its reservation a record's time stamp may be: a
/// held submission is shipped by the completion at most a hold (5 ms)
/// plus a sweep (4 ms) after it was made, and the engine's reorder window
/// (30 ms) already allows that much.
pub const SLACK_NS: u64 = 30_000_000;

/// A ring's consumer and producer positions, mapped read-only.
pub struct Positions {
    base: *mut libc::c_void,
    page: usize,
}

// SAFETY: the mapping is read-only shared memory, owned by this value
// until it drops, and only ever read with atomic loads.
unsafe impl Send for Positions {}
unsafe impl Sync for Positions {}

impl Positions {
    /// Maps the first two pages of the ring behind `fd`: the consumer
    /// position, then the producer position, each at its page's start.
    pub fn map(fd: &impl AsRawFd, page: usize) -> io::Result<Self> {
        let fd: RawFd = fd.as_raw_fd();
        // SAFETY: a new read-only shared mapping of the ring's control
        // pages; the kernel allows it for any ring buffer map.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { base, page })
    }

    /// (consumer, producer). The producer is read last: a consumer behind
    /// it means bytes were there at the look.
    pub fn read(&self) -> (u64, u64) {
        // SAFETY: both words (the kernel's `unsigned long`s) lie at the
        // start of a mapped page, aligned, and are only read here.
        unsafe {
            let consumer = &*(self.base as *const AtomicUsize);
            let producer = &*(self.base.add(self.page) as *const AtomicUsize);
            let c = consumer.load(Ordering::Acquire);
            (c as u64, producer.load(Ordering::Acquire) as u64)
        }
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

/// Each record's header in the ring (`BPF_RINGBUF_HDR_SZ`); records are
/// padded to 8 bytes.
const RECORD_HEADER: u64 = 8;

/// A head that stays put longer than this is counted as a stall: a
/// program holds a record for microseconds.
const STALL_NOTE_NS: u64 = 1_000_000;

/// One ring's progress across drains.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    /// The last look that found the ring empty.
    empty_at: u64,
    /// The time of the last record handed on from it.
    last_ts: u64,
    /// Bytes of the records taken from it, with their headers: the
    /// consumer position can only be at or past this (discarded records
    /// are skipped without being taken).
    taken_bytes: u64,
    /// Where its head stayed when looks found bytes left behind it.
    head: Option<Head>,
    /// A span to mark lost, not yet reported: from the claim a stall held
    /// when it was given up, then from the last span's end while its head
    /// stays put.
    lost_from: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    /// The consumer position.
    at: u64,
    /// The first look that found the head there.
    since: u64,
    counted: bool,
    given_up: bool,
    /// Up to when its spans have been marked lost, once given up.
    marked_to: u64,
}

/// Rings stuck behind a record, over the session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stalls {
    /// Looks at a ring's positions after a drain.
    pub looks: u64,
    /// Episodes of a ring's head staying put, with records behind it, for
    /// longer than a millisecond.
    pub episodes: u64,
    /// Episodes that ended (the head moved) before the limit: their
    /// records came, and were judged in order.
    pub waited: u64,
    /// The longest such episode so far, ns.
    pub longest_ns: u64,
    /// Episodes that outlasted [`STALL_LIMIT_NS`]: the ring stopped
    /// holding verdicts back, the span it held was marked lost, and its
    /// records came late.
    pub given_up: u64,
    /// Looks whose positions made no sense (a consumer behind what was
    /// taken, or past the producer): not trusted, so they held nothing
    /// back.
    pub position_errors: u64,
}

impl Progress {
    /// A record of `len` bytes was taken from this ring.
    pub fn took(&mut self, len: usize) {
        self.taken_bytes += (RECORD_HEADER + len as u64).next_multiple_of(8);
    }

    /// A record of time `ts` was handed on from this ring.
    pub fn handed_on(&mut self, ts: u64) {
        self.last_ts = self.last_ts.max(ts);
    }

    /// The ring's positions `(consumer, producer)` were read at `now`,
    /// after a drain; returns the time up to which it has been read.
    pub fn look(&mut self, (consumer, producer): (u64, u64), now: u64, stalls: &mut Stalls) -> u64 {
        stalls.looks += 1;
        if consumer < self.taken_bytes || consumer > producer {
            stalls.position_errors += 1;
            return now;
        }
        if self
            .head
            .is_some_and(|h| consumer != h.at || consumer == producer)
        {
            self.head_moved(stalls);
        }
        if consumer == producer {
            self.empty_at = now;
            return now.saturating_sub(SLACK_NS);
        }
        let head = self.head.get_or_insert(Head {
            at: consumer,
            since: now,
            counted: false,
            given_up: false,
            marked_to: 0,
        });
        let stuck = now.saturating_sub(head.since);
        if stuck > STALL_NOTE_NS && !head.counted {
            head.counted = true;
            stalls.episodes += 1;
        }
        stalls.longest_ns = stalls.longest_ns.max(stuck);
        let held = self.empty_at.max(self.last_ts).min(now);
        let held = held.saturating_sub(SLACK_NS);
        if stuck > STALL_LIMIT_NS {
            let from = if head.given_up {
                head.marked_to
            } else {
                head.given_up = true;
                stalls.given_up += 1;
                held
            };
            // The records it holds back from here on will come late: what
            // is judged meanwhile must know that they may be missing.
            head.marked_to = now;
            self.lost_from = Some(from);
            return now;
        }
        held
    }

    /// After a look that found a stall given up: where the span it leaves
    /// unread starts (the claim it held, then the previous span's end). Up
    /// to that look, its records will come late: as good as lost.
    pub fn take_lost_span(&mut self) -> Option<u64> {
        self.lost_from.take()
    }

    /// The head the last looks found stuck has moved on.
    fn head_moved(&mut self, stalls: &mut Stalls) {
        if let Some(head) = self.head.take()
            && head.counted
            && !head.given_up
        {
            stalls.waited += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Takes `n` records of 56 bytes (64 in the ring) handed on up to `ts`.
    fn take(p: &mut Progress, n: u64, ts: u64) -> u64 {
        for _ in 0..n {
            p.took(56);
        }
        p.handed_on(ts);
        n * 64
    }

    #[test]
    fn an_empty_ring_is_read_up_to_the_look_less_the_slack() {
        let mut p = Progress::default();
        let mut stalls = Stalls::default();
        let at = take(&mut p, 3, 90 * MS);
        assert_eq!(p.look((at, at), 100 * MS, &mut stalls), 100 * MS - SLACK_NS);
        assert_eq!(
            stalls,
            Stalls {
                looks: 1,
                ..Stalls::default()
            }
        );
    }

    #[test]
    fn a_ring_stuck_behind_a_record_holds_the_claim_at_its_last_empty_look() {
        let mut p = Progress::default();
        let mut stalls = Stalls::default();
        let at = take(&mut p, 3, 95 * MS);
        let claim = 100 * MS - SLACK_NS;
        assert_eq!(p.look((at, at), 100 * MS, &mut stalls), claim);
        // Its head is being written; records are committed behind it, some
        // with time stamps up to the slack older than their reservation.
        // The claim never goes back: the engine keeps the highest.
        let behind = (at, at + 640);
        assert_eq!(p.look(behind, 104 * MS, &mut stalls), claim);
        assert_eq!(p.look(behind, 600 * MS, &mut stalls), claim);
        assert_eq!((stalls.episodes, stalls.waited), (1, 0));
        assert_eq!(stalls.longest_ns, 496 * MS);
        assert_eq!(p.take_lost_span(), None);
        // The head is committed: everything behind it is taken.
        let at = at + take(&mut p, 10, 590 * MS);
        assert_eq!(p.look((at, at), 610 * MS, &mut stalls), 610 * MS - SLACK_NS);
        assert_eq!((stalls.episodes, stalls.waited), (1, 1));
        assert_eq!(stalls.given_up, 0);
    }

    #[test]
    fn a_busy_ring_whose_head_moves_is_read_up_to_its_last_record() {
        let mut p = Progress::default();
        let mut stalls = Stalls::default();
        let mut at = take(&mut p, 1, 10 * MS);
        p.look((at, at), 10 * MS, &mut stalls);
        // Never found empty again, but every look finds the head moved.
        for step in 10..100 {
            at += take(&mut p, 50, (10 + 4 * step) * MS);
            let read = p.look((at, at + 128), (11 + 4 * step) * MS, &mut stalls);
            assert_eq!(read, (10 + 4 * step) * MS - SLACK_NS);
        }
        assert_eq!((stalls.episodes, stalls.waited), (0, 0));
    }

    #[test]
    fn a_stall_past_the_limit_is_marked_lost_span_by_span_while_it_lasts() {
        let mut p = Progress::default();
        let mut stalls = Stalls::default();
        assert_eq!(p.look((0, 0), 40 * MS, &mut stalls), 10 * MS);
        let behind = (0, 64);
        assert_eq!(p.look(behind, 41 * MS, &mut stalls), 10 * MS);
        assert_eq!(p.take_lost_span(), None);
        let late = 42 * MS + STALL_LIMIT_NS;
        assert_eq!(p.look(behind, late, &mut stalls), late);
        // From the claim it held to this look; then look by look.
        assert_eq!(p.take_lost_span(), Some(10 * MS));
        assert_eq!(p.take_lost_span(), None);
        assert_eq!(p.look(behind, late + 4 * MS, &mut stalls), late + 4 * MS);
        assert_eq!(p.take_lost_span(), Some(late));
        assert_eq!((stalls.episodes, stalls.given_up), (1, 1));
        // When it ends, it did not wait: it was given up; nothing more to
        // mark.
        let end = late + 8 * MS;
        assert_eq!(p.look((64, 64), end, &mut stalls), end - SLACK_NS);
        assert_eq!(p.take_lost_span(), None);
        assert_eq!((stalls.episodes, stalls.waited, stalls.given_up), (1, 0, 1));
    }

    #[test]
    fn positions_that_cannot_be_are_not_trusted() {
        let mut p = Progress::default();
        let mut stalls = Stalls::default();
        let at = take(&mut p, 2, 5 * MS);
        // A consumer behind what was taken, or past the producer.
        assert_eq!(p.look((0, 640), 9 * MS, &mut stalls), 9 * MS);
        assert_eq!(p.look((at + 64, at), 9 * MS, &mut stalls), 9 * MS);
        assert_eq!(stalls.position_errors, 2);
        // Discarded records move the consumer past what was taken.
        let seen = p.look((at + 64, at + 64), 40 * MS, &mut stalls);
        assert_eq!(seen, 40 * MS - SLACK_NS);
        assert_eq!(stalls.position_errors, 2);
    }
}
