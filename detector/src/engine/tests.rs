//! Unit tests of the engine core: the reorder window, loss markers, live
//! clock ticks and bounded memory. Rule behaviour is tested by the replay
//! fixtures and property tests in `detector/tests`.

use super::*;
use crate::event::{Addr, Dev, Hook, StackId};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const T0: u64 = 100 * S;

const TASK_BASE: u64 = 0xffff_c900_0065_0000;
const X: u64 = TASK_BASE + 0x3a00;

fn ev(ts: u64, tid: u32, sp: u64, kind: EventKind) -> Event {
    Event {
        ts,
        cpu: if tid == 0 { 3 } else { 1 },
        pid: tid,
        tid,
        comm: if tid == 0 { "swapper/3" } else { "zeroout" }.into(),
        hook: Hook::Fentry,
        stack_base: Addr(if tid == 0 {
            0xffff_ffff_82a0_c000
        } else {
            TASK_BASE
        }),
        sp: Addr(sp),
        stack: Some(StackId(ts as u32)),
        kind,
    }
}

/// An event of the owner task, `off` into its stack.
fn owner(ts: u64, off: u64, kind: EventKind) -> Event {
    ev(ts, 101, TASK_BASE + off, kind)
}

/// An event in interrupt context on CPU 3.
fn interrupt(ts: u64, kind: EventKind) -> Event {
    ev(ts, 0, 0xffff_c900_0100_fe00, kind)
}

fn queue(ts: u64, bio: u64) -> Event {
    owner(
        ts,
        0x3800,
        EventKind::BioQueue {
            bio: Addr(bio),
            dev: Dev::new(8, 0),
            disk: Dev::new(8, 0),
            sector: 8,
            size: 4096,
            opf: 1,
            end_io: Addr(0xffff_ffff_8160_0000),
            private: Addr(0),
            disk_relative: false,
            episode_start: false,
            episode_unbounded: false,
        },
    )
}

fn endio(ts: u64, bio: u64) -> Event {
    interrupt(
        ts,
        EventKind::BioEndio {
            bio: Addr(bio),
            end_io: Addr(0xffff_ffff_8160_0000),
            private: Addr(0),
            dev: Dev::new(8, 0),
            disk: Dev::new(8, 0),
            sector: 8,
            size: 0,
            status: 0,
            flags: 0,
            remaining: 1,
            is_final: true,
            chain_depth: 0,
            opf: 0,
            has_blkg: false,
            integrity: false,
        },
    )
}

fn complete(ts: u64) -> Event {
    interrupt(
        ts,
        EventKind::Complete {
            x: Addr(X),
            done: 0,
            on_own_stack: false,
        },
    )
}

fn sys_exit(ts: u64) -> Event {
    owner(
        ts,
        0x3f80,
        EventKind::SysExit {
            nr: 16,
            ret: 0,
            enter_reported: false,
        },
    )
}

fn lost(ts: u64, until: u64) -> Event {
    crate::kernel::reader::lost_marker(0, 7, ts, until)
}

/// The seed-000 race window: complete() while the owner is in the frame,
/// then the owner returns without waiting.
fn unsynchronized() -> Vec<Event> {
    vec![
        queue(T0, 0xffff_8880_0400_0100),
        complete(T0 + 100 * US),
        sys_exit(T0 + 150 * US),
    ]
}

#[test]
fn findings_wait_for_the_window() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut found = Vec::new();
    for ev in unsynchronized() {
        found.extend(engine.push(ev));
    }
    assert!(found.is_empty(), "released before the window passed");
    let window = EngineConfig::default().reorder_window_ns;
    // Half a window later: still inside it.
    assert!(engine.advance(T0 + window / 2).is_empty());
    let found = engine.advance(T0 + window + MS);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, FindingKind::UnsynchronizedOnstackComplete);
    assert!(engine.finish().is_empty());
}

#[test]
fn a_loss_marker_inside_the_window_turns_a_finding_indeterminate() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut found = Vec::new();
    for ev in unsynchronized() {
        found.extend(engine.push(ev));
    }
    // The reader noticed drops during the race and says so before the
    // window passed the moment they cover.
    found.extend(engine.push(lost(T0 + 120 * US, T0 + 130 * US)));
    found.extend(engine.finish());
    assert!(found.is_empty(), "{found:#?}");
    let stats = engine.stats();
    assert_eq!(stats.indeterminate(Rule::OnstackCompletion), 1);
    assert_eq!((stats.loss_records, stats.lost_events), (1, 7));
}

