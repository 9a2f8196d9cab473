//! Per-CPU heartbeat: which CPUs stopped reporting events while the others
//! went on.
//!
//! A CPU stuck in a block-layer timer or softirq (a soft lockup) runs no
//! scheduler and no traced function, so its events simply stop; detector
//! cannot see what it does, but it can say that it lost sight of it. An idle
//! CPU also goes quiet, so the report states the fact ("no events from cpu 1
//! for 34s") rather than a diagnosis.

use serde::Serialize;

/// A CPU silent for at least the threshold while events from other CPUs
/// kept coming.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SilentCpu {
    pub cpu: u32,
    /// Time of its last event.
    pub last_event_ns: u64,
    /// From that event to the newest event of any CPU.
    pub silent_for_ns: u64,
}

#[derive(Debug)]
pub struct Heartbeat {
    /// Newest event time per CPU (0: none seen yet).
    newest: Vec<u64>,
    latest: u64,
    threshold_ns: u64,
}

impl Heartbeat {
    pub fn new(threshold_ns: u64) -> Self {
        Self {
            newest: Vec::new(),
            latest: 0,
            threshold_ns,
        }
    }

    /// An event from `cpu` at `ts`. Markers detector makes itself (no CPU)
    /// are not heartbeats.
    pub fn observe(&mut self, cpu: u32, ts: u64) {
        let Ok(i) = usize::try_from(cpu) else {
            return;
        };
        if i >= 4096 {
            return;
        }
        if self.newest.len() <= i {
            self.newest.resize(i + 1, 0);
        }
        self.newest[i] = self.newest[i].max(ts);
        self.latest = self.latest.max(ts);
    }

    /// CPUs that reported before but not for `threshold` while another CPU
    /// reported since.
    pub fn silent(&self) -> Vec<SilentCpu> {
        self.newest
            .iter()
            .enumerate()
            .filter(|&(_, &ts)| ts != 0 && self.latest - ts >= self.threshold_ns)
            .map(|(cpu, &ts)| SilentCpu {
                cpu: cpu as u32,
                last_event_ns: ts,
                silent_for_ns: self.latest - ts,
            })
            .collect()
    }
}

impl SilentCpu {
    /// `no events from cpu 1 for 34s`.
    pub fn describe(&self) -> String {
        format!(
            "no events from cpu {} for {}s while other CPUs reported (stuck in an \
             interrupt or softirq, or idle)",
            self.cpu,
            self.silent_for_ns / 1_000_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_cpu_that_stops_while_others_go_on_is_reported() {
        let mut hb = Heartbeat::new(10 * S);
        hb.observe(0, S);
        hb.observe(1, S);
        hb.observe(0, 5 * S);
        assert!(hb.silent().is_empty(), "4s is under the threshold");
        hb.observe(0, 15 * S);
        let silent = hb.silent();
        assert_eq!(
            silent,
            vec![SilentCpu {
                cpu: 1,
                last_event_ns: S,
                silent_for_ns: 14 * S
            }]
        );
        assert!(
            silent[0]
                .describe()
                .starts_with("no events from cpu 1 for 14s")
        );
        hb.observe(1, 16 * S);
        assert!(hb.silent().is_empty(), "it came back");
    }

    #[test]
    fn cpus_never_seen_and_detector_markers_are_not_heartbeats() {
        let mut hb = Heartbeat::new(S);
        hb.observe(u32::MAX, 50 * S);
        hb.observe(3, 100 * S);
        assert!(hb.silent().is_empty());
    }
}
