//! A task asleep for I/O that has already completed (seed 004).
//!
//! In the seed, `dio_bio_end_aio()` read `dio->waiter` before the waiter
//! registered and dropped the last reference after it checked, so the last
//! completion woke nobody and the waiter slept in `io_schedule()` forever.
//! Seen from outside: a task sleeps uninterruptibly in iowait, everything
//! it submitted has completed, and no wakeup comes.
//!
//! Waiting is not observable, so the rule only speaks when the sleep can be
//! nothing but a wait for the task's own I/O. Task T is reported when all of
//! this holds for `lost_wakeup_after` without a break:
//!
//! 1. T sleeps in `TASK_UNINTERRUPTIBLE`, not preempted, with `in_iowait`
//!    (`io_schedule()`); it was not woken (no `sched_waking`/`sched_wakeup`
//!    for it, not switched in, no event as current).
//! 2. Since T last left the kernel (syscall return; kernel threads: since a
//!    wakeup that came after all their I/O had completed, or an idle sleep,
//!    whose end of the episode the kernel side says on T's next
//!    submission or reported switch), T submitted at
//!    least one bio, and every one of them has completed, each named by its
//!    completion (a completion inferred from a request's sector range could
//!    belong to an overlapping bio, and an evicted or re-initialised bio is
//!    unknown: either makes the verdict impossible).
//! 3. No wakeup of T followed the last of those completions.
//! 4. That completion ran after T went to sleep, or at most
//!    `lost_wakeup_race` before: the seed's race, where the completion runs
//!    while the waiter is on its way into `io_schedule()`. A completion T
//!    could see while running for longer than that is not what it sleeps on.
//!    With `bio_endio` hooked, the completion lasts until its handler
//!    returns (the wakeup, or the skipped one, is the handler's last act).
//! 5. Nothing is in flight on the disks T submitted to (or on any disk, if
//!    `lost_wakeup_any_device`). A task sleeping on someone else's I/O to
//!    the same device, such as a page under writeback by the flusher or a
//!    journal commit, is waiting for that, not for its own.
//! 6. That completion ran in another context than T's own task context: a
//!    bio T completed itself (polled, or failed inline) is one it saw
//!    complete, not one whose wakeup it waits for.
//! 7. The sleep is tied to the I/O: the code that sleeps (the first frame
//!    of the sleep's stack above the scheduler), or one of its two
//!    callers, also submitted the I/O (it is on the stack of T's last
//!    submission), and it is not a wait on a lock, bit, pool, throttle or
//!    completion (`stacks::tie`). A task whose own I/O completed and that
//!    then sleeps on a page lock another task holds waits for that task.
//!    Without both stacks the verdict is indeterminate.
//!
//! Why the devices T used rather than every device: on a busy host some
//! device always has I/O in flight, and the seed's database host would never
//! have been caught. What remains possible is T waiting for I/O on a device
//! it did not touch in this syscall, right after its own I/O completed;
//! condition 4 narrows that to the instant its own I/O finished.

use std::collections::BTreeSet;

