//! `Engine::reconfigure` as the daemon's SIGHUP uses it: thresholds and
//! rules changed while events flow take effect from then on.

mod common;

use detector::engine::{Engine, EngineConfig, FindingKind, Rule};
use detector::event::Event;

const HOUR: u64 = 3_600_000_000_000;

/// Replays fixture `name` with `before`, switching to `after` once the
/// first `switch_at` events were pushed.
fn replay_switching(
    name: &str,
    before: EngineConfig,
    after: &EngineConfig,
    switch_at: usize,
) -> Vec<FindingKind> {
    let mut engine = Engine::new(before);
    let mut stacks = common::load_stacks(name);
    stacks.extend(common::build::known_stacks());
    for (id, stack) in &stacks {
        engine.learn_stack(*id, stack);
    }
    let events: Vec<Event> = common::load(name);
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

const TIMED: [(&str, FindingKind); 4] = [
    ("stuck_seed001_nested", FindingKind::StuckCompletionHandler),
    ("stuck_late_exit", FindingKind::StuckCompletionHandler),
    ("lost_wakeup_seed004", FindingKind::LostWakeup),
    ("lost_io_never_completes", FindingKind::LostIoCompletion),
];

#[test]
fn a_lowered_threshold_applies_from_the_reload_on() {
    for (fixture, kind) in TIMED {
        // With an hour's patience the race goes unreported...
        let quiet = replay_switching(fixture, patient(), &patient(), 0);
        assert!(quiet.is_empty(), "{fixture}: {quiet:?}");
        // ...and an engine started patient, then reloaded with the default
        // thresholds, reports it.
        let found = replay_switching(fixture, patient(), &EngineConfig::default(), 0);
        assert!(found.contains(&kind), "{fixture}: {found:?}");
    }
}

#[test]
fn a_raised_threshold_silences_what_comes_after_the_reload() {
    for (fixture, _) in TIMED {
        let found = replay_switching(fixture, EngineConfig::default(), &patient(), 1);
        assert!(found.is_empty(), "{fixture}: {found:?}");
    }
}

#[test]
fn rules_turn_off_and_on_while_running() {
    let seed = "lost_wakeup_seed004";
    let off = EngineConfig::default().without(Rule::LostWakeup);
    let found = replay_switching(seed, EngineConfig::default(), &off, 1);
    assert!(found.is_empty(), "{found:?}");
    let found = replay_switching(seed, off, &EngineConfig::default(), 0);
    assert_eq!(found, [FindingKind::LostWakeup]);
}
