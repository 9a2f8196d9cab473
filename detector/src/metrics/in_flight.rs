//! `detector_bio_in_flight_duration_seconds`: the bios the engine timed,
//! observed one at a time as their completions pass, and the bios paired
//! in the kernel, which never reach userspace: the programs count those
//! into the same buckets (`PAIRED_TIMES`), and the counts are added to the
//! histogram when it is collected. Observing them one by one cost the
//! service a few nanoseconds per paired bio, hundreds of thousands of
//! times a second under load.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily};
use prometheus::{Histogram, HistogramOpts};

use crate::kernel::held::PairedTimes;

/// The histogram, and the paired bios' counts as of the last drain.
#[derive(Clone)]
pub struct InFlightHistogram {
    timed: Histogram,
    paired: Arc<Mutex<PairedTimes>>,
}

impl InFlightHistogram {
    /// `opts` must have the kernel's buckets (`IO_BUCKET_NS`).
    pub fn new(opts: HistogramOpts) -> prometheus::Result<Self> {
        Ok(Self {
            timed: Histogram::with_opts(opts)?,
            paired: Arc::default(),
        })
    }

    /// A bio the engine saw submitted and completed.
    pub fn observe(&self, secs: f64) {
        self.timed.observe(secs);
    }

    /// The kernel's totals of paired bios (they only grow).
    pub fn set_paired(&self, totals: &PairedTimes) {
        *self.lock() = *totals;
    }

    fn lock(&self) -> MutexGuard<'_, PairedTimes> {
        self.paired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for InFlightHistogram {
    fn desc(&self) -> Vec<&Desc> {
        self.timed.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let paired = *self.lock();
        let mut families = self.timed.collect();
        for metric in families.iter_mut().flat_map(|f| f.mut_metric().iter_mut()) {
            let mut histogram = metric.get_histogram().clone();
            add_paired(&mut histogram, &paired);
            metric.set_histogram(histogram);
        }
        families
    }
}

/// Adds the paired bios to `histogram`, whose buckets are the kernel's:
/// the bios of bucket `i` count in every bucket from `i` up; those past
/// the last bound only in the count and the sum.
fn add_paired(histogram: &mut proto::Histogram, paired: &PairedTimes) {
    let counts = paired.0.iter().step_by(2);
    let mut below = 0;
    let buckets = histogram
        .get_bucket()
        .iter()
        .zip(counts.clone())
        .map(|(bucket, &count)| {
            below += count;
            let mut bucket = bucket.clone();
            bucket.set_cumulative_count(bucket.cumulative_count() + below);
            bucket
        })
        .collect();
    histogram.set_bucket(buckets);
    let ns: u64 = paired.0.iter().skip(1).step_by(2).sum();
    histogram.set_sample_count(histogram.get_sample_count() + counts.sum::<u64>());
    histogram.set_sample_sum(histogram.get_sample_sum() + ns as f64 / 1e9);
}
