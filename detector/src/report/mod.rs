//! Findings for people ([`human`]: text with the two-column interleaving
//! diagram) and for programs ([`json`]: one object per finding whose
//! `finding` field holds its kind). Both resolve stack ids against the
//! session's [`crate::event::StackTable`]. [`stats`] is the session's
//! counters as one JSON object (`--stats-json`).

pub mod human;
pub mod json;
pub mod stats;

use crate::event::{Frame, StackId, StackTable};

/// The frames of `id` worth showing: detector's own hook machinery dropped.
pub(crate) fn frames(table: &StackTable, id: StackId) -> Option<Vec<&Frame>> {
    table
        .get(id)
        .map(|stack| stack.frames_without_hooks().collect())
}
