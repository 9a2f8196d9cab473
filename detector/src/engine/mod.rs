//! The invariant engine: events in, findings out.
//!
//! Pure and deterministic: no I/O, no clock of its own (time is the events'
//! CLOCK_MONOTONIC, plus whatever [`Engine::advance`] is told), and no
//! output that depends on hash-map order. The same events pushed in the
//! same order give the same findings, however pushes and clock ticks are
//! batched.
//!
//! Events are merged by timestamp in a reorder window (`reorder`), then
//! fed in time order to the shared tables (`tasks`, `bios`) and to one
//! rule per invariant (`rules`). Rules with deadlines (stuck handlers,
//! lost I/O, lost wakeups) are judged at the exact event time their
//! deadline falls on: before any later event, once the window has passed
//! it. Findings therefore wait for the window too, which is what lets a
//! late loss marker turn them into "indeterminate" verdicts (`loss`).
//!
//! Live use: push every event as it is read, call [`Engine::advance`] with
//! the current CLOCK_MONOTONIC time on every drain tick (so that deadlines
//! fire while the condition still holds, even when no event comes), and
//! [`Engine::finish`] at the end. Replay: push, then finish.
//!
//! ```
//! use detector::engine::{Engine, EngineConfig, Rule};
//!
//! let cfg = EngineConfig {
//!     stuck_handler_after_ns: 3_000_000_000,
//!     ..EngineConfig::default()
//! }
//! .without(Rule::LostIoCompletion);
//! let mut engine = Engine::new(cfg);
//! let events = detector::event::samples::kernel_events();
//! let n = events.len() as u64;
//! for ev in events {
//!     for finding in engine.push(ev) {
//!         println!("{}", finding.kind);
//!     }
//! }
//! let _ = engine.advance(2_000_000_000);
//! let _ = engine.finish();
//! assert_eq!(engine.stats().events, n);
//! ```

mod actor;
mod bios;
pub mod config;
pub mod finding;
mod hash;
mod loss;
mod reorder;
mod rules;
pub mod stats;
mod tasks;

#[cfg(test)]
mod tests;

pub use config::{EngineConfig, Rule, RuleSet, UnknownRule};
pub use finding::{
    Context, Finding, FindingKind, Object, ObjectKind, Severity, Side, Step, duration, secs,
};
pub use stats::EngineStats;

use actor::{Actor, own_sp};
use bios::{Bio, Bios, Completed, Completion, Queued, Submission, Via};
use loss::Loss;
use reorder::{Admit, Reorder};
use rules::Ctx;
use rules::bio_lifecycle::BioLifecycle;
use rules::lost_wakeup::{BioAct, LostWakeup};
use rules::md_teardown::MdTeardown;
use rules::onstack::Onstack;
use rules::stuck_handler::{self, StuckHandler};
use tasks::{Obs, ObsKind, Retire, Sleep, Task, Tasks};

use crate::event::{Addr, Event, EventKind, Hook, TASK_UNINTERRUPTIBLE};

pub struct Engine {
    cfg: EngineConfig,
    reorder: Reorder,
    loss: Loss,
    stats: EngineStats,
    tasks: Tasks,
    bios: Bios,
    onstack: Onstack,
    lost_wakeup: LostWakeup,
    md: MdTeardown,
    lifecycle: BioLifecycle,
    stuck: StuckHandler,
    /// A `bio_endio` event was seen: completions are observable everywhere.
    endio_hooked: bool,
    /// Newest event time processed.
    last_ts: u64,
    // Scratch space reused across events.
    retired: Vec<(u32, Task, Retire)>,
    evicted: Vec<Bio>,
    range: Vec<Addr>,
}

