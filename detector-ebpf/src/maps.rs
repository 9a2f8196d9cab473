//! The maps shared by all programs. Userspace finds them by these names.

use aya_ebpf::{
    btf_maps::{ArrayOfMaps, RingBuf},
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray, StackTrace},
};
use detector_common::{
    HeldSlot, ProbeConfig,
    config::{HELD_AGE_SLOTS, HELD_SLOTS as HELD_SLOT_COUNT, PAIRED_TIME_SLOTS, held_age_row},
    counter,
};

use crate::kernel::bump;

/// Every event, in a ring buffer per CPU (indexed by CPU id), which
/// userspace creates at the size it was asked for and puts here before
/// any program is attached; the entry count is set to the CPU count
/// before load. One ring shared by all CPUs cost each record some 250 ns:
/// its lock, producer position and record headers bounced between the
/// CPUs on every reserve. A CPU's events stay in order in its ring; the
/// engine merges the CPUs by time, as it always did.
#[btf_map]
pub static EVENTS: ArrayOfMaps<RingBuf<u8, RING_TEMPLATE_BYTES>, 1> = ArrayOfMaps::new();

/// The size in the inner-map template: the kernel does not compare ring
/// sizes when a ring is put into `EVENTS` (5.10+), so this only has to be
/// valid on every page size (64 KiB: a power of two, and a multiple of
/// 4, 16 and 64 KiB pages).
pub const RING_TEMPLATE_BYTES: usize = 64 << 10;

/// Kernel stacks quoted by events (`Header::stack_id`). Ids are stable: no
/// `BPF_F_REUSE_STACKID`, so a full bucket loses the new stack instead of
/// silently changing what an older id means.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// Per-CPU event counters, indexed by `detector_common::counter`, in one
/// entry: the reader takes them all with one syscall every drain.
#[map]
pub static COUNTERS: PerCpuArray<counter::Slots> = PerCpuArray::with_max_entries(1, 0);

/// The running kernel's field offsets, written by userspace (index 0).
#[map]
pub static CONFIG: Array<ProbeConfig> = Array::with_max_entries(1, 0);

/// Threads per `TASK_FLAGS` entry.
pub const FLAG_CHUNK: usize = 4096;

/// What each thread's events are needed for, one byte per thread id (see
/// [`flag`]), set and cleared by the programs themselves as the task
/// submits I/O, takes an on-stack completion, enters a completion handler,
/// sleeps and returns to user space. Hooks that fire for every task
/// (`sys_exit`, `sys_enter`, `sched_switch`, wakeups) read it first and
/// report nothing about a task no rule needs to hear about: those events
/// are left out by design, not lost.
///
/// An array indexed by thread id, not a hash map: a lookup is an address
/// computation, and it is never full, so nothing is ever refused (a
/// refused insert would be a loss). It covers thread ids below 4M (the
/// kernel's `PID_MAX_LIMIT`); a thread beyond (none on Linux today) is
/// reported unfiltered. A thread's byte is written from its own context
/// (or by an interrupt over it) except `SLEEPING`, which its waker clears.
/// Racing writers may lose a bit: a lost set costs events a rule wanted
/// (fewer findings, never a false one), a lost clear costs extra events.
///
/// Each thread's flags byte is followed by its episode mark (a thread's
/// two bytes at twice its index in the entry): when its current episode
/// began (`tasks::episode_mark` of the time stamp of the submission that
/// started it, written by that submission). A completion whose submitter
/// is in an episode (`flag::EPISODE`) reads it to tell whether that is
/// still the episode of the bio it completes (see `pairing`). In the same
/// entry as the flags, a mark costs no lookup of its own (a second map's
/// lookup and null check in `note_submitter` took the fentry submission
/// program on 6.1 past the verifier's million instructions), and next to
/// them no cache line of its own.
#[map]
pub static TASK_FLAGS: Array<[u8; 2 * FLAG_CHUNK]> = Array::with_max_entries(1024, 0);

