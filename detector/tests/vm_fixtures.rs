//! The VM bench's recordings (Debian's stock 6.1 kernel, real bios, real
//! completions, real md, scsi_debug and device-mapper) replayed through
//! `detector replay`: each race gives exactly its findings, each benign
//! scenario none, and a scenario that loses events the indeterminate
//! verdicts it must. `cargo xtask vm-test --save-fixtures` writes them and
//! `expected.json`, from the bench's table.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vm")
}

fn kinds(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// The rules listed under "indeterminate verdicts" in replay's summary.
fn indeterminate_rules(summary: &str) -> BTreeSet<String> {
    let mut lines = summary.lines();
    if !lines
        .by_ref()
        .any(|l| l.trim_start().starts_with("indeterminate verdicts"))
    {
        return BTreeSet::new();
    }
    lines
        .map_while(|l| {
            let mut words = l.split_whitespace();
            match (
                words.next(),
                words.next().map(str::parse::<u64>),
                words.next(),
            ) {
                (Some(rule), Some(Ok(n)), None) if n > 0 => Some(rule.to_owned()),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn every_vm_recording_gives_exactly_its_findings() {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("expected.json")).expect("expected.json"),
    )
    .unwrap();
    let flags: Vec<&str> = expected["flags"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    let scenarios = expected["scenarios"].as_object().unwrap();
    assert!(scenarios.len() >= 31, "{} recordings", scenarios.len());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, want) in scenarios {
        let mut gz = flate2::read::GzDecoder::new(
            std::fs::File::open(fixtures().join(format!("{name}.rec.gz"))).unwrap(),
        );
        let mut record = Vec::new();
        gz.read_to_end(&mut record).unwrap();
        let path = dir.path().join(format!("{name}.rec"));
        std::fs::write(&path, record).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_detector"))
            .arg("replay")
            .arg(&path)
            .arg("--json")
            .args(&flags)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("finding")?.as_str().map(str::to_owned))
            .collect();
        let (must, may) = (kinds(&want["must"]), kinds(&want["may"]));
        let allowed: BTreeSet<String> = must.union(&may).cloned().collect();
        if !must.is_subset(&found) || !found.is_subset(&allowed) {
            failures.push(format!(
                "{name}: must {must:?} (may {may:?}), found {found:?}"
            ));
        }
        let undecided = indeterminate_rules(&String::from_utf8_lossy(&out.stderr));
        let want_undecided = kinds(&want["indeterminate"]);
        if !want_undecided.is_subset(&undecided) {
            failures.push(format!(
                "{name}: indeterminate verdicts expected from {want_undecided:?}, counted {undecided:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
