//! The live per-event path without the kernel: ring-buffer records (the
//! synthetic busy host, encoded as the programs would send it) decoded and
//! fed to a session (counting, filtering, stack and symbol lookups) and
//! its engine, as `detector trace --quiet` does. For profiling
//! (`valgrind --tool=callgrind` counts instructions repeatably) and for
//! the time per event of each stage, printed as JSON:
//!
//! ```text
//! cargo build --release -p detector --example hotpath
//! valgrind --tool=callgrind target/release/examples/hotpath 200000
//! ```

use std::time::Instant;

use anyhow::Result;
use detector::engine::{Engine, EngineConfig};
use detector::event::decode::decode;
use detector::event::encode::encode;
use detector::event::{Event, StackTable};
use detector::filter::EventFilter;
use detector::session::terminal::{EventOutput, Terminal};
use detector::session::{Session, SessionOptions};
use detector::synth::BusyHost;
use serde_json::json;

fn session() -> Session<StackTable> {
    let opts = SessionOptions {
        filter: EventFilter::new(vec![], vec![]),
        start_ns: 0,
        summary: true,
        measure_latency: true,
    };
    let engine = Engine::new(EngineConfig {
        bio_endio_hooked: true,
        ..EngineConfig::default()
    });
    let mut session = Session::new(opts, StackTable::new(), engine);
    // As `trace --quiet` runs: findings on the terminal, events not shown.
    session.attach(Box::new(Terminal::new(EventOutput::None, false, 0)));
    session
}

fn main() -> Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |s| s.parse())?;
    let records: Vec<Vec<u8>> = BusyHost {
        events: n,
        ..BusyHost::default()
    }
    .events()
    .map(|ev| encode(&ev))
    .collect::<Result<_, _>>()?;
    let count = records.len() as f64;

    // Stage by stage, each over every record, so that the stages' times
    // are separable; the last pass is the path as it runs live.
    let t = Instant::now();
    let events: Vec<Event> = records
        .iter()
        .map(|r| decode(r))
        .collect::<Result<_, _>>()?;
    let decode_ns = t.elapsed().as_nanos() as f64 / count;

    let mut engine = Engine::new(EngineConfig {
        bio_endio_hooked: true,
        ..EngineConfig::default()
    });
    let mut findings = Vec::new();
    let t = Instant::now();
    for ev in events {
        engine.push_into(ev, &mut findings);
    }
    findings.extend(engine.finish());
    let engine_ns = t.elapsed().as_nanos() as f64 / count;

    let mut live = session();
    let t = Instant::now();
    for r in &records {
        live.event(decode(r)?)?;
    }
    live.finish()?;
    let all_ns = t.elapsed().as_nanos() as f64 / count;

    println!(
        "{}",
        json!({
            "events": records.len(),
            "decode_ns_per_event": decode_ns,
            "engine_ns_per_event": engine_ns,
            "decode_session_engine_ns_per_event": all_ns,
            "session_ns_per_event": all_ns - decode_ns - engine_ns,
            "findings": findings.len(),
        })
    );
    Ok(())
}
