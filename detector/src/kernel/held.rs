//! Submissions the programs hold back (`HELD_SLOTS`, detector-ebpf's
//! `pairing`): the reader ships each one that is older than [`HOLD_AGE_NS`],
//! and each one a shipped completion says it may still hold
//! (`SUBMISSIONS_HELD`), before that completion.
//!
//! The table is mapped into this process (`BPF_F_MMAPABLE`). A completion
//! in the kernel and the reader may go for one entry at the same moment:
//! each claims the slot first, with a compare and exchange of its `state`
//! from the bio to `BUSY` (`detector_common::config::held_state`), and
//! only the one that succeeds reads the record and empties the slot, so a
//! submission is shipped once, or paired away in the kernel, never both.
//!
//! Looking through the table reads all of its states (a megabyte), so the
//! reader first asks `HELD_AGES` whether any entry may be old: the
//! programs count the entries they hold and take out by the slot of their
//! submission time, the reader counts what it took, and only a slot old
//! enough to hold an entry past [`HOLD_AGE_NS`] with some entry left in it
//! makes it look. The counts err towards an entry: the programs count a
//! hold before the slot is theirs and a take-out after it is empty. Once
//! a second the reader looks anyway, a bound on the delay of an entry the
//! counts would ever miss.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{MapData, PerCpuArray};
use detector_common::config::{
    HELD_AGE_SHIFT, HELD_AGE_SLOTS, HELD_SLOTS, PAIRED_TIME_SLOTS, held_age_row, held_age_slot,
    held_slots, held_state,
};
use detector_common::wire;

/// Held submissions older than this are shipped: well inside the engine's
/// reorder window (30 ms) with a drain interval (10 ms) on top, so that a
/// shipped submission is never late. Longer than almost every I/O on
/// solid-state storage, so most pairs complete before.
pub const HOLD_AGE_NS: u64 = 5_000_000;

/// How often the reader looks through the table at most.
const SWEEP_EVERY_NS: u64 = 4_000_000;

/// How often the reader looks through the table whatever the counts say:
/// a bound on how late an entry the counts did not show would be shipped.
const LOOK_ANYWAY_EVERY_NS: u64 = 1_000_000_000;

const VALUE_BYTES: usize = std::mem::size_of::<wire::BioQueue>();

/// `HELD_AGES`: per CPU, entries held and taken out by the programs, by
/// the slot of their submission time, a row per program.
pub type HeldAgesMap = PerCpuArray<MapData, [u64; held_age_row::COUNT * HELD_AGE_SLOTS]>;

/// `HELD_SLOTS`, mapped shared into this process.
struct SlotTable {
    base: NonNull<wire::HeldSlot>,
    backing: Backing,
}

/// What a [`SlotTable`]'s slots live in.
enum Backing {
    /// The map's memory, mapped: `bytes` long; the map is kept alive.
    Mapped { bytes: usize, _map: MapData },
    /// A table of this process's own, for tests (kept alive here).
    #[cfg(test)]
    Owned(#[allow(dead_code)] Box<[wire::HeldSlot]>),
}

// SAFETY: the mapping is shared memory that the kernel's programs write
// concurrently anyway; every access to a slot's state is atomic, and a
// record is read only by the slot's claimant.
unsafe impl Send for SlotTable {}
// SAFETY: as for `Send`: shared use goes through atomics and claims.
unsafe impl Sync for SlotTable {}

impl SlotTable {
    fn map(map: MapData) -> io::Result<Self> {
        let page = super::layout::page_size() as usize;
        let bytes =
            (HELD_SLOTS as usize * std::mem::size_of::<wire::HeldSlot>()).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd, of the size the
        // kernel maps for an mmapable array of HELD_SLOTS values.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(at.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self {
            base,
            backing: Backing::Mapped { bytes, _map: map },
        })
    }

    /// An empty table in this process's memory.
    #[cfg(test)]
    fn owned() -> Self {
        // SAFETY: a slot is integers and byte arrays: all zeroes is one.
        let empty: wire::HeldSlot = unsafe { std::mem::zeroed() };
        let mut slots = vec![empty; HELD_SLOTS as usize].into_boxed_slice();
        let base = NonNull::new(slots.as_mut_ptr()).expect("a box is never null");
        Self {
            base,
            backing: Backing::Owned(slots),
        }
    }

    fn slot(&self, at: u32) -> *mut wire::HeldSlot {
        debug_assert!(at < HELD_SLOTS);
        // SAFETY: `at` is below HELD_SLOTS, all of which are mapped.
        unsafe { self.base.as_ptr().add((at % HELD_SLOTS) as usize) }
    }

    fn state(&self, at: u32) -> &AtomicU64 {
        // SAFETY: the state is the slot's first word, 8-byte aligned in a
        // page-aligned mapping, and only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(&raw mut (*self.slot(at)).state) }
    }

    /// The record in slot `at`: only its claimant may rely on it; anyone
    /// else reads a hint (it may change under the read).
    fn record(&self, at: u32) -> [u8; VALUE_BYTES] {
        // SAFETY: the record lies in the mapping; a volatile read of
        // plain bytes, whatever is being written meanwhile.
        unsafe { std::ptr::read_volatile((&raw const (*self.slot(at)).record).cast()) }
    }

    /// When the record in slot `at` was submitted: a hint, as
    /// [`Self::record`] is.
    fn queued_at(&self, at: u32) -> u64 {
        // SAFETY: the time stamp lies in the mapping, 8-byte aligned.
        unsafe { std::ptr::read_volatile(&raw const (*self.slot(at)).record.header.ts_ns) }
    }

    /// Takes `bio`'s record out of slot `at` if the slot holds it. Read
    /// first: a compare and exchange that fails still takes the line from
    /// the CPU whose program uses it.
    fn take(&self, at: u32, bio: u64) -> Option<[u8; VALUE_BYTES]> {
        let state = self.state(at);
        if state.load(Ordering::Relaxed) != bio {
            return None;
        }
        state
            .compare_exchange(bio, held_state::BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let record = self.record(at);
        state.store(held_state::EMPTY, Ordering::Release);
        Some(record)
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        #[allow(irrefutable_let_patterns)] // refutable in tests
        if let Backing::Mapped { bytes, .. } = self.backing {
            // SAFETY: unmaps exactly what `map` mapped.
            unsafe { libc::munmap(self.base.as_ptr().cast(), bytes) };
        }
    }
}

