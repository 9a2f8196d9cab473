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
mod facts;
pub mod finding;
mod handlers;
pub(crate) mod hash;
mod loss;
mod reorder;
mod rules;
mod stacks;
pub mod stats;
mod tasks;
mod world;

#[cfg(test)]
mod tests;

pub use config::{EngineConfig, Rule, RuleSet, UnknownRule};
pub use finding::{
    Context, Finding, FindingKind, Object, ObjectKind, Severity, Side, Step, duration, secs,
};
pub use stats::EngineStats;

use actor::Actor;
use facts::Fact;
use reorder::Reorder;
use rules::{Ctx, Invariant, Routes};
use world::World;

use crate::event::{Event, EventKind, Stack, StackId};

pub struct Engine {
    reorder: Reorder,
    /// Every loss up to here is accounted for (`LossChecked`); nothing
    /// past it is judged. None: the stream says nothing about it (older
    /// recordings): the reorder window alone decides.
    loss_horizon: Option<u64>,
    /// Everything that judges events, apart from the reorder buffer so that
    /// a held event is processed where it lies, without being moved.
    core: Core,
}

/// The tables and rules events are fed to in time order.
struct Core {
    cfg: EngineConfig,
    stats: EngineStats,
    world: World,
    rules: Vec<Box<dyn Invariant + Send>>,
    routes: Routes,
    /// Newest event time processed.
    last_ts: u64,
    /// Scratch space reused across events.
    facts: Vec<Fact>,
    /// The earliest deadline of any rule, as of the last time rules or
    /// tables changed (None: to be asked again). Asking every rule costs a
    /// virtual call each, before and after every event.
    deadline: Option<Option<u64>>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let rules = rules::all(&cfg);
        Self {
            reorder: Reorder::new(cfg.reorder_window_ns, cfg.max_buffered_events),
            loss_horizon: None,
            core: Core {
                stats: EngineStats::default(),
                world: World::new(&cfg),
                routes: Routes::new(&rules),
                rules,
                last_ts: 0,
                facts: Vec::new(),
                deadline: None,
                cfg,
            },
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.core.cfg
    }

    /// Hands over the kernel stack `id` (symbolized): rules that must know
    /// what a task sleeps in read it. Give each stack before the events
    /// quoting it; a second time is a no-op.
    pub fn learn_stack(&mut self, id: StackId, stack: &Stack) {
        self.core.world.stacks.learn(id, stack);
        self.core.deadline = None;
    }

    /// Changes thresholds and the set of enabled rules from now on (a
    /// configuration reload). Caps and the reorder window stay as they
    /// were: the tables are sized already.
    pub fn reconfigure(&mut self, cfg: &EngineConfig) {
        let own = &mut self.core.cfg;
        own.lost_wakeup_after_ns = cfg.lost_wakeup_after_ns;
        own.lost_wakeup_race_ns = cfg.lost_wakeup_race_ns;
        own.lost_wakeup_any_device = cfg.lost_wakeup_any_device;
        own.stuck_handler_after_ns = cfg.stuck_handler_after_ns;
        own.lost_io_after_ns = cfg.lost_io_after_ns;
        own.onstack_confirm_ns = cfg.onstack_confirm_ns;
        own.rules = cfg.rules;
        // Deadlines may follow thresholds.
        self.core.deadline = None;
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
        if let EventKind::LossChecked { until } = ev.kind {
            // Not an event in time: it moves how far judging may go.
            self.loss_horizon = Some(self.loss_horizon.unwrap_or(0).max(until));
            self.release(self.watermark(), out);
            return;
        }
        if self.reorder.is_late(ev.ts) {
            // Its place in the order is gone: what it touches is now as
            // uncertain as if events had been lost around it.
            self.core.stats.late_events += 1;
            let to = self.reorder.released_to().unwrap_or(ev.ts);
            self.core.world.loss.gap(ev.ts, to);
            self.core.process(&ev, out);
        } else {
            self.reorder.insert(ev);
        }
        self.release(self.watermark(), out);
    }

    /// How far events may be released: a window behind the newest (or the
    /// clock), and never past the loss horizon.
    fn watermark(&self) -> u64 {
        let window = self.reorder.watermark();
        self.loss_horizon.map_or(window, |h| window.min(h))
    }

    /// The clock (CLOCK_MONOTONIC, as the events') reads `now`: no event
    /// older than `now - window` is still to come. Releases those that
    /// waited and fires deadlines up to there.
    pub fn advance(&mut self, now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        self.reorder.advance(now);
        self.release(self.watermark(), &mut out);
        out
    }

