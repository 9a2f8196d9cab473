//! Scheduler and task lifecycle: who sleeps how, who wakes whom, and when a
//! task leaves the kernel (syscall return, exit).

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use detector_common::{
    COMM_LEN, ProbeConfig, SchedSwitch, SchedWake, SysExit, TaskExit, config::NO_OFFSET,
    header_flag, kind,
};

use super::done;
use crate::{
    context::Hooked,
    emit::{Stack, header, reserve, submit, submit_unnamed},
    kernel::{config, current_task, read},
    maps::flag,
    tasks::{above_frames, flags_of, forget_frames, set_flags, widen_stack_range},
    words,
};

/// Whether everything is to be reported (`ProbeConfig::full`): looked up
/// only once the flags say an event is not wanted.
#[inline(always)]
fn full() -> bool {
    config().is_some_and(|cfg| cfg.full != 0)
}

/// `TASK_UNINTERRUPTIBLE` in `prev_state`.
const TASK_UNINTERRUPTIBLE: u32 = 0x2;

#[inline(always)]
fn task_comm(cfg: &ProbeConfig, task: u64) -> [u8; COMM_LEN] {
    if task != 0 && cfg.task.comm != NO_OFFSET {
        words::comm_at(task + cfg.task.comm as u64)
    } else {
        words::no_comm()
    }
}

/// `sched_switch(bool preempt, struct task_struct *prev,
/// struct task_struct *next, unsigned int prev_state)` (5.18+; checked on
/// 6.1 and 6.18); before 5.18 without `prev_state`, which is then read from
/// `prev->__state` (userspace finds which from the tracepoint's BTF
/// prototype). Runs on prev's stack, before the switch.
#[btf_tracepoint(function = "sched_switch")]
pub fn tp_sched_switch(ctx: BtfTracePointContext) -> u32 {
    done(try_sched_switch(&ctx))
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn raw_sched_switch(ctx: RawTracePointContext) -> u32 {
    done(try_sched_switch(&ctx))
}

/// Reported when a rule may use it:
/// - prev may be inside an on-stack completion's frame (`FRAMES`: where
///   its stack is tells whether it left), or inside a completion handler
///   (`HANDLER`: the handler is off the CPU from here);
/// - prev goes to sleep uninterruptibly with I/O of its episode
///   (lost-wakeup) or with an on-stack completion (its waker matters);
/// - next resumes inside a completion handler, or was asleep with its
///   wakeup unreported.
#[inline(always)]
fn try_sched_switch<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let preempt = ctx.scalar_arg(0) as u8;
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let next_tid = ctx.task_tid(2, cfg);
    let (prev_at, prev_flags) = flags_of(tid);
    let (next_at, next_flags) = flags_of(next_tid);
    // prev's state is read (a helper call) only where it may decide the
    // report, or goes into one.
    let may_watch = preempt == 0 && prev_flags & flag::SLEEP_WATCHED != 0;
    let mut prev_state = if may_watch {
        prev_state_of(ctx, cfg)
    } else {
        0
    };
    let ends_episode = may_watch && idle_kernel_thread(cfg, prev_state, prev_flags);
    // prev's flags as this switch leaves them, before what a report adds.
    let kept = if ends_episode {
        prev_flags & !flag::EPISODE
    } else {
        prev_flags
    };
    let watched_sleep = may_watch && !ends_episode && prev_state & TASK_UNINTERRUPTIBLE != 0;
    let wanted = cfg.full != 0
        || watched_sleep
        || prev_flags & (flag::FRAMES | flag::HANDLER_MASK) != 0
        || next_flags & (flag::HANDLER_MASK | flag::SLEEPING) != 0;
    if next_tid != 0 && next_flags & flag::SLEEPING != 0 {
        set_flags(next_at, next_flags, next_flags & !flag::SLEEPING);
    }
    if !wanted {
        if tid != 0 {
            set_flags(prev_at, prev_flags, kept);
        }
        return None;
    }
    if !may_watch {
        prev_state = prev_state_of(ctx, cfg);
    }
    // The tasks as numbers, for the reads of a report.
    let prev = ctx.arg_u64(1);
    let next = ctx.arg_u64(2);
    let sleeps = preempt == 0 && prev_state & TASK_UNINTERRUPTIBLE != 0;
    let sp = ctx.sp();
    if tid != 0 {
        let mut new = kept;
        if watched_sleep {
            new |= flag::SLEEPING;
        }
        // Seen above every on-stack frame it was marked for: this switch
        // shows it left them, and its later ones are of no interest.
        if prev_flags & flag::FRAMES != 0 && above_frames(tid, sp) {
            new &= !flag::FRAMES;
            forget_frames(tid);
        }
        set_flags(prev_at, prev_flags, new);
    }
    let in_iowait = in_iowait(cfg, prev);
    let stack = if sleeps && sleep_stack_quotable(cfg, prev_flags, in_iowait) {
        Stack::Take
    } else {
        Stack::Skip
    };
    let mut header = header(ctx, cfg, kind::SCHED_SWITCH, stack);
    // Its return to user space went unreported, or this idle sleep ends a
    // kernel thread's episode: say here that what it submitted before
    // belongs to an episode that is over.
    if tid != 0 && kept & flag::EPISODE == 0 {
        header.flags |= header_flag::EPISODE_OVER;
    }
    let next_stack_base = read(next, cfg.task.stack);
    widen_stack_range(next_stack_base);
    let mut entry = reserve::<SchedSwitch>()?;
    unsafe {
        entry.as_mut_ptr().write(SchedSwitch {
            header,
            prev_sp: sp,
            next_saved_sp: read(next, cfg.task.thread_sp),
            next_stack_base,
            next_tid,
            prev_state,
            prev_in_iowait: in_iowait as u8,
            preempt,
            _pad: 0,
            _pad2: 0,
            next_comm: task_comm(cfg, next),
        })
    };
    submit(entry, cfg);
    Some(())
}

