//! Issue 8's double completions that today's rules misjudge: one whose
//! evidence spans lost events (case 4), one behind a stacking driver's
//! end_io hook (case 10).

use anyhow::{Context as _, Result, ensure};

use super::{Ctx, bio_lives, finals_of, life_of, module_addr, queued, stack_shows};
use crate::vm::events::Event;

/// double_complete_lost_events: both final completions of the bio are
/// recorded, the second the timeout path's with an error; between them the
/// burst, and events lost.
pub fn double_complete_lost_events(ctx: &Ctx) -> Result<()> {
    let q = queued(ctx)?[0];
    let finals = finals_of(ctx, q);
    ensure!(
        finals.len() == 2,
        "expected 2 final completions recorded, saw {}",
        finals.len()
    );
    let (first, second) = (finals[0], finals[1]);
    stack_shows(second, "rb_cmd_timeout")?;
    ensure!(
        second.int("status").unwrap_or(0) != 0,
        "the second completion has no error status: {}",
        second.describe()
    );
    let burst = ctx
        .trace
        .of_kind("complete")
        .filter(|e| e.ts > first.ts && e.ts < second.ts)
        .count();
    ensure!(
        burst > 0,
        "no complete() of the burst recorded between the completions"
    );
    let lost: u64 = ctx
        .trace
        .of_kind("lost")
        .filter(|e| {
            let until = e.int("until").map_or(e.ts, |u| u as u64);
            until > first.ts && e.ts < second.ts
        })
        .filter_map(|e| e.int("count"))
        .map(|n| n as u64)
        .sum();
    ensure!(
        lost > 0,
        "no events lost between the completions ({burst} complete() of the burst recorded)"
    );
    Ok(())
}

/// The bio's bio_endio calls after its submission, and the hook's address.
fn swapped<'a>(ctx: &Ctx<'a>) -> Result<(Vec<&'a Event>, u64, u64)> {
    let end_io = module_addr(ctx, "end_io ")?;
    let hook = module_addr(ctx, "hook ")?;
    let q = queued(ctx)?[0];
    let lives = bio_lives(ctx.trace);
    let life = life_of(&lives, q).with_context(|| format!("no life of {}", q.describe()))?;
    Ok((life.endios.clone(), end_io, hook))
}

/// The hook's bio_endio, then the owner's, run by the hook: inside the
/// first call (same task, before it returned). The hook tail-calls
/// bio_endio, so its own frame is not on the stack.
fn hooked_completion(ctx: &Ctx, endios: &[&Event], end_io: u64, hook: u64) -> Result<()> {
    ensure!(
        endios.len() >= 2,
        "expected the hook's and the owner's bio_endio"
    );
    ensure!(
        endios[0].addr("end_io") == Some(hook),
        "the first bio_endio does not run the hook: {}",
        endios[0].describe()
    );
    let (outer, inner) = (endios[0], endios[1]);
    ensure!(
        inner.addr("end_io") == Some(end_io),
        "the second bio_endio does not run the owner's end_io: {}",
        inner.describe()
    );
    let outer_returned = ctx
        .trace
        .of_kind("bio_endio_exit")
        .find(|e| e.tid == outer.tid && e.ts > outer.ts)
        .map_or(u64::MAX, |e| e.ts);
    ensure!(
        inner.tid == outer.tid && inner.ts < outer_returned,
        "the owner's bio_endio did not run inside the hook's: {}",
        inner.describe()
    );
    Ok(())
}

/// endio_swap: hook, owner's end_io from the hook, then the timeout path's
/// bio_endio with the owner's end_io again, with an error.
pub fn endio_swap(ctx: &Ctx) -> Result<()> {
    let (endios, end_io, hook) = swapped(ctx)?;
    ensure!(
        endios.len() == 3,
        "expected 3 bio_endio (hook, owner, timeout path), saw {}",
        endios.len()
    );
    hooked_completion(ctx, &endios, end_io, hook)?;
    let again = endios[2];
    ensure!(
        again.addr("end_io") == Some(end_io) && again.int("status").unwrap_or(0) != 0,
        "the timeout path's bio_endio does not end the owner's bio with an error: {}",
        again.describe()
    );
    stack_shows(again, "rb_cmd_timeout")
}

/// endio_swap_fixed: hook, then the owner's end_io from the hook, and
/// nothing after.
pub fn endio_swap_fixed(ctx: &Ctx) -> Result<()> {
    let (endios, end_io, hook) = swapped(ctx)?;
    ensure!(
        endios.len() == 2,
        "expected 2 bio_endio (hook, owner), saw {}",
        endios.len()
    );
    hooked_completion(ctx, &endios, end_io, hook)
}
