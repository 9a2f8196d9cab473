//! `struct completion`: who completes it, who waits on it, who (re)creates it.
//!
//! None of these functions has a tracepoint: they need fentry/fexit or
//! kprobes. Each record says whether the completion lies on the calling
//! task's own kernel stack (`DECLARE_COMPLETION_ONSTACK` and friends), which
//! is what makes a late `complete()` a write into a dead frame.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use detector_common::{CompletionEvent, ProbeConfig, counter, hook, kind, wait};

use super::done;
use crate::{
    context::Hooked,
    emit::{Stack, header_on, reserve, submit},
    kernel::{config, current_stack, on_stack, read},
    maps::{ENTRY_ARGS, insert_or_count},
    tasks::{in_stack_range, note_onstack},
};

/// `ENTRY_ARGS` slot for waits (they do not nest within one task).
const SLOT_WAIT: u64 = 1;

#[inline(always)]
fn entry_key(tid: u32, slot: u64) -> u64 {
    ((tid as u64) << 8) | slot
}

/// Whether a record about `x` may matter to a rule: the onstack rule only
/// follows completions that lie in a kernel stack. A wait matters when `x`
/// is in the waiter's own stack (the owner waiting); a `complete()` or an
/// init also when `x` is in some other stack userspace knows of. The rest
/// (completions in the heap or in static data, the vast majority) is left
/// out by design.
#[inline(always)]
fn wanted(cfg: &ProbeConfig, kind: u16, x: u64, own: bool) -> bool {
    own || cfg.full != 0
        || (kind != kind::WAIT_ENTER && kind != kind::WAIT_EXIT && in_stack_range(cfg, x))
}

/// Emits a completion record about `x` if a rule may need it. `value` is
/// the timeout or the return value, depending on `kind`.
#[inline(always)]
fn emit<C: Hooked>(ctx: &C, kind: u16, x: u64, variant: u8, value: i64) -> Option<()> {
    let cfg = config()?;
    let stack_base = current_stack(cfg);
    let own = on_stack(cfg, stack_base, x);
    if !wanted(cfg, kind, x, own) {
        return None;
    }
    let header = header_on(ctx, cfg, kind, Stack::Take, stack_base);
    if own {
        // The owner's return to user space proves it left the frame, and
        // until it enters the kernel again, code on its stack is an
        // interrupt's; until it is seen above x, where it is matters.
        note_onstack(header.tid, x);
    }
    let mut entry = reserve::<CompletionEvent>()?;
    unsafe {
        entry.as_mut_ptr().write(CompletionEvent {
            header,
            x,
            value,
            done: read(x, cfg.completion_done),
            variant,
            on_own_stack: own as u8,
            _pad: 0,
        })
    };
    submit(entry, cfg);
    Some(())
}

/// `void complete(struct completion *x)` (checked on 6.1 and 6.18).
#[fentry(function = "complete")]
pub fn enter_complete(ctx: FEntryContext) -> u32 {
    done(emit(&ctx, kind::COMPLETE, ctx.arg_u64(0), 0, 0))
}

#[kprobe]
pub fn kprobe_complete(ctx: ProbeContext) -> u32 {
    done(emit(&ctx, kind::COMPLETE, ctx.arg_u64(0), 0, 0))
}

/// `void complete_all(struct completion *x)`.
#[fentry(function = "complete_all")]
pub fn enter_complete_all(ctx: FEntryContext) -> u32 {
    done(emit(&ctx, kind::COMPLETE_ALL, ctx.arg_u64(0), 0, 0))
}

#[kprobe]
pub fn kprobe_complete_all(ctx: ProbeContext) -> u32 {
    done(emit(&ctx, kind::COMPLETE_ALL, ctx.arg_u64(0), 0, 0))
}

