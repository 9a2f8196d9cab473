//! The one owner of the Prometheus registry: every metric detector exports,
//! named by Prometheus' rules (`detector_` prefix, base units, `_total`
//! counters) with bounded labels only (kinds, rules, mechanisms, tables:
//! never pids, addresses or sectors).
//!
//! Counts that flow with events (events by kind, findings, latencies) are
//! updated as they pass ([`MetricsSink`]); state the engine and the reader
//! keep (tracked objects, evictions, kernel-side losses) is copied in by
//! [`Metrics::publish`], generically: a new engine statistic or kernel
//! counter appears without a change here.

mod engine;
mod in_flight;
mod latency;

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use prometheus::{
    Encoder as _, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::{EngineConfig, EngineStats, FindingKind, Rule};
use crate::event::{Event, EventKind};
use crate::kernel::attach::HookOutcome;
use crate::kernel::coverage::{RuleState, coverage};
use crate::kernel::hooks::Mechanism;
use crate::kernel::reader::ReaderTotals;
use crate::session::{Emitted, SessionEvent, Sink};
use detector_common::config::IO_BUCKET_NS;
use detector_common::counter;
use in_flight::InFlightHistogram;
use latency::{BioLatency, HandlerTime};

/// Latency buckets for block I/O, in seconds: the kernel's own
/// (`IO_BUCKET_NS`), which it counts the bios it pairs into.
fn io_buckets() -> Vec<f64> {
    IO_BUCKET_NS.iter().map(|&ns| ns as f64 / 1e9).collect()
}

/// Kinds the reader makes (loss markers, loss checks), not kernel events.
const NOT_KERNEL_EVENTS: [&str; 3] = ["lost", "loss_checked", "syscall_hooks"];

/// Every state a rule can be in, for `detector_rule_state`.
const RULE_STATES: [&str; 5] = [
    "active",
    "degraded",
    "inactive",
    "waiting_for_module",
    "disabled",
];

#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

pub struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    decode_errors: IntCounter,
    /// Task names the reader lacked, by where it found them.
    names_missed: IntCounterVec,
    /// CPUs' rings stuck behind a record still being written.
    ring_stalls: IntCounterVec,
    ring_stall_longest: Gauge,
    /// Whether sys_exit/sys_enter are attached now.
    syscall_hooks_attached: IntGauge,
    /// Their attachments and detachments, and the refused ones.
    syscall_hook_changes: IntCounterVec,
    /// Kernel-side counters that count lost events, by cause.
    lost: IntCounterVec,
    /// The other kernel-side counters, one metric each, by counter index.
    kernel: Vec<(u32, IntCounter)>,
    findings: IntCounterVec,
    pub store_errors: IntCounter,
    rule_active: GaugeVec,
    thresholds: GaugeVec,
    rule_state: IntGaugeVec,
    hooks_attached: IntGaugeVec,
    bio_in_flight_time: InFlightHistogram,
    handler_time: Histogram,
    build_info: IntGaugeVec,
    reload_success: IntGauge,
    reload_time: Gauge,
    engine: Mutex<engine::EngineMetrics>,
}