/// `TASK_FLAGS` bits.
pub mod flag {
    /// It submitted I/O in task context since it last returned to user
    /// space (a kernel thread: since its last idle sleep, see
    /// `probes::sched`): its uninterruptible sleeps may be waits for that
    /// I/O (lost-wakeup). Its return is not reported for this; while the bit
    /// is clear, its submissions carry `EPISODE_START` and its reported
    /// switches `EPISODE_OVER`, which end the engine's episode instead.
    pub const EPISODE: u8 = 0x01;
    /// It owns a completion (or a bio's `bi_private`) on its stack: report
    /// its next return to user space, which proves every frame left, and
    /// then its next syscall entry (until then an interrupt runs on its
    /// kernel stack); its switches say where its stack is (onstack).
    pub const ONSTACK: u8 = 0x02;
    /// Its return was reported with `ONSTACK`: report its next entry.
    pub const IN_USER: u8 = 0x04;
    /// It may still be inside the frame of an on-stack completion (below
    /// the address kept in `FRAMES`): every switch says where its stack is.
    pub const FRAMES: u8 = 0x08;
    /// Seen going to sleep uninterruptibly while it had `EPISODE` or
    /// `ONSTACK` (not the idle sleep that ends a kernel thread's episode):
    /// its wakeup is reported.
    pub const SLEEPING: u8 = 0x10;
    /// Open `bio_endio` calls (two bits). At 3 it sticks until the task
    /// returns to user space: counting down from a saturated count would
    /// clear it inside a call.
    pub const HANDLER_ONE: u8 = 0x20;
    pub const HANDLER_MASK: u8 = 0x60;
    /// A record of it carried its name since it last exited or was
    /// renamed: its records leave `comm` out (`ProbeConfig::names_once`).
    pub const NAMED: u8 = 0x80;
    /// What makes an uninterruptible sleep worth a report.
    pub const SLEEP_WATCHED: u8 = EPISODE | ONSTACK;
    /// The value used for a thread beyond the array: everything reported.
    pub const UNKNOWN: u8 = EPISODE | ONSTACK | IN_USER | FRAMES | SLEEPING | HANDLER_MASK;
}

/// For tasks with `flag::FRAMES`: the highest address of an on-stack
/// completion (or on-stack `bi_private`) it used. Once it is seen with its
/// stack pointer above that, every such frame is gone and its switches are
/// of no interest again. A full map keeps the flag until the task returns
/// to user space (counted in `FRAMES_FULL`: costs events, loses none).
/// Entries of tasks that exited unseen are pruned by userspace.
#[map]
pub static FRAMES: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// The lowest and highest kernel stack base the programs reported so far
/// (in any record's header or as a switch's next task): a completion
/// outside `[lowest, highest + THREAD_SIZE)` lies on no stack userspace
/// knows, and no rule can use its `complete()`.
#[map]
pub static STACK_RANGE: Array<[u64; 2]> = Array::with_max_entries(1, 0);

/// Entry arguments kept for return probes that cannot see them (kretprobe),
/// keyed by thread id and hook. Every entry hook stores them, whatever the
/// mechanism, because the exit may have fallen back to a kretprobe while the
/// entry got fentry; every exit removes them.
#[map]
pub static ENTRY_ARGS: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

/// md superblock writes in flight: bio -> the sector `md_super_write` was
/// asked to write. By the time `super_written` runs the bio's own sector
/// has been remapped to the whole disk and advanced past the data.
#[map]
pub static MD_WRITES: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

