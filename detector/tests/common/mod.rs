//! Shared by the engine's integration tests: fixture loading and replay.

#![expect(dead_code, reason = "each test binary uses a different part")]

pub mod build;
pub mod busy;

use std::path::PathBuf;

use std::collections::BTreeMap;

use detector::engine::{Engine, EngineConfig, EngineStats, Finding, FindingKind};
use detector::event::{Addr, Event, Frame, Stack, StackId};

/// Path of fixture `name` (without `.jsonl`).
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/engine")
        .join(format!("{name}.jsonl"))
}

/// The events of fixture `name`: one `Event` per JSON line.
pub fn load(name: &str) -> Vec<Event> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// The stacks of fixture `name`: `<name>.stacks.json` beside it, a map
/// from stack id to function names, innermost first (none if absent).
pub fn load_stacks(name: &str) -> Vec<(StackId, Stack)> {
    let path = fixture_path(name).with_extension("stacks.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let table: BTreeMap<u32, Vec<String>> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    table
        .into_iter()
        .map(|(id, functions)| (StackId(id), stack_of(&functions)))
        .collect()
}

/// A stack of these functions, innermost first.
pub fn stack_of(functions: &[impl AsRef<str>]) -> Stack {
    Stack {
        frames: functions
            .iter()
            .map(|f| Frame {
                addr: Addr(0),
                symbol: Some(f.as_ref().to_owned()),
                offset: 0,
                module: None,
            })
            .collect(),
    }
}

/// What a replay produced.
pub struct Replay {
    pub findings: Vec<Finding>,
    pub stats: EngineStats,
}

impl Replay {
    pub fn kinds(&self) -> Vec<FindingKind> {
        self.findings.iter().map(|f| f.kind).collect()
    }

    pub fn only(&self) -> &Finding {
        assert_eq!(self.findings.len(), 1, "{:#?}", self.findings);
        &self.findings[0]
    }
}

/// Pushes `events` in order, then ends the stream.
pub fn replay_with(events: impl IntoIterator<Item = Event>, cfg: EngineConfig) -> Replay {
    replay_with_stacks(events, &build::known_stacks(), cfg)
}

/// [`replay_with`], the engine knowing `stacks` first.
pub fn replay_with_stacks(
    events: impl IntoIterator<Item = Event>,
    stacks: &[(StackId, Stack)],
    cfg: EngineConfig,
) -> Replay {
    let mut engine = Engine::new(cfg);
    for (id, stack) in stacks {
        engine.learn_stack(*id, stack);
    }
    let mut findings = Vec::new();
    for ev in events {
        findings.extend(engine.push(ev));
    }
    findings.extend(engine.finish());
    Replay {
        findings,
        stats: engine.stats(),
    }
}

pub fn replay(events: impl IntoIterator<Item = Event>) -> Replay {
    replay_with(events, EngineConfig::default())
}

pub fn replay_fixture(name: &str) -> Replay {
    let mut stacks = load_stacks(name);
    stacks.extend(build::known_stacks());
    replay_with_stacks(load(name), &stacks, EngineConfig::default())
}

/// The same events as the reader may deliver them: each instant delayed by
/// up to half the reorder window (a hash of `seed` and its time), so that
/// events less than that apart can swap, while events of one instant keep
/// their order.
pub fn jitter(events: &[Event], seed: u64) -> Vec<Event> {
    let half = EngineConfig::default().reorder_window_ns / 2;
    let mut keyed: Vec<(u64, usize, Event)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut h = e.ts ^ seed;
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51afd7ed558ccd);
            h ^= h >> 33;
            (e.ts + h % half, i, e.clone())
        })
        .collect();
    keyed.sort_by_key(|(at, i, _)| (*at, *i));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}
