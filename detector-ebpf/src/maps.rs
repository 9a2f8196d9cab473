//! The maps shared by all programs. Userspace finds them by these names.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
};
use detector_common::{ProbeConfig, counter};

use crate::kernel::bump;

/// Every event, in one ring buffer so that userspace sees a single order per
/// CPU. Userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Kernel stacks quoted by events (`Header::stack_id`). Ids are stable: no
/// `BPF_F_REUSE_STACKID`, so a full bucket loses the new stack instead of
/// silently changing what an older id means.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// Per-CPU event counters, indexed by `detector_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The running kernel's field offsets, written by userspace (index 0).
#[map]
pub static CONFIG: Array<ProbeConfig> = Array::with_max_entries(1, 0);

// The per-task maps below are plain hash maps, not LRU maps: an LRU map
// silently evicts an entry some later event depends on (a sleeper whose
// wakeup then goes unreported reads as a lost wakeup). A plain map refuses
// the insert instead, and the refusal is counted and becomes a loss marker.
// Entries of tasks that exited without their removal being seen are pruned
// by userspace. Userspace may resize these before load.

/// Tasks whose syscall boundaries are worth an event, with `watch` flags:
/// they submitted I/O or own a completion on their stack. Keeps `sys_exit`
/// and `sys_enter` cheap: one lookup per syscall, an event only for these.
#[map]
pub static WATCHED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// `WATCHED` flags.
pub mod watch {
    /// Report the next return to user space.
    pub const EXIT: u8 = 1;
    /// It owns a completion on its stack: after its return, report its
    /// next syscall entry too, so that userspace knows it is in user space
    /// in between (an interrupt then runs on its kernel stack).
    pub const ONSTACK: u8 = 2;
    /// Its return was reported with `ONSTACK`: report its next entry.
    pub const IN_USER: u8 = 4;
}

/// Sets `flags` in `tid`'s `WATCHED` entry (one lookup when already set).
#[inline(always)]
pub fn watch_task(tid: u32, flags: u8) {
    match WATCHED.get_ptr_mut(tid) {
        Some(old) => unsafe {
            if *old & flags != flags {
                *old |= flags;
            }
        },
        None => insert_or_count(&WATCHED, tid, flags, counter::WATCHED_FULL),
    }
}

/// Tasks last seen going to sleep uninterruptibly; only their wakeups are
/// reported, which is what the lost-wakeup rule needs, at a fraction of the
/// cost of reporting every wakeup on the host.
#[map]
pub static SLEEPERS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

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

/// Inserts into a per-task map; a full map counts in `full` (a loss).
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
