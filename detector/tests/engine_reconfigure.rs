//! `Engine::reconfigure`: thresholds and rules changed while events flow
//! (a daemon's SIGHUP) take effect on what is already being timed.

mod common;

use detector::engine::{Engine, EngineConfig, FindingKind, Rule};
use detector::event::Event;

const HOUR: u64 = 3_600_000_000_000;

/// Replays `events` with `before`, switching to `after` once the first
/// `switch_at` events were pushed.
fn replay_switching(
    events: Vec<Event>,
    before: EngineConfig,
    after: &EngineConfig,
    switch_at: usize,
) -> Vec<FindingKind> {
    let mut engine = Engine::new(before);
    let mut found = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        if i == switch_at {
            engine.reconfigure(after);
        }
        found.extend(engine.push(ev));
    }
    found.extend(engine.finish());
    found.into_iter().map(|f| f.kind).collect()
}

fn patient() -> EngineConfig {
    EngineConfig {
        lost_wakeup_after_ns: HOUR,
        stuck_handler_after_ns: HOUR,
        lost_io_after_ns: HOUR,
        ..EngineConfig::default()
    }
}

#[test]
fn a_lowered_threshold_applies_to_what_is_being_timed() {
    for (fixture, kind) in [
        ("stuck_seed001_nested", FindingKind::StuckCompletionHandler),
        ("stuck_late_exit", FindingKind::StuckCompletionHandler),
        ("lost_wakeup_seed004", FindingKind::LostWakeup),
        ("lost_io_never_completes", FindingKind::LostIoCompletion),
    ] {
        let events = common::load(fixture);
        // With an hour's patience the race goes unreported...
        let quiet = replay_switching(events.clone(), patient(), &patient(), 0);
        assert!(quiet.is_empty(), "{fixture}: {quiet:?}");
        // ...and lowering the threshold in the middle of the stream (the
        // handler, bio or sleep is already being timed) reports it.
        let middle = events.len() / 2;
        let found = replay_switching(events, patient(), &EngineConfig::default(), middle);
        assert_eq!(found, [kind], "{fixture}");
    }
}

#[test]
fn a_raised_threshold_silences_what_is_being_timed() {
    for fixture in [
        "stuck_seed001_nested",
        "lost_wakeup_seed004",
        "lost_io_never_completes",
    ] {
        let events = common::load(fixture);
        let found = replay_switching(events, EngineConfig::default(), &patient(), 1);
        assert!(found.is_empty(), "{fixture}: {found:?}");
    }
}

#[test]
fn rules_turn_off_and_on_while_running() {
    let events = common::load("lost_wakeup_seed004");
    let off = EngineConfig::default().without(Rule::LostWakeup);
    let found = replay_switching(events.clone(), EngineConfig::default(), &off, 1);
    assert!(found.is_empty(), "{found:?}");
    // A rule turned on judges what it followed while it was off.
    let found = replay_switching(events, off, &EngineConfig::default(), events_len_half());
    assert_eq!(found, [FindingKind::LostWakeup]);
}

fn events_len_half() -> usize {
    common::load("lost_wakeup_seed004").len() / 2
}