fn counter(name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    IntCounter::new(name, help)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let kernel = (0..counter::ALL)
            .filter(|i| !counter::is_loss(*i))
            .map(|i| {
                let name = counter::NAMES[i as usize];
                let help = format!("Kernel-side count {name} (detector_common::counter {i})");
                counter(&format!("detector_kernel_{name}_total"), &help).map(|c| (i, c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(io_buckets()))
        };
        let metrics = Self {
            events: IntCounterVec::new(
                Opts::new("detector_events_total", "Kernel events read, by kind"),
                &["kind"],
            )?,
            decode_errors: counter(
                "detector_decode_errors_total",
                "Ring-buffer records that did not decode (counted and skipped)",
            )?,
            names_missed: IntCounterVec::new(
                Opts::new(
                    "detector_task_names_missed_total",
                    "Records whose task name (sent once per task) the reader lacked because \
                     the record that carried it was lost, by where it was found instead: proc \
                     (read from /proc) or unknown (the thread was gone; shown as ?)",
                ),
                &["found"],
            )?,
            ring_stalls: IntCounterVec::new(
                Opts::new(
                    "detector_ring_stalls_total",
                    "Times a CPU's event ring stayed stuck behind a record still being written \
                     for over a millisecond, holding back how far events were judged, by \
                     outcome: waited (its records came and were judged in order) or given_up \
                     (stuck over 2 s: the span it held back was marked lost, and its \
                     records came late)",
                ),
                &["outcome"],
            )?,
            ring_stall_longest: Gauge::new(
                "detector_ring_stall_longest_seconds",
                "The longest time a CPU's event ring stayed stuck behind one record",
            )?,
            syscall_hooks_attached: IntGauge::new(
                "detector_syscall_hooks_attached",
                "Whether the sys_exit/sys_enter hooks are attached now (1) or detached while \
                 no task needs them (0): attached, they slow every syscall on the host",
            )?,
            syscall_hook_changes: IntCounterVec::new(
                Opts::new(
                    "detector_syscall_hook_changes_total",
                    "Times the sys_exit/sys_enter hooks were attached or detached, and times \
                     the kernel refused (change: attach, detach, failure)",
                ),
                &["change"],
            )?,
            lost: IntCounterVec::new(
                Opts::new(
                    "detector_events_lost_total",
                    "Events lost on the kernel side, by cause: ring_buffer_full (a ring-buffer \
                     reserve failed), a per-task map full, recursion misses",
                ),
                &["cause"],
            )?,
            kernel,
            findings: IntCounterVec::new(
                Opts::new(
                    "detector_findings_total",
                    "Findings stored, by rule and severity (counted once on disk)",
                ),
                &["rule", "severity"],
            )?,
            store_errors: counter(
                "detector_findings_store_errors_total",
                "Findings that could not be written to the findings file (logged anyway)",
            )?,
            rule_active: GaugeVec::new(
                Opts::new(
                    "detector_rule_active",
                    "Whether a rule runs: 1 active, 0.5 degraded (some hooks missing), 0 not",
                ),
                &["rule"],
            )?,
            thresholds: GaugeVec::new(
                Opts::new(
                    "detector_rule_threshold_seconds",
                    "How long a rule with a deadline waits before it reports",
                ),
                &["rule"],
            )?,
            rule_state: IntGaugeVec::new(
                Opts::new(
                    "detector_rule_state",
                    "A rule's state, 1 for the current one: active, degraded, inactive \
                     (hooks missing), waiting_for_module, disabled (by configuration)",
                ),
                &["rule", "state"],
            )?,
            hooks_attached: IntGaugeVec::new(
                Opts::new("detector_hooks_attached", "Hooks attached, by mechanism"),
                &["mechanism"],
            )?,
            bio_in_flight_time: InFlightHistogram::new(
                HistogramOpts::new(
                    "detector_bio_in_flight_duration_seconds",
                    "Time from a bio's submission to its completion (bios paired in the kernel \
                     included: counted there into the same buckets)",
                )
                .buckets(io_buckets()),
            )?,
            handler_time: histogram(
                "detector_completion_handler_duration_seconds",
                "Time a bio completion (bio_endio and its end_io handler) ran",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(
                    "detector_build_info",
                    "1, labelled with detector's version and the kernel it traces",
                ),
                &["version", "kernel"],
            )?,
            reload_success: IntGauge::new(
                "detector_config_reload_success",
                "Whether the last configuration load (start or SIGHUP) succeeded",
            )?,
            reload_time: Gauge::new(
                "detector_config_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully (Unix time)",
            )?,
            engine: Mutex::new(engine::EngineMetrics::new(&registry)?),
            registry,
        };
        metrics.register_all()?;
        metrics.zero_known_series();
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.events.clone()))?;
        r.register(Box::new(self.decode_errors.clone()))?;
        r.register(Box::new(self.names_missed.clone()))?;
        r.register(Box::new(self.ring_stalls.clone()))?;
        r.register(Box::new(self.ring_stall_longest.clone()))?;
        r.register(Box::new(self.syscall_hooks_attached.clone()))?;
        r.register(Box::new(self.syscall_hook_changes.clone()))?;
        r.register(Box::new(self.lost.clone()))?;
        for (_, c) in &self.kernel {
            r.register(Box::new(c.clone()))?;
        }
        r.register(Box::new(self.findings.clone()))?;
        r.register(Box::new(self.store_errors.clone()))?;
        r.register(Box::new(self.rule_active.clone()))?;
        r.register(Box::new(self.rule_state.clone()))?;
        r.register(Box::new(self.thresholds.clone()))?;
        r.register(Box::new(self.hooks_attached.clone()))?;
        r.register(Box::new(self.bio_in_flight_time.clone()))?;
        r.register(Box::new(self.handler_time.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        r.register(Box::new(self.reload_success.clone()))?;
        r.register(Box::new(self.reload_time.clone()))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
    }

    /// Series that exist from the start at 0: a counter that first shows
    /// up at 1 has no increase in Prometheus, and a finding alert built on
    /// `increase()` would miss the first finding of each kind.
    fn zero_known_series(&self) {
        for kind in FindingKind::ALL {
            self.findings
                .with_label_values(&[kind.rule().name(), kind.severity().name()]);
        }
        for mechanism in Mechanism::ALL {
            self.hooks_attached.with_label_values(&[mechanism.name()]);
        }
        for kind in EventKind::NAMES
            .iter()
            .filter(|k| !NOT_KERNEL_EVENTS.contains(k))
        {
            self.events.with_label_values(&[kind]);
        }
        for i in (0..counter::ALL).filter(|i| counter::is_loss(*i)) {
            self.lost.with_label_values(&[counter::NAMES[i as usize]]);
        }
        for found in ["proc", "unknown"] {
            self.names_missed.with_label_values(&[found]);
        }
        for change in ["attach", "detach", "failure"] {
            self.syscall_hook_changes.with_label_values(&[change]);
        }
        for outcome in ["waited", "given_up"] {
            self.ring_stalls.with_label_values(&[outcome]);
        }
        let mut engine = self.lock_engine();
        for rule in Rule::ALL {
            engine.indeterminate(rule.name());
        }
    }

    fn lock_engine(&self) -> std::sync::MutexGuard<'_, engine::EngineMetrics> {
        // A panic elsewhere while holding it cannot leave the maps half
        // updated in a way that matters: they only hold metric handles.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> io::Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(io::Error::other)?;
        String::from_utf8(out).map_err(io::Error::other)
    }

    pub fn set_build_info(&self, kernel: &str) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel])
            .set(1);
    }

    /// A configuration load (at start or on SIGHUP) succeeded or failed.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_success.set(ok.into());
        if ok {
            self.reload_time
                .set(crate::clock::realtime_ns() as f64 / 1e9);
        }
    }

    /// The thresholds the engine runs with.
    pub fn set_thresholds(&self, cfg: &EngineConfig) {
        for (rule, ns) in [
            (Rule::LostWakeup, cfg.lost_wakeup_after_ns),
            (Rule::StuckCompletionHandler, cfg.stuck_handler_after_ns),
            (Rule::LostIoCompletion, cfg.lost_io_after_ns),
        ] {
            self.thresholds
                .with_label_values(&[rule.name()])
                .set(ns as f64 / 1e9);
        }
    }

    /// Hooks by mechanism and each rule's state, from the attach outcomes
    /// (`None` when replaying a file: no hooks) and which rules the
    /// configuration leaves on.
    pub fn set_coverage(&self, outcomes: Option<&[HookOutcome]>, enabled: impl Fn(Rule) -> bool) {
        let mut by_mechanism: HashMap<&str, i64> = HashMap::new();
        for o in outcomes.into_iter().flatten() {
            if let Some(m) = o.attached() {
                *by_mechanism.entry(m.name()).or_default() += 1;
            }
        }
        for m in Mechanism::ALL {
            let n = by_mechanism.get(m.name()).copied().unwrap_or(0);
            self.hooks_attached.with_label_values(&[m.name()]).set(n);
        }
        let states: HashMap<&str, RuleState> = outcomes
            .map(|o| coverage(o).into_iter().map(|c| (c.rule, c.state)).collect())
            .unwrap_or_default();
        for rule in Rule::ALL {
            let state = match states.get(rule.name()) {
                _ if !enabled(rule) => "disabled",
                None | Some(RuleState::Active) => "active",
                Some(RuleState::Degraded { .. }) => "degraded",
                Some(RuleState::Inactive { .. }) => "inactive",
                Some(RuleState::WaitingForModule { .. }) => "waiting_for_module",
            };
            let active = match state {
                "active" => 1.0,
                "degraded" => 0.5,
                _ => 0.0,
            };
            self.rule_active
                .with_label_values(&[rule.name()])
                .set(active);
            for s in RULE_STATES {
                self.rule_state
                    .with_label_values(&[rule.name(), s])
                    .set((s == state).into());
            }
        }
    }

    /// Copies in what the engine and the reader keep.
    pub fn publish(&self, stats: &EngineStats, reader: Option<&ReaderTotals>) {
        if let Some(totals) = reader {
            let up_to = |c: &IntCounter, value: u64| c.inc_by(value.saturating_sub(c.get()));
            for (i, c) in &self.kernel {
                up_to(c, totals.counters.get(*i));
            }
            for i in (0..counter::ALL).filter(|i| counter::is_loss(*i)) {
                let c = self.lost.with_label_values(&[counter::NAMES[i as usize]]);
                up_to(&c, totals.counters.get(i));
            }
            let d = &self.decode_errors;
            d.inc_by(totals.decode_errors.saturating_sub(d.get()));
            self.bio_in_flight_time.set_paired(&totals.paired_times);
            for (found, value) in [
                ("proc", totals.names_from_proc),
                ("unknown", totals.names_unknown),
            ] {
                up_to(&self.names_missed.with_label_values(&[found]), value);
            }
            let stalls = &totals.ring_stalls;
            for (outcome, value) in [("waited", stalls.waited), ("given_up", stalls.given_up)] {
                up_to(&self.ring_stalls.with_label_values(&[outcome]), value);
            }
            self.ring_stall_longest.set(stalls.longest_ns as f64 / 1e9);
            let hooks = &totals.syscall_hooks;
            self.syscall_hooks_attached.set(hooks.attached.into());
            for (change, value) in [
                ("attach", hooks.attaches),
                ("detach", hooks.detaches),
                ("failure", hooks.failures),
            ] {
                up_to(
                    &self.syscall_hook_changes.with_label_values(&[change]),
                    value,
                );
            }
        }
        let mut engine = self.lock_engine();
        if let Err(e) = engine.publish(&self.registry, stats) {
            tracing::debug!("engine statistics not exported: {e}");
        }
    }

    /// The sink that counts what flows through a session.
    pub fn sink(self: &std::sync::Arc<Self>) -> MetricsSink {
        MetricsSink {
            events: EventKind::NAMES
                .iter()
                .filter(|k| !NOT_KERNEL_EVENTS.contains(k))
                .map(|k| (*k, self.events.with_label_values(&[k])))
                .collect(),
            metrics: self.clone(),
            bios: BioLatency::default(),
            handlers: HandlerTime::default(),
        }
    }
}

