//! Which tasks a rule needs to hear about (`TASK_FLAGS`, `FRAMES`) and
//! which kernel stacks userspace knows of (`STACK_RANGE`).

use core::ptr::NonNull;

use detector_common::{ProbeConfig, counter};

use crate::{
    kernel::bump,
    maps::{FLAG_CHUNK, FRAMES, STACK_RANGE, TASK_FLAGS, flag},
};

/// Where a thread's flags byte lives, `None` beyond the array.
///
/// `NonNull`, so that `None` is the null pointer: with a separate tag,
/// LLVM leaves the pointer undefined in the `None` case and may still copy
/// it between registers, which the verifier refuses ("!read_ok").
pub type FlagsAt = Option<NonNull<u8>>;

/// The flags byte of thread `tid`, or `None` beyond the array (counted:
/// such a task is reported unfiltered).
#[inline(always)]
fn flags_ptr(tid: u32) -> FlagsAt {
    let Some(chunk) = TASK_FLAGS.get_ptr_mut(tid / FLAG_CHUNK as u32) else {
        bump(counter::TASKS_UNFILTERED);
        return None;
    };
    let at = unsafe {
        chunk
            .cast::<u8>()
            .add(2 * (tid as usize & (FLAG_CHUNK - 1)))
    };
    // A map value's address is never null.
    Some(unsafe { NonNull::new_unchecked(at) })
}

/// The flags of `tid` (all of them for a thread beyond the array) and
/// where they live.
#[inline(always)]
pub fn flags_of(tid: u32) -> (FlagsAt, u8) {
    match flags_ptr(tid) {
        Some(p) => (Some(p), unsafe { *p.as_ptr() }),
        None => (None, flag::UNKNOWN),
    }
}

/// Writes `new` over `old` at `at`; no store when nothing changed (the
/// byte's cache line is shared with 31 other threads' flags).
#[inline(always)]
pub fn set_flags(at: FlagsAt, old: u8, new: u8) {
    if let Some(p) = at
        && new != old
    {
        unsafe { *p.as_ptr() = new };
    }
}

/// The byte kept of an episode's start time (next to the flags byte):
/// the time in units of 1.024 µs, modulo 256. What pairing relies on:
/// a thread's mark is that of its latest episode start, which is the held
/// bio's own start (written before the bio went to the driver) or a later
/// one, and a later one is written only by a submission that found
/// `EPISODE` clear, after the thread returned to user space (or exited,
/// and its id was reused). So a mark other than the held start's proves
/// the bio's episode over; an equal one proves nothing (the same episode,
/// or a later one within a 1.024 µs unit of a multiple of 262 µs after).
#[inline(always)]
pub fn episode_mark(ts: u64) -> u8 {
    (ts >> 10) as u8
}

/// Notes, for the thread whose flags are at `at`, that a submission at
/// `ts` started an episode if its flags before it (`old`) had `EPISODE`
/// clear. Without a branch on `old`: a fork there, with the header's
/// `EPISODE_START` differing between its arms, doubled the states the
/// verifier walks through the rest of the submission program, and took
/// its fentry version on 6.1 past the million instructions. One byte
/// store: a reader on another CPU sees the old mark or the new one.
#[inline(always)]
pub fn note_episode(at: FlagsAt, old: u8, ts: u64) {
    let Some(p) = at else { return };
    let mark_at = mark_of(p.as_ptr());
    // 0xff when this submission starts an episode, else 0; kept from
    // LLVM, which would turn the masking below into a select (a branch).
    let starts = core::hint::black_box((old & flag::EPISODE).wrapping_sub(1));
    let kept = unsafe { core::ptr::read_volatile(mark_at) };
    let mark = kept ^ ((kept ^ episode_mark(ts)) & starts);
    if mark != kept {
        unsafe { core::ptr::write_volatile(mark_at, mark) };
    }
}

/// Whether the thread whose flags are at `at` began an episode after the
/// one that started at `started`: then it returned to user space since
/// (see `episode_mark`). False when it cannot tell (same mark, or a
/// thread beyond the array): the caller then takes the episode as going
/// on. A lost `EPISODE` set (see `TASK_FLAGS`) makes the thread's next
/// submission start an episode, and its mark, inside the same syscall:
/// like a lost set before, that costs events (fewer findings, never a
/// false one).
#[inline(always)]
pub fn episode_began_since(at: FlagsAt, started: u64) -> bool {
    at.is_some_and(|p| {
        let mark = unsafe { core::ptr::read_volatile(mark_of(p.as_ptr())) };
        mark != episode_mark(started)
    })
}

/// Where the episode mark of the thread whose flags are at `flags_at`
/// lives: the byte after them, in their cache line. A completion on
/// another CPU reads both, and each line it reads was last written by the
/// submitter's CPU: a miss each (some 60 ns here).
#[inline(always)]
fn mark_of(flags_at: *mut u8) -> *mut u8 {
    unsafe { flags_at.add(1) }
}

/// Sets `bits` in `tid`'s flags.
#[inline(always)]
pub fn add_flags(tid: u32, bits: u8) {
    if tid == 0 {
        return;
    }
    let (at, old) = flags_of(tid);
    set_flags(at, old, old | bits);
}

/// Marks the current task `tid` as owning an on-stack completion (or
/// `bi_private`) at `addr`: its next return to user space is reported, and
/// its switches until it is seen above `addr`.
#[inline(always)]
pub fn note_onstack(tid: u32, addr: u64) {
    if tid == 0 {
        return;
    }
    add_flags(tid, flag::ONSTACK | flag::FRAMES);
    match FRAMES.get_ptr_mut(tid) {
        Some(top) => unsafe {
            if *top < addr {
                *top = addr;
            }
        },
        None => {
            if FRAMES.insert(tid, addr, 0).is_err() {
                bump(counter::FRAMES_FULL);
            }
        }
    }
}

/// Whether a task with `FRAMES`, its stack pointer at `sp`, is above
/// every frame it was marked for (false when unknown: the map was full).
#[inline(always)]
pub fn above_frames(tid: u32, sp: u64) -> bool {
    sp != 0 && unsafe { FRAMES.get(tid) }.is_some_and(|&top| sp > top)
}

/// Forgets where `tid`'s on-stack frames were.
#[inline(always)]
pub fn forget_frames(tid: u32) {
    let _ = FRAMES.remove(tid);
}

/// Keeps `STACK_RANGE` covering a stack userspace hears of. Two CPUs
/// widening it at once may lose one update: `complete()`s on that stack
/// then go unreported (fewer findings, never a false one).
#[inline(always)]
pub fn widen_stack_range(base: u64) {
    if base == 0 {
        return;
    }
    let Some(range) = STACK_RANGE.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        let [lo, hi] = *range;
        if lo == 0 || base < lo {
            (*range)[0] = base;
        }
        if base > hi {
            (*range)[1] = base;
        }
    }
}

/// Whether `addr` may lie in a kernel stack userspace knows of.
#[inline(always)]
pub fn in_stack_range(cfg: &ProbeConfig, addr: u64) -> bool {
    STACK_RANGE.get(0).is_some_and(|&[lo, hi]| {
        lo != 0 && addr >= lo && addr < hi.saturating_add(cfg.thread_size as u64)
    })
}