/// `void __init_swait_queue_head(struct swait_queue_head *q, const char
/// *name, struct lock_class_key *key)`: the out-of-line part of
/// `init_completion(x)`, called with `&x->wait`. Other swait queues pass
/// through here too; userspace only cares about addresses it otherwise sees
/// used as completions.
#[fentry(function = "__init_swait_queue_head")]
pub fn enter_init_swait_queue_head(ctx: FEntryContext) -> u32 {
    done(try_init(&ctx))
}

#[kprobe]
pub fn kprobe_init_swait_queue_head(ctx: ProbeContext) -> u32 {
    done(try_init(&ctx))
}

#[inline(always)]
fn try_init<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let q = ctx.arg_u64(0);
    if cfg.completion_wait == detector_common::config::NO_OFFSET {
        return None;
    }
    emit(
        ctx,
        kind::COMPLETION_INIT,
        q - cfg.completion_wait as u64,
        0,
        0,
    )
}

#[inline(always)]
fn try_wait_enter<C: Hooked>(ctx: &C, variant: u8, timed: bool) -> Option<()> {
    let cfg = config()?;
    let x = ctx.arg_u64(0);
    if !wanted(
        cfg,
        kind::WAIT_ENTER,
        x,
        on_stack(cfg, current_stack(cfg), x),
    ) {
        return None;
    }
    // Kept for a kretprobe exit, which cannot see x; only for the waits
    // that are reported (without an entry, the exit is not reported).
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    insert_or_count(
        &ENTRY_ARGS,
        entry_key(tid, SLOT_WAIT),
        x,
        counter::ARGS_FULL,
    );
    if variant == wait::TRY || variant == wait::DONE {
        // These never sleep: their exit says it all.
        return Some(());
    }
    let timeout = if timed { ctx.arg_u64(1) as i64 } else { 0 };
    emit(ctx, kind::WAIT_ENTER, x, variant, timeout)
}

#[inline(always)]
fn try_wait_exit<C: Hooked>(ctx: &C, variant: u8, nargs: usize) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let key = entry_key(tid, SLOT_WAIT);
    let x = if C::HOOK == hook::KRETPROBE {
        // Only waits that were wanted at entry left their argument.
        let stored = unsafe { ENTRY_ARGS.get(key) }.copied();
        let _ = ENTRY_ARGS.remove(key);
        stored?
    } else {
        let cfg = config()?;
        let x = ctx.arg_u64(0);
        if !wanted(
            cfg,
            kind::WAIT_EXIT,
            x,
            on_stack(cfg, current_stack(cfg), x),
        ) {
            return None;
        }
        let _ = ENTRY_ARGS.remove(key);
        x
    };
    // `bool`, `int` and `long` returns all sit in the low bits of the word;
    // the two `void` waits have no return slot at all.
    let raw = match variant {
        wait::PLAIN | wait::IO => 0,
        _ => ctx.ret_u64(nargs),
    };
    let value = match variant {
        wait::TRY | wait::DONE => (raw as u8 != 0) as i64,
        wait::INTERRUPTIBLE | wait::KILLABLE | wait::STATE => raw as i32 as i64,
        _ => raw as i64,
    };
    emit(ctx, kind::WAIT_EXIT, x, variant, value)
}

/// Entry and exit programs for one `wait_for_completion*` variant, for both
/// fentry/fexit and kprobe/kretprobe.
macro_rules! wait_hooks {
    ($sym:tt, $variant:expr, $nargs:expr, $timed:expr,
     $enter:ident, $exit:ident, $kprobe:ident, $kretprobe:ident) => {
        #[fentry(function = $sym)]
        pub fn $enter(ctx: FEntryContext) -> u32 {
            done(try_wait_enter(&ctx, $variant, $timed))
        }

        #[fexit(function = $sym)]
        pub fn $exit(ctx: FExitContext) -> u32 {
            done(try_wait_exit(&ctx, $variant, $nargs))
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            done(try_wait_enter(&ctx, $variant, $timed))
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            done(try_wait_exit(&ctx, $variant, $nargs))
        }
    };
}

