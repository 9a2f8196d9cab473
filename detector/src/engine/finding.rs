//! What the engine reports: a violated invariant with the evidence for it.
//!
//! A finding carries stack *ids*; [`crate::report`] resolves them against a
//! [`crate::event::StackTable`] for people and for JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::actor::Actor;
use super::config::Rule;
use crate::event::{Addr, Dev, StackId};

/// The kind of a finding: the names users grep for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    CompleteAfterReturn,
    UnsynchronizedOnstackComplete,
    LostWakeup,
    MdTeardownInflight,
    MdWriteAfterTeardown,
    BioDoubleComplete,
    BioCompleteAfterTeardown,
    StuckCompletionHandler,
    LostIoCompletion,
    LateIoCompletion,
}

impl FindingKind {
    pub const ALL: [FindingKind; 10] = [
        Self::CompleteAfterReturn,
        Self::UnsynchronizedOnstackComplete,
        Self::LostWakeup,
        Self::MdTeardownInflight,
        Self::MdWriteAfterTeardown,
        Self::BioDoubleComplete,
        Self::BioCompleteAfterTeardown,
        Self::StuckCompletionHandler,
        Self::LostIoCompletion,
        Self::LateIoCompletion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CompleteAfterReturn => "complete-after-return",
            Self::UnsynchronizedOnstackComplete => "unsynchronized-onstack-complete",
            Self::LostWakeup => "lost-wakeup",
            Self::MdTeardownInflight => "md-teardown-inflight",
            Self::MdWriteAfterTeardown => "md-write-after-teardown",
            Self::BioDoubleComplete => "bio-double-complete",
            Self::BioCompleteAfterTeardown => "bio-complete-after-teardown",
            Self::StuckCompletionHandler => "stuck-completion-handler",
            Self::LostIoCompletion => "lost-io-completion",
            Self::LateIoCompletion => "late-io-completion",
        }
    }

    /// The rule that reports this kind.
    pub fn rule(self) -> Rule {
        match self {
            Self::CompleteAfterReturn | Self::UnsynchronizedOnstackComplete => {
                Rule::OnstackCompletion
            }
            Self::LostWakeup => Rule::LostWakeup,
            Self::MdTeardownInflight | Self::MdWriteAfterTeardown => Rule::MdTeardown,
            Self::BioDoubleComplete => Rule::BioDoubleComplete,
            Self::BioCompleteAfterTeardown => Rule::BioCompleteAfterTeardown,
            Self::StuckCompletionHandler => Rule::StuckCompletionHandler,
            Self::LostIoCompletion | Self::LateIoCompletion => Rule::LostIoCompletion,
        }
    }

    /// How bad it is when it happens.
    pub fn severity(self) -> Severity {
        match self {
            // Memory was (or is about to be) written after it was freed.
            Self::CompleteAfterReturn | Self::MdWriteAfterTeardown | Self::BioDoubleComplete => {
                Severity::Critical
            }
            // A race window that corrupts memory when the timing is unlucky,
            // or a task/CPU that is wedged right now.
            Self::UnsynchronizedOnstackComplete
            | Self::MdTeardownInflight
            | Self::BioCompleteAfterTeardown
            | Self::LostWakeup
            | Self::StuckCompletionHandler => Severity::Error,
            // Could also be a very slow or failing device.
            Self::LostIoCompletion => Severity::Warning,
            // What became of a stall reported before.
            Self::LateIoCompletion => Severity::Info,
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Not a race: what became of one reported before.
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// What kind of kernel object a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Bio,
    Completion,
    Mddev,
    Disk,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bio => "bio",
            Self::Completion => "completion",
            Self::Mddev => "mddev",
            Self::Disk => "disk",
        }
    }
}

/// The object whose lifecycle was violated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    #[serde(rename = "type")]
    pub kind: ObjectKind,
    pub addr: Addr,
    /// The device it was submitted to (may be a partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<Dev>,
    /// The whole disk, when it differs from `dev` or `dev` is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Dev>,
    /// The bio's `bi_end_io` function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_io: Option<Addr>,
    /// The task whose kernel stack holds the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_tid: Option<u32>,
}

impl Object {
    pub fn new(kind: ObjectKind, addr: Addr) -> Self {
        Self {
            kind,
            addr,
            dev: None,
            disk: None,
            end_io: None,
            owner_tid: None,
        }
    }
}

/// Where code ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// On the task's own kernel stack.
    Task,
    /// Hard or soft interrupt, or the idle task: not the task's frames.
    Interrupt,
}

/// One party of the race: who, where, when, with which stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// What this party does in the race ("owner", "completer", ...).
    pub role: String,
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    /// When it did the thing `stack` shows.
    pub ts: u64,
    pub context: Context,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackId>,
}

impl Side {
    pub fn new(role: &str, actor: &Actor) -> Self {
        Self {
            role: role.to_owned(),
            comm: actor.comm.as_str().to_owned(),
            pid: actor.pid,
            tid: actor.tid,
            cpu: actor.cpu,
            ts: actor.ts,
            context: if actor.irq {
                Context::Interrupt
            } else {
                Context::Task
            },
            stack: actor.stack,
        }
    }
}

/// One line of the interleaving diagram: what side `side` did at `ts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub ts: u64,
    /// Index into [`Finding::sides`]: the diagram column.
    pub side: usize,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackId>,
}

