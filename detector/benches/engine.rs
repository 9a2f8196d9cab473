//! Engine throughput on a busy synthetic host (events per second, in
//! criterion's report): `cargo bench -p detector --bench engine`.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use detector::engine::{Engine, EngineConfig};

fn busy_host(c: &mut Criterion) {
    let events = common::busy::busy_host(20_000);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(20);
    group.bench_function("busy_host", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let mut engine = Engine::new(EngineConfig::default());
                let mut findings = 0;
                for ev in events {
                    findings += engine.push(ev).len();
                }
                findings + engine.finish().len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, busy_host);
criterion_main!(benches);
