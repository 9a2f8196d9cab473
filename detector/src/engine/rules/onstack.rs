//! `complete()` on a completion in another task's stack (seed 000).
//!
//! A completion `x` declared on task T's stack (`DECLARE_COMPLETION_ONSTACK`)
//! is only safe to `complete()` from elsewhere if T waits on it (any
//! `wait_for_completion*` or a successful `try_wait_for_completion`) after
//! that `complete()` and before T leaves the frame holding it: the wait
//! takes `x->wait.lock`, which the completer holds until it is done with
//! `x`. Bug 29402: `blkdev_issue_zeroout()` skipped the wait when a counter
//! said every bio was done, but the end_io bumped the counter *before*
//! calling `complete()`, which then wrote into a dead frame.
//!
//! Which task owns `x`: the one whose stack holds it (the task table knows
//! every stack seen). T has left the frame when it is seen with its stack
//! pointer above `x` (the stack grows down), back in user space, exiting,
//! or when `x` is initialised again. A stack pointer below `x` says nothing
//! (T may be in that frame or in an unrelated deeper call chain).
//!
//! For each `complete()` from another context (another task, or an
//! interrupt, which runs off T's stack even when T is current), the rule
//! waits for T's next move:
//! - a successful wait by T on `x` consumes it: fine;
//! - so does T being woken (`sched_waking`) by the context that called
//!   `complete()`, later than that call: the completer's program order puts
//!   the end of `complete()` before the wakeup. This is how code that waits
//!   on something else synchronises (`usb_start_wait_urb` kills the URB on
//!   timeout and sleeps until its completion handler has run);
//! - T leaves the frame first: `unsynchronized-onstack-complete`, or
//!   `complete-after-return` if T had already been seen out of the frame
//!   when the `complete()` ran (and not back in it since);
//! - a `complete()` landing while T was last seen out of the frame is also
//!   reported as `complete-after-return` if T shows no sign of life for
//!   `onstack_confirm`: T could have re-entered a frame at the same address
//!   and handed `x` over without any hooked call, but then it waits on `x`
//!   within microseconds.

use std::collections::{BTreeSet, VecDeque};

