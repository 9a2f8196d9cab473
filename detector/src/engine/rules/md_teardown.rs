//! md superblock writes across array teardown (seed 003).
//!
//! `md_super_write()` issues a superblock write without waiting and counts
//! it in `mddev->pending_writes`; `super_written()` is its completion, and
//! it dereferences the array. `do_md_stop()` runs `__md_stop_writes()` (the
//! last flush: writes issued there are normal if `md_super_wait()` drains
//! them), then `__md_stop()`, which frees the bitmap and calls
//! `mddev_detach()`, after which the personality is freed; `md_kobj_release`
//! frees the mddev itself.
//!
//! The point of no return is `mddev_detach()` *after* `__md_stop()` (both
//! also run outside teardown, on a level change or a bitmap removal, so
//! neither alone means teardown) or `md_kobj_release`. In between, the
//! kernel may still wait for pending writes (in `md_bitmap_free` on fixed
//! kernels), so a write pending at `__md_stop` entry is not yet a bug.
//!
//! - `md-teardown-inflight`: at the point of no return, superblock writes are
//!   still pending (the kernel's own `pending_writes` when the hook could
//!   read it, else the writes seen issued minus those seen completed).
//! - `md-write-after-teardown`: `super_written` runs after that point. Both
//!   may be reported for one write: the first says the race window was open,
//!   the second that the completion really ran on a torn-down array.
//!
//! Once `md_kobj_release` freed the mddev, its address can hold a new
//! array: only a late `super_written` of a write the old array had pending
//! is still judged against the old one; anything else starts a new array.

use std::collections::VecDeque;

