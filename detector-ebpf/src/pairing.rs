//! Pairing healthy bios in the kernel (`ProbeConfig::pair_bios`).
//!
//! Under asynchronous load every I/O shipped two records (its submission
//! and its request's completion), and each cost a record's emission here
//! and several hundred ns in userspace, for an I/O no rule will quote. A
//! submission that nothing marks as interesting is held in `HELD_SLOTS`
//! instead of the ring; its completion takes it out and ships neither when
//! the I/O ended cleanly and nothing about it can matter to a rule.
//!
//! When a pair may go: the submitter has returned to user space since it
//! submitted the bio, or gone to an idle sleep as a kernel thread
//! (`flag::EPISODE` clear: `sys_exit` or that sleep clears it; or set by a
//! later episode, whose start left another mark: `tasks::episode_mark`),
//! is not asleep uninterruptibly, and owns no on-stack completion. Then the
//! bio's episode is over, and every sleep of it was woken (a sleep that
//! was not is still going on, and keeps the task in its episode):
//! lost-wakeup judges a sleep only from its episode's submissions and
//! completions, and each of those happened while the task was in the
//! episode, so each was shipped. Synchronous I/O therefore ships as
//! before; what is paired away is asynchronous I/O (libaio, io_uring)
//! completing after its syscall returned. Kernel threads never return:
//! their episode ends at an idle sleep (a worker out of work,
//! `probes::sched`), and only the first submission of each may be held.
//!
//! Also shipped whole (docs/rules.md): a submission whose `bi_private`
//! lies on its submitter's stack (onstack) or that is an md superblock
//! write (md-teardown); a completion with an error; a disk's first
//! completion (lost-io judges only disks that showed one) and every
//! completion after its `del_gendisk` began (bio-complete-after-teardown);
//! a request of several bios, or whose walk was cut short.
//!
//! Nothing stays held long: userspace ships what is older than a few
//! milliseconds, well inside the engine's reorder window, so a bio that
//! never completes (lost-io) or is in flight at a teardown is seen as
//! before. Whoever claims an entry (a completion here, or userspace)
//! owns it: a submission is shipped once, or not at all.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use detector_common::{
    BioQueue, HeldSlot, ProbeConfig,
    config::{
        HELD_AGE_SLOTS, IO_BUCKET_NS, PAIRED_TIME_SLOTS, held_age_row, held_age_slot, held_slots,
        held_state,
    },
    counter, header_flag,
};

use crate::{
    emit::{reserve_uncounted, submit_unnamed},
    kernel::{atomic_add, bump, compare_exchange, exchange, held_table_usable, tally},
    maps::{DISKS, HELD_AGES, HELD_SLOTS, PAIRED_TIMES, disk, flag},
    tasks::{episode_began_since, flags_of},
    words,
};

/// Task flags that make a submitter's I/O worth shipping whatever its
/// episode (a submission at once, a completion with its submission):
/// asleep uninterruptibly, or owning on-stack frames.
const SUBMITTER_WATCHED: u8 = flag::SLEEPING | flag::ONSTACK | flag::FRAMES;

/// Whether bios are paired: possible in this session (the loader's
/// `HELD_TABLE_USABLE`) and on (`ProbeConfig::pair_bios`, once the hooks
/// are attached).
#[inline(always)]
fn pairing_on(cfg: &ProbeConfig) -> bool {
    held_table_usable() && cfg.pair_bios != 0
}

/// Whether a submission may be held rather than shipped: pairing is on,
/// it starts its submitter's episode, it is a plain read or write (no
/// flush or FUA: a flush sequence reports its bios to `block_rq_complete`
/// before it ends them), no rule can use it on its own (`watched`: see
/// the module's list), and its submitter is not watched.
///
/// Only an episode's first submission is held: an asynchronous submitter
/// (libaio, io_uring) submits one or a few per syscall, while a kernel
/// thread, whose episode lasts from its first submission after an idle
/// sleep to the next idle sleep, may submit many: the later ones would
/// only be held and shipped later at a higher cost.
#[inline(always)]
pub fn may_hold(cfg: &ProbeConfig, record: &BioQueue, submitter_flags: u8, watched: bool) -> bool {
    const REQ_OP_MASK: u32 = 0xff;
    const REQ_OP_WRITE: u32 = 1;
    pairing_on(cfg)
        && record.header.flags & header_flag::EPISODE_START != 0
        && record.opf & REQ_OP_MASK <= REQ_OP_WRITE
        && record.opf & cfg.req_flush_fua_mask == 0
        && !watched
        && submitter_flags & SUBMITTER_WATCHED == 0
}