/// Whether a rule may quote the stack of an uninterruptible sleep: one in
/// `io_schedule()` (`in_iowait`: lost-wakeup judges only those, and ties
/// each to its I/O by that stack), or of a task that owns an on-stack
/// completion (its wait is the other side of the race). Every stack where
/// `in_iowait` cannot be read. Not the other uninterruptible sleeps of a
/// task in its episode: under fio on a loop device whose worker was a
/// kworker in an episode, its idle sleeps with a stack each made
/// `sched_switch` cost 133-142 ns a run instead of about 50 (such sleeps
/// now end a kernel thread's episode: [`idle_kernel_thread`]).
#[inline(always)]
fn sleep_stack_quotable(cfg: &ProbeConfig, prev_flags: u8, in_iowait: bool) -> bool {
    in_iowait || prev_flags & flag::ONSTACK != 0 || cfg.task.in_iowait_byte == NO_OFFSET
}

/// `TASK_IDLE`: `TASK_UNINTERRUPTIBLE | TASK_NOLOAD`.
const TASK_IDLE: u32 = 0x402;

/// Whether prev, in its episode, is a kernel thread (no `mm`; or a task
/// past `exit_mm`, which returns nowhere either) going to an idle sleep
/// (`TASK_IDLE`, not in iowait): a workqueue worker that ran out of work,
/// or another kernel thread waiting for some. That ends its episode, as a
/// return to user space ends a user task's: what it waits for from here is
/// new work, not its I/O. A kernel thread never returns, so without this
/// its episode would never end, and every idle sleep of a kworker that
/// once submitted a bio would be reported (and its wakeup): 100k-175k
/// records in a 5 s fio run whose loop device's worker was such a
/// kworker, which made `sched_switch` cost 67-190 ns a run instead of
/// about 50. A task that owned an
/// on-stack completion (`ONSTACK`, which a kernel thread keeps) keeps its
/// sleeps watched. Read only for a watched sleep.
#[inline(always)]
fn idle_kernel_thread(cfg: &ProbeConfig, prev_state: u32, prev_flags: u8) -> bool {
    if prev_state & TASK_IDLE != TASK_IDLE
        || prev_flags & (flag::EPISODE | flag::ONSTACK) != flag::EPISODE
        || cfg.task.mm == NO_OFFSET
        || cfg.task.in_iowait_byte == NO_OFFSET
    {
        return false;
    }
    let prev = current_task();
    let mm: u64 = read(prev, cfg.task.mm);
    mm == 0 && !in_iowait(cfg, prev)
}

