//! One file per invariant. Each rule keeps the state it needs, is fed by
//! [`super::Engine`] in event-time order and emits through [`Ctx`], which
//! turns a finding whose evidence may be incomplete into an
//! "indeterminate" count instead.

pub mod bio_lifecycle;
pub mod lost_io;
pub mod lost_wakeup;
pub mod md_teardown;
pub mod onstack;
pub mod stuck_handler;

use super::config::{EngineConfig, Rule};
use super::finding::Finding;
use super::loss::{Loss, Seen};
use super::stats::EngineStats;

/// What a rule may touch besides its own state while it handles an event.
pub struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub loss: &'a Loss,
    pub stats: &'a mut EngineStats,
    pub out: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    pub fn enabled(&self, rule: Rule) -> bool {
        self.cfg.enabled(rule)
    }

    /// Whether events about something born at `seen` may be missing.
    pub fn tainted(&self, seen: Seen) -> bool {
        self.loss.tainted(seen)
    }

    /// Counts a verdict `rule` could not reach.
    pub fn indeterminate(&mut self, rule: Rule) {
        *self.stats.indeterminate.entry(rule).or_default() += 1;
    }

    /// Reports what `build` makes, unless `rule` is off or `tainted` says
    /// the evidence may be incomplete (then it is counted as indeterminate).
    pub fn report(&mut self, rule: Rule, tainted: bool, build: impl FnOnce() -> Finding) {
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