/// Holds `record` until its completion in a free slot of its two; false
/// (ship it now) when both are taken, or when an earlier submission of
/// the bio is still held (that one is shipped first).
///
/// Each slot is tried with a compare and exchange straight away: a plain
/// read first would fetch the line (last written by the CPU that
/// completed its previous bio) once to read and again to write.
#[inline(always)]
pub fn hold(cfg: &ProbeConfig, record: &BioQueue) -> bool {
    // Counted before it is in the table, and counted out again if it is
    // not: while a program runs between the two steps (preemptible under
    // fentry), the counts may show an entry that is not there, never miss
    // one that is.
    let queued_at = record.header.ts_ns;
    count_age(queued_at, held_age_row::HELD);
    let bio = record.bio;
    let [first, second] = held_slots(bio);
    if let (Some(first), Some(second)) = (
        HELD_SLOTS.get_ptr_mut(first),
        HELD_SLOTS.get_ptr_mut(second),
    ) {
        let earlier = match try_slot(first, record, Some(second)) {
            Tried::Held => return true,
            Tried::Earlier(slot) => Some(slot),
            Tried::Taken => match try_slot(second, record, None) {
                Tried::Held => return true,
                Tried::Earlier(slot) => Some(slot),
                Tried::Taken => {
                    bump(counter::HELD_MAP_FULL);
                    None
                }
            },
        };
        if let Some(slot) = earlier {
            ship_if_claimed(cfg, bio, slot);
        }
    }
    count_age(queued_at, held_age_row::OUT_BY_SUBMISSION);
    false
}

/// What holding a record in one slot came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tried {
    /// The record is in the slot.
    Held,
    /// This slot, or the other one, holds an earlier submission of the
    /// bio: that one must be shipped first, and the record after it.
    Earlier(*mut HeldSlot),
    /// Another bio's.
    Taken,
}

/// Holds `record` in `slot` if it is empty. `other`: the bio's other slot
/// where the slot was empty, which may then hold an earlier submission
/// of it (held while this one was taken): the slot is let go again, so
/// that a bio is never held twice.
#[inline(always)]
fn try_slot(slot: *mut HeldSlot, record: &BioQueue, other: Option<*mut HeldSlot>) -> Tried {
    let bio = record.bio;
    let was = compare_exchange(
        unsafe { &raw mut (*slot).state },
        held_state::EMPTY,
        held_state::BUSY,
    );
    if was == held_state::EMPTY {
        if let Some(other) = other
            && state_of(other) == bio
        {
            publish(slot, held_state::EMPTY);
            return Tried::Earlier(other);
        }
        unsafe { (*slot).record = *record };
        publish(slot, bio);
        return Tried::Held;
    }
    if was == bio {
        return Tried::Earlier(slot);
    }
    Tried::Taken
}

/// Ships the earlier submission of `bio` held in `slot`, for a new
/// submission of it, unless someone claimed it first (a completion or
/// userspace: then they ship it).
#[inline(always)]
fn ship_if_claimed(cfg: &ProbeConfig, bio: u64, slot: *mut HeldSlot) {
    if claim(slot, bio) {
        ship_claimed(cfg, bio, slot, held_age_row::OUT_BY_SUBMISSION);
    }
}

/// A slot's state, read plainly (a claim decides).
#[inline(always)]
fn state_of(slot: *mut HeldSlot) -> u64 {
    unsafe { core::ptr::read_volatile(&raw const (*slot).state) }
}

/// For a submission while pairing is on: an earlier submission of the
/// same bio still held (a split remainder or a requeue submitted again,
/// or an entry a completion could not ship) is shipped first, so that it
/// is neither lost nor paired with a later life's completion. Returns
/// whether there was one.
#[inline(always)]
pub fn ship_earlier(cfg: &ProbeConfig, bio: u64) -> bool {
    if !pairing_on(cfg) {
        return false;
    }
    match held_slot(bio) {
        Some(slot) => {
            ship_if_claimed(cfg, bio, slot);
            true
        }
        None => false,
    }
}