/// Whether `task` sleeps in `io_schedule()` (its `in_iowait` bit).
#[inline(always)]
fn in_iowait(cfg: &ProbeConfig, task: u64) -> bool {
    let byte: u8 = read(task, cfg.task.in_iowait_byte);
    byte as u32 & cfg.task.in_iowait_mask != 0
}

/// `prev_state`: an argument of `sched_switch` since 5.18, `prev->__state`
/// before.
#[inline(always)]
fn prev_state_of<C: Hooked>(ctx: &C, cfg: &ProbeConfig) -> u32 {
    match cfg.sched_switch_prev_state_arg {
        NO_OFFSET => read(ctx.arg_u64(1), cfg.task_state),
        // Its place since 5.18 (and the only one userspace gives): a load
        // at a constant offset.
        3 => ctx.scalar_arg(3) as u32,
        // Masked so that a bad config cannot read far past the arguments.
        arg => ctx.arg_u64_at((arg & 7) as usize) as u32,
    }
}

/// `sched_waking(struct task_struct *p)`: in the waker's context.
#[btf_tracepoint(function = "sched_waking")]
pub fn tp_sched_waking(ctx: BtfTracePointContext) -> u32 {
    done(try_wake(&ctx, kind::SCHED_WAKING))
}

#[raw_tracepoint(tracepoint = "sched_waking")]
pub fn raw_sched_waking(ctx: RawTracePointContext) -> u32 {
    done(try_wake(&ctx, kind::SCHED_WAKING))
}

