//! Submitted bios that do not complete: stalls, and what became of them.
//!
//! A bio is overdue `lost_io_after` past its latest (re)submission if it
//! has shown no completion activity at all: a `bio_endio` that was not
//! final (a chained bio waiting for its children, a read waiting for
//! integrity verification) means the device answered, and the children are
//! judged on their own. A resubmission (stacking, splitting, requeue)
//! restarts the clock.
//!
//! While it is pending nobody can tell a lost completion from a device that
//! is hung, retrying or recovering: an NVMe-over-TCP controller whose
//! keep-alive expired holds every bio for tens of seconds and then
//! completes them all. So the first overdue bio of a disk is reported as a
//! stall of that disk (`lost-io-completion`, a warning), later overdue bios
//! of the same disk join that stall, and once every bio of the stall has
//! completed a `late-io-completion` (info) says how late and with which
//! status. A stall that never ends stays a stall.
//!
//! Completions must be observable on the bio's disk, or every bio there
//! would look lost: with `bio_endio` hooked they always are; with
//! tracepoints only, a disk counts once a completion was seen for a bio
//! submitted to it (bio-based devices on kernels that never trace their
//! completions stay unjudged). Unjudged bios are counted as indeterminate.

use super::{Ctx, Interest, Invariant};
use crate::engine::bios::{Bio, Completion};
use crate::engine::config::{EngineConfig, Rule};
use crate::engine::facts::{Fact, FactTag};
use crate::engine::finding::{Finding, FindingBuilder, FindingKind, duration};
use crate::engine::hash::FastMap;
use crate::engine::world::World;
use crate::event::Dev;

/// The overdue bios of one disk, from the first until all completed.
#[derive(Clone, Debug)]
struct Stall {
    /// The bio the stall was reported with (or the first overdue one).
    first: Bio,
    reported: bool,
    /// Overdue bios not completed yet.
    pending: u32,
    /// Overdue bios in all.
    bios: u32,
    /// The longest time from first submission to completion so far.
    longest: u64,
    errors: u32,
    last_error: i32,
    last_done: Option<Completion>,
}

#[derive(Default)]
pub struct LostIo {
    stalls: FastMap<Dev, Stall>,
}

impl LostIo {
    /// Judges bios whose deadline is at or before `now`.
    fn fire_due(&mut self, now: u64, w: &mut World, ctx: &mut Ctx<'_>) {
        let after = ctx.cfg.lost_io_after_ns;
        let due = now.saturating_sub(after);
        while let Some(bio) = w.bios.pop_submitted_by(due) {
            if bio.lost_reported() || bio.endio_activity() {
                continue;
            }
            let deadline = bio.last_queued.saturating_add(after);
            w.bios.mark_lost_reported(bio.addr);
            if !w.endio_hooked && !w.bios.disk(bio.disk).completions_seen {
                ctx.indeterminate(Rule::LostIoCompletion);
                continue;
            }
            self.overdue(bio, deadline, w, ctx);
        }
    }

    fn overdue(&mut self, bio: Bio, at: u64, w: &World, ctx: &mut Ctx<'_>) {
        let stall = self.stalls.entry(bio.disk).or_insert_with(|| Stall {
            first: bio,
            reported: false,
            pending: 0,
            bios: 0,
            longest: 0,
            errors: 0,
            last_error: 0,
            last_done: None,
        });
        stall.pending += 1;
        stall.bios += 1;
        if stall.reported {
            return;
        }
        if w.loss.tainted(bio.seen) {
            ctx.indeterminate(Rule::LostIoCompletion);
            return;
        }
        stall.reported = true;
        stall.first = bio;
        let pending_on_disk = w.bios.disk(bio.disk).inflight;
        ctx.report_if(Rule::LostIoCompletion, false, || {
            stall_finding(&bio, at, pending_on_disk)
        });
    }

    /// A bio completed: if it was overdue, its stall learns how it ended.
    fn completed(&mut self, bio: &Bio, done: &Completion, ctx: &mut Ctx<'_>) {
        if !bio.lost_reported() {
            return;
        }
        let Some(stall) = self.stalls.get_mut(&bio.disk) else {
            return;
        };
        stall.pending = stall.pending.saturating_sub(1);
        // From the first submission: a bio requeued once the device is
        // back (NVMe multipath) waited all along.
        stall.longest = stall
            .longest
            .max(done.actor.ts.saturating_sub(bio.queued().ts));
        if done.status != 0 {
            stall.errors += 1;
            stall.last_error = done.status;
        }
        stall.last_done = Some(*done);
        if stall.pending > 0 {
            return;
        }
        let stall = self.stalls.remove(&bio.disk).expect("present");
        if stall.reported {
            ctx.report_if(Rule::LostIoCompletion, false, || late_finding(&stall));
        }
    }

