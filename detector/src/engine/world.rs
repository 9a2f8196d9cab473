//! The shared tables and what each event does to them.
//!
//! Every event passes through [`World::apply`] once, before any rule sees
//! it: the task table learns who runs on which stack, where and whether it
//! sleeps; the bio table learns submissions and completions; the handler
//! table learns `bio_endio` calls. What changed is written down as
//! [`Fact`]s, which the engine hands to the rules that asked for them.

use super::actor::{Actor, Exec, own_sp};
use super::bios::{
    Bio, Bios, Completed, Completion, EndioCall, Identity, PrevCall, Queued, Submission, Via,
};
use super::config::EngineConfig;
use super::facts::Fact;
use super::handlers::{Call, Handlers};
use super::loss::Loss;
use super::stacks::StackFunctions;
use super::tasks::{Obs, ObsKind, Retire, Sleep, Task, Tasks};
use crate::event::{Addr, Event, EventKind, TASK_UNINTERRUPTIBLE};

/// `REQ_OP_READ` in the low bits of `bi_opf` (`REQ_OP_BITS` is 8 since
/// 4.10; `REQ_OP_READ` has always been 0).
const REQ_OP_MASK: u32 = 0xff;

pub struct World {
    pub thread_size: u64,
    pub tasks: Tasks,
    pub bios: Bios,
    pub handlers: Handlers,
    pub loss: Loss,
    /// The functions on the stacks events quote, as far as handed over.
    pub stacks: StackFunctions,
    /// A `bio_endio` event was seen: completions are observable everywhere.
    pub endio_hooked: bool,
    /// Per CPU: when it was last seen running task code. An interrupt's
    /// program order ends there (see [`World::same_interrupt`]).
    task_seen_on_cpu: Vec<u64>,
    retired: Vec<(u32, Task, Retire)>,
    evicted: Vec<Bio>,
    range: Vec<Addr>,
}

impl World {
    pub fn new(cfg: &EngineConfig) -> Self {
        let mut bios = Bios::new(cfg.max_bios, cfg.max_completed_bios, cfg.max_disks);
        if cfg.bio_endio_hooked {
            bios.endio_hooked();
        }
        Self {
            thread_size: cfg.thread_size,
            tasks: Tasks::new(cfg.thread_size, cfg.max_tasks),
            bios,
            handlers: Handlers::new(cfg.max_handler_depth),
            loss: Loss::default(),
            stacks: StackFunctions::default(),
            endio_hooked: cfg.bio_endio_hooked,
            task_seen_on_cpu: Vec::new(),
            retired: Vec::new(),
            evicted: Vec::new(),
            range: Vec::new(),
        }
    }

    /// Whether `a` and `b` (`a` first) ran in one program order: the same
    /// task, or the same interrupt. Interrupts on a CPU are told apart by
    /// the task code it ran in between; with nothing seen in between, two
    /// interrupt events count as one only when close together.
    pub fn same_context(&self, a: &Actor, b: &Actor) -> bool {
        if Exec::of(a) != Exec::of(b) {
            return false;
        }
        if !a.irq {
            return true;
        }
        const ONE_INTERRUPT_NS: u64 = 1_000_000;
        let task_between = self
            .task_seen_on_cpu
            .get(a.cpu as usize)
            .is_some_and(|&t| t > a.ts && t < b.ts);
        !task_between && b.ts.saturating_sub(a.ts) <= ONE_INTERRUPT_NS
    }

