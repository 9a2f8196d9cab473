//! Throughput of the engine on a busy synthetic host: `cargo test --release
//! -p detector --test engine_perf -- --ignored --nocapture`. Not part of the
//! default run (debug builds are ten times slower than what matters).

mod common;

use std::time::Instant;

use common::build::*;
use detector::engine::{Engine, EngineConfig};
use detector::event::{Dev, Event, WaitVariant};

/// A host with 64 threads doing synchronous I/O on 4 disks, each I/O a
/// bio with its completion, an on-stack completion, a sleep and a wakeup,
/// with context switches in between: ~12 events per I/O, as a real trace.
fn busy_host(ios: u64) -> Vec<Event> {
    let tasks: Vec<Who> = (0..64).map(|i| task(2000 + i, "fio", i % 8)).collect();
    let irqs: Vec<Who> = (0..8).map(irq).collect();
    let mut events = Vec::with_capacity(ios as usize * 12);
    let mut ts = 100 * S;
    for n in 0..ios {
        let t = &tasks[(n % 64) as usize];
        let i = &irqs[(n % 8) as usize];
        let disk = Dev::new(8, (n % 4) as u32 * 16);
        let b = n % 50_000;
        let x = t.at(0x3a00);
        let mut at = || {
            ts += 250;
            ts
        };
        events.push(queue(t, at(), b, disk));
        events.push(wait_enter(t, at(), x, WaitVariant::Io));
        events.push(sleep(t, at(), true));
        events.push(endio(i, at(), b, disk, 1, 0));
        events.push(complete(i, at(), x));
        events.push(waking(i, at(), t));
        events.push(endio_exit(i, at(), b));
        events.push(switch_in(t, at()));
        events.push(wait_exit(t, at(), x, WaitVariant::Io, 0));
        events.push(sleep(t, at(), false));
        events.push(switch_in(t, at()));
        events.push(sys_exit(t, at()));
    }
    events
}

#[test]
#[ignore = "a benchmark: run with --release --ignored"]
fn keeps_up_with_a_busy_host() {
    let events = busy_host(200_000);
    let n = events.len();
    let mut engine = Engine::new(EngineConfig::default());
    let start = Instant::now();
    let mut findings = 0;
    for ev in events {
        findings += engine.push(ev).len();
    }
    findings += engine.finish().len();
    let took = start.elapsed();
    let rate = n as f64 / took.as_secs_f64();
    println!("{n} events in {took:?}: {rate:.0} events/s");
    println!("{:?}", engine.stats());
    assert_eq!(findings, 0);
    assert!(rate > 300_000.0, "{rate:.0} events/s");
}