use super::Ctx;
use crate::engine::actor::{Actor, Exec};
use crate::engine::config::Rule;
use crate::engine::finding::{Finding, FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::hash::FastMap;
use crate::engine::loss::Seen;
use crate::engine::tasks::{Obs, ObsKind, Retire, Task, Tasks};
use crate::event::{Addr, WaitVariant};

/// On-stack completions tracked per owner; more are evicted.
const PER_TASK: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Lifecycle {
    life: u32,
    owner: u32,
    /// `complete()` calls from other contexts not yet consumed by a wait.
    pending: u32,
    /// A `complete_all()` is among them: any successful wait consumes all.
    all: bool,
    /// The first unconsumed `complete()`.
    first: Actor,
    first_all: bool,
    /// The owner's last observation before `first`, when it showed the
    /// frame already left (and the owner not back in it since).
    left_before: Option<Obs>,
    /// Where the owner was last seen below `x` before `first`.
    in_frame: Option<Obs>,
    /// The owner was seen (below `x`) since `first`.
    saw_owner: bool,
    seen: Seen,
    timer: Option<u64>,
}

/// Why a frame is known to be left.
struct Left {
    ts: u64,
    /// The event that showed it, if one did (not a timeout).
    actor: Option<Actor>,
    text: String,
    /// Goes in the owner's column (not someone else re-initialising `x`).
    by_owner: bool,
}

pub struct Onstack {
    confirm: u64,
    max: usize,
    lifecycles: FastMap<Addr, Lifecycle>,
    fifo: VecDeque<(Addr, u32)>,
    /// (deadline, x): `complete-after-return` candidates to confirm.
    timers: BTreeSet<(u64, Addr)>,
    next_life: u32,
    pub evicted: u64,
}

impl Onstack {
    pub fn new(confirm: u64, max: usize) -> Self {
        Self {
            confirm,
            max: max.max(1),
            lifecycles: FastMap::default(),
            fifo: VecDeque::new(),
            timers: BTreeSet::new(),
            next_life: 0,
            evicted: 0,
        }
    }

    /// Objects tracked now.
    pub fn tracked(&self) -> usize {
        self.lifecycles.len()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|(d, _)| *d)
    }

    /// `complete(x)` or `complete_all(x)` by `actor`.
    pub fn complete(
        &mut self,
        actor: &Actor,
        x: Addr,
        all: bool,
        on_own_stack: bool,
        tasks: &mut Tasks,
        ctx: &mut Ctx<'_>,
    ) {
        let seen_now = ctx.loss.seen(actor.ts);
        let owner = if on_own_stack && actor.tid != 0 {
            Some(actor.tid)
        } else {
            tasks.owner_of(x.0)
        };
        let Some(owner) = owner else {
            return;
        };
        if owner == actor.tid && !actor.irq {
            return; // the owner completing its own completion: in its frame
        }
        let Some(task) = tasks.get_mut(owner) else {
            return;
        };
        if self.lifecycles.get(&x).is_none_or(|l| l.owner != owner) {
            self.start(x, owner, task, ctx);
        }
        let lc = self.lifecycles.get_mut(&x).expect("started");
        if lc.pending == 0 {
            lc.first = *actor;
            lc.first_all = all;
            lc.left_before = task.last_obs.filter(|o| o.kind.left(x.0));
            lc.in_frame = task
                .last_stacked
                .filter(|o| matches!(o.kind, ObsKind::Frames(sp) if sp < x.0));
            lc.saw_owner = false;
            lc.seen = lc.left_before.map_or(seen_now, |o| o.seen);
            if lc.left_before.is_some() {
                let at = actor.ts.saturating_add(self.confirm);
                lc.timer = Some(at);
                self.timers.insert((at, x));
            }
        }
        lc.pending += 1;
        lc.all |= all;
    }

    fn start(&mut self, x: Addr, owner: u32, task: &mut Task, ctx: &mut Ctx<'_>) {
        if let Some(old) = self.lifecycles.remove(&x)
            && let Some(at) = old.timer
        {
            self.timers.remove(&(at, x));
        }
        while self.lifecycles.len() >= self.max {
            let Some((victim, life)) = self.fifo.pop_front() else {
                break;
            };
            if self.lifecycles.get(&victim).is_some_and(|l| l.life == life) {
                self.drop_lifecycle(victim);
                self.evicted += 1;
                if ctx.enabled(Rule::OnstackCompletion) {
                    ctx.indeterminate(Rule::OnstackCompletion);
                }
            }
        }
        if task.onstack.len() >= PER_TASK {
            let victim = task.onstack.remove(0);
            if self.drop_lifecycle(victim).is_some_and(|l| l.pending > 0)
                && ctx.enabled(Rule::OnstackCompletion)
            {
                ctx.indeterminate(Rule::OnstackCompletion);
            }
            self.evicted += 1;
        }
        task.onstack.push(x);
        let life = self.next_life;
        self.next_life = self.next_life.wrapping_add(1);
        self.lifecycles.insert(
            x,
            Lifecycle {
                life,
                owner,
                pending: 0,
                all: false,
                first: task.last_obs.map_or_else(Actor::unknown, |o| o.actor),
                first_all: false,
                left_before: None,
                in_frame: None,
                saw_owner: false,
                seen: ctx.loss.seen(0),
                timer: None,
            },
        );
        self.fifo.push_back((x, life));
    }

    fn drop_lifecycle(&mut self, x: Addr) -> Option<Lifecycle> {
        let lc = self.lifecycles.remove(&x)?;
        if let Some(at) = lc.timer {
            self.timers.remove(&(at, x));
        }
        Some(lc)
    }

    /// A wait on `x` started: if by the owner, it is in the frame.
    pub fn wait_enter(&mut self, actor: &Actor, x: Addr) {
        if let Some(lc) = self.owned_by(x, actor) {
            lc.saw_owner = true;
            lc.left_before = None;
        }
    }

    /// A wait on `x` returned with `ret`.
    pub fn wait_exit(
        &mut self,
        actor: &Actor,
        x: Addr,
        variant: WaitVariant,
        ret: i64,
        task: Option<&mut Task>,
    ) {
        let consumed = variant.succeeded(ret);
        if !consumed
            && !actor.irq
            && let Some(task) = task
        {
            task.failed_wait = Some((x, *actor, variant, ret));
        }
        let Some(lc) = self.owned_by(x, actor) else {
            return;
        };
        lc.saw_owner = true;
        lc.left_before = None;
        if !consumed {
            return;
        }
        lc.pending = if lc.all { 0 } else { lc.pending - 1 };
        if lc.pending == 0 {
            lc.all = false;
            if let Some(at) = lc.timer.take() {
                self.timers.remove(&(at, x));
            }
        }
    }

    fn owned_by(&mut self, x: Addr, actor: &Actor) -> Option<&mut Lifecycle> {
        self.lifecycles
            .get_mut(&x)
            .filter(|lc| lc.owner == actor.tid && !actor.irq && lc.pending > 0)
    }

    /// `waker` wakes `task` (`sched_waking`, in the waker's context): if it
    /// is the context that called `complete()` on one of the task's
    /// completions, that `complete()` has returned.
    pub fn woken_by(&mut self, waker: &Actor, tid: u32, task: &mut Task) {
        for &x in &task.onstack {
            if let Some(lc) = self.lifecycles.get_mut(&x)
                && lc.owner == tid
                && lc.pending > 0
                && Exec::of(&lc.first) == Exec::of(waker)
                && waker.ts > lc.first.ts
            {
                lc.pending = 0;
                lc.all = false;
                if let Some(at) = lc.timer.take() {
                    self.timers.remove(&(at, x));
                }
            }
        }
    }

    /// `init_completion(x)`: whatever `x` was, that life is over.
    pub fn init(&mut self, actor: &Actor, x: Addr, tasks: &mut Tasks, ctx: &mut Ctx<'_>) {
        let Some(lc) = self.drop_lifecycle(x) else {
            return;
        };
        if let Some(task) = tasks.get_mut(lc.owner) {
            task.onstack.retain(|&y| y != x);
        }
        let by_owner = actor.tid == lc.owner && !actor.irq;
        let left = Left {
            ts: actor.ts,
            actor: Some(*actor),
            text: format!("init_completion({x}): a new life for the completion"),
            by_owner,
        };
        self.judge(x, &lc, left, tasks.get(lc.owner), ctx);
    }

    /// The owner `tid` was observed: frames below the observation are gone.
    pub fn observe(&mut self, tid: u32, task: &mut Task, obs: &Obs, ctx: &mut Ctx<'_>) {
        if task.onstack.is_empty() {
            return;
        }
        let mut i = 0;
        while i < task.onstack.len() {
            let x = task.onstack[i];
            // Evicted, or taken over by the task that now owns that stack.
            let Some(lc) = self.lifecycles.get_mut(&x).filter(|l| l.owner == tid) else {
                task.onstack.remove(i);
                continue;
            };
            if !obs.kind.left(x.0) {
                if lc.pending > 0 {
                    lc.saw_owner = true;
                    lc.left_before = None;
                }
                i += 1;
                continue;
            }
            task.onstack.remove(i);
            let lc = self.drop_lifecycle(x).expect("present");
            let left = Left {
                ts: obs.actor.ts,
                actor: Some(obs.actor),
                text: left_text(obs, x),
                by_owner: true,
            };
            self.judge(x, &lc, left, Some(&*task), ctx);
        }
    }

    /// The owner's state is dropped: if it is gone, so are its frames.
    pub fn retire(&mut self, tid: u32, task: &Task, how: Retire, now: u64, ctx: &mut Ctx<'_>) {
        for &x in &task.onstack {
            if self.lifecycles.get(&x).is_none_or(|l| l.owner != tid) {
                continue;
            }
            let Some(lc) = self.drop_lifecycle(x) else {
                continue;
            };
            match how {
                Retire::Gone => {
                    let left = Left {
                        ts: now,
                        actor: None,
                        text: "gone: its tid or stack belongs to another task now".into(),
                        by_owner: true,
                    };
                    self.judge(x, &lc, left, Some(task), ctx);
                }
                _ => {
                    if lc.pending > 0 && ctx.enabled(Rule::OnstackCompletion) {
                        ctx.indeterminate(Rule::OnstackCompletion);
                    }
                }
            }
        }
    }

    /// Confirms `complete-after-return` candidates whose owner stayed away.
    pub fn fire(&mut self, now: u64, tasks: &mut Tasks, ctx: &mut Ctx<'_>) {
        while let Some(&(at, x)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, x));
            let Some(lc) = self.lifecycles.get_mut(&x) else {
                continue;
            };
            if lc.timer != Some(at) {
                continue;
            }
            lc.timer = None;
            if lc.pending == 0 || lc.left_before.is_none() || lc.saw_owner {
                continue;
            }
            let lc = self.drop_lifecycle(x).expect("present");
            if let Some(task) = tasks.get_mut(lc.owner) {
                task.onstack.retain(|&y| y != x);
            }
            let left = Left {
                ts: at,
                actor: None,
                text: format!(
                    "not seen back in the frame {} after the complete()",
                    duration(self.confirm)
                ),
                by_owner: true,
            };
            self.judge(x, &lc, left, tasks.get(lc.owner), ctx);
        }
    }

    /// End of the stream: candidates whose owner never came back are
    /// reported; what still waits for its owner's next move is unknown.
    pub fn finish(&mut self, end: u64, tasks: &mut Tasks, ctx: &mut Ctx<'_>) {
        let mut open: Vec<Addr> = self.lifecycles.keys().copied().collect();
        open.sort_unstable();
        for x in open {
            let lc = self.drop_lifecycle(x).expect("present");
            if lc.pending == 0 {
                continue;
            }
            if lc.left_before.is_some() && !lc.saw_owner {
                let left = Left {
                    ts: end,
                    actor: None,
                    text: "not seen back in the frame before the trace ended".into(),
                    by_owner: true,
                };
                self.judge(x, &lc, left, tasks.get(lc.owner), ctx);
            } else if ctx.enabled(Rule::OnstackCompletion) {
                ctx.indeterminate(Rule::OnstackCompletion);
            }
        }
    }

    fn judge(&self, x: Addr, lc: &Lifecycle, left: Left, owner: Option<&Task>, ctx: &mut Ctx<'_>) {
        if lc.pending == 0 {
            return;
        }
        let tainted = ctx.tainted(lc.seen);
        let failed_wait = owner
            .and_then(|t| t.failed_wait)
            .filter(|(y, a, _, _)| *y == x && a.tid == lc.owner);
        let owner_actor = owner.and_then(|t| t.last_obs.map(|o| o.actor));
        ctx.report(Rule::OnstackCompletion, tainted, || {
            build(x, lc, &left, failed_wait, owner_actor)
        });
    }
}