use super::{Ctx, Interest, Invariant};
use crate::engine::actor::Actor;
use crate::engine::bios::{Bio, Bios, Completion, Via};
use crate::engine::config::{EngineConfig, Rule};
use crate::engine::facts::{Fact, FactTag};
use crate::engine::finding::{Finding, FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::handlers::Call;
use crate::engine::hash::FastMap;
use crate::engine::loss::Seen;
use crate::engine::stacks::{Tie, tie};
use crate::engine::stats::EngineStats;
use crate::engine::tasks::{ObsKind, Sleep};
use crate::engine::world::World;
use crate::event::{Addr, Dev};

const MAX_DISKS: usize = 4;

/// A bio of the episode, as it was submitted or completed.
#[derive(Clone, Copy, Debug)]
pub struct BioAct {
    pub actor: Actor,
    pub bio: Addr,
    pub dev: Dev,
    pub disk: Dev,
    pub via: Option<Via>,
}

/// What a task submitted since it last left the kernel.
#[derive(Clone, Debug, Default)]
pub struct Episode {
    /// The task's episode number (`Task::episode`) this describes.
    pub id: u32,
    pub submitted: u32,
    pub inflight: u32,
    /// A bio of the episode completed without being named, or was lost.
    pub uncertain: bool,
    disks: [Dev; MAX_DISKS],
    n_disks: u8,
    many_disks: bool,
    pub last_submit: Option<BioAct>,
    pub last_done: Option<BioAct>,
    /// When the completion handler of `last_done` returned.
    pub done_until: Option<u64>,
    /// The latest submission of the episode that came with a stack: what
    /// the sleep is tied to.
    pub last_submit_stacked: Option<Actor>,
    /// T was woken after `last_done`.
    pub woken_since_done: bool,
    pub seen: Option<Seen>,
    /// The sleep (its start) already reported.
    reported: Option<u64>,
    /// The armed timer's key.
    timer: Option<u64>,
}

impl Episode {
    fn reset(&mut self, id: u32) {
        *self = Episode {
            id,
            timer: self.timer,
            ..Episode::default()
        };
    }

    fn add_disk(&mut self, disk: Dev) {
        let n = self.n_disks as usize;
        if self.disks[..n].contains(&disk) {
            return;
        }
        if n == MAX_DISKS {
            self.many_disks = true;
        } else {
            self.disks[n] = disk;
            self.n_disks += 1;
        }
    }
}

/// The outcome of judging a sleeper at some time.
enum Verdict {
    Never,
    At(u64),
    Now,
}

#[derive(Default)]
pub struct LostWakeup {
    episodes: FastMap<u32, Episode>,
    /// (deadline, tid).
    timers: BTreeSet<(u64, u32)>,
}

impl LostWakeup {
    /// The episode of `tid`, started afresh if the task began a new one.
    fn episode(&mut self, tid: u32, w: &World) -> Option<&mut Episode> {
        current_episode(&mut self.episodes, tid, w)
    }

    /// T submitted a bio (a new life, in task context).
    fn submitted(&mut self, bio: &Bio, w: &World) {
        // A bio keeps its submission packed: unpack it once.
        let queued = bio.queued();
        let tid = bio.submitter();
        if tid == 0 || queued.irq {
            return;
        }
        let seen = bio.seen;
        let Some(ep) = self.episode(tid, w) else {
            return;
        };
        if bio.episode != ep.id {
            return;
        }
        if ep.submitted == 0 {
            ep.seen = Some(seen);
        }
        ep.submitted += 1;
        ep.inflight += 1;
        ep.add_disk(bio.disk);
        ep.last_submit = Some(BioAct {
            actor: queued,
            bio: bio.addr,
            dev: bio.dev,
            disk: bio.disk,
            via: None,
        });
        if queued.stack.is_some() {
            ep.last_submit_stacked = Some(queued);
        }
        self.disarm(tid);
    }

    /// A bio charged to an episode completed (first completion).
    fn completed(&mut self, bio: &Bio, done: &Completion, w: &World, cfg: &EngineConfig) {
        let tid = bio.submitter();
        if tid == 0 {
            return;
        }
        let Some(ep) = self.episode(tid, w) else {
            return;
        };
        if bio.episode != ep.id || ep.submitted == 0 {
            return;
        }
        ep.inflight = ep.inflight.saturating_sub(1);
        if done.via == Via::Range {
            ep.uncertain = true;
        } else {
            ep.last_done = Some(BioAct {
                actor: done.actor,
                bio: bio.addr,
                dev: bio.dev,
                disk: bio.disk,
                via: Some(done.via),
            });
            ep.done_until = None;
            ep.woken_since_done = false;
        }
        self.arm(tid, w, cfg, done.actor.ts);
    }

    /// The `bio_endio` call `call` returned at `ts`: if it completed the
    /// last bio of its submitter's episode, that completion lasted until
    /// now (the wakeup, or the skipped one, is the handler's last act).
    fn handler_returned(&mut self, call: &Call, ts: u64, w: &World, cfg: &EngineConfig) {
        let Some(bio) = w.bios.completed(call.bio).map(|d| &d.bio) else {
            return;
        };
        let tid = bio.submitter();
        if tid == 0 {
            return;
        }
        let Some(ep) = self.episodes.get_mut(&tid) else {
            return;
        };
        if bio.episode != ep.id || ep.last_done.is_none_or(|d| d.bio != bio.addr) {
            return;
        }
        ep.done_until = Some(ts);
        if w.tasks.get(tid).is_some_and(|t| t.sleep.is_some()) {
            self.arm(tid, w, cfg, ts);
        }
    }

    /// A bio of an episode is no longer known (evicted, re-initialised).
    fn untracked(&mut self, bio: &Bio) {
        if let Some(ep) = self.episodes.get_mut(&bio.submitter())
            && bio.episode == ep.id
            && ep.submitted > 0
        {
            ep.inflight = ep.inflight.saturating_sub(1);
            ep.uncertain = true;
        }
    }

    /// T was woken (or seen running) after its sleep.
    fn woken(&mut self, tid: u32, w: &mut World) {
        self.disarm(tid);
        let Some(ep) = self.episodes.get_mut(&tid) else {
            return;
        };
        if ep.inflight == 0 {
            // Everything it submitted had completed and it was woken after:
            // whatever it waited for, it had its chance to see. A kernel
            // thread never returns to user space: this ends its episode.
            if let Some(task) = w.tasks.get_mut(tid) {
                task.episode = task.episode.wrapping_add(1);
                task.unbounded_since = None;
                ep.reset(task.episode);
            }
        } else if ep.last_done.is_some() {
            ep.woken_since_done = true;
        }
    }

    fn disarm(&mut self, tid: u32) {
        if let Some(ep) = self.episodes.get_mut(&tid)
            && let Some(at) = ep.timer.take()
        {
            self.timers.remove(&(at, tid));
        }
    }

    fn arm(&mut self, tid: u32, w: &World, cfg: &EngineConfig, now: u64) {
        self.disarm(tid);
        // A sleep after the task's episode ended (its return to user space
        // may be learnt only now) is judged against the new, empty one.
        let (Some(task), Some(ep)) = (
            w.tasks.get(tid),
            current_episode(&mut self.episodes, tid, w),
        ) else {
            return;
        };
        let at = match judge(task.sleep, ep, &w.bios, now, cfg) {
            Verdict::Never => return,
            Verdict::At(at) => at,
            Verdict::Now => now,
        };
        ep.timer = Some(at);
        self.timers.insert((at, tid));
    }

    /// Judges the sleepers due at or before `now`.
    fn fire_due(&mut self, now: u64, w: &World, ctx: &mut Ctx<'_>) {
        while let Some(&(at, tid)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, tid));
            let (Some(task), Some(ep)) = (w.tasks.get(tid), self.episodes.get_mut(&tid)) else {
                continue;
            };
            if ep.timer != Some(at) {
                continue;
            }
            if ep.id != task.episode {
                // The episode ended (and with it the waits) after arming.
                ep.timer = None;
                continue;
            }
            ep.timer = None;
            match judge(task.sleep, ep, &w.bios, at, ctx.cfg) {
                Verdict::Never => {}
                Verdict::At(later) => {
                    ep.timer = Some(later);
                    self.timers.insert((later, tid));
                }
                Verdict::Now => {
                    let sleep = task.sleep.expect("judged asleep");
                    ep.reported = Some(sleep.actor.ts);
                    if task.episode_unbounded_at(sleep.actor.ts) {
                        // The task may have returned to user space unseen
                        // (the syscall hooks were detached) and now sleep
                        // in a later syscall, for something else.
                        ctx.indeterminate(Rule::LostWakeup);
                        continue;
                    }
                    match sleep_tie(&sleep, ep, w) {
                        Some(Tie::Tied) => {
                            let tainted = ep.seen.is_none_or(|s| w.loss.tainted(s));
                            let ep = ep.clone();
                            ctx.report_if(Rule::LostWakeup, tainted, || finding(&sleep, &ep, at));
                        }
                        Some(Tie::Unrelated) => {}
                        None => ctx.indeterminate(Rule::LostWakeup),
                    }
                }
            }
        }
    }
}

