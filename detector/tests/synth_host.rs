//! The synthetic busy host the bench replays: it must be correct I/O (no
//! finding, nothing undecided, nothing left in flight once it drains) with
//! thousands of bios in flight, and its recording must stay small.

use detector::engine::{Engine, EngineConfig};
use detector::event::{EventKind, Stack, StackId};
use detector::record::{Record, RecordHeader, RecordReader, RecordWriter};
use detector::synth::{BusyHost, distribution_hooks};

fn host(events: u64) -> BusyHost {
    BusyHost {
        events,
        ..BusyHost::default()
    }
}

#[test]
fn the_synthetic_busy_host_is_race_free_with_thousands_of_bios_in_flight() {
    let cfg = EngineConfig {
        bio_endio_hooked: true,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let mut findings = Vec::new();
    let (mut n, mut most_in_flight) = (0u64, 0u64);
    let mut kinds = std::collections::BTreeSet::new();
    for ev in host(300_000).events() {
        kinds.insert(ev.kind.name());
        engine.push_into(ev, &mut findings);
        n += 1;
        if n.is_multiple_of(10_000) {
            most_in_flight = most_in_flight.max(engine.stats().live.bios_in_flight);
        }
    }
    findings.extend(engine.finish());
    let stats = engine.stats();
    assert!(
        findings.is_empty(),
        "{:#?}",
        &findings[..findings.len().min(3)]
    );
    assert!(stats.indeterminate.is_empty(), "{stats:?}");
    assert_eq!(stats.late_events, 0, "the stream is in time order");
    assert_eq!(stats.live.bios_in_flight, 0, "{stats:?}");
    assert!(
        most_in_flight > 2_000,
        "{most_in_flight} bios in flight at most"
    );
    for kind in [
        "bio_init",
        "bio_queue",
        "bio_endio",
        "bio_endio_exit",
        "complete",
        "wait_enter",
        "wait_exit",
        "sched_switch",
        "sched_waking",
        "sys_exit",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
}

#[test]
fn its_recording_takes_at_most_32_bytes_per_event_and_reads_back() {
    let header = RecordHeader {
        hooks: distribution_hooks(),
        ..RecordHeader::current()
    };
    let events: Vec<_> = host(100_000).events().collect();
    let mut file = Vec::new();
    let mut w = RecordWriter::new(&mut file, &header).unwrap();
    for id in 1..=detector::synth::STACK_IDS {
        w.stack(StackId(id), &Stack::default()).unwrap();
    }
    for ev in &events {
        w.event(ev).unwrap();
    }
    w.finish().unwrap();
    let per_event = file.len() as f64 / events.len() as f64;
    assert!(per_event <= 32.0, "{per_event:.1} bytes per event");
    let mut back = Vec::new();
    for record in RecordReader::new(file.as_slice()).unwrap() {
        if let Record::Event(ev) = record.unwrap() {
            back.push(ev);
        }
    }
    assert_eq!(back, events);
    assert!(
        back.iter()
            .any(|e| matches!(e.kind, EventKind::BioQueue { .. }))
    );
}
