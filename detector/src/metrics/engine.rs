//! The engine's statistics as metrics, taken generically from
//! [`EngineStats`]' serialized form, so that a statistic the engine gains
//! is exported without a change here:
//!
//! - `live.*` (objects tracked now) -> `detector_tracked_objects{type}`,
//!   and `live.bios_in_flight` also as `detector_bios_in_flight`;
//! - `evictions.*` -> `detector_evictions_total{table}`;
//! - `indeterminate` (by rule) -> `detector_verdicts_indeterminate_total{rule}`;
//! - other top-level numbers -> `detector_engine_<name>_total`;
//! - other maps of numbers -> `detector_engine_<name>{item}` gauges.
//!
//! `findings` is left out: findings are counted when stored
//! (`detector_findings_total`), after the filters.

use std::collections::HashMap;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::Value;

use crate::engine::EngineStats;

/// Help for the top-level statistics known today; others get a generic
/// one.
const KNOWN: &[(&str, &str)] = &[
    (
        "events",
        "Events the engine processed (loss markers included)",
    ),
    (
        "late_events",
        "Events that arrived after the reorder window had passed them (treated like a loss)",
    ),
    (
        "forced_releases",
        "Events released before their reorder window passed because the buffer was full \
         (treated like a loss)",
    ),
    ("loss_records", "Loss markers the engine received"),
    ("lost_events", "Events the loss markers said were lost"),
];

pub struct EngineMetrics {
    tracked: IntGaugeVec,
    bios_in_flight: IntGauge,
    evictions: IntCounterVec,
    indeterminate: IntCounterVec,
    counters: HashMap<String, IntCounter>,
    gauges: HashMap<String, IntGaugeVec>,
}

impl EngineMetrics {
    /// The fixed families, registered in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let tracked = IntGaugeVec::new(
            Opts::new(
                "detector_tracked_objects",
                "Objects the engine tracks now, by type",
            ),
            &["type"],
        )?;
        let bios_in_flight = IntGauge::new(
            "detector_bios_in_flight",
            "Bios submitted and not yet completed, as the engine sees them",
        )?;
        let evictions = IntCounterVec::new(
            Opts::new(
                "detector_evictions_total",
                "Objects dropped from a full engine table (their verdicts become indeterminate)",
            ),
            &["table"],
        )?;
        let indeterminate = IntCounterVec::new(
            Opts::new(
                "detector_verdicts_indeterminate_total",
                "Verdicts a rule could not reach because evidence may be missing (loss, eviction)",
            ),
            &["rule"],
        )?;
        registry.register(Box::new(tracked.clone()))?;
        registry.register(Box::new(bios_in_flight.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(indeterminate.clone()))?;
        Ok(Self {
            tracked,
            bios_in_flight,
            evictions,
            indeterminate,
            counters: HashMap::new(),
            gauges: HashMap::new(),
        })
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl EngineMetrics {
    /// Pre-creates the series of `rule` at 0.
    pub fn indeterminate(&mut self, rule: &str) {
        self.indeterminate.with_label_values(&[rule]);
    }

    /// Copies `stats` in; families for statistics not seen before are
    /// created and registered on the way.
    pub fn publish(
        &mut self,
        registry: &Registry,
        stats: &EngineStats,
    ) -> Result<(), prometheus::Error> {
        let Ok(Value::Object(top)) = serde_json::to_value(stats) else {
            return Ok(());
        };
        for (key, value) in &top {
            match (key.as_str(), value) {
                ("findings", _) => {}
                ("live", Value::Object(items)) => {
                    for (item, v) in items {
                        let n = as_i64(v);
                        self.tracked.with_label_values(&[item]).set(n);
                        if item == "bios_in_flight" {
                            self.bios_in_flight.set(n);
                        }
                    }
                }
                ("evictions", Value::Object(items)) => {
                    for (item, v) in items {
                        set_counter(&self.evictions.with_label_values(&[item]), v);
                    }
                }
                ("indeterminate", Value::Object(items)) => {
                    for (rule, v) in items {
                        set_counter(&self.indeterminate.with_label_values(&[rule]), v);
                    }
                }
                (_, Value::Number(_)) => {
                    let c = match self.counters.get(key) {
                        Some(c) => c.clone(),
                        None => {
                            let help = KNOWN.iter().find(|(k, _)| k == key).map_or_else(
                                || format!("Engine statistic {key}"),
                                |(_, h)| (*h).to_owned(),
                            );
                            let c = IntCounter::new(
                                format!("detector_engine_{}_total", sanitize(key)),
                                help,
                            )?;
                            registry.register(Box::new(c.clone()))?;
                            self.counters.insert(key.clone(), c.clone());
                            c
                        }
                    };
                    set_counter(&c, value);
                }
                (_, Value::Object(items)) => {
                    let g = match self.gauges.get(key) {
                        Some(g) => g.clone(),
                        None => {
                            let g = IntGaugeVec::new(
                                Opts::new(
                                    format!("detector_engine_{}", sanitize(key)),
                                    format!("Engine statistics {key}, by item"),
                                ),
                                &["item"],
                            )?;
                            registry.register(Box::new(g.clone()))?;
                            self.gauges.insert(key.clone(), g.clone());
                            g
                        }
                    };
                    for (item, v) in items {
                        g.with_label_values(&[item]).set(as_i64(v));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn as_i64(v: &Value) -> i64 {
    v.as_u64()
        .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Moves a counter up to `v` (the engine's totals only grow).
fn set_counter(c: &IntCounter, v: &Value) {
    let target = v.as_u64().unwrap_or(0);
    c.inc_by(target.saturating_sub(c.get()));
}
