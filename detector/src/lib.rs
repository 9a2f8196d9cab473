//! detector: a live race detector for the Linux block and completion paths.
//!
//! Data flows one way: probes (detector-ebpf) -> ring buffer -> [`kernel`]
//! (load, attach, read, decode) -> [`event`]s -> [`engine`] -> findings ->
//! [`report`] sinks. [`record`] files hold an event stream for replay.

pub mod cli;
pub mod clock;
pub mod engine;
pub mod event;
pub mod filter;
pub mod heartbeat;
pub mod kernel;
pub mod record;
pub mod report;
pub mod session;
pub mod summary;
