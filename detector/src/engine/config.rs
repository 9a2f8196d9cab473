//! Thresholds, caps and the set of enabled rules.
//!
//! Every default is chosen against a kernel fact, written next to it. The
//! CLI starts from [`EngineConfig::default`], overrides what the user gave
//! and disables the rules whose hooks this kernel lacks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::finding::FindingKind;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// One invariant family. Names match `detector check` and `--disable-rule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Seed 000: `complete()` on a completion in a stack frame its owner
    /// left, or left without waiting.
    OnstackCompletion,
    /// Seed 004: a task sleeps in iowait after all its I/O completed.
    LostWakeup,
    /// Seed 003: md superblock writes in flight across array teardown.
    MdTeardown,
    /// Seed 002: a bio's final completion runs twice.
    BioDoubleComplete,
    /// A bio completes on a disk after `del_gendisk` returned.
    BioCompleteAfterTeardown,
    /// Seed 001: a `bio_endio` that does not return.
    StuckCompletionHandler,
    /// A submitted bio that never completes.
    LostIoCompletion,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::OnstackCompletion,
        Rule::LostWakeup,
        Rule::MdTeardown,
        Rule::BioDoubleComplete,
        Rule::BioCompleteAfterTeardown,
        Rule::StuckCompletionHandler,
        Rule::LostIoCompletion,
    ];

    /// The name users see (`detector check`, `--disable-rule`).
    pub fn name(self) -> &'static str {
        match self {
            Self::OnstackCompletion => "onstack-completion",
            Self::LostWakeup => "lost-wakeup",
            Self::MdTeardown => "md-teardown",
            Self::BioDoubleComplete => "bio-double-complete",
            Self::BioCompleteAfterTeardown => "bio-complete-after-teardown",
            Self::StuckCompletionHandler => "stuck-completion-handler",
            Self::LostIoCompletion => "lost-io-completion",
        }
    }

    /// The finding kinds this rule reports.
    pub fn findings(self) -> &'static [FindingKind] {
        use FindingKind::*;
        match self {
            Self::OnstackCompletion => &[CompleteAfterReturn, UnsynchronizedOnstackComplete],
            Self::LostWakeup => &[LostWakeup],
            Self::MdTeardown => &[MdTeardownInflight, MdWriteAfterTeardown],
            Self::BioDoubleComplete => &[BioDoubleComplete],
            Self::BioCompleteAfterTeardown => &[BioCompleteAfterTeardown],
            Self::StuckCompletionHandler => &[StuckCompletionHandler],
            Self::LostIoCompletion => &[LostIoCompletion, LateIoCompletion],
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule name that is not one of [`Rule::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown rule {name:?}; rules are: {}", Rule::ALL.map(Rule::name).join(", "))]
pub struct UnknownRule {
    pub name: String,
}

impl FromStr for Rule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRule { name: s.to_owned() })
    }
}

/// A set of rules (a bit per rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleSet(u8);

impl RuleSet {
    pub const fn none() -> Self {
        Self(0)
    }

    pub fn all() -> Self {
        Rule::ALL.into_iter().collect()
    }

    pub fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    pub fn insert(&mut self, rule: Rule) {
        self.0 |= rule.bit();
    }

    pub fn remove(&mut self, rule: Rule) {
        self.0 &= !rule.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::all()
    }
}

impl FromIterator<Rule> for RuleSet {
    fn from_iter<I: IntoIterator<Item = Rule>>(iter: I) -> Self {
        let mut set = Self::none();
        for rule in iter {
            set.insert(rule);
        }
        set
    }
}

/// Everything the engine can be told. All times are nanoseconds of the
/// events' clock (CLOCK_MONOTONIC).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// How long events are held to be merged by timestamp. All CPUs share
    /// one ring buffer, so events arrive nearly in order: a record's time
    /// is read a few microseconds before it is reserved, and the clock
    /// only advances after a complete drain. Loss no longer needs the
    /// margin (nothing is judged past the last loss check), so the window
    /// only covers that disorder and a guest's vCPU descheduled inside a
    /// program; it is most of a deadline finding's detection latency.
    /// An event later than the window is counted and handled as a loss.
    pub reorder_window_ns: u64,
    /// THREAD_SIZE: the size of a task's kernel stack (16 KiB on x86_64 and
    /// arm64; 32 KiB with KASAN).
    pub thread_size: u64,
    /// A task asleep in iowait with all its I/O completed and no wakeup is
    /// reported after this long: far earlier than the kernel's 120 s
    /// hung-task warning, later than any legitimate wait for a completion
    /// that already happened.
    pub lost_wakeup_after_ns: u64,
    /// The last completion of a task's I/O may precede its sleep by at most
    /// this much to count as the one that should wake it: in the seed-004
    /// race the completion runs while the waiter is on its way into
    /// io_schedule(). A completion long before the sleep was one the task
    /// could see while running; a sleep after it waits for something else.
    pub lost_wakeup_race_ns: u64,
    /// Require no I/O in flight on any disk, instead of only on the disks
    /// the sleeping task submitted to (see `rules::lost_wakeup`): fewer
    /// findings on busy hosts, none that a wait on another device explains.
    pub lost_wakeup_any_device: bool,
    /// A `bio_endio` still running after this long is reported. The hard
    /// lockup watchdog fires after 10 s with interrupts off; 2 s is far
    /// above any sane completion handler and far below the watchdog.
    pub stuck_handler_after_ns: u64,
    /// A submitted bio with no completion after this long is reported. The
    /// SCSI command timeout is 30 s; a bio older than that has at least
    /// been retried or lost.
    pub lost_io_after_ns: u64,
    /// A `complete()` landing in a stack frame its owner had left is
    /// reported once the owner showed no sign of being back in that frame
    /// for this long (a task hands an on-stack completion to another
    /// context and waits on it within microseconds).
    pub onstack_confirm_ns: u64,
    /// Caps on tracked objects; the oldest are evicted (and counted) beyond.
    /// In-flight bios.
    pub max_bios: usize,
    /// Completed bios kept to recognise a second completion (only when
    /// `bio_endio` is hooked); a double completion later than this many
    /// completions goes unnoticed.
    pub max_completed_bios: usize,
    pub max_tasks: usize,
    pub max_completions: usize,
    pub max_md_arrays: usize,
    pub max_disks: usize,
    /// Open `bio_endio` calls kept per context (they nest: dm stacks).
    pub max_handler_depth: usize,
    /// Events held for reordering; beyond, the oldest are released early.
    pub max_buffered_events: usize,
    /// Rules that run; the CLI removes those whose hooks are missing.
    pub rules: RuleSet,
    /// `bio_endio` is hooked in this session, so every bio's completion is
    /// observable from the start, on every device. Without it (unknown, or
    /// a tracepoint-only kernel), the engine learns it from the first
    /// `bio_endio` event, and judges devices only once it has seen them
    /// complete something.
    pub bio_endio_hooked: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            reorder_window_ns: 30 * MS,
            thread_size: 16 * 1024,
            lost_wakeup_after_ns: 5 * S,
            lost_wakeup_race_ns: S,
            lost_wakeup_any_device: false,
            stuck_handler_after_ns: 2 * S,
            lost_io_after_ns: 30 * S,
            onstack_confirm_ns: S,
            max_bios: 1 << 17,
            max_completed_bios: 1 << 15,
            max_tasks: 1 << 16,
            max_completions: 4096,
            max_md_arrays: 256,
            max_disks: 4096,
            max_handler_depth: 64,
            max_buffered_events: 1 << 20,
            rules: RuleSet::all(),
            bio_endio_hooked: false,
        }
    }
}

impl EngineConfig {
    /// The same config with `rule` turned off.
    pub fn without(mut self, rule: Rule) -> Self {
        self.rules.remove(rule);
        self
    }

    pub fn enabled(&self, rule: Rule) -> bool {
        self.rules.contains(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_round_trip() {
        for rule in Rule::ALL {
            assert_eq!(rule.name().parse::<Rule>(), Ok(rule));
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{}\"", rule.name()));
        }
        let err = "nope".parse::<Rule>().unwrap_err();
        assert!(err.to_string().contains("lost-wakeup"));
    }

    #[test]
    fn rule_sets() {
        let set = RuleSet::all();
        assert_eq!(set.iter().count(), Rule::ALL.len());
        let cfg = EngineConfig::default().without(Rule::LostWakeup);
        assert!(!cfg.enabled(Rule::LostWakeup));
        assert!(cfg.enabled(Rule::LostIoCompletion));
    }

    #[test]
    fn every_finding_kind_has_one_rule() {
        for kind in FindingKind::ALL {
            let owners: Vec<_> = Rule::ALL
                .into_iter()
                .filter(|r| r.findings().contains(&kind))
                .collect();
            assert_eq!(owners, [kind.rule()], "{kind}");
        }
    }
}
