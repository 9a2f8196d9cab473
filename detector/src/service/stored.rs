//! The findings-store sink: each finding as the JSON line `trace --json`
//! prints, plus where and when it happened, appended and fsynced before
//! the sinks after it (log, metrics) see it.

use std::io;
use std::sync::Arc;

use serde_json::{Value, json};

use super::store::{Appended, Store};
use crate::engine::Finding;
use crate::metrics::Metrics;
use crate::report;
use crate::session::{Emitted, Sink};

pub struct StoreSink {
    store: Store,
    /// The host the events came from.
    host: String,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC of that host: a finding's
    /// kernel time plus this is its wall-clock time.
    boot_offset_ns: u64,
    metrics: Arc<Metrics>,
}

/// RFC 3339 UTC time of `unix_ns`.
pub fn wall_time(unix_ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// The stored form of a finding.
pub fn stored_line(found: &Emitted<'_>, host: &str, boot_offset_ns: u64) -> Value {
    let mut value = report::json::to_json(found.finding, found.stacks);
    let unix_ns = found.finding.ts.saturating_add(boot_offset_ns);
    value["host"] = json!(host);
    value["wall_time"] = json!(wall_time(unix_ns));
    value
}

impl StoreSink {
    pub fn new(store: Store, host: String, boot_offset_ns: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            host,
            boot_offset_ns,
            metrics,
        }
    }

    fn describe(finding: &Finding, id: &str) -> String {
        format!("{} {} (id {id})", finding.kind, finding.object.addr)
    }
}

impl Sink for StoreSink {
    /// A finding that cannot be stored is still logged and counted by the
    /// sinks after this one (an alert is worth more than the order), and
    /// the failure is logged and counted.
    fn finding(&mut self, found: &Emitted<'_>) -> io::Result<()> {
        let line = stored_line(found, &self.host, self.boot_offset_ns);
        match self.store.append(&line) {
            Ok(Appended::Stored) => {}
            Ok(Appended::Duplicate) => tracing::info!(
                finding_id = found.id,
                "finding {} is already in {}; not stored again",
                Self::describe(found.finding, found.id),
                self.store.path().display()
            ),
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::error!(
                    finding_id = found.id,
                    "finding {} not stored: {e}",
                    Self::describe(found.finding, found.id)
                );
            }
        }
        Ok(())
    }
}
