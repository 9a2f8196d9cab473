//! detector: a live race detector for the Linux block and completion paths.
//!
//! Data flows one way: probes (detector-ebpf) -> ring buffer -> [`kernel`]
//! (load, attach, read, decode) -> [`event`]s -> [`engine`] -> findings ->
//! the [`session`]'s sinks (terminal, record file, findings store, log,
//! [`metrics`]). [`record`] files hold an event stream for replay;
//! [`service`] is what only the daemon needs.

pub mod cli;
pub mod clock;
pub mod engine;
pub mod event;
pub mod filter;
pub mod heartbeat;
pub mod kernel;
pub mod metrics;
pub mod record;
pub mod report;
pub mod service;
pub mod session;
pub mod summary;
#[doc(hidden)]
pub mod synth;