/// Counts events and findings as they pass, and times bios and handlers.
pub struct MetricsSink {
    metrics: std::sync::Arc<Metrics>,
    /// The per-kind counters, looked up by name without hashing.
    events: Vec<(&'static str, IntCounter)>,
    bios: BioLatency,
    handlers: HandlerTime,
}

impl MetricsSink {
    fn count(&mut self, ev: &Event) {
        let name = ev.kind.name();
        if NOT_KERNEL_EVENTS.contains(&name) {
            // Made by the reader, not the kernel: the losses they stand
            // for are counted by detector_events_lost_total.
            return;
        }
        match self
            .events
            .iter()
            .find(|(k, _)| std::ptr::eq(*k, name) || *k == name)
        {
            Some((_, c)) => c.inc(),
            None => {
                let c = self.metrics.events.with_label_values(&[name]);
                c.inc();
                self.events.push((name, c));
            }
        }
    }
}

impl Sink for MetricsSink {
    fn event(&mut self, seen: &SessionEvent<'_>) -> io::Result<()> {
        let ev = seen.ev;
        self.count(ev);
        if let Some(secs) = self.bios.observe(ev) {
            self.metrics.bio_in_flight_time.observe(secs);
        }
        if let Some(secs) = self.handlers.observe(ev) {
            self.metrics.handler_time.observe(secs);
        }
        Ok(())
    }

    fn finding(&mut self, found: &Emitted<'_>) -> io::Result<()> {
        let kind = found.finding.kind;
        self.metrics
            .findings
            .with_label_values(&[kind.rule().name(), found.finding.severity.name()])
            .inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