/// Borrows the parts of the engine a rule may touch.
macro_rules! ctx {
    ($self:ident, $out:ident) => {
        Ctx {
            cfg: &$self.cfg,
            loss: &$self.loss,
            stats: &mut $self.stats,
            out: $out,
        }
    };
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            reorder: Reorder::new(cfg.reorder_window_ns, cfg.max_buffered_events),
            loss: Loss::default(),
            stats: EngineStats::default(),
            tasks: Tasks::new(cfg.thread_size, cfg.max_tasks),
            bios: {
                let mut bios = Bios::new(cfg.max_bios, cfg.max_completed_bios, cfg.max_disks);
                bios.keep_completed = cfg.bio_endio_hooked;
                bios
            },
            onstack: Onstack::new(cfg.onstack_confirm_ns, cfg.max_completions),
            lost_wakeup: LostWakeup::new(
                cfg.lost_wakeup_after_ns,
                cfg.lost_wakeup_race_ns,
                cfg.lost_wakeup_any_device,
            ),
            md: MdTeardown::new(cfg.max_md_arrays),
            lifecycle: BioLifecycle::new(cfg.max_disks),
            stuck: StuckHandler::new(cfg.stuck_handler_after_ns, cfg.max_handler_depth),
            endio_hooked: cfg.bio_endio_hooked,
            last_ts: 0,
            retired: Vec::new(),
            evicted: Vec::new(),
            range: Vec::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Takes one event (roughly in time order); returns the findings that
    /// became certain, which concern events at least a window old.
    pub fn push(&mut self, ev: Event) -> Vec<Finding> {
        let mut out = Vec::new();
        self.push_into(ev, &mut out);
        out
    }

    /// [`Engine::push`] appending to `out`.
    pub fn push_into(&mut self, ev: Event, out: &mut Vec<Finding>) {
        match self.reorder.insert(ev) {
            Admit::Held => {}
            Admit::Late(ev) => {
                // Its place in the order is gone: what it touches is now
                // as uncertain as if events had been lost around it.
                self.stats.late_events += 1;
                let to = self.reorder.released_to().unwrap_or(ev.ts);
                self.loss.gap(ev.ts, to);
                self.process(ev, out);
            }
        }
        self.release(self.reorder.watermark(), out);
    }

    /// The clock (CLOCK_MONOTONIC, as the events') reads `now`: no event
    /// older than `now - window` is still to come. Releases those that
    /// waited and fires deadlines up to there.
    pub fn advance(&mut self, now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        self.reorder.advance(now);
        self.release(self.reorder.watermark(), &mut out);
        out
    }

    /// End of the stream: processes what is held and settles what the
    /// events seen so far allow (deadlines up to the last known time).
    pub fn finish(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        while let Some(ev) = self.reorder.pop_any() {
            self.fire_before(ev.ts, &mut out);
            self.process(ev, &mut out);
        }
        let end = self.reorder.newest().max(self.last_ts);
        self.fire(end, &mut out);
        self.reorder.release_to(end);
        let out_ref = &mut out;
        let mut ctx = ctx!(self, out_ref);
        self.onstack.finish(end, &mut self.tasks, &mut ctx);
        out
    }

    pub fn stats(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.forced_releases = self.reorder.forced;
        stats.loss_records = self.loss.records;
        stats.lost_events = self.loss.events;
        let live = &mut stats.live;
        live.bios_in_flight = self.bios.inflight;
        live.bios = self.bios.len() as u64;
        live.disks = self.bios.disks.len() as u64;
        live.tasks = self.tasks.len() as u64;
        live.sleepers_judged = self.lost_wakeup.armed() as u64;
        live.onstack_completions = self.onstack.tracked() as u64;
        live.md_arrays = self.md.tracked() as u64;
        live.open_handlers = self.stuck.open_count as u64;
        live.buffered_events = self.reorder.len() as u64;
        let ev = &mut stats.evictions;
        ev.bios_in_flight = self.bios.evicted_inflight;
        ev.bios_completed = self.bios.evicted_completed;
        ev.tasks = self.tasks.evicted;
        ev.completions = self.onstack.evicted;
        ev.md_arrays = self.md.evicted;
        ev.disks = self.bios.evicted_disks;
        ev.removals = self.lifecycle.evicted;
        ev.handlers = self.stuck.evicted;
        stats
    }

    fn release(&mut self, watermark: u64, out: &mut Vec<Finding>) {
        while let Some(ev) = self.reorder.pop_due(watermark) {
            self.fire_before(ev.ts, out);
            self.process(ev, out);
        }
        self.fire(watermark, out);
        self.reorder.release_to(watermark);
    }

    /// Fires every deadline strictly before `ts`.
    fn fire_before(&mut self, ts: u64, out: &mut Vec<Finding>) {
        if let Some(upto) = ts.checked_sub(1) {
            self.fire(upto, out);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        [
            self.stuck.next_deadline(),
            rules::lost_io::next_deadline(&self.bios, self.cfg.lost_io_after_ns),
            self.lost_wakeup.next_deadline(),
            self.onstack.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires deadlines up to `upto`, each at its own time, in time order.
    fn fire(&mut self, upto: u64, out: &mut Vec<Finding>) {
        while let Some(at) = self.next_deadline().filter(|&d| d <= upto) {
            let mut ctx = ctx!(self, out);
            self.stuck.fire(at, &mut ctx);
            rules::lost_io::fire(at, &mut self.bios, self.endio_hooked, &mut ctx);
            self.lost_wakeup
                .fire(at, &mut self.tasks, &self.bios, &mut ctx);
            self.onstack.fire(at, &mut self.tasks, &mut ctx);
        }
    }

    fn process(&mut self, ev: Event, out: &mut Vec<Finding>) {
        self.stats.events += 1;
        self.last_ts = self.last_ts.max(ev.ts);
        if let EventKind::Lost { count, until, .. } = ev.kind {
            self.loss.lost(count, ev.ts, until);
            return;
        }
        let thread_size = self.cfg.thread_size;
        let actor = Actor::of(&ev, thread_size);
        self.identify(&ev, out);
        // The current task runs: whatever sleep it was in is over.
        self.woken(ev.tid);
        if let Some(kind) = observation(&ev, thread_size) {
            let obs = Obs {
                kind,
                actor,
                what: ev.kind.name(),
                seen: self.loss.seen(ev.ts),
            };
            self.observe(ev.tid, obs, out);
        }
        if !matches!(
            ev.kind,
            EventKind::BioEndio { .. } | EventKind::BioEndioExit { .. }
        ) {
            self.stuck.observe(&actor);
        }
        self.dispatch(&ev, &actor, out);
    }

    /// Keeps the task table up to date with who runs on which stack.
    fn identify(&mut self, ev: &Event, out: &mut Vec<Finding>) {
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
        for (tid, task, how) in retired.drain(..) {
            self.retire(tid, &task, how, ev.ts, out);
        }
        self.retired = retired;
    }

    fn retire(&mut self, tid: u32, task: &Task, how: Retire, now: u64, out: &mut Vec<Finding>) {
        if how == Retire::Evicted {
            // Its episode, sleep and frames are unknown from here on.
            self.loss.forgot();
        }
        let mut ctx = ctx!(self, out);
        self.onstack.retire(tid, task, how, now, &mut ctx);
    }

    fn woken(&mut self, tid: u32) {
        if tid == 0 {
            return;
        }
        if let Some(task) = self.tasks.get_mut(tid)
            && task.sleep.take().is_some()
        {
            self.lost_wakeup.woken(tid, task);
        }
    }

    /// The current task `tid` was seen where `obs` says.
    fn observe(&mut self, tid: u32, obs: Obs, out: &mut Vec<Finding>) {
        let Some(task) = self.tasks.get_mut(tid) else {
            return;
        };
        let mut ctx = ctx!(self, out);
        self.onstack.observe(tid, task, &obs, &mut ctx);
        self.lifecycle.observe(task, &obs);
        task.last_obs = Some(obs);
        if obs.actor.stack.is_some() && matches!(obs.kind, ObsKind::Frames(_)) {
            task.last_stacked = Some(obs);
        }
        match obs.kind {
            ObsKind::Frames(_) => {}
            ObsKind::User => self.lost_wakeup.left_kernel(tid, task),
            ObsKind::Exit => {
                self.lost_wakeup.left_kernel(tid, task);
                if let Some(task) = self.tasks.remove(tid) {
                    self.retire(tid, &task, Retire::Gone, obs.actor.ts, out);
                }
            }
        }
    }

    fn dispatch(&mut self, ev: &Event, actor: &Actor, out: &mut Vec<Finding>) {
        match &ev.kind {
            EventKind::BioQueue {
                bio,
                dev,
                disk,
                sector,
                size,
                end_io,
                ..
            } => {
                // Tracepoints see the bio after partition remapping; the
                // submit_bio_noacct entry hooks see partition sectors.
                let disk_relative = dev == disk
                    || matches!(
                        ev.hook,
                        Hook::TpBtf | Hook::RawTracepoint | Hook::Tracepoint
                    );
                let task_ctx = ev.tid != 0 && !actor.irq;
                let episode = self.tasks.get(ev.tid).map_or(0, |t| t.episode.id);
                let sub = Submission {
                    actor,
                    addr: *bio,
                    dev: *dev,
                    disk: *disk,
                    sector: *sector,
                    size: *size,
                    end_io: *end_io,
                    disk_relative,
                    submitter: if task_ctx { ev.tid } else { 0 },
                    episode,
                    seen: self.loss.seen(ev.ts),
                };
                let mut evicted = std::mem::take(&mut self.evicted);
                let queued = self.bios.queue(sub, &mut evicted);
                if let Queued::New = queued
                    && task_ctx
                    && let Some(task) = self.tasks.get_mut(ev.tid)
                {
                    let act = BioAct {
                        actor: *actor,
                        bio: *bio,
                        dev: *dev,
                        disk: *disk,
                        via: None,
                    };
                    self.lost_wakeup
                        .submitted(ev.tid, task, act, self.loss.seen(ev.ts));
                }
                for bio in evicted.drain(..) {
                    self.loss.forgot();
                    self.lost_track(&bio);
                }
                self.evicted = evicted;
            }
            EventKind::RqComplete {
                disk,
                sector,
                nr_bytes,
                error,
                bios,
                truncated,
                ..
            } => {
                for bio in bios {
                    self.bio_done(*bio, actor, Via::Request, *error, Addr(0), out);
                }
                if *truncated {
                    // The walk stopped early: every in-flight bio ending
                    // inside the completed range is done too.
                    let mut range = std::mem::take(&mut self.range);
                    let end = sector + *nr_bytes as u64 / 512;
                    self.bios.ending_in(*disk, *sector, end, &mut range);
                    for bio in range.drain(..) {
                        self.bio_done(bio, actor, Via::Range, *error, Addr(0), out);
                    }
                    self.range = range;
                }
            }
            EventKind::BioComplete { bio, error, .. } => {
                self.bio_done(*bio, actor, Via::BioComplete, *error, Addr(0), out);
            }
            EventKind::BioEndio {
                bio,
                end_io,
                dev,
                disk,
                status,
                remaining,
                is_final,
                chain_depth,
                ..
            } => {
                self.endio_hooked = true;
                self.bios.keep_completed = true;
                if *chain_depth == 0 {
                    let entry = stuck_handler::Entry {
                        bio: *bio,
                        end_io: *end_io,
                        dev: *dev,
                        disk: *disk,
                    };
                    let seen = self.loss.seen(ev.ts);
                    self.stuck.enter(actor, entry, self.bios.get(*bio), seen);
                }
                // A chained bio is only done when its count drops to zero;
                // a "final" call that found other holders would be a lie
                // of the kernel side, and is not taken as a completion.
                if *is_final && *remaining <= 1 {
                    self.bio_done(*bio, actor, Via::Endio, *status as i32, *end_io, out);
                } else {
                    self.bios.endio_activity(*bio);
                }
            }
            EventKind::BioEndioExit { bio } => {
                let mut ctx = ctx!(self, out);
                let returned = self.stuck.exit(actor, *bio, &mut ctx);
                if let Some(bio) = returned.and_then(|b| self.bios.get(b)).copied()
                    && !bio.in_flight()
                    && bio.submitter != 0
                    && let Some(task) = self.tasks.get_mut(bio.submitter)
                {
                    self.lost_wakeup
                        .handler_returned(bio.submitter, task, &bio, ev.ts, &self.bios);
                }
            }
            EventKind::BioInit { bio } => {
                if let Some(old) = self.bios.forget(*bio, ev.ts)
                    && old.in_flight()
                {
                    self.lost_track(&old);
                }
            }
            EventKind::Complete {
                x, on_own_stack, ..
            }
            | EventKind::CompleteAll {
                x, on_own_stack, ..
            } => {
                let all = matches!(ev.kind, EventKind::CompleteAll { .. });
                let mut ctx = ctx!(self, out);
                self.onstack
                    .complete(actor, *x, all, *on_own_stack, &mut self.tasks, &mut ctx);
            }
            EventKind::CompletionInit { x, .. } => {
                let mut ctx = ctx!(self, out);
                self.onstack.init(actor, *x, &mut self.tasks, &mut ctx);
            }
            EventKind::WaitEnter { x, .. } => self.onstack.wait_enter(actor, *x),
            EventKind::WaitExit {
                x, variant, ret, ..
            } => {
                let task = self.tasks.get_mut(ev.tid);
                self.onstack.wait_exit(actor, *x, *variant, *ret, task);
            }
            EventKind::MdSuperWrite {
                mddev,
                rdev,
                sector,
                ..
            } => {
                let seen = self.loss.seen(ev.ts);
                self.md.super_write(actor, *mddev, *rdev, *sector, seen);
            }
            EventKind::MdSuperWritten {
                mddev,
                rdev,
                sector,
                ..
            } => {
                let mut ctx = ctx!(self, out);
                self.md
                    .super_written(actor, *mddev, *rdev, *sector, &mut ctx);
            }
            EventKind::MdSuperWait { mddev, .. } => self.md.super_wait(actor, *mddev),
            EventKind::MdSuperWaitExit { .. } => {}
            EventKind::MdTeardown {
                mddev,
                stage,
                pending_writes,
            } => {
                let seen = self.loss.seen(ev.ts);
                let mut ctx = ctx!(self, out);
                self.md
                    .teardown(actor, *mddev, *stage, *pending_writes, seen, &mut ctx);
            }
            EventKind::DelGendisk { dev, .. } => {
                let seen = self.loss.seen(ev.ts);
                let task = self.tasks.get_mut(ev.tid);
                self.lifecycle.del_gendisk(actor, *dev, task, seen);
            }
            EventKind::DelGendiskExit { dev, .. } => {
                let task = self.tasks.get_mut(ev.tid).filter(|_| !actor.irq);
                self.lifecycle.del_gendisk_exit(actor, *dev, task);
            }
            EventKind::SchedSwitch {
                prev_state,
                prev_in_iowait,
                preempt,
                next_tid,
                ..
            } => {
                let sleeps = !*preempt && prev_state & TASK_UNINTERRUPTIBLE != 0;
                if sleeps
                    && ev.tid != 0
                    && let Some(task) = self.tasks.get_mut(ev.tid)
                {
                    task.sleep = Some(Sleep {
                        actor: *actor,
                        uninterruptible: true,
                        iowait: *prev_in_iowait,
                    });
                    self.lost_wakeup.slept(ev.tid, task, &self.bios);
                }
                self.woken(*next_tid);
            }
            EventKind::SchedWaking { target_tid, .. } => {
                // sched_waking runs in the waker's context (sched_wakeup
                // may run on the target's CPU instead).
                if let Some(task) = self.tasks.get_mut(*target_tid) {
                    self.onstack.woken_by(actor, *target_tid, task);
                }
                self.woken(*target_tid);
            }
            EventKind::SchedWakeup { target_tid, .. } => self.woken(*target_tid),
            // Seen through `observation`.
            EventKind::SysExit { .. } | EventKind::TaskExit => {}
            EventKind::Lost { .. } => {}
        }
    }

    /// `addr` completed as `via` says.
    fn bio_done(
        &mut self,
        addr: Addr,
        actor: &Actor,
        via: Via,
        status: i32,
        end_io: Addr,
        out: &mut Vec<Finding>,
    ) {
        let done = Completion {
            actor: *actor,
            via,
            status,
            end_io,
        };
        match self.bios.complete(addr, done) {
            Completed::First(bio) => {
                if bio.submitter != 0
                    && let Some(task) = self.tasks.get_mut(bio.submitter)
                {
                    self.lost_wakeup
                        .completed(bio.submitter, task, &bio, &done, &self.bios);
                }
                let mut ctx = ctx!(self, out);
                self.lifecycle.completed(&bio, &done, &mut ctx);
            }
            Completed::Again(bio) => {
                let mut ctx = ctx!(self, out);
                self.lifecycle.completed_again(&bio, &done, &mut ctx);
            }
            Completed::Unknown => {}
        }
    }

    /// A tracked in-flight bio is no longer known.
    fn lost_track(&mut self, bio: &Bio) {
        if bio.submitter != 0
            && let Some(task) = self.tasks.get_mut(bio.submitter)
        {
            self.lost_wakeup.lost_track(task, bio);
        }
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
