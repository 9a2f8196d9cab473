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
//!    wakeup that came after all their I/O had completed), T submitted at
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
//!
//! Why the devices T used rather than every device: on a busy host some
//! device always has I/O in flight, and the seed's database host would never
//! have been caught. What remains possible is T waiting for I/O on a device
//! it did not touch in this syscall, right after its own I/O completed;
//! condition 4 narrows that to the instant its own I/O finished.

use std::collections::BTreeSet;

use super::Ctx;
use crate::engine::actor::Actor;
use crate::engine::bios::{Bio, Bios, Completion, Via};
use crate::engine::config::Rule;
use crate::engine::finding::{Finding, FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::loss::Seen;
use crate::engine::tasks::{Sleep, Task, Tasks};
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
    /// T was woken after `last_done`.
    pub woken_since_done: bool,
    pub seen: Option<Seen>,
    /// The sleep (its start) already reported.
    reported: Option<u64>,
    /// The armed timer's key.
    timer: Option<u64>,
}

impl Episode {
    fn reset(&mut self) {
        *self = Episode {
            id: self.id.wrapping_add(1),
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

pub struct LostWakeup {
    after: u64,
    race: u64,
    any_device: bool,
    /// Re-check interval while a disk of the task is busy.
    poll: u64,
    /// (deadline, tid).
    timers: BTreeSet<(u64, u32)>,
}

impl LostWakeup {
    pub fn new(after: u64, race: u64, any_device: bool) -> Self {
        Self {
            after,
            race,
            any_device,
            poll: (after / 8).max(1),
            timers: BTreeSet::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|(d, _)| *d)
    }

    /// A new threshold, as of `now`: every armed sleeper is judged again
    /// against it (its timer moves, or it is reported at once).
    pub fn set_after(&mut self, after: u64, tasks: &mut Tasks, bios: &Bios, now: u64) {
        self.after = after;
        self.poll = (after / 8).max(1);
        let armed: Vec<u32> = self.timers.iter().map(|(_, tid)| *tid).collect();
        for tid in armed {
            if let Some(task) = tasks.get_mut(tid) {
                self.arm(tid, task, bios, now);
            }
        }
    }

    pub fn armed(&self) -> usize {
        self.timers.len()
    }

    /// T submitted a bio (a new lifecycle, in task context).
    pub fn submitted(&mut self, tid: u32, task: &mut Task, act: BioAct, seen: Seen) {
        let ep = &mut task.episode;
        if ep.submitted == 0 {
            ep.seen = Some(seen);
        }
        ep.submitted += 1;
        ep.inflight += 1;
        ep.add_disk(act.disk);
        ep.last_submit = Some(act);
        self.disarm(tid, task);
    }

    /// A bio charged to `tid`'s episode completed (first completion).
    pub fn completed(
        &mut self,
        tid: u32,
        task: &mut Task,
        bio: &Bio,
        done: &Completion,
        bios: &Bios,
    ) {
        let ep = &mut task.episode;
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
        self.arm(tid, task, bios, done.actor.ts);
    }

    /// The `bio_endio` call that completed `bio` returned at `ts`.
    pub fn handler_returned(&mut self, tid: u32, task: &mut Task, bio: &Bio, ts: u64, bios: &Bios) {
        let ep = &mut task.episode;
        if bio.episode != ep.id || ep.last_done.is_none_or(|d| d.bio != bio.addr) {
            return;
        }
        ep.done_until = Some(ts);
        if task.sleep.is_some() {
            self.arm(tid, task, bios, ts);
        }
    }

    /// A bio of `tid`'s episode is no longer known (evicted, re-initialised).
    pub fn lost_track(&mut self, task: &mut Task, bio: &Bio) {
        let ep = &mut task.episode;
        if bio.episode == ep.id && ep.submitted > 0 {
            ep.inflight = ep.inflight.saturating_sub(1);
            ep.uncertain = true;
        }
    }

    /// T went to sleep (any state: only iowait D sleeps are judged).
    pub fn slept(&mut self, tid: u32, task: &mut Task, bios: &Bios) {
        let now = task.sleep.map_or(0, |s| s.actor.ts);
        self.arm(tid, task, bios, now);
    }

    /// T was woken (or seen running) after the sleep in `task.sleep`.
    pub fn woken(&mut self, tid: u32, task: &mut Task) {
        self.disarm(tid, task);
        let ep = &mut task.episode;
        if ep.inflight == 0 {
            // Everything it submitted had completed and it was woken after:
            // whatever it waited for, it had its chance to see.
            ep.reset();
        } else if ep.last_done.is_some() {
            ep.woken_since_done = true;
        }
    }

    /// T returned to user space or exits: its waits are over.
    pub fn left_kernel(&mut self, tid: u32, task: &mut Task) {
        self.disarm(tid, task);
        task.episode.reset();
    }

    fn disarm(&mut self, tid: u32, task: &mut Task) {
        if let Some(at) = task.episode.timer.take() {
            self.timers.remove(&(at, tid));
        }
    }

    fn arm(&mut self, tid: u32, task: &mut Task, bios: &Bios, now: u64) {
        self.disarm(tid, task);
        let at = match self.judge(task, bios, now) {
            Verdict::Never => return,
            Verdict::At(at) => at,
            Verdict::Now => now,
        };
        task.episode.timer = Some(at);
        self.timers.insert((at, tid));
    }

    /// When (if ever) T's sleep becomes reportable, as of `now`.
    fn judge(&self, task: &Task, bios: &Bios, now: u64) -> Verdict {
        let Some(sleep) = task.sleep else {
            return Verdict::Never;
        };
        let ep = &task.episode;
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
        let done_until = ep.done_until.unwrap_or(done.actor.ts);
        if done_until.saturating_add(self.race) < sleep.actor.ts {
            return Verdict::Never;
        }
        let mut since = sleep.actor.ts.max(done_until);
        if self.any_device || ep.many_disks {
            if bios.inflight > 0 {
                return Verdict::At(now + self.poll);
            }
            since = since.max(bios.idle_since);
        } else {
            for disk in &ep.disks[..ep.n_disks as usize] {
                let d = bios.disk(*disk);
                if d.inflight > 0 {
                    return Verdict::At(now + self.poll);
                }
                since = since.max(d.idle_since);
            }
        }
        let due = since.saturating_add(self.after);
        if due <= now {
            Verdict::Now
        } else {
            Verdict::At(due)
        }
    }

    /// Judges the sleepers due at or before `now`.
    pub fn fire(&mut self, now: u64, tasks: &mut Tasks, bios: &Bios, ctx: &mut Ctx<'_>) {
        while let Some(&(at, tid)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, tid));
            let Some(task) = tasks.get_mut(tid) else {
                continue;
            };
            if task.episode.timer != Some(at) {
                continue;
            }
            task.episode.timer = None;
            match self.judge(task, bios, at) {
                Verdict::Never => {}
                Verdict::At(later) => {
                    task.episode.timer = Some(later);
                    self.timers.insert((later, tid));
                }
                Verdict::Now => {
                    let sleep = task.sleep.expect("judged asleep");
                    task.episode.reported = Some(sleep.actor.ts);
                    let tainted = task.episode.seen.is_none_or(|s| ctx.tainted(s));
                    let ep = task.episode.clone();
                    ctx.report(Rule::LostWakeup, tainted, || finding(&sleep, &ep, at));
                }
            }
        }
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