fn checked(until: u64) -> Event {
    Event {
        kind: EventKind::LossChecked { until },
        ..lost(until, until)
    }
}

#[test]
fn nothing_is_judged_past_the_loss_horizon() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut found = Vec::new();
    found.extend(engine.push(checked(T0 - MS)));
    for ev in unsynchronized() {
        found.extend(engine.push(ev));
    }
    // The clock is far ahead, but losses are accounted only until before
    // the race: a marker covering it may still come.
    found.extend(engine.advance(T0 + 500 * MS));
    assert!(found.is_empty(), "judged past the loss horizon: {found:?}");
    found.extend(engine.push(checked(T0 + 400 * MS)));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, FindingKind::UnsynchronizedOnstackComplete);
}

#[test]
fn a_loss_marker_late_for_the_window_but_inside_the_horizon_counts() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut found = Vec::new();
    found.extend(engine.push(checked(T0 - MS)));
    for ev in unsynchronized() {
        found.extend(engine.push(ev));
    }
    found.extend(engine.advance(T0 + 500 * MS));
    // Skipped program runs are read every 50 ms: the marker for a loss in
    // the race comes 200 ms after the window would have passed it.
    found.extend(engine.push(lost(T0 - MS, T0 + 300 * MS)));
    found.extend(engine.push(checked(T0 + 400 * MS)));
    found.extend(engine.finish());
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(engine.stats().indeterminate(Rule::OnstackCompletion), 1);
}

#[test]
fn late_events_count_and_make_what_they_touch_indeterminate() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut found = Vec::new();
    found.extend(engine.push(queue(T0, 0xffff_8880_0400_0100)));
    found.extend(engine.advance(T0 + S));
    // Arrives a second after the window passed it.
    found.extend(engine.push(complete(T0 + 100 * US)));
    found.extend(engine.push(sys_exit(T0 + S + 10 * MS)));
    found.extend(engine.finish());
    assert!(found.is_empty(), "{found:#?}");
    let stats = engine.stats();
    assert_eq!(stats.late_events, 1);
    assert_eq!(stats.indeterminate(Rule::OnstackCompletion), 1);
}

#[test]
fn a_stuck_handler_is_reported_while_still_stuck() {
    let mut engine = Engine::new(EngineConfig::default());
    assert!(engine.push(endio(T0, 0xffff_8880_0400_0200)).is_empty());
    // No event comes from the wedged CPU; the clock keeps ticking.
    assert!(engine.advance(T0 + S).is_empty());
    assert!(engine.advance(T0 + 2 * S).is_empty(), "window not passed");
    let found = engine.advance(T0 + 2 * S + 150 * MS);
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(f.kind, FindingKind::StuckCompletionHandler);
    assert_eq!(f.ts, T0 + 2 * S, "at its deadline, not at the tick");
    assert!(
        f.interleaving
            .last()
            .unwrap()
            .text
            .contains("still running")
    );
    assert!(engine.advance(T0 + 10 * S).is_empty(), "reported once");
    assert_eq!(engine.stats().live.open_handlers, 1);
}

