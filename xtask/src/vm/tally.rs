//! A long recording, replayed and counted as it streams: `detector replay
//! FILE --json` of a blktests group or a benign workload prints millions of
//! event lines, so nothing but counts (and the findings) is kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use serde_json::Value;

/// What a replay showed.
#[derive(Debug, Default)]
pub struct Tally {
    pub events: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Events the kernel side dropped, as the `lost` events count them.
    pub lost: u64,
    /// bio_queue events per device ("MAJ:MIN").
    pub bios_by_dev: BTreeMap<String, u64>,
    /// Events of a bio or request naming a device (queue, endio,
    /// completion): passthrough I/O shows here without a bio_queue.
    pub io_by_dev: BTreeMap<String, u64>,
    pub findings: Vec<Value>,
    /// Events per slot, for `replay_counting` callers (the slot a
    /// timestamp falls in, as their function says).
    pub events_by_slot: BTreeMap<usize, u64>,
    /// Why replay stopped early (a recording cut off when the guest
    /// stopped): what came before it is still counted.
    pub error: Option<String>,
}

/// The fields of an event line the tally reads.
#[derive(Deserialize)]
struct EventLine {
    event: String,
    ts: u64,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    count: Option<u64>,
}

impl Tally {
    /// `detector replay RECORD --json FLAGS`; its stderr (the summary)
    /// goes to `stderr_to`. `slot` sorts each event by timestamp (e.g.
    /// into the blktests test running then).
    pub fn replay(
        detector: &Path,
        record: &Path,
        flags: &str,
        stderr_to: &Path,
        slot: impl Fn(u64) -> Option<usize>,
    ) -> Result<Self> {
        let mut child = Command::new(detector)
            .arg("replay")
            .arg(record)
            .arg("--json")
            .args(flags.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(stderr_to)?)
            .spawn()
            .with_context(|| format!("cannot start {}", detector.display()))?;
        let stdout = child.stdout.take().context("replay's stdout")?;
        let mut tally = Self::default();
        let read = tally.read(BufReader::new(stdout), &slot);
        let status = child.wait()?;
        read.with_context(|| format!("detector replay {}", record.display()))?;
        if !status.success() {
            let err = fs::read_to_string(stderr_to).unwrap_or_default();
            tally.error = Some(format!(
                "detector replay {} failed ({status}): {}",
                record.display(),
                err.lines().last().unwrap_or_default()
            ));
        }
        Ok(tally)
    }

    fn read(
        &mut self,
        input: impl std::io::BufRead,
        slot: &dyn Fn(u64) -> Option<usize>,
    ) -> Result<()> {
        for (n, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            self.line(&line, slot)
                .with_context(|| format!("replay output line {}", n + 1))?;
        }
        Ok(())
    }

    fn line(&mut self, line: &str, slot: &dyn Fn(u64) -> Option<usize>) -> Result<()> {
        // events are many and only counted; findings are rare and kept whole
        let Ok(ev) = serde_json::from_str::<EventLine>(line) else {
            let v: Value =
                serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
            if v.get("finding").is_none() {
                bail!("neither an event nor a finding: {line}");
            }
            self.findings.push(v);
            return Ok(());
        };
        self.events += 1;
        *self.by_kind.entry(ev.event.clone()).or_default() += 1;
        if ev.event == "lost" {
            self.lost += ev.count.unwrap_or(0);
        }
        if let Some(dev) = ev.dev {
            if ev.event == "bio_queue" {
                *self.bios_by_dev.entry(dev.clone()).or_default() += 1;
            }
            *self.io_by_dev.entry(dev).or_default() += 1;
        }
        if let Some(s) = slot(ev.ts) {
            *self.events_by_slot.entry(s).or_default() += 1;
        }
        Ok(())
    }
}

/// A finding's time (its `ts`, when the engine concluded).
pub fn finding_ts(f: &Value) -> Option<u64> {
    f.get("ts").and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"ts":5,"cpu":0,"pid":1,"tid":1,"comm":"fio","hook":"tp_btf","event":"bio_queue","bio":"0x10","dev":"9:0"}
{"ts":6,"cpu":0,"pid":1,"tid":1,"comm":"fio","hook":"fentry","event":"bio_endio","bio":"0x10","dev":"9:0"}
{"ts":7,"cpu":0,"pid":0,"tid":0,"comm":"","hook":"","event":"lost","count":12,"until":9}
{"finding":"bio-double-complete","ts":8,"explanation":"twice"}
{"finding":"bio-double-complete","ts":9,"explanation":"again"}
{"ts":20,"cpu":1,"pid":2,"tid":2,"comm":"kworker","hook":"tp_btf","event":"bio_queue","bio":"0x20","dev":"259:0"}
"#;

    #[test]
    fn counts_kinds_devices_losses_and_keeps_findings() {
        let mut t = Tally::default();
        let slot = |ts: u64| (ts < 10).then_some(0);
        t.read(LINES.as_bytes(), &slot).unwrap();
        assert_eq!(t.events, 4);
        assert_eq!(t.by_kind["bio_queue"], 2);
        assert_eq!(t.lost, 12);
        assert_eq!(t.bios_by_dev["9:0"], 1);
        assert_eq!(t.bios_by_dev["259:0"], 1);
        assert_eq!(t.io_by_dev["9:0"], 2);
        assert_eq!(t.events_by_slot[&0], 3);
        assert_eq!(t.findings.len(), 2);
        assert_eq!(finding_ts(&t.findings[1]), Some(9));
    }

    #[test]
    fn rejects_what_is_neither() {
        let mut t = Tally::default();
        let e = t
            .read("detector: hello\n".as_bytes(), &|_| None)
            .unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
        assert!(t.read("{\"x\":1}\n".as_bytes(), &|_| None).is_err());
    }
}