// void wait_for_completion(struct completion *x)
wait_hooks!(
    "wait_for_completion",
    wait::PLAIN,
    1,
    false,
    enter_wait_for_completion,
    exit_wait_for_completion,
    kprobe_wait_for_completion,
    kretprobe_wait_for_completion
);
// void wait_for_completion_io(struct completion *x)
wait_hooks!(
    "wait_for_completion_io",
    wait::IO,
    1,
    false,
    enter_wait_for_completion_io,
    exit_wait_for_completion_io,
    kprobe_wait_for_completion_io,
    kretprobe_wait_for_completion_io
);
// unsigned long wait_for_completion_timeout(struct completion *x,
//                                           unsigned long timeout)
wait_hooks!(
    "wait_for_completion_timeout",
    wait::TIMEOUT,
    2,
    true,
    enter_wait_for_completion_timeout,
    exit_wait_for_completion_timeout,
    kprobe_wait_for_completion_timeout,
    kretprobe_wait_for_completion_timeout
);
// unsigned long wait_for_completion_io_timeout(struct completion *x,
//                                              unsigned long timeout)
wait_hooks!(
    "wait_for_completion_io_timeout",
    wait::IO_TIMEOUT,
    2,
    true,
    enter_wait_for_completion_io_timeout,
    exit_wait_for_completion_io_timeout,
    kprobe_wait_for_completion_io_timeout,
    kretprobe_wait_for_completion_io_timeout
);
// int wait_for_completion_interruptible(struct completion *x)
wait_hooks!(
    "wait_for_completion_interruptible",
    wait::INTERRUPTIBLE,
    1,
    false,
    enter_wait_for_completion_interruptible,
    exit_wait_for_completion_interruptible,
    kprobe_wait_for_completion_interruptible,
    kretprobe_wait_for_completion_interruptible
);
// int wait_for_completion_killable(struct completion *x)
wait_hooks!(
    "wait_for_completion_killable",
    wait::KILLABLE,
    1,
    false,
    enter_wait_for_completion_killable,
    exit_wait_for_completion_killable,
    kprobe_wait_for_completion_killable,
    kretprobe_wait_for_completion_killable
);
// bool try_wait_for_completion(struct completion *x)
wait_hooks!(
    "try_wait_for_completion",
    wait::TRY,
    1,
    false,
    enter_try_wait_for_completion,
    exit_try_wait_for_completion,
    kprobe_try_wait_for_completion,
    kretprobe_try_wait_for_completion
);
// long wait_for_completion_interruptible_timeout(struct completion *x,
//                                                unsigned long timeout)
wait_hooks!(
    "wait_for_completion_interruptible_timeout",
    wait::INTERRUPTIBLE_TIMEOUT,
    2,
    true,
    enter_wait_for_completion_interruptible_timeout,
    exit_wait_for_completion_interruptible_timeout,
    kprobe_wait_for_completion_interruptible_timeout,
    kretprobe_wait_for_completion_interruptible_timeout
);
// long wait_for_completion_killable_timeout(struct completion *x,
//                                          unsigned long timeout)
wait_hooks!(
    "wait_for_completion_killable_timeout",
    wait::KILLABLE_TIMEOUT,
    2,
    true,
    enter_wait_for_completion_killable_timeout,
    exit_wait_for_completion_killable_timeout,
    kprobe_wait_for_completion_killable_timeout,
    kretprobe_wait_for_completion_killable_timeout
);
// int wait_for_completion_state(struct completion *x, unsigned int state)
// (6.0+)
wait_hooks!(
    "wait_for_completion_state",
    wait::STATE,
    2,
    false,
    enter_wait_for_completion_state,
    exit_wait_for_completion_state,
    kprobe_wait_for_completion_state,
    kretprobe_wait_for_completion_state
);
// bool completion_done(struct completion *x)
wait_hooks!(
    "completion_done",
    wait::DONE,
    1,
    false,
    enter_completion_done,
    exit_completion_done,
    kprobe_completion_done,
    kretprobe_completion_done
);
