//! Scheduler and task lifecycle: who sleeps how, who wakes whom, and when a
//! task leaves the kernel (syscall return, exit).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_buf,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use detector_common::{
    COMM_LEN, ProbeConfig, SchedSwitch, SchedWake, SysExit, TaskExit, config::NO_OFFSET, counter,
    kind,
};

use super::done;
use crate::{
    context::Hooked,
    emit::{Stack, header, reserve, submit},
    kernel::{config, read},
    maps::{SLEEPERS, WATCHED, insert_or_count, watch},
};

/// `TASK_UNINTERRUPTIBLE` in `prev_state`.
const TASK_UNINTERRUPTIBLE: u32 = 0x2;

#[inline(always)]
fn task_comm(cfg: &ProbeConfig, task: u64) -> [u8; COMM_LEN] {
    let mut comm = [0u8; COMM_LEN];
    if task != 0 && cfg.task.comm != NO_OFFSET {
        let src = (task + cfg.task.comm as u64) as *const u8;
        let _ = unsafe { bpf_probe_read_kernel_buf(src, &mut comm) };
    }
    comm
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

#[inline(always)]
fn try_sched_switch<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let preempt = ctx.arg_u64(0) as u8;
    let prev = ctx.arg_u64(1);
    let next = ctx.arg_u64(2);
    let prev_state = match cfg.sched_switch_prev_state_arg {
        NO_OFFSET => read(prev, cfg.task_state),
        // Masked so that a bad config cannot read far past the arguments.
        arg => ctx.arg_u64((arg & 7) as usize) as u32,
    };
    // Only uninterruptible sleeps get a stack: they are the ones a lost
    // wakeup leaves hanging, and a stack per switch would be the main cost.
    let sleeps = preempt == 0 && prev_state & TASK_UNINTERRUPTIBLE != 0;
    let stack = if sleeps { Stack::Take } else { Stack::Skip };
    let header = header(ctx, cfg, kind::SCHED_SWITCH, stack);
    if sleeps {
        insert_or_count(&SLEEPERS, header.tid, 1u8, counter::SLEEPERS_FULL);
    }
    let iowait: u8 = read(prev, cfg.task.in_iowait_byte);
    let next_tid: i32 = read(next, cfg.task.pid);
    let mut entry = reserve::<SchedSwitch>()?;
    unsafe {
        entry.as_mut_ptr().write(SchedSwitch {
            header,
            prev_sp: ctx.sp(),
            next_saved_sp: read(next, cfg.task.thread_sp),
            next_stack_base: read(next, cfg.task.stack),
            next_tid: next_tid as u32,
            prev_state,
            prev_in_iowait: (iowait as u32 & cfg.task.in_iowait_mask != 0) as u8,
            preempt,
            _pad: [0; 6],
            next_comm: task_comm(cfg, next),
        })
    };
    submit(entry, cfg);
    Some(())
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
    let task = ctx.arg_u64(0);
    let tid = read::<i32>(task, cfg.task.pid) as u32;
    // Only wakeups of tasks seen in an uninterruptible sleep are reported.
    unsafe { SLEEPERS.get(tid) }?;
    if kind == kind::SCHED_WAKEUP {
        let _ = SLEEPERS.remove(tid);
    }
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

/// `sys_exit(struct pt_regs *regs, long ret)`: reported only for watched
/// tasks, once per watch, so that the cost on other syscalls is one lookup.
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
    let flags = WATCHED.get_ptr_mut(tid)?;
    let watched = unsafe { *flags };
    if watched & watch::EXIT == 0 {
        return None;
    }
    let enter_reported = watched & watch::ONSTACK != 0;
    if enter_reported {
        unsafe { *flags = watch::IN_USER };
    } else {
        let _ = WATCHED.remove(tid);
    }
    emit_syscall(ctx, kind::SYS_EXIT, ctx.arg_u64(1) as i64, enter_reported)
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
    let flags = unsafe { WATCHED.get(tid) }?;
    if *flags & watch::IN_USER == 0 {
        return None;
    }
    let _ = WATCHED.remove(tid);
    emit_syscall(ctx, kind::SYS_ENTER, 0, false)
}

#[inline(always)]
fn emit_syscall<C: Hooked>(ctx: &C, kind: u16, ret: i64, enter_reported: bool) -> Option<()> {
    let cfg = config()?;
    let regs = ctx.arg_u64(0);
    let header = header(ctx, cfg, kind, Stack::Skip);
    let mut entry = reserve::<SysExit>()?;
    unsafe {
        entry.as_mut_ptr().write(SysExit {
            header,
            nr: read(regs, cfg.pt_regs_syscall_nr),
            ret,
            enter_reported: enter_reported as u8,
            _pad: [0; 7],
        })
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
    let _ = WATCHED.remove(header.tid);
    let _ = SLEEPERS.remove(header.tid);
    let mut entry = reserve::<TaskExit>()?;
    unsafe { entry.as_mut_ptr().write(header) };
    submit(entry, cfg);
    Some(())
}
