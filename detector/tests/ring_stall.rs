//! A CPU's ring stuck behind a record still being written, replayed from a
//! real run: the benign suite's `disk_delete` workload in the Debian 6.1
//! guest (two scsi_debug disks read by fio; `sdb` deleted). CPU 0's ring
//! gave nothing from 135.467 s until 136.052 s, then everything at once,
//! while CPU 1's records kept coming.
//!
//! The events (`fixtures/reader/disk_delete_ring_stalled.jsonl`, per ring
//! in ring order) are the ones that decide the verdict on bio
//! `0xffff88801d939680`: submitted to sdb (8:16) on CPU 1 just before
//! `del_gendisk(8:16)`; failed with `BLK_STS_OFFLINE` on CPU 0 before the
//! removal even started; reused on CPU 0 for sdc (8:32), over and over
//! (the first and last reuses are kept); its last reuse completed on CPU
//! 1 at 135.836 s. Judged without CPU 0's records, that completion looked
//! like the sdb bio completing 280 ms after `del_gendisk` returned: a
//! `bio-complete-after-teardown` that was not there.
//!
//! The drains are simulated as the reader makes them: every 4 ms, each
//! ring gives what it holds (CPU 0 nothing past its stuck head), the
//! drain's records are merged by time, the rings' positions are looked at
//! (`ring_progress`), and a `LossChecked` says how far everything was
//! read.

use std::path::PathBuf;

use detector::engine::{Engine, EngineConfig, FindingKind};
use detector::event::samples;
use detector::event::{Event, EventKind, LossCause};
use detector::kernel::loss::lost_marker;
use detector::kernel::ring_progress::{Progress, STALL_LIMIT_NS, Stalls};

const MS: u64 = 1_000_000;
const DRAIN_EVERY: u64 = 4 * MS;
/// CPU 0's first record after its last one handed on in time, and the
/// first drain after the stuck head was committed.
const STUCK_FROM: u64 = 135_467_321_360;
const STUCK_UNTIL: u64 = 136_052_000_000;
/// A stall the reader gives up: it outlasts the limit.
const STUCK_LONG: u64 = STUCK_FROM + STALL_LIMIT_NS + 500 * MS;
/// A ring record's size in the simulated positions.
const RECORD: u64 = 64;

fn ring_events() -> Vec<Event> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reader/disk_delete_ring_stalled.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Whether ring `cpu`, stuck until `until`, can give the record of time
/// `ts` at a drain at `t`.
fn given(cpu: u32, ts: u64, t: u64, until: u64) -> bool {
    ts < t && !(cpu == 0 && ts >= STUCK_FROM && t < until)
}

/// The findings of the run, read as the reader reads it; `look` says
/// whether the reader looks at the rings' positions (else it claims every
/// drain's time, as it did before).
fn judge(events: &[Event], look: bool) -> (Vec<FindingKind>, Stalls) {
    judge_stuck_until(events, look, STUCK_UNTIL).0
}

/// [`judge`] with CPU 0's ring stuck until `until`; also gives the engine's
/// count of indeterminate verdicts.
fn judge_stuck_until(
    events: &[Event],
    look: bool,
    until: u64,
) -> ((Vec<FindingKind>, Stalls), u64) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut progress = [Progress::default(); 2];
    let mut consumed = [0u64; 2];
    let mut stalls = Stalls::default();
    let mut given_yet = vec![false; events.len()];
    let mut found = Vec::new();
    let first = events.iter().map(|e| e.ts).min().unwrap();
    let last = events.iter().map(|e| e.ts).max().unwrap().max(until);
    let mut t = first + DRAIN_EVERY;
    while t < last + 10 * DRAIN_EVERY {
        let mut batch: Vec<&Event> = Vec::new();
        for (ev, taken) in events.iter().zip(given_yet.iter_mut()) {
            if !*taken && given(ev.cpu, ev.ts, t, until) {
                *taken = true;
                let ring = ev.cpu as usize;
                progress[ring].took(RECORD as usize - 8);
                progress[ring].handed_on(ev.ts);
                consumed[ring] += RECORD;
                batch.push(ev);
            }
        }
        batch.sort_by_key(|e| e.ts);
        for ev in batch {
            found.extend(engine.push(ev.clone()));
        }
        let read_to = (0..2)
            .map(|ring| {
                let stuck = ring == 0 && (STUCK_FROM..until).contains(&t);
                let producer = consumed[ring] + if stuck { RECORD } else { 0 };
                progress[ring].look((consumed[ring], producer), t, &mut stalls)
            })
            .min()
            .unwrap();
        // As the reader: a stall past the limit is marked lost from the
        // claim it held (then from the last mark) to this drain.
        for (ring, p) in progress.iter_mut().enumerate() {
            if let Some(from) = p.take_lost_span().filter(|_| look) {
                let marker = lost_marker(ring as u32, 0, from, t, LossCause::RingStalled);
                found.extend(engine.push(marker));
            }
        }
        let checked = if look { read_to } else { t };
        let loss_checked = EventKind::LossChecked { until: checked };
        found.extend(engine.push(samples::event(t, loss_checked)));
        found.extend(engine.advance(t));
        t += DRAIN_EVERY;
    }
    // Judging caught up with the drains before the end of the stream: the
    // claim moved on once the stuck ring gave its records.
    assert_eq!(engine.stats().live.buffered_events, 0);
    found.extend(engine.finish());
    let indeterminate = engine.stats().indeterminate.values().sum();
    (
        (found.iter().map(|f| f.kind).collect(), stalls),
        indeterminate,
    )
}

#[test]
fn a_bio_reused_on_a_stalled_cpu_is_not_taken_for_one_completing_after_its_disk() {
    let events = ring_events();
    let (found, stalls) = judge(&events, true);
    assert_eq!(found, [], "{found:?}");
    assert_eq!((stalls.episodes, stalls.waited), (1, 1), "{stalls:?}");
    assert!(stalls.longest_ns > 500 * MS, "{stalls:?}");
    assert_eq!(stalls.given_up, 0);
}

#[test]
fn without_the_look_at_the_rings_the_run_gives_the_false_finding() {
    // The run's own verdict before the reader looked at the rings: what
    // the test above guards against.
    let (found, _) = judge(&ring_events(), false);
    assert_eq!(found, [FindingKind::BioCompleteAfterTeardown]);
}

#[test]
fn a_stall_delays_a_true_finding_but_does_not_hide_it() {
    // The same run without the bio's failure and reuses on CPU 0: its
    // completion on CPU 1 really is the sdb bio's, after the removal.
    let bio = "0xffff88801d939680";
    let events: Vec<Event> = ring_events()
        .into_iter()
        .filter(|e| {
            let text = serde_json::to_string(e).unwrap();
            !(e.cpu == 0 && text.contains(bio))
        })
        .collect();
    let (found, stalls) = judge(&events, true);
    assert_eq!(found, [FindingKind::BioCompleteAfterTeardown]);
    assert_eq!(stalls.episodes, 1);
}

#[test]
fn a_stall_past_the_limit_leaves_the_verdict_open_instead_of_false() {
    // The same run with CPU 0 stuck for longer than the reader waits: the
    // completion on CPU 1 is judged before CPU 0's records come, but the
    // span they cover is marked lost first.
    let ((found, stalls), indeterminate) = judge_stuck_until(&ring_events(), true, STUCK_LONG);
    assert_eq!(found, [], "{found:?}");
    assert_eq!(stalls.given_up, 1, "{stalls:?}");
    assert!(indeterminate >= 1, "{indeterminate}");
}