/// The slot that holds `bio`'s submission, if one does (a plain read: a
/// claim decides).
#[inline(always)]
fn held_slot(bio: u64) -> Option<*mut HeldSlot> {
    for at in held_slots(bio) {
        let slot = HELD_SLOTS.get_ptr_mut(at)?;
        if state_of(slot) == bio {
            return Some(slot);
        }
    }
    None
}

/// Claims the slot that holds `bio`'s submission, if one does: the first
/// with a compare and exchange straight away (one fetch of its line, where
/// a read before would take two; a completion finds its bio there unless
/// that slot was taken when it was held), the second only if it holds it.
#[inline(always)]
fn claim_held(bio: u64) -> Option<*mut HeldSlot> {
    let [first, second] = held_slots(bio);
    let first = HELD_SLOTS.get_ptr_mut(first)?;
    if claim(first, bio) {
        return Some(first);
    }
    let second = HELD_SLOTS.get_ptr_mut(second)?;
    (state_of(second) == bio && claim(second, bio)).then_some(second)
}

/// Makes `slot` ours (`BUSY`) if its state is `expected`.
#[inline(always)]
fn claim(slot: *mut HeldSlot, expected: u64) -> bool {
    compare_exchange(
        unsafe { &raw mut (*slot).state },
        expected,
        held_state::BUSY,
    ) == expected
}

/// Hands a claimed `slot` on: `state` is the bio it now holds, or
/// `EMPTY`. The exchange is a full barrier: the record written or read
/// before it is done before anyone can claim the slot.
#[inline(always)]
fn publish(slot: *mut HeldSlot, state: u64) {
    exchange(unsafe { &raw mut (*slot).state }, state);
}

/// The request a completion covers, to check it against a held
/// submission: exactly that bio, at its sector.
#[derive(Clone, Copy)]
pub struct Covered {
    pub bytes: u32,
    pub sector: u64,
}

/// What a completion did with its bio's held submission.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Paired: neither record is shipped.
    Paired,
    /// The completion is shipped; a held submission of its first bio was
    /// shipped ahead of it (or was not held, or could not be shipped:
    /// then userspace ships it).
    Ship,
    /// As `Ship`, and it would have paired but its disk has shown no
    /// completion yet: once its record is in the ring, the caller marks
    /// the disk (`note_completion_shipped`). A record lost to a full ring
    /// leaves it unmarked, and a later completion is shipped in its place.
    ShipFirstOfDisk,
}

/// Pairs the completion of `bio` (of the request `covered`, if it is a
/// request's) on `gendisk` with its held submission, or ships that
/// submission ahead of the completion when a rule may need the two.
/// `row`: the calling hook's `held_age_row`.
#[inline(always)]
pub fn pair(
    cfg: &ProbeConfig,
    bio: u64,
    covered: Option<Covered>,
    error: bool,
    gendisk: u64,
    row: usize,
) -> Pairing {
    if !pairing_on(cfg) {
        return Pairing::Ship;
    }
    // Not held, or userspace claimed it first (then it ships the
    // submission, and the completion must follow).
    let Some(slot) = claim_held(bio) else {
        return Pairing::Ship;
    };
    let (submitter, queued_at, size, sector, stale) = unsafe {
        let h = &(*slot).record;
        (
            h.header.tid,
            h.header.ts_ns,
            h.size,
            h.sector,
            h.header._pad1,
        )
    };
    let whole = stale == 0 && covered.is_none_or(|c| c.bytes == size && c.sector == sector);
    let shipped = if !whole || error || submitter_watched(submitter, queued_at) {
        Some(Pairing::Ship)
    } else {
        match disk_state(gendisk) {
            DiskState::Paired => None,
            DiskState::Removed => Some(Pairing::Ship),
            DiskState::NoCompletionYet => Some(Pairing::ShipFirstOfDisk),
        }
    };
    if let Some(pairing) = shipped {
        ship_claimed(cfg, bio, slot, row);
        return pairing;
    }
    publish(slot, held_state::EMPTY);
    count_age(queued_at, row);
    tally(counter::BIOS_PAIRED);
    count_time(unsafe { bpf_ktime_get_ns() }.saturating_sub(queued_at));
    Pairing::Paired
}

