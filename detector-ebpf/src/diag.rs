//! Rare diagnostics for userspace's log, through aya-log: something the
//! programs could not do that the counters alone do not explain. Each site
//! logs at most once per second per CPU, so a condition that holds for
//! every event costs one line a second, never a line per event.

use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::maps::DIAG_LAST;

/// Log sites (indexes of `DIAG_LAST`).
pub mod site {
    /// `bio_endio` followed `MAX_CHAIN` chained parents and stopped.
    pub const CHAIN_CUT: u32 = 0;
    /// A request's bio walk stopped at `RQ_MAX_BIOS`.
    pub const RQ_WALK_CUT: u32 = 1;
    /// A per-task map was full: an insert failed.
    pub const MAP_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
}

const INTERVAL_NS: u64 = 1_000_000_000;

/// Whether `site` may log now on this CPU (and, if so, it counts as done).
#[inline(always)]
pub fn may_log(site: u32) -> bool {
    let Some(last) = DIAG_LAST.get_ptr_mut(site) else {
        return false;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // Per-CPU slot: only this CPU's programs touch it.
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < INTERVAL_NS {
            return false;
        }
        *last = now;
    }
    true
}
