//! A bio completes once per submission, and not after its disk is gone.
//!
//! `bio-double-complete` (seed 002): a second *final* `bio_endio` of a bio
//! with no submission or `bio_init`/`bio_reset` in between. Only `bio_endio`
//! can show it: the completion tracepoints are not per-call facts (a request
//! in a flush sequence reports its bios to `block_rq_complete` twice, once
//! for the data and once at the end, and `block_bio_complete` fires once per
//! bio whatever happens), so a repeat from them is ignored. A bio freed and
//! reused without `bio_init` being seen would look like the old one; a
//! different `bi_end_io` on the second call marks such a reuse.
//!
//! `bio-complete-after-teardown`: a bio that was in flight when `del_gendisk`
//! started completes after `del_gendisk` returned. blk-mq drains in-flight
//! requests inside `del_gendisk`, so completions during the call are normal,
//! and bios submitted after it started fail fast and are not judged. The
//! return is the `del_gendisk` exit event, or, without one, the deleting
//! task seen above the call's frame or back in user space.

use std::collections::BTreeMap;

use super::Ctx;
use crate::engine::actor::Actor;
use crate::engine::bios::{Bio, Completion, Via};
use crate::engine::config::Rule;
use crate::engine::finding::{FindingBuilder, FindingKind, duration};
use crate::engine::loss::Seen;
use crate::engine::tasks::{Deleting, Obs, Task};
use crate::event::Dev;

#[derive(Clone, Copy, Debug)]
struct Removal {
    started: Actor,
    seen: Seen,
    /// How its return was observed.
    returned: Option<(Actor, &'static str)>,
}

pub struct BioLifecycle {
    max: usize,
    removals: BTreeMap<Dev, Removal>,
    pub evicted: u64,
}

impl BioLifecycle {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            removals: BTreeMap::new(),
            evicted: 0,
        }
    }

    pub fn del_gendisk(&mut self, actor: &Actor, dev: Dev, task: Option<&mut Task>, seen: Seen) {
        if self.removals.len() >= self.max && !self.removals.contains_key(&dev) {
            let oldest = self
                .removals
                .iter()
                .min_by_key(|(d, r)| (r.started.ts, **d))
                .map(|(d, _)| *d);
            if let Some(oldest) = oldest {
                self.removals.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.removals.insert(
            dev,
            Removal {
                started: *actor,
                seen,
                returned: None,
            },
        );
        if let Some(task) = task
            && !actor.irq
            && actor.sp != 0
            && task.deleting.len() < 8
        {
            task.deleting.push(Deleting { dev, sp: actor.sp });
        }
    }

    /// `del_gendisk` returned; `dev` is 0:0 when the hook could not see
    /// which disk (then it is the task's innermost open call).
    pub fn del_gendisk_exit(&mut self, actor: &Actor, dev: Dev, task: Option<&mut Task>) {
        let dev = match task {
            Some(task) => {
                let at = if dev.0 == 0 {
                    task.deleting.len().checked_sub(1)
                } else {
                    task.deleting.iter().rposition(|d| d.dev == dev)
                };
                match at {
                    Some(at) => task.deleting.remove(at).dev,
                    None => dev,
                }
            }
            None => dev,
        };
        self.returned(dev, actor, "del_gendisk returns");
    }

    /// The task was seen somewhere that proves its `del_gendisk` calls
    /// below that point have returned.
    pub fn observe(&mut self, task: &mut Task, obs: &Obs) {
        let mut i = 0;
        while i < task.deleting.len() {
            let d = task.deleting[i];
            if obs.kind.left(d.sp) {
                task.deleting.remove(i);
                let how = match obs.kind {
                    crate::engine::tasks::ObsKind::User => "returns to user space",
                    crate::engine::tasks::ObsKind::Exit => "exits",
                    crate::engine::tasks::ObsKind::Frames(_) => "is back above del_gendisk",
                };
                self.returned(d.dev, &obs.actor, how);
            } else {
                i += 1;
            }
        }
    }

    fn returned(&mut self, dev: Dev, actor: &Actor, how: &'static str) {
        if let Some(r) = self.removals.get_mut(&dev)
            && r.returned.is_none()
        {
            r.returned = Some((*actor, how));
        }
    }

    /// A bio's first completion.
    pub fn completed(&mut self, bio: &Bio, done: &Completion, ctx: &mut Ctx<'_>) {
        let Some(r) = self.removals.get(&bio.disk) else {
            return;
        };
        let Some((ret, how)) = r.returned else {
            return;
        };
        if bio.queued.ts >= r.started.ts || done.actor.ts < ret.ts {
            return;
        }
        let r = *r;
        let tainted = ctx.tainted(bio.seen) || ctx.tainted(r.seen);
        ctx.report(Rule::BioCompleteAfterTeardown, tainted, || {
            let mut object = bio.object(bio.end_io);
            // Removal is per disk: name it even when it is the device.
            object.disk = Some(bio.disk);
            let mut b =
                FindingBuilder::new(FindingKind::BioCompleteAfterTeardown, done.actor.ts, object);
            let remover = b.side("remover", &r.started);
            let completer = b.side("completer", &done.actor);
            b.act(completer, &bio.queued, bio.submitted_by());
            b.act(remover, &r.started, format!("del_gendisk({})", bio.disk));
            b.step(remover, ret.ts, how.to_owned(), ret.stack);
            b.act(
                completer,
                &done.actor,
                format!("bio {} completes ({})", bio.addr, done.via.describe()),
            );
            b.finish(format!(
                "bio {} on {} completed {} after del_gendisk({}) returned: it was in flight \
                 across the disk's removal, so its completion runs against a disk (and driver \
                 state) that is gone",
                bio.addr,
                bio.disk,
                duration(done.actor.ts.saturating_sub(ret.ts)),
                bio.disk
            ))
        });
    }

    /// A completion of a bio that had completed already.
    pub fn completed_again(&mut self, bio: &Bio, again: &Completion, ctx: &mut Ctx<'_>) {
        let Some(first) = bio.done else {
            return;
        };
        if first.via != Via::Endio || again.via != Via::Endio {
            return;
        }
        let reused =
            !first.end_io.is_null() && !again.end_io.is_null() && first.end_io != again.end_io;
        if reused {
            return;
        }
        let tainted = ctx.tainted(bio.seen);
        ctx.report(Rule::BioDoubleComplete, tainted, || {
            let object = bio.object(first.end_io);
            let mut b = FindingBuilder::new(FindingKind::BioDoubleComplete, again.actor.ts, object);
            let one = b.side("first completion", &first.actor);
            let two = b.side("second completion", &again.actor);
            b.act(one, &bio.queued, bio.submitted_by());
            b.act(
                one,
                &first.actor,
                format!("bio_endio({}): final, status {}", bio.addr, first.status),
            );
            b.act(
                two,
                &again.actor,
                format!(
                    "bio_endio({}) again: final, status {} (no resubmission in between)",
                    bio.addr, again.status
                ),
            );
            b.finish(format!(
                "bio {} ran its final completion twice ({} apart) without being submitted again: \
                 its end_io {} ran on a bio its owner may already have freed and reused \
                 (memory corruption far from the culprit)",
                bio.addr,
                duration(again.actor.ts.saturating_sub(first.actor.ts)),
                first.end_io
            ))
        });
    }
}
