//! Issue 8's late complete() from interrupts on a dead on-stack completion
//! (cases 8 and 9), and their fixed twins: the owner's timed wait that
//! gave up, where it was when the interrupt's complete() came, and who
//! woke it after.

use anyhow::{Context as _, Result, bail, ensure};

use super::{Ctx, module_addr, sp_above, stack_shows};
use crate::vm::events::Event;

/// The owner's timed wait on `x` that gave up (returned 0).
fn given_up<'a>(ctx: &Ctx<'a>, x: u64) -> Result<&'a Event> {
    let enter = ctx
        .trace
        .of_kind("wait_enter")
        .find(|e| e.addr("x") == Some(x))
        .with_context(|| format!("no wait on the completion {x:#x}"))?;
    ensure!(
        enter.text("variant") == Some("timeout") && enter.flag("on_own_stack") == Some(true),
        "not a timed wait on the owner's own stack: {}",
        enter.describe()
    );
    let exit = ctx
        .trace
        .of_kind("wait_exit")
        .find(|e| e.tid == enter.tid && e.addr("x") == Some(x) && e.ts > enter.ts)
        .with_context(|| format!("no return from {}", enter.describe()))?;
    ensure!(
        exit.int("ret") == Some(0),
        "the timed wait did not give up: {}",
        exit.describe()
    );
    Ok(exit)
}

/// The one complete(x), after `after`.
fn the_complete<'a>(ctx: &Ctx<'a>, x: u64, after: &Event) -> Result<&'a Event> {
    let completes: Vec<&Event> = ctx
        .trace
        .of_kind("complete")
        .filter(|e| e.addr("x") == Some(x))
        .collect();
    ensure!(
        completes.len() == 1,
        "expected one complete({x:#x}), saw {}",
        completes.len()
    );
    let c = completes[0];
    ensure!(
        c.ts > after.ts,
        "complete() came before the owner gave up: {}",
        c.describe()
    );
    Ok(c)
}

/// The owner's wait on x that returned after `c` (the fixed owner's
/// second, untimed wait).
fn waited_for<'a>(ctx: &Ctx<'a>, x: u64, owner: u32, c: &Event) -> Result<&'a Event> {
    let waited = ctx
        .trace
        .of_kind("wait_exit")
        .find(|e| e.tid == owner && e.addr("x") == Some(x) && e.ts > c.ts)
        .with_context(|| format!("the owner never waited for {}", c.describe()))?;
    ensure!(
        waited.text("variant") == Some("plain"),
        "the owner's second wait is not wait_for_completion: {}",
        waited.describe()
    );
    Ok(waited)
}

/// The first wakeup of `owner` after `c`, by an interrupt on c's CPU.
fn woken_on_the_same_cpu<'a>(ctx: &Ctx<'a>, owner: u32, c: &Event) -> Result<&'a Event> {
    let wakeup = ctx
        .trace
        .of_kind("sched_waking")
        .find(|e| e.ts > c.ts && e.int("target_tid") == Some(i64::from(owner)))
        .with_context(|| format!("the owner (tid {owner}) was never woken after the complete"))?;
    ensure!(
        wakeup.int("cpu") == c.int("cpu") && wakeup.tid != owner,
        "the owner was not woken from the complete()'s CPU: {} after {}",
        wakeup.describe(),
        c.describe()
    );
    Ok(wakeup)
}

/// late_complete_irq: the owner gave up, left the frame, then the timer
/// interrupt's complete() on the owner's CPU, then the owner woken from
/// that CPU.
pub fn late_complete_irq(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let gave_up = given_up(ctx, x)?;
    let owner = gave_up.tid;
    let c = the_complete(ctx, x, gave_up)?;
    ensure!(
        c.tid != owner && c.int("cpu") == gave_up.int("cpu"),
        "complete() is not another context's on the owner's CPU: {}",
        c.describe()
    );
    stack_shows(c, "li_late_fire")?;
    let left = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.ts > gave_up.ts && sp_above(e, x))
        .with_context(|| format!("the owner (tid {owner}) is never seen above {x:#x}"))?;
    ensure!(
        left.ts < c.ts,
        "the owner left the frame ({}) only after the late complete ({})",
        left.describe(),
        c.describe()
    );
    woken_on_the_same_cpu(ctx, owner, c)?;
    Ok(())
}

/// late_complete_irq_fixed: the owner gave up, then waited for the
/// interrupt's complete() before leaving the frame; woken later the same
/// way.
pub fn late_complete_irq_fixed(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let gave_up = given_up(ctx, x)?;
    let owner = gave_up.tid;
    let c = the_complete(ctx, x, gave_up)?;
    stack_shows(c, "li_late_fire")?;
    let waited = waited_for(ctx, x, owner, c)?;
    if let Some(left) = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.ts > gave_up.ts && e.ts < waited.ts && sp_above(e, x))
    {
        bail!(
            "the owner left the frame before its wait returned: {}",
            left.describe()
        );
    }
    woken_on_the_same_cpu(ctx, owner, c)?;
    Ok(())
}

/// The owner's return to user space after `after`.
fn back_in_user<'a>(ctx: &Ctx<'a>, owner: u32, after: &Event) -> Result<&'a Event> {
    ctx.trace
        .of_kind("sys_exit")
        .find(|e| e.tid == owner && e.ts > after.ts)
        .with_context(|| format!("the owner (tid {owner}) never returned to user space"))
}

/// irq_in_user: the owner gave up and returned to user space; then
/// complete(x) in the owner's own context, on its own stack: the interrupt
/// taken in its user mode.
pub fn irq_in_user(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let gave_up = given_up(ctx, x)?;
    let owner = gave_up.tid;
    let returned = back_in_user(ctx, owner, gave_up)?;
    let c = the_complete(ctx, x, returned)?;
    ensure!(
        c.tid == owner && c.flag("on_own_stack") == Some(true),
        "complete() did not run on the owner's stack in its context: {}",
        c.describe()
    );
    stack_shows(c, "iu_fire")?;
    if let Some(w) = ctx
        .trace
        .events
        .iter()
        .find(|e| e.kind.starts_with("wait_") && e.addr("x") == Some(x) && e.ts > gave_up.ts)
    {
        bail!("the owner waited on the completion again: {}", w.describe());
    }
    Ok(())
}

/// irq_in_user_fixed: the owner gave up, waited for the interrupt's
/// complete(), and only then returned to user space.
pub fn irq_in_user_fixed(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let gave_up = given_up(ctx, x)?;
    let owner = gave_up.tid;
    let c = the_complete(ctx, x, gave_up)?;
    stack_shows(c, "iu_fire")?;
    let waited = waited_for(ctx, x, owner, c)?;
    let returned = back_in_user(ctx, owner, gave_up)?;
    ensure!(
        returned.ts > waited.ts,
        "the owner returned to user space ({}) before its wait ended ({})",
        returned.describe(),
        waited.describe()
    );
    Ok(())
}