/// A violated invariant and the events that prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// When the invariant broke: the offending event (the late
    /// `complete()`, the frame left, the second completion), or the moment
    /// a deadline passed (stuck handler, lost wakeup, lost I/O).
    pub ts: u64,
    pub object: Object,
    pub sides: Vec<Side>,
    /// In time order.
    pub interleaving: Vec<Step>,
    /// One line saying what went wrong and why it matters.
    pub explanation: String,
}

impl Finding {
    /// This finding's stable id (see [`finding_id`]).
    pub fn id(&self) -> String {
        finding_id(self.kind, &self.object, &self.sides)
    }
}

/// Hex digits of a finding id (64 bits of SHA-256: collisions need ~4e9
/// findings in one fleet).
const ID_HEX_DIGITS: usize = 16;

/// The stable id of a finding of `kind` about `object` with these `sides`:
/// a hash of the kind (and so its rule), the object, and the two sides' key
/// events (who did it, on which CPU, when). Everything hashed comes from the
/// kernel's events, nothing from the host running detector, so the same
/// race read live and replayed from its recording gets the same id, and a
/// fleet can deduplicate findings that reach it twice (a restarted daemon
/// replaying, a log shipper retrying).
pub fn finding_id(kind: FindingKind, object: &Object, sides: &[Side]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;

    // A fixed text layout, so the id does not depend on serde or on the
    // order of struct fields.
    let mut key = format!(
        "detector-finding-v1\n{}\n{}\n{}\n{}\n",
        kind.rule().name(),
        kind.name(),
        object.kind.name(),
        object.addr.0
    );
    for side in sides.iter().take(2) {
        let _ = writeln!(
            key,
            "{}\t{}\t{}\t{}",
            side.role, side.tid, side.cpu, side.ts
        );
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut id = String::with_capacity(ID_HEX_DIGITS);
    for byte in &digest[..ID_HEX_DIGITS / 2] {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Builds a finding side by side, step by step.
pub(crate) struct FindingBuilder {
    finding: Finding,
}

impl FindingBuilder {
    pub fn new(kind: FindingKind, ts: u64, object: Object) -> Self {
        Self {
            finding: Finding {
                kind,
                severity: kind.severity(),
                ts,
                object,
                sides: Vec::new(),
                interleaving: Vec::new(),
                explanation: String::new(),
            },
        }
    }

    /// Adds a party and returns its column.
    pub fn side(&mut self, role: &str, actor: &Actor) -> usize {
        self.finding.sides.push(Side::new(role, actor));
        self.finding.sides.len() - 1
    }

    pub fn step(&mut self, side: usize, ts: u64, text: String, stack: Option<StackId>) {
        self.finding.interleaving.push(Step {
            ts,
            side,
            text,
            stack,
        });
    }

    /// A step showing what `actor` did, with its stack.
    pub fn act(&mut self, side: usize, actor: &Actor, text: String) {
        self.step(side, actor.ts, text, actor.stack);
    }

    pub fn finish(mut self, explanation: String) -> Finding {
        // Stable: steps at the same instant keep the order they were told.
        self.finding.interleaving.sort_by_key(|s| s.ts);
        self.finding.explanation = explanation;
        self.finding
    }
}

/// Seconds with nanosecond precision, as the kernel prints times.
pub fn secs(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// A duration for people: `1.5 s`, `20 ms`, `300 us`.
pub fn duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.3} ms", ns as f64 / 1e6)
    } else {
        format!("{:.3} us", ns as f64 / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_names() {
        for kind in FindingKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            let back: FindingKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
    }

    fn side(role: &str, tid: u32, ts: u64) -> Side {
        Side {
            role: role.into(),
            comm: "dd".into(),
            pid: tid,
            tid,
            cpu: 1,
            ts,
            context: Context::Task,
            stack: None,
        }
    }

    #[test]
    fn ids_are_stable_and_tell_races_apart() {
        let object = Object::new(ObjectKind::Bio, Addr(0xffff_8880_0400_0000));
        let sides = [side("waiter", 7, 100), side("completer", 0, 90)];
        let id = finding_id(FindingKind::LostWakeup, &object, &sides);
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        // Pinned: stored findings and fleets compare ids across versions,
        // so the hashed layout must not change (this is SHA-256 of the
        // documented text, computed independently).
        assert_eq!(id, "0b76c20da908a606");
        let mut later = sides.clone();
        later[1].ts += 1;
        let other_object = Object::new(ObjectKind::Bio, Addr(0xffff_8880_0400_0200));
        for different in [
            finding_id(FindingKind::LostIoCompletion, &object, &sides),
            finding_id(FindingKind::LostWakeup, &other_object, &sides),
            finding_id(FindingKind::LostWakeup, &object, &later),
        ] {
            assert_ne!(id, different);
        }
        // What is shown but does not identify the race (names, stacks)
        // leaves the id alone.
        let mut renamed = sides.clone();
        renamed[0].comm = "other".into();
        renamed[0].stack = Some(StackId(3));
        assert_eq!(id, finding_id(FindingKind::LostWakeup, &object, &renamed));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1_500_000_000), "1.500 s");
        assert_eq!(duration(20_000_000), "20.000 ms");
        assert_eq!(duration(300_000), "300.000 us");
        assert_eq!(secs(12_000_000_345), "12.000000345");
    }
}
