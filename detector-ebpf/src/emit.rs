//! Filling the common header and handing records to the ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::RingBuf,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_ringbuf_query,
    },
    maps::ring_buf::RingBufEntry,
};
use core::ffi::c_void;
use detector_common::{
    Header, NO_STACK, ProbeConfig, STACK_OVER_BUDGET,
    config::{ring_record_bytes, wakes_reader},
    counter, header_flag,
};

use crate::{
    context::Hooked,
    kernel::{bump, current_stack, on_stack},
    maps::{EVENTS, RING_TEMPLATE_BYTES, STACK_BUDGET, flag},
    tasks::{add_flags, flags_of, widen_stack_range},
    words,
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
    header_on(ctx, cfg, kind, stack, current_stack(cfg))
}

/// [`header`] for a caller that already read `current_stack()`.
#[inline(always)]
pub fn header_on<C: Hooked>(
    ctx: &C,
    cfg: &ProbeConfig,
    kind: u16,
    stack: Stack,
    stack_base: u64,
) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    // Userspace learns this stack from the record: a `complete()` on it
    // may matter from now on.
    widen_stack_range(stack_base);
    let named = is_named(cfg, pid_tgid as u32);
    Header {
        kind,
        hook: C::HOOK,
        flags: if named { header_flag::COMM_OMITTED } else { 0 },
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        stack_base,
        sp: ctx.sp(),
        stack_id: match stack {
            Stack::Take if stack_allowed(cfg, ts_ns) => ctx.stack_id(),
            Stack::Take => {
                bump(counter::STACKS_OVER_BUDGET);
                STACK_OVER_BUDGET
            }
            Stack::Skip => NO_STACK,
        },
        _pad1: 0,
        comm: if named {
            words::no_comm()
        } else {
            words::current_comm()
        },
    }
}

/// Whether `tid`'s name went out already (`flag::NAMED`): the helper call
/// that copies it costs 20-70 ns, a tenth of a bio hook. The idle task
/// (tid 0 on every CPU, each with its own name) is always named.
#[inline(always)]
fn is_named(cfg: &ProbeConfig, tid: u32) -> bool {
    cfg.names_once != 0 && tid != 0 && flags_of(tid).1 & flag::NAMED != 0
}

/// Whether this CPU may walk a stack at `now` (the record's time: one
/// clock read serves both): a token bucket refilled at `stack_budget` per
/// second, holding at most a tenth of a second's worth.
#[inline(always)]
fn stack_allowed(cfg: &ProbeConfig, now: u64) -> bool {
    let rate = cfg.stack_budget as u64;
    if rate == 0 {
        return true;
    }
    let Some(bucket) = STACK_BUDGET.get_ptr_mut(0) else {
        return true;
    };
    // Millitokens: one token is 1000, so slow rates still refill smoothly.
    let cap = rate * 100;
    unsafe {
        let [tokens, last] = *bucket;
        let refill = (now.saturating_sub(last) / 1000) * rate / 1000;
        // The refill clock only advances by time actually converted into
        // tokens, so calls closer together than the rounding still refill.
        let (tokens, last) = match (last, refill) {
            (0, _) => (cap, now),
            (_, 0) => (tokens, last),
            _ => ((tokens + refill).min(cap), now),
        };
        let allowed = tokens >= 1000;
        *bucket = [if allowed { tokens - 1000 } else { tokens }, last];
        allowed
    }
}

/// Reserves a record in this CPU's ring; a full ring (or none: never
/// once userspace has put them in place) loses it and counts the loss.
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = reserve_uncounted();
    if entry.is_none() {
        bump(counter::DROPPED);
    }
    entry
}

/// [`reserve`] for a record that is not lost if it finds no room (a held
/// submission stays held, and is shipped later).
#[inline(always)]
pub fn reserve_uncounted<T: 'static>() -> Option<RingBufEntry<T>> {
    this_cpu_ring().and_then(|ring| ring.reserve_untyped::<T>(0))
}

/// The ring of the CPU this program runs on (it cannot migrate while it
/// runs, so every lookup in one run finds the same ring).
#[inline(always)]
fn this_cpu_ring() -> Option<&'static RingBuf<u8, RING_TEMPLATE_BYTES>> {
    EVENTS.get(unsafe { bpf_get_smp_processor_id() })
}

/// Publishes a record (every record starts with its `Header`), waking the
/// reader when the data waiting in this CPU's ring passes a multiple of
/// the threshold (`detector_common::config::wakes_reader`).
/// A record that carries its task's name marks the task `NAMED`, so its
/// later records leave the name out; marked only now, after the record
/// has its place in this CPU's ring, so that no record without the name
/// can be placed before it there (a program interrupting this one on the
/// CPU sees the task unnamed until here, and sends the name again). On
/// other CPUs' rings the reader's merge by time keeps the order.
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>, cfg: &ProbeConfig) {
    note_named(cfg, unsafe { &*entry.as_ptr().cast::<Header>() });
    submit_unnamed(entry, cfg);
}

/// Marks the task of `header` `NAMED` unless it is already: if it is not,
/// the record just placed carried its name. Decided from the flags rather
/// than from the header's `COMM_OMITTED`, which would make the verifier
/// follow the named and unnamed paths through the whole hook apart. For a
/// hook that submits several records with one header: once, after the
/// first is placed (a branch per record in a loop multiplies the
/// verifier's paths).
///
/// Only a record made in the task's own context (`sp` on its stack) marks
/// it. An interrupt can arrive while the task renames itself, between the
/// `task_rename` tracepoint (which clears `NAMED`) and the copy of the new
/// name: a record of the interrupt then carries the old name, and had it
/// marked the task, every later record would have left the new name out.
#[inline(always)]
pub fn note_named(cfg: &ProbeConfig, header: &Header) {
    if cfg.names_once != 0 && in_task_context(cfg, header) {
        add_flags(header.tid, flag::NAMED);
    }
}

/// Whether the record of `header` was made in its task's own context: the
/// hook's stack pointer on the task's stack, not an interrupt's.
#[inline(always)]
pub fn in_task_context(cfg: &ProbeConfig, header: &Header) -> bool {
    on_stack(cfg, header.stack_base, header.sp)
}

/// [`submit`] without marking the task named: for a task's last record
/// (its exit: its thread id is free for a new task, which must send its
/// own name), and in loops, followed by [`note_named`].
#[inline(always)]
pub fn submit_unnamed<T: 'static>(entry: RingBufEntry<T>, cfg: &ProbeConfig) {
    let waiting = this_cpu_ring().map_or(0, |ring| unsafe {
        bpf_ringbuf_query(ring as *const _ as *mut c_void, BPF_RB_AVAIL_DATA as u64)
    });
    let record = ring_record_bytes(core::mem::size_of::<T>());
    let flags = if wakes_reader(waiting, record, cfg.wakeup_threshold) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