    /// Updates the tables with `ev` and writes down what changed.
    pub fn apply(&mut self, ev: &Event, actor: &Actor, facts: &mut Vec<Fact>) {
        if !actor.irq && ev.tid != 0 {
            let cpu = ev.cpu as usize;
            if self.task_seen_on_cpu.len() <= cpu {
                self.task_seen_on_cpu.resize(cpu + 1, 0);
            }
            self.task_seen_on_cpu[cpu] = ev.ts;
        }
        self.identify(ev, facts);
        self.current_runs(ev, actor, facts);
        if !matches!(
            ev.kind,
            EventKind::BioEndio { .. } | EventKind::BioEndioExit { .. }
        ) {
            self.handlers.observe(actor, facts);
        }
        match &ev.kind {
            EventKind::BioQueue { .. } => self.queued(ev, actor, facts),
            EventKind::RqComplete { .. } => self.rq_complete(ev, actor, facts),
            EventKind::BioComplete { bio, error, .. } => {
                let done = completion(actor, Via::BioComplete, *error, None);
                self.bio_done(*bio, done, facts);
            }
            EventKind::BioEndio { .. } => self.endio(ev, actor, facts),
            EventKind::BioEndioExit { bio } => self.handlers.exit(actor, *bio, facts),
            EventKind::BioInit { bio } => {
                if let Some(old) = self.bios.forget(*bio, ev.ts) {
                    facts.push(Fact::Untracked { bio: old });
                }
            }
            EventKind::SchedSwitch { .. } => self.switched(ev, actor, facts),
            EventKind::SysExit { enter_reported, .. } => {
                if let Some(task) = self.tasks.get_mut(ev.tid) {
                    task.in_user = *enter_reported;
                }
            }
            EventKind::SysEnter { .. } => {
                if let Some(task) = self.tasks.get_mut(ev.tid) {
                    task.in_user = false;
                }
            }
            EventKind::SchedWaking { target_tid, .. }
            | EventKind::SchedWakeup { target_tid, .. } => self.woken(*target_tid, facts),
            _ => {}
        }
    }

    /// Keeps the task table up to date with who runs on which stack.
    fn identify(&mut self, ev: &Event, facts: &mut Vec<Fact>) {
        let mut retired = std::mem::take(&mut self.retired);
        self.tasks.touch(ev.tid, ev.stack_base.0, &mut retired);
        if let EventKind::SchedSwitch {
            next_tid,
            next_stack_base,
            ..
        } = &ev.kind
        {
            self.tasks.touch(*next_tid, next_stack_base.0, &mut retired);
        }
        for (tid, _, how) in retired.drain(..) {
            self.retire(tid, how, ev.ts, facts);
        }
        self.retired = retired;
    }

    fn retire(&mut self, tid: u32, how: Retire, ts: u64, facts: &mut Vec<Fact>) {
        if how == Retire::Evicted {
            // Its sleep and frames are unknown from here on.
            self.loss.forgot();
        }
        facts.push(Fact::Retired { tid, how, ts });
    }

    fn woken(&mut self, tid: u32, facts: &mut Vec<Fact>) {
        if tid == 0 {
            return;
        }
        if let Some(task) = self.tasks.get_mut(tid)
            && task.sleep.take().is_some()
        {
            facts.push(Fact::Woken { tid });
        }
    }

    /// The current task runs: whatever sleep it was in is over, and the
    /// event may say where its own frames are. One lookup of the task
    /// serves both.
    fn current_runs(&mut self, ev: &Event, actor: &Actor, facts: &mut Vec<Fact>) {
        if ev.tid == 0 {
            return;
        }
        let Some(task) = self.tasks.get_mut(ev.tid) else {
            return;
        };
        if task.sleep.take().is_some() {
            facts.push(Fact::Woken { tid: ev.tid });
        }
        let Some(kind) = observation(ev, self.thread_size) else {
            return;
        };
        if task.in_user && matches!(kind, ObsKind::Frames(_)) {
            // Interrupted in user space (or a fault): these frames are not
            // the task's syscall frames.
            return;
        }
        let obs = Obs {
            kind,
            actor: *actor,
            what: ev.kind.name(),
            seen: self.loss.seen(ev.ts),
        };
        task.observed(&obs);
        facts.push(Fact::Observed { tid: ev.tid, obs });
        if kind == ObsKind::Exit && self.tasks.remove(ev.tid).is_some() {
            facts.push(Fact::Retired {
                tid: ev.tid,
                how: Retire::Gone,
                ts: ev.ts,
            });
        }
    }