/// The episode of `tid` in `episodes`, started afresh if the task began a
/// new one.
fn current_episode<'a>(
    episodes: &'a mut FastMap<u32, Episode>,
    tid: u32,
    w: &World,
) -> Option<&'a mut Episode> {
    let id = w.tasks.get(tid)?.episode;
    let ep = episodes.entry(tid).or_default();
    if ep.id != id {
        ep.reset(id);
    }
    Some(ep)
}

/// How often a sleeper whose disks are busy is judged again.
fn poll(cfg: &EngineConfig) -> u64 {
    (cfg.lost_wakeup_after_ns / 8).max(1)
}

/// What the sleep's stack and the last submission's say (None: a stack
/// is missing).
fn sleep_tie(sleep: &Sleep, ep: &Episode, w: &World) -> Option<Tie> {
    let sleep_fns = w.stacks.get(sleep.actor.stack?)?;
    let submit_fns = w.stacks.get(ep.last_submit_stacked?.stack?)?;
    Some(tie(sleep_fns, submit_fns))
}

/// When (if ever) a sleep becomes reportable, as of `now`.
fn judge(sleep: Option<Sleep>, ep: &Episode, bios: &Bios, now: u64, cfg: &EngineConfig) -> Verdict {
    let Some(sleep) = sleep else {
        return Verdict::Never;
    };
    if !sleep.uninterruptible
        || !sleep.iowait
        || ep.submitted == 0
        || ep.inflight > 0
        || ep.uncertain
        || ep.woken_since_done
        || ep.reported == Some(sleep.actor.ts)
    {
        return Verdict::Never;
    }
    let Some(done) = ep.last_done else {
        return Verdict::Never;
    };
    if !done.actor.irq && done.actor.tid == sleep.actor.tid {
        // It completed its own bio: nothing to be woken for.
        return Verdict::Never;
    }
    let done_until = ep.done_until.unwrap_or(done.actor.ts);
    let race = cfg.lost_wakeup_race_ns;
    if done_until.saturating_add(race) < sleep.actor.ts {
        return Verdict::Never;
    }
    let mut since = sleep.actor.ts.max(done_until);
    if cfg.lost_wakeup_any_device || ep.many_disks {
        if bios.inflight > 0 {
            return Verdict::At(now + poll(cfg));
        }
        since = since.max(bios.idle_since);
    } else {
        for disk in &ep.disks[..ep.n_disks as usize] {
            let d = bios.disk(*disk);
            if d.inflight > 0 {
                return Verdict::At(now + poll(cfg));
            }
            since = since.max(d.idle_since);
        }
    }
    let due = since.saturating_add(cfg.lost_wakeup_after_ns);
    if due <= now {
        Verdict::Now
    } else {
        Verdict::At(due)
    }
}

