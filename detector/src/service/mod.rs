//! What only the daemon (`detector run`) needs: its configuration file,
//! the findings store, systemd notifications, logging to the journal, the
//! metrics endpoint, and the main loop with its reload.

pub mod config;
pub mod daemon;
pub mod http;
pub mod log;
pub mod notify;
pub mod reload;
pub mod store;
pub mod stored;
