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
//!
//! Two shapes are proven by the `complete()` event alone: `x` lies in the
//! current task's stack *below* the stack pointer (a popped frame: whoever
//! runs there, the frame holding `x` is gone), and T is in user space (an
//! interrupt taken from user mode runs on T's kernel stack, so it looks
//! like T's own code; T cannot hold a live kernel frame then).
//!
//! "Woken by the completer's context" needs one program order: the same
//! task, or the same interrupt. Every interrupt on a CPU has the same tid
//! and comes off the same stack, so an interrupt is only the same one when
//! the CPU ran no task code in between and little time passed (see
//! `World::same_context`); a later interrupt that wakes T proves nothing
//! about an earlier `complete()`.

use std::collections::{BTreeSet, VecDeque};

use super::{Ctx, Interest, Invariant};
use crate::engine::actor::Actor;
use crate::engine::config::{EngineConfig, Rule};
use crate::engine::facts::{Fact, FactTag};
use crate::engine::finding::{Finding, FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::hash::FastMap;
use crate::engine::loss::Seen;
use crate::engine::stats::EngineStats;
use crate::engine::tasks::{Obs, ObsKind, Retire};
use crate::engine::world::World;
use crate::event::{Addr, Event, EventKind, EventTag, WaitVariant};

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

/// What the rule keeps per owner task.
#[derive(Debug, Default)]
struct Owner {
    /// Completions in its stack with an unconsumed `complete()` from
    /// another context.
    onstack: Vec<Addr>,
    /// Its latest wait on an on-stack completion that returned without
    /// consuming a `complete()` (timeout, signal), for diagrams.
    failed_wait: Option<(Addr, Actor, WaitVariant, i64)>,
}

pub struct Onstack {
    max: usize,
    owners: FastMap<u32, Owner>,
    lifecycles: FastMap<Addr, Lifecycle>,
    fifo: VecDeque<(Addr, u32)>,
    /// (deadline, x): `complete-after-return` candidates to confirm.
    timers: BTreeSet<(u64, Addr)>,
    next_life: u32,
    pub evicted: u64,
}

impl Onstack {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            owners: FastMap::default(),
            lifecycles: FastMap::default(),
            fifo: VecDeque::new(),
            timers: BTreeSet::new(),
            next_life: 0,
            evicted: 0,
        }
    }

    /// `complete(x)` or `complete_all(x)` by `actor`.
    fn complete(
        &mut self,
        actor: &Actor,
        x: Addr,
        all: bool,
        on_own_stack: bool,
        w: &mut World,
        ctx: &mut Ctx<'_>,
    ) {
        let seen_now = w.loss.seen(actor.ts);
        let owner = if on_own_stack && actor.tid != 0 {
            Some(actor.tid)
        } else {
            w.tasks.owner_of(x.0)
        };
        let Some(owner) = owner else {
            return;
        };
        let Some(task) = w.tasks.get(owner) else {
            return;
        };
        let mut actor = *actor;
        if owner == actor.tid && !actor.irq {
            if task.in_user {
                // Interrupted in user space: the kernel stack is the
                // interrupt's, every frame of the owner's is gone.
                actor.irq = true;
            } else if actor.sp != 0 && x.0 < actor.sp {
                self.dead_frame(x, &actor, all, w, ctx);
                return;
            } else {
                return; // the owner completing its own completion: in its frame
            }
        }
        if self.lifecycles.get(&x).is_none_or(|l| l.owner != owner) {
            self.start(x, owner, w, ctx);
        }
        let task = w.tasks.get(owner).expect("checked");
        let lc = self.lifecycles.get_mut(&x).expect("started");
        if lc.pending == 0 {
            lc.first = actor;
            lc.first_all = all;
            lc.left_before = task.last_obs.filter(|o| o.kind.left(x.0));
            lc.in_frame = task
                .last_stacked
                .filter(|o| matches!(o.kind, ObsKind::Frames(sp) if sp < x.0));
            lc.saw_owner = false;
            lc.seen = lc.left_before.map_or(seen_now, |o| o.seen);
            if lc.left_before.is_some() {
                let at = actor.ts.saturating_add(ctx.cfg.onstack_confirm_ns);
                lc.timer = Some(at);
                self.timers.insert((at, x));
            }
        }
        lc.pending += 1;
        lc.all |= all;
    }

    /// `complete(x)` with `x` in the current task's stack below the stack
    /// pointer: whoever runs here, the frame that held `x` was popped.
    fn dead_frame(&mut self, x: Addr, actor: &Actor, all: bool, w: &World, ctx: &mut Ctx<'_>) {
        let task = w.tasks.get(actor.tid);
        let left_before = task
            .and_then(|t| t.last_obs)
            .filter(|o| o.kind.left(x.0) && o.actor.ts < actor.ts);
        let lc = Lifecycle {
            life: 0,
            owner: actor.tid,
            pending: 1,
            all,
            first: *actor,
            first_all: all,
            left_before,
            in_frame: None,
            saw_owner: false,
            seen: w.loss.seen(actor.ts),
            timer: None,
        };
        let left = Left {
            ts: actor.ts,
            actor: Some(*actor),
            text: format!(
                "runs with stack pointer {:#x}, {} bytes above the completion: the frame \
                 holding {x} is gone",
                actor.sp,
                actor.sp - x.0
            ),
            by_owner: false,
        };
        let owner_last = task.and_then(|t| t.last_obs.map(|o| o.actor));
        ctx.report(Rule::OnstackCompletion, &w.loss, lc.seen, || {
            let mut f = build(x, &lc, &left, None, owner_last);
            f.kind = FindingKind::CompleteAfterReturn;
            f.severity = f.kind.severity();
            f
        });
    }

    fn start(&mut self, x: Addr, owner: u32, w: &World, ctx: &mut Ctx<'_>) {
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
                ctx.indeterminate(Rule::OnstackCompletion);
            }
        }
        let state = self.owners.entry(owner).or_default();
        if state.onstack.len() >= PER_TASK {
            let victim = state.onstack.remove(0);
            if self.drop_lifecycle(victim).is_some_and(|l| l.pending > 0) {
                ctx.indeterminate(Rule::OnstackCompletion);
            }
            self.evicted += 1;
        }
        let state = self.owners.entry(owner).or_default();
        state.onstack.push(x);
        let life = self.next_life;
        self.next_life = self.next_life.wrapping_add(1);
        let last_obs = w.tasks.get(owner).and_then(|t| t.last_obs);
        self.lifecycles.insert(
            x,
            Lifecycle {
                life,
                owner,
                pending: 0,
                all: false,
                first: last_obs.map_or_else(Actor::unknown, |o| o.actor),
                first_all: false,
                left_before: None,
                in_frame: None,
                saw_owner: false,
                seen: w.loss.seen(0),
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
    fn wait_enter(&mut self, actor: &Actor, x: Addr) {
        if let Some(lc) = self.owned_by(x, actor) {
            lc.saw_owner = true;
            lc.left_before = None;
        }
    }

    /// A wait on `x` returned with `ret`.
    fn wait_exit(&mut self, actor: &Actor, x: Addr, variant: WaitVariant, ret: i64) {
        let consumed = variant.succeeded(ret);
        if !consumed && !actor.irq && actor.tid != 0 {
            self.owners.entry(actor.tid).or_default().failed_wait = Some((x, *actor, variant, ret));
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

    /// `waker` wakes `tid` (`sched_waking`, in the waker's context): if it
    /// is the context that called `complete()` on one of the task's
    /// completions, in the same program order, that `complete()` has
    /// returned.
    fn woken_by(&mut self, waker: &Actor, tid: u32, w: &World) {
        let Some(state) = self.owners.get(&tid) else {
            return;
        };
        for &x in &state.onstack {
            if let Some(lc) = self.lifecycles.get_mut(&x)
                && lc.owner == tid
                && lc.pending > 0
                && waker.ts > lc.first.ts
                && w.same_context(&lc.first, waker)
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
    fn init(&mut self, actor: &Actor, x: Addr, w: &World, ctx: &mut Ctx<'_>) {
        let Some(lc) = self.drop_lifecycle(x) else {
            return;
        };
        if let Some(state) = self.owners.get_mut(&lc.owner) {
            state.onstack.retain(|&y| y != x);
        }
        let by_owner = actor.tid == lc.owner && !actor.irq;
        let left = Left {
            ts: actor.ts,
            actor: Some(*actor),
            text: format!("init_completion({x}): a new life for the completion"),
            by_owner,
        };
        self.judge(x, &lc, left, w, ctx);
    }

    /// The owner `tid` was observed: frames below the observation are gone.
    fn observe(&mut self, tid: u32, obs: &Obs, w: &World, ctx: &mut Ctx<'_>) {
        let Some(state) = self.owners.get_mut(&tid) else {
            return;
        };
        let mut onstack = std::mem::take(&mut state.onstack);
        let mut i = 0;
        while i < onstack.len() {
            let x = onstack[i];
            // Evicted, or taken over by the task that now owns that stack.
            let Some(lc) = self.lifecycles.get_mut(&x).filter(|l| l.owner == tid) else {
                onstack.remove(i);
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
            onstack.remove(i);
            let lc = self.drop_lifecycle(x).expect("present");
            let left = Left {
                ts: obs.actor.ts,
                actor: Some(obs.actor),
                text: left_text(obs, x),
                by_owner: true,
            };
            self.judge(x, &lc, left, w, ctx);
        }
        if let Some(state) = self.owners.get_mut(&tid) {
            state.onstack = onstack;
        }
    }

    /// The owner's state is dropped: if it is gone, so are its frames.
    fn retire(&mut self, tid: u32, how: Retire, now: u64, w: &World, ctx: &mut Ctx<'_>) {
        let Some(state) = self.owners.remove(&tid) else {
            return;
        };
        for &x in &state.onstack {
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
                    self.judge_with(x, &lc, left, Some(&state), None, w, ctx);
                }
                Retire::Evicted => {
                    if lc.pending > 0 {
                        ctx.indeterminate(Rule::OnstackCompletion);
                    }
                }
            }
        }
    }

    /// Confirms `complete-after-return` candidates whose owner stayed away.
    fn fire_due(&mut self, now: u64, w: &World, ctx: &mut Ctx<'_>) {
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
            if let Some(state) = self.owners.get_mut(&lc.owner) {
                state.onstack.retain(|&y| y != x);
            }
            let left = Left {
                ts: at,
                actor: None,
                text: format!(
                    "not seen back in the frame {} after the complete()",
                    duration(ctx.cfg.onstack_confirm_ns)
                ),
                by_owner: true,
            };
            self.judge(x, &lc, left, w, ctx);
        }
    }

    /// End of the stream: candidates whose owner never came back are
    /// reported; what still waits for its owner's next move is unknown.
    fn finish_all(&mut self, end: u64, w: &World, ctx: &mut Ctx<'_>) {
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
                self.judge(x, &lc, left, w, ctx);
            } else {
                ctx.indeterminate(Rule::OnstackCompletion);
            }
        }
    }

    fn judge(&self, x: Addr, lc: &Lifecycle, left: Left, w: &World, ctx: &mut Ctx<'_>) {
        let state = self.owners.get(&lc.owner);
        let owner_last = w
            .tasks
            .get(lc.owner)
            .and_then(|t| t.last_obs.map(|o| o.actor));
        self.judge_with(x, lc, left, state, owner_last, w, ctx);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the owner's state comes from two places when it is retired"
    )]
    fn judge_with(
        &self,
        x: Addr,
        lc: &Lifecycle,
        left: Left,
        state: Option<&Owner>,
        owner_last: Option<Actor>,
        w: &World,
        ctx: &mut Ctx<'_>,
    ) {
        if lc.pending == 0 {
            return;
        }
        let failed_wait = state
            .and_then(|s| s.failed_wait)
            .filter(|(y, a, _, _)| *y == x && a.tid == lc.owner);
        ctx.report(Rule::OnstackCompletion, &w.loss, lc.seen, || {
            build(x, lc, &left, failed_wait, owner_last)
        });
    }
}