/// `sched_wakeup(struct task_struct *p)`: the task is runnable again.
#[btf_tracepoint(function = "sched_wakeup")]
pub fn tp_sched_wakeup(ctx: BtfTracePointContext) -> u32 {
    done(try_wake(&ctx, kind::SCHED_WAKEUP))
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn raw_sched_wakeup(ctx: RawTracePointContext) -> u32 {
    done(try_wake(&ctx, kind::SCHED_WAKEUP))
}

#[inline(always)]
fn try_wake<C: Hooked>(ctx: &C, kind: u16) -> Option<()> {
    let cfg = config()?;
    let tid = ctx.task_tid(0, cfg);
    // Reported for tasks seen in a watched uninterruptible sleep
    // (lost-wakeup), and for owners of on-stack completions in any sleep:
    // a wakeup by the completer's context proves the complete() was over
    // (onstack), and a missed proof would make a false finding.
    let (at, flags) = flags_of(tid);
    if flags & (flag::SLEEPING | flag::ONSTACK | flag::FRAMES) == 0 && cfg.full == 0 {
        return None;
    }
    if kind == kind::SCHED_WAKEUP && flags & flag::SLEEPING != 0 {
        set_flags(at, flags, flags & !flag::SLEEPING);
    }
    let task = ctx.arg_u64(0);
    let header = header(ctx, cfg, kind, Stack::Skip);
    let mut entry = reserve::<SchedWake>()?;
    unsafe {
        entry.as_mut_ptr().write(SchedWake {
            header,
            target_tid: tid,
            _pad: 0,
            target_comm: task_comm(cfg, task),
        })
    };
    submit(entry, cfg);
    Some(())
}

/// `sys_exit(struct pt_regs *regs, long ret)`: every frame of the task is
/// gone. Reported only for tasks that own an on-stack completion (whose
/// next syscall entry is then reported too) or are still counted inside
/// a completion handler (its exit was missed or the count saturated). The
/// return of a task that only submitted I/O ends its episode too, but the
/// engine learns that from the task's next submission (`EPISODE_START`)
/// or switch (`EPISODE_OVER`), so such a return costs the clearing of its
/// flags and nothing else.
#[btf_tracepoint(function = "sys_exit")]
pub fn tp_sys_exit(ctx: BtfTracePointContext) -> u32 {
    done(try_sys_exit(&ctx))
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> u32 {
    done(try_sys_exit(&ctx))
}

#[inline(always)]
fn try_sys_exit<C: Hooked>(ctx: &C) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let (at, flags) = flags_of(tid);
    let onstack = flags & flag::ONSTACK != 0;
    let report = onstack || flags & flag::HANDLER_MASK != 0;
    if flags & !flag::NAMED != 0 {
        if flags & flag::FRAMES != 0 {
            forget_frames(tid);
        }
        // Back in user space: no episode, no frame, no handler, no sleep;
        // the same name.
        let back = if onstack { flag::IN_USER } else { 0 };
        set_flags(at, flags, flags & flag::NAMED | back);
    }
    if !report && !full() {
        return None;
    }
    emit_syscall(
        ctx,
        config()?,
        kind::SYS_EXIT,
        ctx.arg_u64(1) as i64,
        onstack,
    )
}

/// `sys_enter(struct pt_regs *regs, long id)`: reported only for tasks whose
/// return to user space was reported with `enter_reported`.
#[btf_tracepoint(function = "sys_enter")]
pub fn tp_sys_enter(ctx: BtfTracePointContext) -> u32 {
    done(try_sys_enter(&ctx))
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> u32 {
    done(try_sys_enter(&ctx))
}

#[inline(always)]
fn try_sys_enter<C: Hooked>(ctx: &C) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let (at, flags) = flags_of(tid);
    if flags & flag::IN_USER == 0 && !full() {
        return None;
    }
    set_flags(at, flags, flags & !flag::IN_USER);
    emit_syscall(ctx, config()?, kind::SYS_ENTER, 0, false)
}

#[inline(always)]
fn emit_syscall<C: Hooked>(
    ctx: &C,
    cfg: &ProbeConfig,
    kind: u16,
    ret: i64,
    enter_reported: bool,
) -> Option<()> {
    let regs = ctx.arg_u64(0);
    let header = header(ctx, cfg, kind, Stack::Skip);
    let mut entry = reserve::<SysExit>()?;
    // Volatile: `sys_enter`'s zero `ret` and flag would otherwise become
    // one `memset` call (see `words`).
    unsafe {
        core::ptr::write_volatile(
            entry.as_mut_ptr(),
            SysExit {
                header,
                nr: read(regs, cfg.pt_regs_syscall_nr),
                ret,
                enter_reported: enter_reported as u8,
                _pad: 0,
                _pad2: 0,
                _pad3: 0,
            },
        )
    };
    submit(entry, cfg);
    Some(())
}

/// `sched_process_exit(struct task_struct *p, ...)`: current is exiting.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn tp_sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    done(try_task_exit(&ctx))
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn raw_sched_process_exit(ctx: RawTracePointContext) -> u32 {
    done(try_task_exit(&ctx))
}

#[inline(always)]
fn try_task_exit<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let header = header(ctx, cfg, kind::TASK_EXIT, Stack::Skip);
    // A new thread that gets its tid starts with no flags.
    let (at, flags) = flags_of(header.tid);
    set_flags(at, flags, 0);
    if flags & flag::FRAMES != 0 {
        forget_frames(header.tid);
    }
    let mut entry = reserve::<TaskExit>()?;
    unsafe { entry.as_mut_ptr().write(header) };
    submit_unnamed(entry, cfg);
    Some(())
}

/// `task_rename(struct task_struct *task, const char *comm)`: exec,
/// `prctl(PR_SET_NAME)` or a write to `/proc/PID/comm` is about to rename
/// `task`; its next record carries the new name. (Renamed by another task
/// while it runs, it may send the old name once more and keep that until
/// renamed again or it exits: a stale name, never a lost event.)
#[btf_tracepoint(function = "task_rename")]
pub fn tp_task_rename(ctx: BtfTracePointContext) -> u32 {
    done(try_task_rename(&ctx))
}

#[raw_tracepoint(tracepoint = "task_rename")]
pub fn raw_task_rename(ctx: RawTracePointContext) -> u32 {
    done(try_task_rename(&ctx))
}

#[inline(always)]
fn try_task_rename<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let tid = read::<i32>(ctx.arg_u64(0), cfg.task.pid) as u32;
    if tid != 0 {
        let (at, flags) = flags_of(tid);
        set_flags(at, flags, flags & !flag::NAMED);
    }
    Some(())
}