    /// End of the stream: processes what is held and settles what the
    /// events seen so far allow (deadlines up to the last known time).
    pub fn finish(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        while let Some(slot) = self.reorder.pop_any() {
            self.core
                .fire_before_and_process(self.reorder.event(slot), &mut out);
            self.reorder.discard(slot);
        }
        let core = &mut self.core;
        let end = self.reorder.newest().max(core.last_ts);
        core.fire(end, &mut out);
        self.reorder.release_to(end);
        let mut ctx = Ctx {
            cfg: &core.cfg,
            stats: &mut core.stats,
            out: &mut out,
        };
        for rule in &mut core.rules {
            rule.finish(end, &mut core.world, &mut ctx);
        }
        core.deadline = None;
        out
    }

    pub fn stats(&self) -> EngineStats {
        let core = &self.core;
        let mut stats = core.stats.clone();
        stats.forced_releases = self.reorder.forced;
        stats.loss_records = core.world.loss.records;
        stats.lost_events = core.world.loss.events;
        let w = &core.world;
        let live = &mut stats.live;
        live.bios_in_flight = w.bios.inflight;
        live.bios = w.bios.len() as u64;
        live.disks = w.bios.disks.len() as u64;
        live.tasks = w.tasks.len() as u64;
        live.open_handlers = w.handlers.open_count as u64;
        live.buffered_events = self.reorder.len() as u64;
        let ev = &mut stats.evictions;
        ev.bios_in_flight = w.bios.evicted_inflight;
        ev.bios_completed = w.bios.evicted_completed;
        ev.tasks = w.tasks.evicted;
        ev.disks = w.bios.evicted_disks;
        ev.handlers = w.handlers.evicted;
        for rule in &core.rules {
            rule.stats(&mut stats);
        }
        stats
    }

    fn release(&mut self, watermark: u64, out: &mut Vec<Finding>) {
        while let Some(slot) = self.reorder.pop_due(watermark) {
            let ev = self.reorder.event(slot);
            let loss = &mut self.core.world.loss;
            if ev.ts > watermark && !loss.covers(ev.ts) {
                // Forced out by the buffer's cap before its window passed:
                // older events may still come, so what it is judged with
                // may be missing them, as after a loss. One gap a window
                // covers the events forced out after it.
                let window = self.core.cfg.reorder_window_ns;
                loss.gap(ev.ts, ev.ts.saturating_add(window));
            }
            self.core.fire_before_and_process(ev, out);
            self.reorder.discard(slot);
        }
        self.core.fire(watermark, out);
        self.reorder.release_to(watermark);
    }
}

impl Core {
    /// Fires every deadline strictly before `ev`, then processes it.
    fn fire_before_and_process(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        if let Some(upto) = ev.ts.checked_sub(1) {
            self.fire(upto, out);
        }
        self.process(ev, out);
    }

    fn next_deadline(&mut self) -> Option<u64> {
        if let Some(known) = self.deadline {
            return known;
        }
        let next = self
            .routes
            .timed()
            .iter()
            .filter_map(|&i| self.rules[i].next_deadline(&self.world, &self.cfg))
            .min();
        self.deadline = Some(next);
        next
    }

    /// Fires deadlines up to `upto`, each at its own time, in time order.
    fn fire(&mut self, upto: u64, out: &mut Vec<Finding>) {
        while let Some(at) = self.next_deadline().filter(|&d| d <= upto) {
            self.deadline = None;
            let mut ctx = Ctx {
                cfg: &self.cfg,
                stats: &mut self.stats,
                out,
            };
            for &i in self.routes.timed() {
                self.rules[i].fire(at, &mut self.world, &mut ctx);
            }
        }
    }

    fn process(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        self.deadline = None;
        self.stats.events += 1;
        self.last_ts = self.last_ts.max(ev.ts);
        match ev.kind {
            EventKind::Lost { count, until, .. } => {
                self.world.loss.lost(count, ev.ts, until);
                return;
            }
            EventKind::SyscallHooks { attached } => {
                if !attached {
                    self.world.tasks.returns_unwatched(ev.ts);
                }
                return;
            }
            _ => {}
        }
        let actor = Actor::of(ev, self.cfg.thread_size);
        let mut facts = std::mem::take(&mut self.facts);
        self.world.apply(ev, &actor, &mut facts);
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            out,
        };
        for fact in &facts {
            for &i in self.routes.fact(fact.tag()) {
                self.rules[i].on_fact(fact, &mut self.world, &mut ctx);
            }
        }
        facts.clear();
        self.facts = facts;
        for &i in self.routes.event(ev.kind.tag()) {
            self.rules[i].on_event(ev, &actor, &mut self.world, &mut ctx);
        }
    }
}