/// Ships the record in `slot` (of `bio`, claimed by this program) now,
/// ahead of its completion, and empties the slot. Its task is not marked
/// named: this runs in the completion's context, not the task's. Where
/// the ring has no room it stays held, marked stale, and userspace ships
/// it once it is old or a completion names it: the bio may meanwhile be
/// reused, and its next completion must not be paired with this record.
#[inline(always)]
fn ship_claimed(cfg: &ProbeConfig, bio: u64, slot: *mut HeldSlot, row: usize) {
    const WORDS: usize = core::mem::size_of::<BioQueue>() / 8;
    let Some(mut entry) = reserve_uncounted::<BioQueue>() else {
        unsafe { (*slot).record.header._pad1 = 1 };
        publish(slot, bio);
        return;
    };
    let record = unsafe { &raw const (*slot).record };
    unsafe { words::copy::<WORDS>(entry.as_mut_ptr().cast(), record.cast()) };
    let queued_at = unsafe { (*entry.as_ptr()).header.ts_ns };
    publish(slot, held_state::EMPTY);
    count_age(queued_at, row);
    submit_unnamed(entry, cfg);
}

/// Whether `bio`'s submission is held (for a completion about to be
/// shipped: userspace takes it out and ships it first).
#[inline(always)]
pub fn is_held(bio: u64) -> bool {
    held_slot(bio).is_some()
}

/// Whether the submitter of a bio whose episode began at `started` (its
/// held submission started it) may still need the pair: it sleeps
/// uninterruptibly or owns on-stack frames, or it is still in that
/// episode. `EPISODE` alone does not say which episode: an asynchronous
/// submitter spends much of its time in its next `io_submit`, and its
/// episode mark tells that one apart from the bio's.
#[inline(always)]
fn submitter_watched(tid: u32, started: u64) -> bool {
    if tid == 0 {
        return false;
    }
    let (at, flags) = flags_of(tid);
    flags & SUBMITTER_WATCHED != 0
        || flags & flag::EPISODE != 0 && !episode_began_since(at, started)
}

/// What a completion must do for its disk's sake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DiskState {
    /// Its completions may pair.
    Paired,
    /// Its removal began: every completion is shipped.
    Removed,
    /// It has shown no completion yet: this one is shipped.
    NoCompletionYet,
}

#[inline(always)]
fn disk_state(gendisk: u64) -> DiskState {
    match unsafe { DISKS.get(gendisk) } {
        Some(bits) if bits & disk::REMOVED != 0 => DiskState::Removed,
        Some(_) => DiskState::Paired,
        None => DiskState::NoCompletionYet,
    }
}

/// Marks `gendisk` as having shown a completion (its record is in the
/// ring), unless its removal marked it first.
#[inline(always)]
pub fn note_completion_shipped(gendisk: u64) {
    const NOEXIST: u64 = aya_ebpf::bindings::BPF_NOEXIST as u64;
    let _ = DISKS.insert(gendisk, disk::COMPLETION_SHIPPED, NOEXIST);
}

/// Marks `gendisk` as being removed: its completions are shipped from
/// now on.
#[inline(always)]
pub fn note_removal(gendisk: u64) {
    let _ = DISKS.insert(gendisk, disk::COMPLETION_SHIPPED | disk::REMOVED, 0);
}

/// Counts an entry held, or taken out, in `row` (`held_age_row`) by the
/// slot of its submission time `queued_at` (`HELD_AGES`). Each program
/// counts in a row of its own, but a tracepoint program may nest in
/// itself (a submission from an interrupt over one from its task, where
/// the kernel does not refuse the nested run): the add is atomic, so that
/// a held entry is never missing from the counts.
#[inline(always)]
fn count_age(queued_at: u64, row: usize) {
    let Some(slots) = HELD_AGES.get_ptr_mut(0) else {
        return;
    };
    let at = row * HELD_AGE_SLOTS + held_age_slot(queued_at);
    if at < held_age_row::COUNT * HELD_AGE_SLOTS {
        atomic_add(unsafe { (*slots).as_mut_ptr().add(at) });
    }
}

/// Counts a paired bio's in-flight time into its bucket.
#[inline(always)]
fn count_time(ns: u64) {
    let Some(slots) = PAIRED_TIMES.get_ptr_mut(0) else {
        return;
    };
    let mut bucket = IO_BUCKET_NS.len();
    for (i, bound) in IO_BUCKET_NS.iter().enumerate() {
        if ns <= *bound {
            bucket = i;
            break;
        }
    }
    let at = 2 * bucket;
    if at + 1 < PAIRED_TIME_SLOTS {
        unsafe {
            (*slots)[at] += 1;
            (*slots)[at + 1] += ns;
        }
    }
}
