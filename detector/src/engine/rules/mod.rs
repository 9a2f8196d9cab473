//! One file per invariant. Each rule says which events and facts it wants
//! ([`Interest`]), keeps the state it needs, is fed in event-time order and
//! emits through [`Ctx`], which turns a finding whose evidence may be
//! incomplete into an "indeterminate" count instead.
//!
//! Adding a rule: a file here implementing [`Invariant`], a line in
//! [`all`], its replay fixtures and its entry in `docs/rules.md`.

pub mod bio_double_complete;
pub mod bio_teardown;
pub mod lost_io;
pub mod lost_wakeup;
pub mod md_teardown;
pub mod onstack;
pub mod stuck_handler;

use super::actor::Actor;
use super::config::{EngineConfig, Rule};
use super::facts::{Fact, FactTag};
use super::finding::Finding;
use super::loss::{Loss, Seen};
use super::stats::EngineStats;
use super::world::World;
use crate::event::{Event, EventTag};

/// What a rule may touch besides its own state and the world while it
/// handles an event.
pub struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub stats: &'a mut EngineStats,
    pub out: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    pub fn enabled(&self, rule: Rule) -> bool {
        self.cfg.enabled(rule)
    }

    /// Counts a verdict `rule` could not reach.
    pub fn indeterminate(&mut self, rule: Rule) {
        if self.enabled(rule) {
            *self.stats.indeterminate.entry(rule).or_default() += 1;
        }
    }

    /// Reports what `build` makes, unless `rule` is off or the evidence,
    /// gathered since `since`, may be incomplete (then it is counted as
    /// indeterminate).
    pub fn report(
        &mut self,
        rule: Rule,
        loss: &Loss,
        since: Seen,
        build: impl FnOnce() -> Finding,
    ) {
        self.report_if(rule, loss.tainted(since), build);
    }

    /// [`Ctx::report`] with the taint already decided.
    pub fn report_if(&mut self, rule: Rule, tainted: bool, build: impl FnOnce() -> Finding) {
        if !self.enabled(rule) {
            return;
        }
        if tainted {
            self.indeterminate(rule);
            return;
        }
        let finding = build();
        debug_assert_eq!(finding.kind.rule(), rule);
        *self.stats.findings.entry(finding.kind).or_default() += 1;
        self.out.push(finding);
    }
}

/// The events and facts a rule reacts to.
pub struct Interest {
    pub events: &'static [EventTag],
    pub facts: &'static [FactTag],
    /// It judges at deadlines ([`Invariant::next_deadline`] and
    /// [`Invariant::fire`]): only such rules are asked, before and after
    /// every event.
    pub deadlines: bool,
}

/// An invariant: the reaction of one rule to what happens.
pub trait Invariant {
    fn interest(&self) -> Interest;

    /// An event it asked for, after the world has applied it (and after the
    /// facts that event produced were handed out).
    fn on_event(&mut self, _ev: &Event, _actor: &Actor, _w: &mut World, _ctx: &mut Ctx<'_>) {}

    /// A fact it asked for.
    fn on_fact(&mut self, _fact: &Fact, _w: &mut World, _ctx: &mut Ctx<'_>) {}

    /// The earliest time at which [`Invariant::fire`] has something to do.
    fn next_deadline(&self, _w: &World, _cfg: &EngineConfig) -> Option<u64> {
        None
    }

    /// Judges what is due at or before `now`.
    fn fire(&mut self, _now: u64, _w: &mut World, _ctx: &mut Ctx<'_>) {}

    /// End of the stream at `end`.
    fn finish(&mut self, _end: u64, _w: &mut World, _ctx: &mut Ctx<'_>) {}

    /// Adds what it holds and what it dropped to `stats`.
    fn stats(&self, _stats: &mut EngineStats) {}
}

/// Every rule, in the order they see each event.
pub fn all(cfg: &EngineConfig) -> Vec<Box<dyn Invariant + Send>> {
    vec![
        Box::new(onstack::Onstack::new(cfg.max_completions)),
        Box::new(lost_wakeup::LostWakeup::default()),
        Box::new(bio_teardown::BioTeardown::new(cfg.max_disks)),
        Box::new(bio_double_complete::BioDoubleComplete),
        Box::new(stuck_handler::StuckHandler::default()),
        Box::new(lost_io::LostIo::default()),
        Box::new(md_teardown::MdTeardown::new(cfg.max_md_arrays)),
    ]
}

/// Which rule wants which event kind and which fact.
pub struct Routes {
    events: Vec<Vec<usize>>,
    facts: Vec<Vec<usize>>,
    timed: Vec<usize>,
}

impl Routes {
    pub fn new(rules: &[Box<dyn Invariant + Send>]) -> Self {
        let mut events = vec![Vec::new(); EventTag::COUNT];
        let mut facts = vec![Vec::new(); FactTag::COUNT];
        let mut timed = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let interest = rule.interest();
            if interest.deadlines {
                timed.push(i);
            }
            for &tag in interest.events {
                events[tag as usize].push(i);
            }
            for &tag in interest.facts {
                facts[tag as usize].push(i);
            }
        }
        Self {
            events,
            facts,
            timed,
        }
    }

    /// The rules with deadlines, in order.
    pub fn timed(&self) -> &[usize] {
        &self.timed
    }

    pub fn event(&self, tag: EventTag) -> &[usize] {
        &self.events[tag as usize]
    }

    pub fn fact(&self, tag: FactTag) -> &[usize] {
        &self.facts[tag as usize]
    }
}