#[test]
fn the_reorder_buffer_is_bounded() {
    let cfg = EngineConfig {
        max_buffered_events: 100,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    for i in 0..1000 {
        engine.push(queue(T0 + i * US, 0xffff_8880_0400_0000 + i * 0x100));
    }
    let stats = engine.stats();
    assert!(stats.live.buffered_events <= 101, "{stats:?}");
    assert!(stats.forced_releases >= 899);
}

#[test]
fn tracked_objects_are_bounded_and_evictions_counted() {
    let cfg = EngineConfig {
        max_bios: 1000,
        max_tasks: 100,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let mut found = Vec::new();
    for i in 0..20_000u64 {
        let mut ev = queue(T0 + i * US, 0xffff_8880_0400_0000 + i * 0x100);
        // A new thread every 10 bios.
        ev.tid = 1000 + (i / 10) as u32;
        ev.stack_base = Addr(0xffff_c900_0000_0000 + (i / 10) * 0x10000);
        ev.sp = Addr(ev.stack_base.0 + 0x3800);
        found.extend(engine.push(ev));
    }
    found.extend(engine.finish());
    let stats = engine.stats();
    assert!(stats.live.bios_in_flight <= 1000, "{stats:?}");
    assert!(stats.live.tasks <= 100, "{stats:?}");
    assert_eq!(stats.evictions.bios_in_flight, 19_000);
    assert_eq!(stats.evictions.tasks, 1900);
    // Nothing was judged on evidence the engine threw away.
    assert!(found.is_empty(), "{found:#?}");
}

/// A submission of `bio` to disk `8:minor`.
fn queue_on(ts: u64, bio: u64, minor: u32) -> Event {
    let mut event = queue(ts, bio);
    if let EventKind::BioQueue { dev, disk, .. } = &mut event.kind {
        *dev = Dev::new(8, minor);
        *disk = Dev::new(8, minor);
    }
    event
}

/// `block_bio_complete` of `bio` on disk `8:minor`.
fn bio_complete_on(ts: u64, bio: u64, minor: u32) -> Event {
    interrupt(
        ts,
        EventKind::BioComplete {
            bio: Addr(bio),
            dev: Dev::new(8, minor),
            disk: Dev::new(8, minor),
            sector: 8,
            size: 4096,
            error: 0,
        },
    )
}

/// `bio` submitted to disk `8:minor` at `ts` and completed 5 µs later.
fn io_on(ts: u64, bio: u64, minor: u32) -> [Event; 2] {
    [
        queue_on(ts, bio, minor),
        bio_complete_on(ts + 5 * US, bio, minor),
    ]
}

#[test]
fn a_disk_that_showed_completions_is_still_judged_past_the_disk_bound() {
    // With bios paired in the kernel, a disk's completions reach the
    // engine only until the first one did: forgetting that it showed one
    // would blind lost-io to it for good.
    let cfg = EngineConfig {
        max_disks: 2,
        lost_io_after_ns: S,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let mut found = Vec::new();
    let mut ts = T0;
    for minor in 0..3u32 {
        let bio = 0xffff_8880_0400_0000 + u64::from(minor) * 0x100;
        for event in io_on(ts, bio, minor * 16) {
            found.extend(engine.push(event));
        }
        ts += MS;
    }
    let lost = 0xffff_8880_0500_0000;
    found.extend(engine.push(queue_on(ts, lost, 0)));
    found.extend(engine.advance(ts + 2 * S));
    found.extend(engine.finish());
    let lost_io: Vec<_> = found
        .iter()
        .filter(|f| f.kind == FindingKind::LostIoCompletion)
        .collect();
    assert_eq!(lost_io.len(), 1, "{found:#?}");
    assert!(engine.stats().live.disks <= 4 * 2);
}

#[test]
fn the_disk_table_stays_bounded_when_every_disk_showed_completions() {
    let cfg = EngineConfig {
        max_disks: 4,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    for i in 0..1000u64 {
        let bio = 0xffff_8880_0400_0000 + i * 0x100;
        for event in io_on(T0 + i * 10 * US, bio, i as u32) {
            engine.push(event);
        }
    }
    engine.finish();
    let stats = engine.stats();
    assert!(stats.live.disks <= 4 * 4, "{stats:?}");
    assert!(stats.evictions.disks >= 1000 - 4 * 4, "{stats:?}");
}

#[test]
fn completed_bios_kept_for_double_completion_are_bounded() {
    let cfg = EngineConfig {
        max_completed_bios: 50,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    for i in 0..1000u64 {
        let bio = 0xffff_8880_0400_0000 + i * 0x100;
        engine.push(queue(T0 + i * 10 * US, bio));
        engine.push(endio(T0 + i * 10 * US + 5 * US, bio));
    }
    engine.finish();
    let stats = engine.stats();
    assert_eq!(stats.live.bios, 50);
    assert_eq!(stats.evictions.bios_completed, 950);
    assert_eq!(stats.live.bios_in_flight, 0);
}

#[test]
fn same_events_same_findings_however_batched() {
    let events = unsynchronized();
    let run = |tick: bool| {
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Vec::new();
        for ev in events.clone() {
            let ts = ev.ts;
            out.extend(engine.push(ev));
            if tick {
                out.extend(engine.advance(ts));
            }
        }
        out.extend(engine.finish());
        out
    };
    assert_eq!(run(false), run(true));
    assert_eq!(run(false).len(), 1);
}
