//! Issue 8's look-alikes staged by the test module: slow, healthy
//! behaviour that lasts longer than a rule's threshold (a stall that
//! recovers, iowait sleeps on something other than the task's own I/O, a
//! completion handler that sleeps).

use anyhow::{Context as _, Result, ensure};

use super::{Ctx, MS, SEC, TASK_UNINTERRUPTIBLE, final_of, handler_run, queued, stack_shows};
use crate::vm::events::Event;

/// stall_recovers: all 16 bios pending ~5 s, then completed, none with an
/// error.
pub fn stall_recovers(ctx: &Ctx) -> Result<()> {
    let queued = queued(ctx)?;
    ensure!(
        queued.len() == 16,
        "expected the 16 stalled bios, saw {}",
        queued.len()
    );
    for q in queued {
        let done = final_of(ctx, q)?;
        let ms = (done.ts - q.ts) / MS;
        ensure!(
            ms >= 4500,
            "a bio completed after {ms} ms; the stall lasts 5 s: {}",
            done.describe()
        );
        ensure!(
            done.int("status").unwrap_or(0) == 0,
            "a stalled bio completed with an error: {}",
            done.describe()
        );
    }
    Ok(())
}

/// The task's own bios completed inline (in the task, inside their
/// submission), it slept in I/O wait right after, and the first wakeup
/// aimed at it after that: (sleep, wakeup).
fn iowait_after_own_io<'a>(ctx: &Ctx<'a>) -> Result<(&'a Event, &'a Event)> {
    let queued = queued(ctx)?;
    ensure!(
        queued.len() == 3,
        "expected the task's 3 bios, saw {}",
        queued.len()
    );
    let task = queued[0].tid;
    let mut last_done = queued[0];
    for q in &queued {
        let done = final_of(ctx, q)?;
        ensure!(
            done.tid == task,
            "a bio was not completed inside its submission: {}",
            done.describe()
        );
        if done.ts > last_done.ts {
            last_done = done;
        }
    }
    let sleep = ctx
        .trace
        .of_kind("sched_switch")
        .find(|e| e.tid == task && e.ts > last_done.ts)
        .with_context(|| format!("the task (tid {task}) never switched out after its I/O"))?;
    ensure!(
        sleep
            .int("prev_state")
            .is_some_and(|s| s & TASK_UNINTERRUPTIBLE != 0)
            && sleep.flag("prev_in_iowait") == Some(true),
        "the task's first switch after its I/O is no sleep in I/O wait: {}",
        sleep.describe()
    );
    ensure!(
        sleep.ts - last_done.ts < SEC,
        "the task slept {} ms after its last completion; the look-alike sleeps right after",
        (sleep.ts - last_done.ts) / MS
    );
    let wakeup = ctx
        .trace
        .events
        .iter()
        .find(|e| {
            e.ts > sleep.ts
                && (e.kind == "sched_waking" || e.kind == "sched_wakeup")
                && e.int("target_tid") == Some(i64::from(task))
        })
        .context("the task was never woken")?;
    Ok((sleep, wakeup))
}

/// iowait_folio_lock: the task sleeps in I/O wait on the folio lock, ~5 s,
/// and the lock's holder wakes it.
pub fn iowait_folio_lock(ctx: &Ctx) -> Result<()> {
    let (sleep, wakeup) = iowait_after_own_io(ctx)?;
    stack_shows(sleep, "folio_wait_bit_common")?;
    ensure!(
        wakeup.comm == "rb_folio_holder",
        "not woken by the folio's holder: {}",
        wakeup.describe()
    );
    let ms = (wakeup.ts - sleep.ts) / MS;
    ensure!(ms >= 4000, "woken after {ms} ms; the holder keeps it 5 s");
    Ok(())
}

/// iowait_timeout: the task sleeps in io_schedule_timeout and is woken
/// ~5 s later. (The stack is checked for schedule_timeout, which it calls:
/// io_schedule_timeout is the first function of .sched.text and shares its
/// address with the __sched_text_start marker, which a symbolizer may name
/// instead; the sleep's iowait flag says it is the io_ variant.)
pub fn iowait_timeout(ctx: &Ctx) -> Result<()> {
    let (sleep, wakeup) = iowait_after_own_io(ctx)?;
    stack_shows(sleep, "schedule_timeout")?;
    stack_shows(sleep, "rb_iowait_timeout")?;
    let ms = (wakeup.ts - sleep.ts) / MS;
    ensure!(ms >= 4500, "woken after {ms} ms; the timeout is 5 s");
    Ok(())
}

/// sleeping_handler: bio_endio returns ~3 s after it was entered, and its
/// task spent that time off the CPU, asleep.
pub fn sleeping_handler(ctx: &Ctx) -> Result<()> {
    let (entry, exit) = handler_run(ctx)?;
    let ms = (exit.ts - entry.ts) / MS;
    ensure!(ms >= 2500, "bio_endio took {ms} ms; the handler sleeps 3 s");
    let task = entry.tid;
    let asleep = ctx
        .trace
        .of_kind("sched_switch")
        .find(|e| e.tid == task && e.ts > entry.ts && e.ts < exit.ts)
        .with_context(|| format!("the handler's task (tid {task}) never left the CPU"))?;
    ensure!(
        asleep
            .int("prev_state")
            .is_some_and(|s| s & TASK_UNINTERRUPTIBLE != 0),
        "the handler's task left the CPU without sleeping: {}",
        asleep.describe()
    );
    stack_shows(asleep, "msleep")?;
    let back = ctx
        .trace
        .of_kind("sched_switch")
        .find(|e| e.ts > asleep.ts && e.int("next_tid") == Some(i64::from(task)))
        .context("the handler's task never came back on a CPU")?;
    let off_ms = (back.ts - asleep.ts) / MS;
    ensure!(
        off_ms >= 2500,
        "the handler was off the CPU for {off_ms} ms only"
    );
    Ok(())
}
