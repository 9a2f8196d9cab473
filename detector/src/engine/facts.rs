//! What the shared tables make of an event, for the rules.
//!
//! The world (`world`) turns each event into facts about the objects it
//! tracks: a bio submitted or completed, a task seen at some depth, asleep,
//! woken or gone, a completion handler entered or returned. Rules react to
//! facts and to the raw events they name in their interest; neither kind of
//! input is seen by a rule that did not ask for it.

use super::bios::{Bio, Completion, Done};
use super::handlers::Call;
use super::tasks::{Obs, ObsKind, Retire};

/// One fact, in the order the world learnt it while handling one event.
#[derive(Clone, Debug)]
pub enum Fact {
    /// Task `tid` was seen where `obs` says (its own frames, user space,
    /// exit).
    Observed { tid: u32, obs: Obs },
    /// Task `tid`'s state was dropped (it is gone, or evicted for room).
    Retired { tid: u32, how: Retire, ts: u64 },
    /// Task `tid` went to sleep uninterruptibly (`Task::sleep` says how).
    Slept { tid: u32 },
    /// Task `tid`'s sleep is over (woken, switched in, seen running).
    Woken { tid: u32 },
    /// A bio was submitted: a new life (`new`) or a resubmission of one in
    /// flight. The bio table has it as it is now.
    Submitted { bio: Bio, new: bool },
    /// A bio's first completion in its life (the bio as it was before).
    Completed { bio: Bio, done: Completion },
    /// A second final completion of one life: neither a resubmission, nor
    /// a new bio at the same address, nor the kernel's own second call
    /// (integrity verification, a stacking driver restoring `bi_end_io`)
    /// explains it.
    CompletedAgain { first: Done, again: Completion },
    /// An in-flight bio is no longer tracked (re-initialised, evicted).
    Untracked { bio: Bio },
    /// A `bio_endio` call started.
    HandlerEntered { call: Call },
    /// A `bio_endio` call returned at `ts`; `seen_exit` is false when its
    /// return was inferred (its context moved on) rather than seen.
    HandlerReturned {
        call: Call,
        ts: u64,
        seen_exit: bool,
    },
    /// A task in the middle of a `bio_endio` call switched out (`off`) or
    /// back in: the handler is not running all that time.
    HandlerOffCpu { tid: u32, ts: u64, off: bool },
}

/// A [`Fact`] without its fields: what rules subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FactTag {
    /// `Observed` in the kernel: its frames below some depth are gone.
    Observed,
    /// `Observed` back in user space or exiting: every frame is gone. Kept
    /// apart because some rules care only about this, and task events are
    /// the most frequent facts.
    ObservedOut,
    Retired,
    Slept,
    Woken,
    Submitted,
    Completed,
    CompletedAgain,
    Untracked,
    HandlerEntered,
    HandlerReturned,
    HandlerOffCpu,
}

impl FactTag {
    pub const COUNT: usize = 12;
}

impl Fact {
    pub fn tag(&self) -> FactTag {
        match self {
            Self::Observed { obs, .. } => match obs.kind {
                ObsKind::Frames(_) => FactTag::Observed,
                ObsKind::User | ObsKind::Exit => FactTag::ObservedOut,
            },
            Self::Retired { .. } => FactTag::Retired,
            Self::Slept { .. } => FactTag::Slept,
            Self::Woken { .. } => FactTag::Woken,
            Self::Submitted { .. } => FactTag::Submitted,
            Self::Completed { .. } => FactTag::Completed,
            Self::CompletedAgain { .. } => FactTag::CompletedAgain,
            Self::Untracked { .. } => FactTag::Untracked,
            Self::HandlerEntered { .. } => FactTag::HandlerEntered,
            Self::HandlerReturned { .. } => FactTag::HandlerReturned,
            Self::HandlerOffCpu { .. } => FactTag::HandlerOffCpu,
        }
    }
}
