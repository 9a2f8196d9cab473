//! `--stats-json FILE`: one JSON object at the end of a session with what
//! the summary says plus the counters a benchmark needs (events read from
//! the kernel, loss, the engine's tables, detection latency, CPU time).

use std::path::Path;

use serde::Serialize;

use crate::engine::EngineStats;
use crate::kernel::reader::ReaderTotals;
use crate::summary::SummaryJson;

/// Time from the event that broke an invariant (a finding's `ts`) to the
/// moment the finding was emitted, over a live session's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub findings: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ns: Option<u64>,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &[u64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: u64| {
            let n = sorted.len() as u64;
            (n > 0).then(|| sorted[((p * n).div_ceil(100).max(1) - 1) as usize])
        };
        Self {
            findings: sorted.len() as u64,
            p50_ns: rank(50),
            p99_ns: rank(99),
            max_ns: sorted.last().copied(),
        }
    }
}

/// CPU time this process used, from getrusage.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuTime {
    pub user_ns: u64,
    pub system_ns: u64,
}

impl CpuTime {
    pub fn of_this_process() -> Self {
        // SAFETY: getrusage fills a plain struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_SELF always exists.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
        Self {
            user_ns: ns(usage.ru_utime),
            system_ns: ns(usage.ru_stime),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatsJson {
    /// What the ring buffer delivered (live sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader: Option<ReaderTotals>,
    pub summary: SummaryJson,
    pub engine: EngineStats,
    /// Live sessions only: replayed findings have no "now" to measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_latency: Option<Latency>,
    pub cpu: CpuTime,
}

impl StatsJson {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(Latency::of(&[]), Latency::default());
        let one = Latency::of(&[7]);
        assert_eq!(
            (one.p50_ns, one.p99_ns, one.max_ns),
            (Some(7), Some(7), Some(7))
        );
        let samples: Vec<u64> = (1..=200).rev().collect();
        let l = Latency::of(&samples);
        assert_eq!(l.findings, 200);
        assert_eq!(
            (l.p50_ns, l.p99_ns, l.max_ns),
            (Some(100), Some(198), Some(200))
        );
    }
}