    fn queued(&mut self, ev: &Event, actor: &Actor, facts: &mut Vec<Fact>) {
        let EventKind::BioQueue {
            bio,
            dev,
            disk,
            sector,
            size,
            end_io,
            disk_relative,
            episode_start,
            episode_unbounded,
            ..
        } = &ev.kind
        else {
            return;
        };
        let disk_relative = dev == disk || *disk_relative;
        let task_ctx = ev.tid != 0 && !actor.irq;
        // One lookup of the task for both the episode and the submission.
        let mut task = self.tasks.get_mut(ev.tid);
        if let Some(task) = task.as_mut()
            && task_ctx
        {
            if *episode_start {
                task.end_episode();
            }
            task.episode_io = true;
            if *episode_unbounded && task.unbounded_since.is_none() {
                task.unbounded_since = Some(ev.ts);
            }
        }
        let episode = task.as_ref().map_or(0, |t| t.episode);
        let sub = Submission {
            actor,
            addr: *bio,
            dev: *dev,
            disk: *disk,
            sector: *sector,
            size: *size,
            end_io: *end_io,
            disk_relative,
            episode,
            seen: self.loss.seen(ev.ts),
        };
        let mut evicted = std::mem::take(&mut self.evicted);
        let queued = self.bios.queue(sub, &mut evicted);
        for bio in evicted.drain(..) {
            self.loss.forgot();
            facts.push(Fact::Untracked { bio });
        }
        self.evicted = evicted;
        let (bio, new) = match queued {
            Queued::New(bio) => (bio, true),
            Queued::Refresh(bio) => (bio, false),
        };
        if new
            && task_ctx
            && let Some(task) = task.as_mut()
        {
            task.submit_started(bio.addr, actor.sp);
        }
        facts.push(Fact::Submitted { bio, new });
    }

    fn rq_complete(&mut self, ev: &Event, actor: &Actor, facts: &mut Vec<Fact>) {
        let EventKind::RqComplete {
            disk,
            sector,
            nr_bytes,
            error,
            bios,
            truncated,
            ..
        } = &ev.kind
        else {
            return;
        };
        for bio in bios {
            let done = completion(actor, Via::Request, *error, None);
            self.bio_done(*bio, done, facts);
        }
        if *truncated {
            // The walk stopped early: every in-flight bio ending inside
            // the completed range is done too.
            let mut range = std::mem::take(&mut self.range);
            let end = sector + *nr_bytes as u64 / 512;
            self.bios.ending_in(*disk, *sector, end, &mut range);
            for bio in range.drain(..) {
                let done = completion(actor, Via::Range, *error, None);
                self.bio_done(bio, done, facts);
            }
            self.range = range;
        }
    }

    fn endio(&mut self, ev: &Event, actor: &Actor, facts: &mut Vec<Fact>) {
        let EventKind::BioEndio {
            bio,
            end_io,
            private,
            dev,
            disk,
            sector,
            size,
            status,
            flags: _,
            remaining,
            is_final,
            chain_depth,
            opf,
            has_blkg,
            integrity,
        } = &ev.kind
        else {
            return;
        };
        if !self.endio_hooked {
            self.endio_hooked = true;
            self.bios.endio_hooked();
        }
        let seen = self.loss.seen(ev.ts);
        // Parents completed inside the call (chain_depth > 0) run no
        // bio_endio of their own: the call is the child's.
        let call = (*chain_depth == 0).then(|| {
            let call = Call {
                id: 0,
                bio: *bio,
                end_io: *end_io,
                dev: *dev,
                disk: *disk,
                entry: *actor,
                seen,
            };
            self.handlers.enter(actor, call, facts)
        });
        // A chained parent's decrement belongs to the call that ended its
        // child: the innermost one of this context.
        let call_id = match call {
            Some(c) => c.id,
            None => self
                .handlers
                .innermost_id(Exec::of(actor))
                .unwrap_or(u64::MAX),
        };
        let handlers = &self.handlers;
        let last = *is_final
            || self
                .bios
                .chain_drop(*bio, *remaining, call_id, |id| handlers.call_open(id));
        if !last {
            self.bios.endio_activity(*bio);
            return;
        }
        let endio_call = EndioCall {
            // A chained parent shares the call of the child that ended it.
            id: call_id,
            identity: Identity {
                end_io: *end_io,
                private: *private,
                dev: *dev,
                sector: *sector,
                size: *size,
            },
            has_blkg: *has_blkg,
            integrity: *integrity,
            read_ok: opf & REQ_OP_MASK == 0 && *status == 0,
        };
        let done = completion(actor, Via::Endio, *status as i32, Some(endio_call));
        self.bio_done(*bio, done, facts);
    }