    /// A bio is no longer tracked: if it was overdue, its end is unknown.
    fn untracked(&mut self, bio: &Bio) {
        if !bio.lost_reported() {
            return;
        }
        if let Some(stall) = self.stalls.get_mut(&bio.disk) {
            stall.pending = stall.pending.saturating_sub(1);
            if stall.pending == 0 {
                self.stalls.remove(&bio.disk);
            }
        }
    }
}

impl Invariant for LostIo {
    fn interest(&self) -> Interest {
        Interest {
            events: &[],
            facts: &[FactTag::Completed, FactTag::Untracked],
            deadlines: true,
        }
    }

    fn on_fact(&mut self, fact: &Fact, _w: &mut World, ctx: &mut Ctx<'_>) {
        match fact {
            Fact::Completed { bio, done } => self.completed(bio, done, ctx),
            Fact::Untracked { bio } => self.untracked(bio),
            _ => {}
        }
    }

    fn next_deadline(&self, w: &World, cfg: &EngineConfig) -> Option<u64> {
        // The queue's front may be a life already over: firing then only
        // drops it.
        w.bios
            .front_submission()
            .map(|ts| ts.saturating_add(cfg.lost_io_after_ns))
    }

    fn fire(&mut self, now: u64, w: &mut World, ctx: &mut Ctx<'_>) {
        self.fire_due(now, w, ctx);
    }
}

fn stall_finding(bio: &Bio, at: u64, pending_on_disk: u32) -> Finding {
    let mut b = FindingBuilder::new(FindingKind::LostIoCompletion, at, bio.object(bio.end_io));
    let submitter = b.side("submitter", &bio.queued());
    b.act(
        submitter,
        &bio.queued(),
        format!(
            "submits bio {} to {} (sector {}, {} bytes)",
            bio.addr, bio.dev, bio.sector, bio.size
        ),
    );
    if bio.resubmits > 0 {
        b.step(
            submitter,
            bio.last_queued,
            format!("resubmitted ({} time(s) in all)", bio.resubmits),
            None,
        );
    }
    let waited = duration(at.saturating_sub(bio.last_queued));
    b.step(
        submitter,
        at,
        format!("no completion after {waited} ({pending_on_disk} bio(s) in flight on the disk)"),
        None,
    );
    b.finish(format!(
        "bio {} submitted to {} by {} has had no completion for {waited}: {} has stalled \
         (a completion the driver lost, a hung device, or error recovery that has not ended); \
         whoever waits for it is stuck until it completes. A later late-io-completion says if \
         and how it ended",
        bio.addr,
        bio.dev,
        bio.queued().who(),
        bio.disk,
    ))
}

fn late_finding(stall: &Stall) -> Finding {
    let bio = &stall.first;
    let done = stall.last_done.expect("completed");
    let mut b = FindingBuilder::new(
        FindingKind::LateIoCompletion,
        done.actor.ts,
        bio.object(bio.end_io),
    );
    let submitter = b.side("submitter", &bio.queued());
    let completer = b.side("completer", &done.actor);
    b.act(
        submitter,
        &bio.queued(),
        format!("submits bio {} to {}", bio.addr, bio.dev),
    );
    b.act(
        completer,
        &done.actor,
        format!(
            "the last of {} overdue bio(s) completes ({}), status {}",
            stall.bios,
            done.via.describe(),
            done.status
        ),
    );
    let outcome = if stall.errors == 0 {
        "all completed successfully: the device or driver stalled and recovered, nothing was \
         lost"
            .to_owned()
    } else {
        format!(
            "{} of them failed (status {}): the stall ended in errors",
            stall.errors, stall.last_error
        )
    };
    b.finish(format!(
        "the stall on {} is over: {} overdue bio(s) completed, the slowest {} after it was \
         first submitted; {outcome}",
        bio.disk,
        stall.bios,
        duration(stall.longest),
    ))
}