fn left_text(obs: &Obs, x: Addr) -> String {
    match obs.kind {
        ObsKind::Frames(sp) => format!(
            "{}: stack pointer {:#x} is above the completion: the frame is gone",
            obs.what, sp
        ),
        ObsKind::User => format!("{}: back in user space, every frame is gone", obs.what),
        ObsKind::Exit => format!("{}: exits, every frame is gone ({x})", obs.what),
    }
}

fn build(
    x: Addr,
    lc: &Lifecycle,
    left: &Left,
    failed_wait: Option<(Addr, Actor, WaitVariant, i64)>,
    owner_last: Option<Actor>,
) -> Finding {
    let after_return = lc.left_before.is_some();
    let kind = if after_return {
        FindingKind::CompleteAfterReturn
    } else {
        FindingKind::UnsynchronizedOnstackComplete
    };
    let ts = left.ts.max(lc.first.ts);
    let mut object = Object::new(ObjectKind::Completion, x);
    object.owner_tid = Some(lc.owner);
    let mut b = FindingBuilder::new(kind, if after_return { lc.first.ts } else { ts }, object);
    // The owner's column shows it by its most telling event.
    let owner_face = lc
        .in_frame
        .map(|o| o.actor)
        .or(lc.left_before.map(|o| o.actor))
        .or(left.actor.filter(|_| left.by_owner))
        .or(owner_last)
        .unwrap_or(lc.first);
    let owner = b.side("owner", &owner_face);
    let completer = b.side("completer", &lc.first);
    if let Some(o) = &lc.in_frame {
        b.act(
            owner,
            &o.actor,
            format!(
                "{} with stack pointer {:#x}: in the frame holding {x} (or below it)",
                o.what,
                match o.kind {
                    ObsKind::Frames(sp) => sp,
                    _ => 0,
                }
            ),
        );
    }
    if let Some((_, a, variant, ret)) = failed_wait {
        b.act(
            owner,
            &a,
            format!(
                "{}({x}) returns {ret}: gave up without a complete()",
                variant.function()
            ),
        );
    }
    if let Some(o) = &lc.left_before {
        b.act(owner, &o.actor, left_text(o, x));
    }
    let what = if lc.first_all {
        "complete_all"
    } else {
        "complete"
    };
    let from = if lc.first.irq {
        "from interrupt context"
    } else {
        "from another task"
    };
    b.act(completer, &lc.first, format!("{what}({x}) {from}"));
    if lc.pending > 1 {
        b.step(
            completer,
            lc.first.ts,
            format!("({} complete() calls not waited for)", lc.pending),
            None,
        );
    }
    let left_column = if left.by_owner { owner } else { completer };
    let left_stack = left.actor.and_then(|a| a.stack);
    b.step(left_column, ts, left.text.clone(), left_stack);
    let who = owner_face.who();
    let explanation = if let Some(o) = &lc.left_before {
        format!(
            "{what}() ran on completion {x} in the kernel stack of {who} {} after the owner had \
             left the frame holding it: it writes (and takes x->wait.lock) in a dead stack \
             frame. The owner must wait on the completion before returning, even when a counter \
             says the work is done",
            duration(lc.first.ts.saturating_sub(o.actor.ts)),
        )
    } else {
        format!(
            "{who} left the stack frame holding completion {x} {} after {what}() from {} \
             without waiting on it: had {what}() still been running (it holds x->wait.lock), \
             it would have written into a dead frame. Wait on the completion before returning",
            duration(left.ts.saturating_sub(lc.first.ts)),
            lc.first.who(),
        )
    };
    b.finish(explanation)
}