/// The reader's side of `HELD_SLOTS`.
pub struct HeldBios {
    table: SlotTable,
    /// `None`: look through the table at every sweep.
    ages: Option<HeldAgesMap>,
    /// Entries the reader took out, by the slot of their submission time.
    taken: [u64; HELD_AGE_SLOTS],
    last_sweep: u64,
    last_look: u64,
    /// Submissions taken out and shipped, by why.
    pub swept: u64,
    pub released: u64,
}

impl HeldBios {
    /// `None` when the table cannot be mapped: then the programs must
    /// not hold anything.
    pub fn new(map: MapData, ages: Option<HeldAgesMap>) -> Option<Self> {
        let table = SlotTable::map(map)
            .inspect_err(|e| tracing::debug!("held submissions' table not mapped: {e}"))
            .ok()?;
        Some(Self::over(table, ages))
    }

    fn over(table: SlotTable, ages: Option<HeldAgesMap>) -> Self {
        Self {
            table,
            ages,
            taken: [0; HELD_AGE_SLOTS],
            last_sweep: 0,
            last_look: 0,
            swept: 0,
            released: 0,
        }
    }

    /// Takes `bio`'s entry out: `None` when there is none (paired in the
    /// kernel, or shipped already).
    fn take(&self, bio: u64) -> Option<[u8; VALUE_BYTES]> {
        held_slots(bio)
            .into_iter()
            .find_map(|at| self.table.take(at, bio))
    }

    /// Ships `bio`'s held submission, if any, through `ship`; returns
    /// whether there was one.
    pub fn release(&mut self, bio: u64, ship: &mut impl FnMut(&[u8])) -> bool {
        let taken = self.take(bio);
        let shipped = self.ship_taken(taken, ship);
        self.released += u64::from(shipped);
        shipped
    }

    /// Ships an entry taken out, if there is one, and counts it; whether
    /// there was one.
    fn ship_taken(
        &mut self,
        taken: Option<[u8; VALUE_BYTES]>,
        ship: &mut impl FnMut(&[u8]),
    ) -> bool {
        let Some(value) = taken else {
            return false;
        };
        self.taken[held_age_slot(queued_at(&value))] += 1;
        ship(&value);
        true
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
        let old: Vec<(u32, u64)> = self
            .look()
            .filter(|&(_, _, queued)| all || now.saturating_sub(queued) >= HOLD_AGE_NS)
            .map(|(at, bio, _)| (at, bio))
            .collect();
        let mut shipped = false;
        for (at, bio) in old {
            let taken = self.table.take(at, bio);
            if self.ship_taken(taken, ship) {
                self.swept += 1;
                shipped = true;
            }
        }
        shipped
    }