use super::{Ctx, Interest, Invariant};
use crate::engine::actor::Actor;
use crate::engine::config::Rule;
use crate::engine::finding::{Finding, FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::hash::FastMap;
use crate::engine::loss::Seen;
use crate::engine::stats::EngineStats;
use crate::engine::world::World;
use crate::event::{Addr, Event, EventKind, EventTag, TeardownStage};

/// Pending writes remembered per array for the diagram.
const KEEP_WRITES: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Write {
    actor: Actor,
    rdev: Addr,
    sector: u64,
    seen: Seen,
}

#[derive(Debug)]
struct Array {
    life: u32,
    /// Writes seen issued and not seen completed (the oldest dropped
    /// beyond `KEEP_WRITES`; `pending_seen` still counts them).
    writes: VecDeque<Write>,
    pending_seen: u32,
    last_wait: Option<Actor>,
    stop_writes: Option<Actor>,
    stop: Option<Actor>,
    /// The point of no return and the stage that marked it.
    torn: Option<(Actor, TeardownStage, Seen)>,
    reported_inflight: bool,
    /// `md_kobj_release` ran: the mddev is freed.
    freed: bool,
}

impl Array {
    fn new(life: u32) -> Self {
        Self {
            life,
            writes: VecDeque::new(),
            pending_seen: 0,
            last_wait: None,
            stop_writes: None,
            stop: None,
            torn: None,
            reported_inflight: false,
            freed: false,
        }
    }
}

pub struct MdTeardown {
    max: usize,
    arrays: FastMap<Addr, Array>,
    fifo: VecDeque<(Addr, u32)>,
    next_life: u32,
    evicted: u64,
}

impl MdTeardown {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            arrays: FastMap::default(),
            fifo: VecDeque::new(),
            next_life: 0,
            evicted: 0,
        }
    }

    /// The array at `mddev`: a new one if none is known or the one known
    /// was freed.
    fn array(&mut self, mddev: Addr) -> &mut Array {
        if self.arrays.get(&mddev).is_some_and(|a| a.freed) {
            self.arrays.remove(&mddev);
        }
        if !self.arrays.contains_key(&mddev) {
            while self.arrays.len() >= self.max {
                let Some((victim, life)) = self.fifo.pop_front() else {
                    break;
                };
                if self.arrays.get(&victim).is_some_and(|a| a.life == life) {
                    self.arrays.remove(&victim);
                    self.evicted += 1;
                }
            }
            let life = self.next_life;
            self.next_life = self.next_life.wrapping_add(1);
            self.arrays.insert(mddev, Array::new(life));
            self.fifo.push_back((mddev, life));
        }
        self.arrays.get_mut(&mddev).expect("inserted")
    }

    fn super_write(&mut self, actor: &Actor, mddev: Addr, rdev: Addr, sector: u64, seen: Seen) {
        let array = self.array(mddev);
        if array.torn.is_some() {
            // Nothing issues superblock writes once the array is detached
            // or freed: this is a new array at the same address (or the
            // same one assembled again).
            let life = array.life;
            *array = Array::new(life);
        }
        array.pending_seen += 1;
        if array.writes.len() == KEEP_WRITES {
            array.writes.pop_front();
        }
        array.writes.push_back(Write {
            actor: *actor,
            rdev,
            sector,
            seen,
        });
    }

    fn super_wait(&mut self, actor: &Actor, mddev: Addr) {
        if let Some(array) = self.arrays.get_mut(&mddev).filter(|a| !a.freed) {
            array.last_wait = Some(*actor);
        }
    }

    fn super_written(
        &mut self,
        actor: &Actor,
        mddev: Addr,
        rdev: Addr,
        sector: u64,
        w: &World,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(array) = self.arrays.get_mut(&mddev) else {
            return;
        };
        let at = array
            .writes
            .iter()
            .position(|w| w.rdev == rdev && w.sector == sector);
        if array.freed && at.is_none() {
            // A write of a new array at the freed one's address.
            self.arrays.remove(&mddev);
            return;
        }
        let write = match at {
            Some(i) => array.writes.remove(i),
            None => array.writes.pop_front(),
        };
        array.pending_seen = array.pending_seen.saturating_sub(1);
        let Some((torn_by, stage, torn_seen)) = array.torn else {
            return;
        };
        let stop = array.stop;
        ctx.report(Rule::MdTeardown, &w.loss, torn_seen, || {
            let mut b = FindingBuilder::new(
                FindingKind::MdWriteAfterTeardown,
                actor.ts,
                Object::new(ObjectKind::Mddev, mddev),
            );
            let teardown = b.side("teardown", &torn_by);
            let completion = b.side("completion", actor);
            if let Some(w) = &write {
                // The seed's write is issued by the tearing-down task itself.
                let column = if w.actor.tid == torn_by.tid && !w.actor.irq {
                    teardown
                } else {
                    b.side("writer", &w.actor)
                };
                b.act(column, &w.actor, write_text(w));
            }
            if let Some(stop) = &stop {
                b.act(teardown, stop, "__md_stop: array teardown begins".into());
            }
            b.act(
                teardown,
                &torn_by,
                format!("{}: {}", stage.function(), gone(stage)),
            );
            b.act(
                completion,
                actor,
                format!("super_written(rdev {rdev}, sector {sector}) runs on the torn-down array"),
            );
            b.finish(format!(
                "super_written() ran for md array {mddev} {} after {} ({}): the superblock \
                 write completion dereferences an array that is already torn down \
                 (use after free); teardown must wait for mddev->pending_writes to drain",
                duration(actor.ts.saturating_sub(torn_by.ts)),
                stage.function(),
                gone(stage),
            ))
        });
    }

    fn teardown(
        &mut self,
        actor: &Actor,
        mddev: Addr,
        stage: TeardownStage,
        pending_writes: Option<i32>,
        w: &World,
        ctx: &mut Ctx<'_>,
    ) {
        let seen = w.loss.seen(actor.ts);
        let array = self.array(mddev);
        match stage {
            TeardownStage::StopWrites => {
                array.stop_writes = Some(*actor);
                return;
            }
            TeardownStage::Stop => {
                array.stop = Some(*actor);
                return;
            }
            TeardownStage::BitmapFree => return,
            TeardownStage::Detach if array.stop.is_none() => return,
            TeardownStage::Detach | TeardownStage::KobjRelease => {}
        }
        if array.torn.is_none() {
            array.torn = Some((*actor, stage, seen));
        }
        if stage == TeardownStage::KobjRelease {
            array.freed = true;
        }
        // The kernel's count is exact; ours misses writes issued before
        // tracing started and is only as good as the events that arrived.
        let (pending, tainted) = match pending_writes {
            Some(n) => (n.max(0) as u32, false),
            None => (
                array.pending_seen,
                array
                    .writes
                    .front()
                    .is_some_and(|wr| w.loss.tainted(wr.seen)),
            ),
        };
        if pending == 0 || array.reported_inflight {
            return;
        }
        array.reported_inflight = true;
        let finding = inflight_finding(array, actor, mddev, stage, pending);
        ctx.report_if(Rule::MdTeardown, tainted, || finding);
    }
}

