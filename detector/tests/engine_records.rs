//! Recorded sessions through the engine. A benign workload (mkfs, mount,
//! fio, dd, sync, drop caches) recorded on a real host must give zero
//! findings: `DETECTOR_BENIGN_RECORDS=a.det:b.det cargo test -p detector
//! --test engine_records -- --ignored --nocapture`.

use detector::engine::{Engine, EngineConfig};
use detector::record::{Record, RecordReader};

#[test]
#[ignore = "needs recordings: set DETECTOR_BENIGN_RECORDS"]
fn benign_recordings_give_no_finding() {
    let paths = std::env::var("DETECTOR_BENIGN_RECORDS").expect("DETECTOR_BENIGN_RECORDS");
    for path in paths.split(':').filter(|p| !p.is_empty()) {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut reader = RecordReader::new(std::io::BufReader::new(file)).unwrap();
        let thread_size = reader.header().thread_size as u64;
        let cfg = EngineConfig {
            thread_size,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(cfg);
        let mut findings = Vec::new();
        let mut events = 0u64;
        while let Some(record) = reader.next_record() {
            if let Record::Event(ev) = record.unwrap() {
                events += 1;
                findings.extend(engine.push(ev));
            }
        }
        findings.extend(engine.finish());
        println!("{path}: {events} events, {:#?}", engine.stats());
        assert!(findings.is_empty(), "{path}: {findings:#?}");
    }
}