    /// Every held entry's slot, bio and submission time (the time a hint:
    /// the entry may change while it is read).
    fn look(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        (0..HELD_SLOTS).filter_map(|at| {
            let bio = self.table.state(at).load(Ordering::Acquire);
            (bio > held_state::BUSY).then(|| (at, bio, self.table.queued_at(at)))
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

    /// A held record of `bio`, submitted at `ts`.
    fn record(bio: u64, ts: u64) -> wire::BioQueue {
        // SAFETY: a record is integers and byte arrays: all zeroes is one.
        let mut record: wire::BioQueue = unsafe { std::mem::zeroed() };
        record.bio = bio;
        record.header.ts_ns = ts;
        record
    }

    /// Holds `bio`'s record in slot `at` as the programs do.
    fn hold(table: &SlotTable, at: u32, bio: u64, ts: u64) {
        // SAFETY: slot `at` is in the table, and no one else uses it.
        unsafe { (*table.slot(at)).record = record(bio, ts) };
        table.state(at).store(bio, Ordering::Release);
    }

    fn shipped_bios(
        held: &mut HeldBios,
        f: impl FnOnce(&mut HeldBios, &mut dyn FnMut(&[u8])),
    ) -> Vec<u64> {
        let mut bios = Vec::new();
        f(held, &mut |bytes: &[u8]| {
            let at = std::mem::offset_of!(wire::BioQueue, bio);
            bios.push(u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap()));
        });
        bios
    }

    #[test]
    fn a_bio_has_two_different_slots_in_the_table() {
        for bio in (0..100_000u64).map(|i| 0xffff_8880_0000_0000 + i * 0x100) {
            let [a, b] = held_slots(bio);
            assert!(
                a < HELD_SLOTS && b < HELD_SLOTS && a != b,
                "{bio:x}: {a} {b}"
            );
            assert_eq!(held_slots(bio), [a, b]);
        }
    }

    #[test]
    fn bios_from_one_slab_spread_over_the_table() {
        // 256 bios of a slab page run, 256 bytes apart: their first slots
        // should be nearly all different (a clash ships a submission).
        let firsts: std::collections::HashSet<u32> = (0..256u64)
            .map(|i| held_slots(0xffff_8880_1234_0000 + i * 256)[0])
            .collect();
        assert!(firsts.len() >= 250, "{} distinct of 256", firsts.len());
    }

    #[test]
    fn a_release_takes_the_bio_from_either_slot_once() {
        let mut held = HeldBios::over(SlotTable::owned(), None);
        let (bio, other) = (0xffff_8880_0000_1000, 0xffff_8880_0000_2000);
        let [first, second] = held_slots(bio);
        hold(&held.table, first, other, 1);
        hold(&held.table, second, bio, 2);
        let shipped = shipped_bios(&mut held, |h, ship| {
            assert!(h.release(bio, &mut |b| ship(b)));
            assert!(!h.release(bio, &mut |b| ship(b)), "shipped twice");
        });
        assert_eq!(shipped, [bio]);
        assert_eq!(
            held.table.state(second).load(Ordering::Acquire),
            held_state::EMPTY
        );
        assert_eq!(
            held.table.state(first).load(Ordering::Acquire),
            other,
            "another bio's slot"
        );
        assert_eq!(held.released, 1);
    }

    #[test]
    fn a_slot_a_program_owns_is_left_alone() {
        let mut held = HeldBios::over(SlotTable::owned(), None);
        let bio = 0xffff_8880_0000_1000;
        let [first, _] = held_slots(bio);
        hold(&held.table, first, bio, 1);
        // A completion claimed it: it pairs or ships the record itself.
        held.table
            .state(first)
            .store(held_state::BUSY, Ordering::Release);
        let shipped = shipped_bios(&mut held, |h, ship| {
            assert!(!h.release(bio, &mut |b| ship(b)));
            assert!(!h.sweep(10 * HOLD_AGE_NS, true, &mut |b| ship(b)));
        });
        assert!(shipped.is_empty());
        assert_eq!(
            held.table.state(first).load(Ordering::Acquire),
            held_state::BUSY
        );
    }

    #[test]
    fn a_sweep_ships_what_is_old_and_leaves_what_is_young() {
        let mut held = HeldBios::over(SlotTable::owned(), None);
        let now = 100 * HOLD_AGE_NS;
        let (old, young) = (0xffff_8880_0000_1000, 0xffff_8880_0000_2000);
        hold(&held.table, held_slots(old)[0], old, now - HOLD_AGE_NS);
        hold(
            &held.table,
            held_slots(young)[1],
            young,
            now - HOLD_AGE_NS / 2,
        );
        let shipped = shipped_bios(&mut held, |h, ship| {
            assert!(h.sweep(now, false, &mut |b| ship(b)));
        });
        assert_eq!(shipped, [old]);
        assert_eq!(held.swept, 1);
        // Too soon for another look; then, at the end, everything goes.
        let shipped = shipped_bios(&mut held, |h, ship| {
            assert!(!h.sweep(now + 1, false, &mut |b| ship(b)));
            assert!(h.sweep(now + 2, true, &mut |b| ship(b)));
        });
        assert_eq!(shipped, [young]);
        assert!(held.look().next().is_none());
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
