//! Filling the common header and handing records to the ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    maps::ring_buf::RingBufEntry,
};
use detector_common::{Header, ProbeConfig, counter};

use crate::{
    context::Hooked,
    kernel::{bump, current_task, read},
    maps::EVENTS,
};

/// Whether the record quotes the kernel stack it was taken on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Take,
    Skip,
}

/// The header for a record of `kind` about `current`.
#[inline(always)]
pub fn header<C: Hooked>(ctx: &C, cfg: &ProbeConfig, kind: u16, stack: Stack) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = current_task();
    Header {
        kind,
        hook: C::HOOK,
        _pad0: 0,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        stack_base: read(task, cfg.task.stack),
        sp: ctx.sp(),
        stack_id: match stack {
            Stack::Take => ctx.stack_id(),
            Stack::Skip => -1,
        },
        _pad1: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// Reserves a record; a full buffer loses it and counts the loss.
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        bump(counter::DROPPED);
    }
    entry
}

/// Publishes a record, waking the reader only once enough data waits: a
/// wakeup per event costs the traced I/O a third of its speed, and the
/// reader drains on a short timer anyway.
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>, cfg: &ProbeConfig) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
