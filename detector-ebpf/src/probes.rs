//! Programs, one file per kernel subsystem.

mod bio;
mod completion;
mod md;
mod sched;

/// Program return value: tracing programs' return values are ignored by the
/// kernel except for kprobes, where 0 means "carry on".
#[inline(always)]
fn done(_: Option<()>) -> u32 {
    0
}