    /// `addr` completed as `done` says.
    fn bio_done(&mut self, addr: Addr, mut done: Completion, facts: &mut Vec<Fact>) {
        let seen = self.loss.seen(done.actor.ts);
        if let Some(bio) = self.bios.in_flight(addr)
            && bio.submitter() == done.actor.tid
            && !done.actor.irq
        {
            done.in_submission = self
                .tasks
                .get(done.actor.tid)
                .is_some_and(|t| t.submitting(addr));
        }
        let (handlers, actor) = (&self.handlers, done.actor);
        let outcome = self
            .bios
            .complete(addr, done, seen, |id| prev_call(handlers, &actor, id));
        match outcome {
            Completed::First(bio) => facts.push(Fact::Completed { bio, done }),
            Completed::Again(first) => facts.push(Fact::CompletedAgain { first, again: done }),
            Completed::Continued | Completed::NewLife | Completed::Unknown => {}
        }
    }

    fn switched(&mut self, ev: &Event, actor: &Actor, facts: &mut Vec<Fact>) {
        let EventKind::SchedSwitch {
            prev_state,
            prev_in_iowait,
            preempt,
            next_tid,
            prev_episode_over,
            ..
        } = &ev.kind
        else {
            return;
        };
        let sleeps = !*preempt && prev_state & TASK_UNINTERRUPTIBLE != 0;
        // One lookup of prev for both: the episode it ended unreported
        // comes before its sleep.
        if (sleeps || *prev_episode_over)
            && ev.tid != 0
            && let Some(task) = self.tasks.get_mut(ev.tid)
        {
            if *prev_episode_over && task.episode_io {
                task.end_episode();
            }
            if sleeps {
                task.sleep = Some(Sleep {
                    actor: *actor,
                    uninterruptible: true,
                    iowait: *prev_in_iowait,
                });
                facts.push(Fact::Slept { tid: ev.tid });
            }
        }
        if ev.tid != 0 && self.handlers.task_busy(ev.tid) {
            facts.push(Fact::HandlerOffCpu {
                tid: ev.tid,
                ts: ev.ts,
                off: true,
            });
        }
        self.woken(*next_tid, facts);
        if *next_tid != 0 && self.handlers.task_busy(*next_tid) {
            facts.push(Fact::HandlerOffCpu {
                tid: *next_tid,
                ts: ev.ts,
                off: false,
            });
        }
    }
}

/// Where the earlier final `bio_endio` call `id` stands as a new one by
/// `actor` starts (the new one is already the innermost of its context).
fn prev_call(handlers: &Handlers, actor: &Actor, id: u64) -> PrevCall {
    if handlers.call_open_in(Exec::of(actor), id) {
        PrevCall::Enclosing
    } else if handlers.call_open(id) {
        PrevCall::Concurrent
    } else {
        PrevCall::Returned
    }
}

fn completion(actor: &Actor, via: Via, status: i32, call: Option<EndioCall>) -> Completion {
    Completion {
        actor: *actor,
        via,
        status,
        end_io: call.map_or(Addr(0), |c| c.identity.end_io),
        call,
        in_submission: false,
    }
}

/// What `ev` says about where its task's own frames are.
fn observation(ev: &Event, thread_size: u64) -> Option<ObsKind> {
    if ev.tid == 0 {
        return None;
    }
    match &ev.kind {
        EventKind::SysExit { .. } => Some(ObsKind::User),
        EventKind::TaskExit => Some(ObsKind::Exit),
        EventKind::SchedSwitch { prev_sp, .. }
            if prev_sp.0 != 0 && ev.on_current_stack(*prev_sp, thread_size) =>
        {
            Some(ObsKind::Frames(prev_sp.0))
        }
        _ => own_sp(ev, thread_size).map(ObsKind::Frames),
    }
}