impl Invariant for LostWakeup {
    fn interest(&self) -> Interest {
        Interest {
            events: &[],
            facts: &[
                FactTag::Submitted,
                FactTag::Completed,
                FactTag::HandlerReturned,
                FactTag::Untracked,
                FactTag::Slept,
                FactTag::Woken,
                FactTag::ObservedOut,
                FactTag::Retired,
            ],
            deadlines: true,
        }
    }

    fn on_fact(&mut self, fact: &Fact, w: &mut World, ctx: &mut Ctx<'_>) {
        let cfg = ctx.cfg;
        match fact {
            Fact::Submitted { bio, new: true } => self.submitted(bio, w),
            Fact::Completed { bio, done } => self.completed(bio, done, w, cfg),
            Fact::HandlerReturned { call, ts, .. } => self.handler_returned(call, *ts, w, cfg),
            Fact::Untracked { bio } => self.untracked(bio),
            Fact::Slept { tid } => {
                let now = w
                    .tasks
                    .get(*tid)
                    .and_then(|t| t.sleep)
                    .map_or(0, |s| s.actor.ts);
                self.arm(*tid, w, cfg, now);
            }
            Fact::Woken { tid } => self.woken(*tid, w),
            Fact::Observed { tid, obs } if matches!(obs.kind, ObsKind::User | ObsKind::Exit) => {
                // Its waits are over; the world started a new episode.
                self.disarm(*tid);
            }
            Fact::Retired { tid, .. } => {
                self.disarm(*tid);
                self.episodes.remove(tid);
            }
            _ => {}
        }
    }

    fn next_deadline(&self, _w: &World, _cfg: &EngineConfig) -> Option<u64> {
        self.timers.first().map(|(d, _)| *d)
    }

    fn fire(&mut self, now: u64, w: &mut World, ctx: &mut Ctx<'_>) {
        self.fire_due(now, w, ctx);
    }

    fn stats(&self, stats: &mut EngineStats) {
        stats.live.sleepers_judged = self.timers.len() as u64;
    }
}

fn finding(sleep: &Sleep, ep: &Episode, at: u64) -> Finding {
    let done = ep.last_done.expect("judged");
    let mut object = Object::new(ObjectKind::Bio, done.bio);
    object.dev = Some(done.dev);
    object.disk = (done.disk != done.dev).then_some(done.disk);
    let mut b = FindingBuilder::new(FindingKind::LostWakeup, at, object);
    let waiter = b.side("waiter", &sleep.actor);
    let completer = b.side("completer", &done.actor);
    if let Some(s) = &ep.last_submit {
        let more = if ep.submitted > 1 {
            format!(
                " (its last of {} since it entered the kernel)",
                ep.submitted
            )
        } else {
            String::new()
        };
        b.act(
            waiter,
            &s.actor,
            format!("submits bio {} to {}{more}", s.bio, s.dev),
        );
    }
    let via = done.via.map_or("completion", |v| v.describe());
    b.act(
        completer,
        &done.actor,
        format!(
            "bio {} completes ({via}); no wakeup for the waiter follows",
            done.bio
        ),
    );
    b.act(
        waiter,
        &sleep.actor,
        "sleeps uninterruptibly in io_schedule() (D, iowait)".into(),
    );
    let asleep = duration(at.saturating_sub(sleep.actor.ts));
    b.step(
        waiter,
        at,
        format!("still asleep after {asleep}, nothing in flight on its disks"),
        None,
    );
    b.finish(format!(
        "{} sleeps in iowait although all {} bio(s) it submitted have completed, the last by {} \
         {} {} its sleep, and nothing woke it for {asleep}: the completion path skipped the \
         wakeup (a waiter registered after the completer checked for one)",
        sleep.actor.who(),
        ep.submitted,
        done.actor.who(),
        duration(done.actor.ts.abs_diff(sleep.actor.ts)),
        if done.actor.ts >= sleep.actor.ts {
            "after"
        } else {
            "before"
        },
    ))
}