/// Submissions held back by `pairing` (`ProbeConfig::pair_bios`), each in
/// one of its bio's two slots (`detector_common::config::held_slots`): the
/// completion that finds its bio here takes it out and ships neither
/// record when nothing about the I/O can matter to a rule. A table
/// rather than a hash map: a hash map's insert and delete take a bucket
/// lock and a per-CPU free list, some 200 ns each here, more than the
/// budget of a whole bio hook; a slot is claimed with one compare and
/// exchange. The reader maps it (`BPF_F_MMAPABLE`), ships what stays
/// longer than its age limit and what a completion flagged
/// `SUBMISSIONS_HELD` names, claiming a slot the same way: whoever claims
/// a record owns it, so a submission is shipped once or not at all.
#[map]
pub static HELD_SLOTS: Array<HeldSlot> =
    Array::with_max_entries(HELD_SLOT_COUNT, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// `HELD_SLOTS` entries by the slot of their submission time
/// (`detector_common::config::held_age_slot`), per CPU, in a row per
/// program (`held_age_row`): those held, and those each program took out
/// again. Summed with what it took itself, the reader knows whether any
/// entry may be old without looking through the map.
#[map]
pub static HELD_AGES: PerCpuArray<[u64; held_age_row::COUNT * HELD_AGE_SLOTS]> =
    PerCpuArray::with_max_entries(1, 0);

/// What the programs learned of each disk (by `struct gendisk` address):
/// bits of [`disk`]. A disk's first completion, and every one after its
/// removal began, is shipped whole: the rules judge lost I/O only on disks that
/// showed a completion, and completions after `del_gendisk`.
#[map]
pub static DISKS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// `DISKS` bits.
pub mod disk {
    /// A completion of this disk was shipped.
    pub const COMPLETION_SHIPPED: u32 = 0x1;
    /// `del_gendisk` ran for it (a disk allocated again at the same
    /// address keeps it: its completions are all shipped).
    pub const REMOVED: u32 = 0x2;
}

/// The in-flight times of paired bios, per CPU: a count and a sum of ns
/// per bucket of `detector_common::config::IO_BUCKET_NS`, for the
/// exported histogram (the bios themselves never reach userspace).
#[map]
pub static PAIRED_TIMES: PerCpuArray<[u64; PAIRED_TIME_SLOTS]> =
    PerCpuArray::with_max_entries(1, 0);

/// Inserts into a map whose refusal loses what an event needs: a full map
/// counts in `full` (a loss).
#[inline(always)]
pub fn insert_or_count<K, V>(map: &HashMap<K, V>, key: K, value: V, full: u32) {
    if map.insert(key, value, 0).is_err() {
        bump(full);
        if crate::diag::may_log(crate::diag::site::MAP_FULL) {
            // The macro ignores its context argument.
            aya_log_ebpf::warn!(
                &(),
                "a per-task map is full (counter {}): the events it serves are lost until it drains",
                full
            );
        }
    }
}

/// When each diagnostic site last logged, per CPU (`diag::site`).
#[map]
pub static DIAG_LAST: PerCpuArray<u64> = PerCpuArray::with_max_entries(crate::diag::site::COUNT, 0);

/// Per-CPU token bucket for stack walks: (tokens in millitokens, last refill
/// time in ns). See `ProbeConfig::stack_budget`.
#[map]
pub static STACK_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the structs a hook copies in one read (`Copied`), one
/// entry per hook that does so: programs nest on a CPU (a completion
/// interrupt inside a submission) but a program does not nest in itself.
/// Rooms start at words 0 (a bio), 32 and 64, each 256 bytes from the
/// entry's end at least, the most a copy's masked size may reach. A map
/// value rather than the stack: copies there, with the header and the
/// record, overran the 512-byte stack.
#[map]
pub static REGIONS: PerCpuArray<[u64; 96]> = PerCpuArray::with_max_entries(scratch::COUNT, 0);

/// `REGIONS` entries.
pub mod scratch {
    pub const BIO_QUEUE: u32 = 0;
    pub const RQ_COMPLETE: u32 = 1;
    pub const BIO_COMPLETE: u32 = 2;
    pub const BIO_ENDIO: u32 = 3;
    pub const COUNT: u32 = 4;
}
