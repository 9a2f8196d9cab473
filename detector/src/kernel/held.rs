//! Submissions the programs hold back (`HELD_BIOS`, detector-ebpf's
//! `pairing`): the reader ships each one that is older than [`HOLD_AGE_NS`],
//! and each one a shipped completion says it may still hold
//! (`SUBMISSIONS_HELD`), before that completion.
//!
//! A completion in the kernel and the reader may go for one entry at the
//! same moment: whoever deletes it owns it. The reader takes entries out
//! with `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, which reads and deletes under the
//! bucket's lock (hash maps: 5.14+), so a submission is shipped once, or
//! paired away in the kernel, never both.
//!
//! Looking through the map walks every bucket (some 40 µs for 8192), so
//! the reader first asks `HELD_AGES` whether any entry may be old: the
//! programs count the entries they hold and take out by the slot of their
//! submission time, the reader counts what it took, and only a slot old
//! enough to hold an entry past [`HOLD_AGE_NS`] with some entry left in it
//! makes it look. The counts err towards an entry: the programs count a
//! hold before the insert and a take-out after the delete. Once a second
//! the reader looks anyway, a bound on the delay of an entry the counts
//! would ever miss.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::maps::{MapData, PerCpuArray};
use detector_common::config::{
    HELD_AGE_SHIFT, HELD_AGE_SLOTS, PAIRED_TIME_SLOTS, held_age_row, held_age_slot,
};
use detector_common::wire;

/// Held submissions older than this are shipped: well inside the engine's
/// reorder window (30 ms) with a drain interval (10 ms) on top, so that a
/// shipped submission is never late. Longer than almost every I/O on
/// solid-state storage, so most pairs complete before.
pub const HOLD_AGE_NS: u64 = 5_000_000;

/// How often the reader looks through the map at most.
const SWEEP_EVERY_NS: u64 = 4_000_000;

/// How often the reader looks through the map whatever the counts say: a
/// bound on how late an entry the counts did not show would be shipped.
const LOOK_ANYWAY_EVERY_NS: u64 = 1_000_000_000;

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a valid, initialised `union bpf_attr` prefix of
    // the size given; the kernel zero-extends the rest.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const VALUE_BYTES: usize = std::mem::size_of::<wire::BioQueue>();

/// `HELD_AGES`: per CPU, entries held and taken out by the programs, by
/// the slot of their submission time, a row per program.
pub type HeldAgesMap = PerCpuArray<MapData, [u64; held_age_row::COUNT * HELD_AGE_SLOTS]>;

/// The reader's side of `HELD_BIOS`.
pub struct HeldBios {
    map: MapData,
    /// `None`: look through the map at every sweep.
    ages: Option<HeldAgesMap>,
    /// Entries the reader took out, by the slot of their submission time.
    taken: [u64; HELD_AGE_SLOTS],
    /// Room for one look through the whole map.
    keys: Vec<u64>,
    values: Vec<u8>,
    last_sweep: u64,
    last_look: u64,
    /// Where the batch read in progress goes on from.
    token: Option<u32>,
    /// Submissions taken out and shipped, by why.
    pub swept: u64,
    pub released: u64,
}

impl HeldBios {
    /// `entries`: the map's size. `None` when this kernel cannot read the
    /// map in batches or look up and delete one of its entries in one step
    /// (before 5.14): then the programs must not hold anything.
    pub fn new(map: MapData, ages: Option<HeldAgesMap>, entries: usize) -> Option<Self> {
        let mut held = Self {
            map,
            ages,
            taken: [0; HELD_AGE_SLOTS],
            keys: vec![0; entries],
            values: vec![0; entries * VALUE_BYTES],
            last_sweep: 0,
            last_look: 0,
            token: None,
            swept: 0,
            released: 0,
        };
        let batches = held.look_batch(0, 1).is_ok();
        (batches && held.take(0).is_ok()).then_some(held)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }

    /// Takes `bio`'s entry out: `Ok(None)` when there is none (paired in
    /// the kernel, or shipped already).
    fn take(&self, bio: u64) -> io::Result<Option<[u8; VALUE_BYTES]>> {
        let mut value = [0u8; VALUE_BYTES];
        let mut attr = ElemAttr {
            map_fd: self.fd().as_raw_fd() as u32,
            key: &bio as *const u64 as u64,
            value: value.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ships `bio`'s held submission, if any, through `ship`; returns
    /// whether there was one.
    pub fn release(&mut self, bio: u64, ship: &mut impl FnMut(&[u8])) -> bool {
        let shipped = self.ship_taken(bio, ship);
        self.released += u64::from(shipped);
        shipped
    }

    /// Takes `bio`'s entry out and ships it; whether there was one.
    fn ship_taken(&mut self, bio: u64, ship: &mut impl FnMut(&[u8])) -> bool {
        match self.take(bio) {
            Ok(Some(value)) => {
                self.taken[held_age_slot(queued_at(&value))] += 1;
                ship(&value);
                true
            }
            _ => false,
        }
    }

    /// Ships every held submission older than [`HOLD_AGE_NS`] at `now`
    /// (all of them with `all`), at most every few milliseconds unless
    /// `all`, and only when some entry may be that old. Returns whether it
    /// shipped any.
    pub fn sweep(&mut self, now: u64, all: bool, ship: &mut impl FnMut(&[u8])) -> bool {
        if !all && now.saturating_sub(self.last_sweep) < SWEEP_EVERY_NS {
            return false;
        }
        self.last_sweep = now;
        let due = now.saturating_sub(self.last_look) >= LOOK_ANYWAY_EVERY_NS;
        if !all && !due && !self.any_may_be_old(now) {
            return false;
        }
        self.last_look = now;
        let old: Vec<u64> = self
            .look()
            .filter(|&(_, queued)| all || now.saturating_sub(queued) >= HOLD_AGE_NS)
            .map(|(bio, _)| bio)
            .collect();
        let mut shipped = false;
        for bio in old {
            if self.ship_taken(bio, ship) {
                self.swept += 1;
                shipped = true;
            }
        }
        shipped
    }

    /// Every entry's bio and submission time, in one pass of
    /// `BPF_MAP_LOOKUP_BATCH` calls (a call per entry would cost more than
    /// the records the map saves).
    fn look(&mut self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut filled = 0usize;
        while filled < self.keys.len() {
            match self.look_batch(filled, self.keys.len() - filled) {
                Ok((count, next)) => {
                    filled += count;
                    self.token = next;
                    if next.is_none() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!("held bios not looked through: {e}");
                    break;
                }
            }
        }
        self.token = None;
        (0..filled).map(move |i| {
            let value = &self.values[i * VALUE_BYTES..(i + 1) * VALUE_BYTES];
            (self.keys[i], queued_at(value))
        })
    }

    /// Whether some entry may be older than [`HOLD_AGE_NS`] at `now`
    /// (true when the counts cannot be read).
    fn any_may_be_old(&self, now: u64) -> bool {
        let Some(per_cpu) = self.ages.as_ref().and_then(|ages| ages.get(&0, 0).ok()) else {
            return true;
        };
        let mut held = [0u64; HELD_AGE_SLOTS];
        let mut out = [0u64; HELD_AGE_SLOTS];
        for cpu in per_cpu.iter() {
            for (row, counts) in cpu.chunks_exact(HELD_AGE_SLOTS).enumerate() {
                let total = if row == held_age_row::HELD {
                    &mut held
                } else {
                    &mut out
                };
                for (t, n) in total.iter_mut().zip(counts) {
                    *t = t.wrapping_add(*n);
                }
            }
        }
        old_slot_occupied(&held, &out, &self.taken, now)
    }

    /// One `BPF_MAP_LOOKUP_BATCH` into the room from entry `at`, for at
    /// most `room` entries, going on from `self.token`: the entries read,
    /// and the token to go on from (`None`: the map was read to its end).
    fn look_batch(&mut self, at: usize, room: usize) -> io::Result<(usize, Option<u32>)> {
        let mut next = 0u32;
        let mut attr = BatchAttr {
            in_batch: self.token.as_ref().map_or(0, |t| t as *const u32 as u64),
            out_batch: &mut next as *mut u32 as u64,
            keys: self.keys[at..].as_mut_ptr() as u64,
            values: self.values[at * VALUE_BYTES..].as_mut_ptr() as u64,
            count: room as u32,
            map_fd: self.fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => Ok((attr.count as usize, Some(next))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count as usize, None)),
            Err(e) => Err(e),
        }
    }
}

/// The submission time of a held record.
fn queued_at(value: &[u8]) -> u64 {
    let at = std::mem::offset_of!(wire::Header, ts_ns);
    value
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Whether a slot that may hold an entry older than [`HOLD_AGE_NS`] at
/// `now` still has one: held, less taken out by the programs (`out`) and
/// by the reader (`taken`). A slot is young while its oldest possible
/// entry is: `d` slots behind `now`'s, its entries are younger than
/// `(d + 1)` slot lengths. Slots wrap: an entry a whole turn old in a young
/// slot waits for the slot to age again, a few milliseconds.
fn old_slot_occupied(held: &[u64], out: &[u64], taken: &[u64], now: u64) -> bool {
    let current = held_age_slot(now);
    let slot_ns = 1u64 << HELD_AGE_SHIFT;
    (0..HELD_AGE_SLOTS).any(|slot| {
        let behind = ((current + HELD_AGE_SLOTS - slot) % HELD_AGE_SLOTS) as u64;
        let young = (behind + 1) * slot_ns <= HOLD_AGE_NS;
        // Counts are read while the programs run: a take-out counted
        // before its hold reads as a negative count, never as an entry.
        let left = held[slot].wrapping_sub(out[slot]).wrapping_sub(taken[slot]) as i64;
        !young && left > 0
    })
}

/// The in-flight times of the bios paired in the kernel (`PAIRED_TIMES`):
/// per bucket of `IO_BUCKET_NS` (and one past it), a count and a sum of ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairedTimes(pub [u64; PAIRED_TIME_SLOTS]);

impl Default for PairedTimes {
    fn default() -> Self {
        Self([0; PAIRED_TIME_SLOTS])
    }
}

/// Reads `PAIRED_TIMES`, summed over the CPUs.
pub struct PairedTimesMap(pub PerCpuArray<MapData, [u64; PAIRED_TIME_SLOTS]>);

impl PairedTimesMap {
    pub fn read(&self) -> PairedTimes {
        let mut total = PairedTimes::default();
        if let Ok(per_cpu) = self.0.get(&0, 0) {
            for cpu in per_cpu.iter() {
                for (t, v) in total.0.iter_mut().zip(cpu) {
                    *t += v;
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT_NS: u64 = 1 << HELD_AGE_SHIFT;

    /// Counts with `n` entries held in the slot of `ts`.
    fn held_at(ts: u64, n: u64) -> [u64; HELD_AGE_SLOTS] {
        let mut held = [0; HELD_AGE_SLOTS];
        held[held_age_slot(ts)] = n;
        held
    }

    const NONE: [u64; HELD_AGE_SLOTS] = [0; HELD_AGE_SLOTS];

    #[test]
    fn an_entry_younger_than_the_hold_age_is_not_looked_for() {
        let now = 1_000 * SLOT_NS + 10;
        let held = held_at(now - SLOT_NS, 3);
        assert!(!old_slot_occupied(&held, &NONE, &NONE, now));
        assert!(!old_slot_occupied(&held_at(now, 1), &NONE, &NONE, now));
    }

    #[test]
    fn an_entry_that_may_be_past_the_hold_age_is_looked_for() {
        let now = 1_000 * SLOT_NS + 10;
        // Three slots back: at least two slot lengths (4.2 ms) old, and
        // possibly past 5 ms.
        let queued = now - 2 * SLOT_NS;
        assert!(old_slot_occupied(&held_at(queued, 1), &NONE, &NONE, now));
        assert!(old_slot_occupied(
            &held_at(now - HOLD_AGE_NS, 1),
            &NONE,
            &NONE,
            now
        ));
        assert!(old_slot_occupied(
            &held_at(now - 20 * SLOT_NS, 1),
            &NONE,
            &NONE,
            now
        ));
    }

    #[test]
    fn entries_taken_out_by_either_side_leave_nothing_to_look_for() {
        let now = 1_000 * SLOT_NS;
        let queued = now - 10 * SLOT_NS;
        let held = held_at(queued, 5);
        let by_programs = held_at(queued, 3);
        let by_reader = held_at(queued, 2);
        assert!(!old_slot_occupied(&held, &by_programs, &by_reader, now));
        assert!(old_slot_occupied(
            &held,
            &by_programs,
            &held_at(queued, 1),
            now
        ));
    }

    #[test]
    fn a_take_out_counted_before_its_hold_hides_no_other_slot() {
        let now = 1_000 * SLOT_NS;
        let young = now;
        let old = now - 8 * SLOT_NS;
        let mut held = held_at(old, 1);
        let out = held_at(young, 1);
        assert!(old_slot_occupied(&held, &out, &NONE, now));
        held[held_age_slot(old)] = 0;
        assert!(!old_slot_occupied(&held, &out, &NONE, now));
    }

    #[test]
    fn the_submission_time_is_read_from_the_record_header() {
        let mut value = [0u8; VALUE_BYTES];
        let at = std::mem::offset_of!(wire::Header, ts_ns);
        value[at..at + 8].copy_from_slice(&123_456u64.to_ne_bytes());
        assert_eq!(queued_at(&value), 123_456);
        assert_eq!(queued_at(&[]), 0);
    }
}
