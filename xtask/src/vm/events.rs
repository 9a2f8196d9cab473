//! A recorded session as `detector replay --json` prints it: event lines
//! (an `event` field) and finding lines (a `finding` field).
//!
//! Read loosely, through `serde_json::Value`: the bench checks what the
//! contract promises (field names, "0x..." addresses, "MAJ:MIN" devices),
//! not detector's Rust types.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::util::output;

pub struct Event {
    pub ts: u64,
    pub tid: u32,
    pub comm: String,
    /// The `event` field: bio_queue, bio_endio, complete, ...
    pub kind: String,
    pub raw: Value,
}

impl Event {
    /// An address field ("0x..." in JSON).
    pub fn addr(&self, field: &str) -> Option<u64> {
        parse_addr(self.raw.get(field)?)
    }

    pub fn int(&self, field: &str) -> Option<i64> {
        self.raw.get(field)?.as_i64()
    }

    pub fn flag(&self, field: &str) -> Option<bool> {
        self.raw.get(field)?.as_bool()
    }

    pub fn text(&self, field: &str) -> Option<&str> {
        self.raw.get(field)?.as_str()
    }

    pub fn has_stack(&self) -> bool {
        self.raw.get("stack").is_some_and(|s| !s.is_null())
    }

    /// "complete x=0x... by kworker/0:1 (tid 33) at 1.234567s", for messages.
    pub fn describe(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        if let Some(obj) = self.raw.as_object() {
            for (k, v) in obj {
                let common = [
                    "ts",
                    "cpu",
                    "pid",
                    "tid",
                    "comm",
                    "hook",
                    "stack_base",
                    "sp",
                    "stack",
                    "event",
                ];
                if !common.contains(&k.as_str()) {
                    fields.push(format!("{k}={}", v.to_string().trim_matches('"')));
                }
            }
        }
        format!(
            "{} {} by {} (tid {}) at {:.6}s",
            self.kind,
            fields.join(" "),
            self.comm,
            self.tid,
            self.ts as f64 / 1e9
        )
    }
}

pub fn parse_addr(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

pub struct Trace {
    pub events: Vec<Event>,
    pub findings: Vec<Value>,
}

impl Trace {
    /// `detector replay FILE --json`, run on the host.
    pub fn replay(detector: &Path, record: &Path) -> Result<Self> {
        let out = output(
            Command::new(detector)
                .arg("replay")
                .arg(record)
                .arg("--json"),
        )
        .with_context(|| format!("detector replay {}", record.display()))?;
        Self::parse(&out)
    }

    pub fn parse(jsonl: &str) -> Result<Self> {
        let mut events = Vec::new();
        let mut findings = Vec::new();
        for (n, line) in jsonl.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let raw: Value = serde_json::from_str(line)
                .with_context(|| format!("line {}: not JSON: {line}", n + 1))?;
            if raw.get("finding").is_some() {
                findings.push(raw);
            } else if let Some(kind) = raw.get("event").and_then(Value::as_str) {
                let kind = kind.to_owned();
                let ts = raw.get("ts").and_then(Value::as_u64);
                let tid = raw.get("tid").and_then(Value::as_u64);
                let (Some(ts), Some(tid)) = (ts, tid) else {
                    bail!("line {}: event without ts/tid: {line}", n + 1);
                };
                let comm = raw
                    .get("comm")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                events.push(Event {
                    ts,
                    tid: tid as u32,
                    comm,
                    kind,
                    raw,
                });
            }
        }
        Ok(Self { events, findings })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.kind == kind)
    }

    /// The finding kinds, sorted, duplicates kept.
    pub fn finding_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .findings
            .iter()
            .filter_map(|f| f.get("finding").and_then(Value::as_str).map(str::to_owned))
            .collect();
        kinds.sort();
        kinds
    }
}

/// The hooks `detector check --json` lists: (name, chosen mechanism, whether
/// it is one of md_mod's).
pub fn hooks_of_check(check: &Value) -> Result<Vec<(String, Option<String>, bool)>> {
    let hooks = check
        .get("hooks")
        .and_then(Value::as_array)
        .context("no \"hooks\" array")?;
    let mut out = Vec::new();
    for h in hooks {
        let name = h
            .get("name")
            .and_then(Value::as_str)
            .with_context(|| format!("hook without a name: {h}"))?;
        let mechanism = h
            .get("mechanism")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let is_md = h.get("module").and_then(Value::as_str) == Some("md_mod");
        out.push((name.to_owned(), mechanism, is_md));
    }
    Ok(out)
}