impl Invariant for Onstack {
    fn interest(&self) -> Interest {
        Interest {
            events: &[
                EventTag::Complete,
                EventTag::CompleteAll,
                EventTag::CompletionInit,
                EventTag::WaitEnter,
                EventTag::WaitExit,
                EventTag::SchedWaking,
            ],
            facts: &[FactTag::Observed, FactTag::ObservedOut, FactTag::Retired],
            deadlines: true,
        }
    }

    fn on_event(&mut self, ev: &Event, actor: &Actor, w: &mut World, ctx: &mut Ctx<'_>) {
        match &ev.kind {
            EventKind::Complete {
                x, on_own_stack, ..
            } => self.complete(actor, *x, false, *on_own_stack, w, ctx),
            EventKind::CompleteAll {
                x, on_own_stack, ..
            } => self.complete(actor, *x, true, *on_own_stack, w, ctx),
            EventKind::CompletionInit { x, .. } => self.init(actor, *x, w, ctx),
            EventKind::WaitEnter { x, .. } => self.wait_enter(actor, *x),
            EventKind::WaitExit {
                x, variant, ret, ..
            } => self.wait_exit(actor, *x, *variant, *ret),
            EventKind::SchedWaking { target_tid, .. } => self.woken_by(actor, *target_tid, w),
            _ => {}
        }
    }

    fn on_fact(&mut self, fact: &Fact, w: &mut World, ctx: &mut Ctx<'_>) {
        match fact {
            Fact::Observed { tid, obs } => self.observe(*tid, obs, w, ctx),
            Fact::Retired { tid, how, ts } => self.retire(*tid, *how, *ts, w, ctx),
            _ => {}
        }
    }

    fn next_deadline(&self, _w: &World, _cfg: &EngineConfig) -> Option<u64> {
        self.timers.first().map(|(d, _)| *d)
    }

    fn fire(&mut self, now: u64, w: &mut World, ctx: &mut Ctx<'_>) {
        self.fire_due(now, w, ctx);
    }

    fn finish(&mut self, end: u64, w: &mut World, ctx: &mut Ctx<'_>) {
        self.finish_all(end, w, ctx);
    }

    fn stats(&self, stats: &mut EngineStats) {
        stats.live.onstack_completions = self.lifecycles.len() as u64;
        stats.evictions.completions = self.evicted;
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
