//! A bio does not complete after its disk is gone.
//!
//! `bio-complete-after-teardown`: a bio that was in flight when `del_gendisk`
//! started completes after `del_gendisk` returned. blk-mq drains in-flight
//! requests inside `del_gendisk`, so completions during the call are normal,
//! and bios submitted after it started fail fast and are not judged. The
//! return is the `del_gendisk` exit event, or, without one, the deleting
//! task seen above the call's frame or back in user space.
//!
//! A bio submitted just before the removal may wait in `bio_queue_enter()`
//! while the queue is frozen, and then fail inside its own `submit_bio`
//! call once the disk is dead (blktests block/027): it completes late, but
//! it never reached the device. Completions inside the submitter's own
//! submission call are not judged.

use std::collections::BTreeMap;

use super::{Ctx, Interest, Invariant};
use crate::engine::actor::Actor;
use crate::engine::bios::{Bio, Completion};
use crate::engine::config::Rule;
use crate::engine::facts::{Fact, FactTag};
use crate::engine::finding::{FindingBuilder, FindingKind, duration};
use crate::engine::hash::FastMap;
use crate::engine::loss::Seen;
use crate::engine::stats::EngineStats;
use crate::engine::tasks::{Obs, ObsKind};
use crate::engine::world::World;
use crate::event::{Dev, Event, EventKind, EventTag};

/// An open `del_gendisk` call of a task.
#[derive(Clone, Copy, Debug)]
struct Deleting {
    dev: Dev,
    sp: u64,
}

#[derive(Clone, Copy, Debug)]
struct Removal {
    started: Actor,
    seen: Seen,
    /// How its return was observed.
    returned: Option<(Actor, &'static str)>,
}

pub struct BioTeardown {
    max: usize,
    removals: BTreeMap<Dev, Removal>,
    /// Per task: its open `del_gendisk` calls.
    deleting: FastMap<u32, Vec<Deleting>>,
    evicted: u64,
}

impl BioTeardown {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            removals: BTreeMap::new(),
            deleting: FastMap::default(),
            evicted: 0,
        }
    }

    fn del_gendisk(&mut self, actor: &Actor, dev: Dev, seen: Seen) {
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
        if !actor.irq && actor.sp != 0 && actor.tid != 0 {
            let open = self.deleting.entry(actor.tid).or_default();
            if open.len() < 8 {
                open.push(Deleting { dev, sp: actor.sp });
            }
        }
    }

    /// `del_gendisk` returned; `dev` is 0:0 when the hook could not see
    /// which disk (then it is the task's innermost open call).
    fn del_gendisk_exit(&mut self, actor: &Actor, dev: Dev) {
        let open = (!actor.irq)
            .then(|| self.deleting.get_mut(&actor.tid))
            .flatten();
        let dev = match open {
            Some(open) => {
                let at = if dev.0 == 0 {
                    open.len().checked_sub(1)
                } else {
                    open.iter().rposition(|d| d.dev == dev)
                };
                match at {
                    Some(at) => open.remove(at).dev,
                    None => dev,
                }
            }
            None => dev,
        };
        self.returned(dev, actor, "del_gendisk returns");
    }

    /// The task was seen somewhere that proves its `del_gendisk` calls
    /// below that point have returned.
    fn observe(&mut self, tid: u32, obs: &Obs) {
        let Some(open) = self.deleting.get_mut(&tid) else {
            return;
        };
        let mut returned = Vec::new();
        open.retain(|d| {
            let left = obs.kind.left(d.sp);
            if left {
                returned.push(d.dev);
            }
            !left
        });
        if open.is_empty() {
            self.deleting.remove(&tid);
        }
        let how = match obs.kind {
            ObsKind::User => "returns to user space",
            ObsKind::Exit => "exits",
            ObsKind::Frames(_) => "is back above del_gendisk",
        };
        for dev in returned {
            self.returned(dev, &obs.actor, how);
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
    fn completed(&mut self, bio: &Bio, done: &Completion, w: &World, ctx: &mut Ctx<'_>) {
        let Some(r) = self.removals.get(&bio.disk) else {
            return;
        };
        let Some((ret, how)) = r.returned else {
            return;
        };
        if !bio.submitted()
            || bio.queued().ts >= r.started.ts
            || done.actor.ts < ret.ts
            || done.in_submission
        {
            return;
        }
        let r = *r;
        let tainted = w.loss.tainted(bio.seen) || w.loss.tainted(r.seen);
        ctx.report_if(Rule::BioCompleteAfterTeardown, tainted, || {
            let mut object = bio.object(bio.end_io);
            // Removal is per disk: name it even when it is the device.
            object.disk = Some(bio.disk);
            let mut b =
                FindingBuilder::new(FindingKind::BioCompleteAfterTeardown, done.actor.ts, object);
            let remover = b.side("remover", &r.started);
            let completer = b.side("completer", &done.actor);
            b.act(completer, &bio.queued(), bio.submitted_by());
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
}

impl Invariant for BioTeardown {
    fn interest(&self) -> Interest {
        Interest {
            events: &[EventTag::DelGendisk, EventTag::DelGendiskExit],
            facts: &[
                FactTag::Observed,
                FactTag::ObservedOut,
                FactTag::Completed,
                FactTag::Retired,
            ],
            deadlines: false,
        }
    }

    fn on_event(&mut self, ev: &Event, actor: &Actor, w: &mut World, _ctx: &mut Ctx<'_>) {
        match &ev.kind {
            EventKind::DelGendisk { dev, .. } => {
                let seen = w.loss.seen(ev.ts);
                self.del_gendisk(actor, *dev, seen);
            }
            EventKind::DelGendiskExit { dev, .. } => self.del_gendisk_exit(actor, *dev),
            _ => {}
        }
    }

    fn on_fact(&mut self, fact: &Fact, w: &mut World, ctx: &mut Ctx<'_>) {
        match fact {
            Fact::Observed { tid, obs } => self.observe(*tid, obs),
            Fact::Completed { bio, done } => self.completed(bio, done, w, ctx),
            Fact::Retired { tid, .. } => {
                self.deleting.remove(tid);
            }
            _ => {}
        }
    }

    fn stats(&self, stats: &mut EngineStats) {
        stats.evictions.removals = self.evicted;
    }
}