impl Invariant for MdTeardown {
    fn interest(&self) -> Interest {
        Interest {
            events: &[
                EventTag::MdSuperWrite,
                EventTag::MdSuperWritten,
                EventTag::MdSuperWait,
                EventTag::MdTeardown,
            ],
            facts: &[],
            deadlines: false,
        }
    }

    fn on_event(&mut self, ev: &Event, actor: &Actor, w: &mut World, ctx: &mut Ctx<'_>) {
        match &ev.kind {
            EventKind::MdSuperWrite {
                mddev,
                rdev,
                sector,
                ..
            } => {
                let seen = w.loss.seen(ev.ts);
                self.super_write(actor, *mddev, *rdev, *sector, seen);
            }
            EventKind::MdSuperWritten {
                mddev,
                rdev,
                sector,
                ..
            } => self.super_written(actor, *mddev, *rdev, *sector, w, ctx),
            EventKind::MdSuperWait { mddev, .. } => self.super_wait(actor, *mddev),
            EventKind::MdTeardown {
                mddev,
                stage,
                pending_writes,
            } => self.teardown(actor, *mddev, *stage, *pending_writes, w, ctx),
            _ => {}
        }
    }

    fn stats(&self, stats: &mut EngineStats) {
        stats.live.md_arrays = self.arrays.len() as u64;
        stats.evictions.md_arrays = self.evicted;
    }
}

fn inflight_finding(
    array: &Array,
    actor: &Actor,
    mddev: Addr,
    stage: TeardownStage,
    pending: u32,
) -> Finding {
    let mut b = FindingBuilder::new(
        FindingKind::MdTeardownInflight,
        actor.ts,
        Object::new(ObjectKind::Mddev, mddev),
    );
    let teardown = b.side("teardown", actor);
    let mut writer = None;
    for w in &array.writes {
        // Writes issued by the tearing-down task itself (the seed: a bitmap
        // flush inside __md_stop_writes) go in its own column.
        let column = if w.actor.tid == actor.tid && !w.actor.irq {
            teardown
        } else {
            *writer.get_or_insert_with(|| b.side("writer", &w.actor))
        };
        b.act(column, &w.actor, write_text(w));
    }
    if let Some(a) = &array.stop_writes {
        b.act(teardown, a, "__md_stop_writes: last flush".into());
    }
    if let Some(a) = &array.last_wait {
        b.act(
            teardown,
            a,
            "md_super_wait: waits for superblock writes".into(),
        );
    }
    if let Some(a) = &array.stop {
        b.act(teardown, a, "__md_stop: array teardown begins".into());
    }
    b.act(
        teardown,
        actor,
        format!(
            "{}: {} with {pending} superblock write(s) in flight",
            stage.function(),
            gone(stage)
        ),
    );
    let waited = if array.last_wait.is_some() {
        "md_super_wait() ran, but not after the last write"
    } else {
        "nothing waited for them"
    };
    b.finish(format!(
        "md array {mddev} reached {} with {pending} superblock write(s) still pending ({waited}): \
         when super_written() runs it touches a torn-down array; the teardown must \
         md_super_wait() after the last md_super_write()",
        stage.function()
    ))
}

fn write_text(w: &Write) -> String {
    format!(
        "md_super_write(rdev {}, sector {}): issued without waiting",
        w.rdev, w.sector
    )
}

fn gone(stage: TeardownStage) -> &'static str {
    match stage {
        TeardownStage::KobjRelease => "the mddev is freed",
        _ => "the personality is detached",
    }
}
