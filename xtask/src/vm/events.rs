//! A recorded session as `detector replay --json` prints it: event lines
//! (an `event` field) and finding lines (a `finding` field).
//!
//! Read loosely, through `serde_json::Value`: the bench checks what the
//! contract promises (field names, "0x..." addresses, "MAJ:MIN" devices),
//! not detector's Rust types.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

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

    /// Whether the event quotes a kernel stack (symbolized, with --stacks).
    pub fn has_stack(&self) -> bool {
        self.frames().next().is_some()
    }

    /// The symbolized stack, innermost first: "bio_endio+0x5",
    /// "rb_work+0x35 [racebench]".
    pub fn frames(&self) -> impl Iterator<Item = &str> {
        self.raw
            .get("frames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    /// Whether a frame of the stack is in function `symbol`.
    pub fn called_from(&self, symbol: &str) -> bool {
        self.frames().any(|f| {
            f.strip_prefix(symbol)
                .is_some_and(|rest| rest.starts_with('+') || rest.starts_with('.'))
        })
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
                    "frames",
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
    /// Indeterminate verdicts by rule, from replay's summary.
    pub indeterminate: BTreeMap<String, u64>,
}

impl Trace {
    /// `detector replay FILE --json --stacks`, run on the host with the
    /// engine thresholds the session had (`flags`).
    pub fn replay(detector: &Path, record: &Path, flags: &str) -> Result<Self> {
        let mut cmd = Command::new(detector);
        cmd.arg("replay")
            .arg(record)
            .args(["--json", "--stacks"])
            .args(flags.split_whitespace());
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("{cmd:?} failed: {}\n{stderr}", out.status);
        }
        let mut trace = Self::parse(&String::from_utf8_lossy(&out.stdout))?;
        trace.indeterminate = indeterminate_verdicts(&stderr);
        Ok(trace)
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
        Ok(Self {
            events,
            findings,
            indeterminate: BTreeMap::new(),
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.kind == kind)
    }

    /// The finding kinds reported, sorted, each once.
    pub fn finding_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .findings
            .iter()
            .filter_map(|f| f.get("finding").and_then(Value::as_str).map(str::to_owned))
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// The rules under "indeterminate verdicts (evidence possibly lost): N"
/// in the summary replay prints on stderr, one "    rule   count" line
/// each; the summary has no JSON form.
fn indeterminate_verdicts(summary: &str) -> BTreeMap<String, u64> {
    let mut by_rule = BTreeMap::new();
    let mut lines = summary.lines();
    if lines
        .by_ref()
        .any(|l| l.trim_start().starts_with("indeterminate verdicts"))
    {
        for line in lines {
            let mut words = line.split_whitespace();
            let (Some(rule), Some(n), None) = (words.next(), words.next(), words.next()) else {
                break;
            };
            let Ok(n) = n.parse() else { break };
            by_rule.insert(rule.to_owned(), n);
        }
    }
    by_rule
}

/// One hook as `detector check --json` lists it.
pub struct CheckedHook {
    pub name: String,
    /// attached, redundant, absent, waiting_for_module or failed
    pub status: String,
    /// For an attached hook: fentry, fexit, kprobe, kretprobe, tp_btf, ...
    pub mechanism: Option<String>,
    pub module: Option<String>,
    /// Mechanisms tried before the one attached whose program the
    /// verifier rejected.
    pub verifier_rejected: Vec<String>,
}

/// The `hooks` array of `detector check --json`.
pub fn hooks_of_check(check: &Value) -> Result<Vec<CheckedHook>> {
    let hooks = check
        .get("hooks")
        .and_then(Value::as_array)
        .context("no \"hooks\" array")?;
    let text = |h: &Value, field: &str| h.get(field).and_then(Value::as_str).map(str::to_owned);
    hooks
        .iter()
        .map(|h| {
            Ok(CheckedHook {
                name: text(h, "name").with_context(|| format!("hook without a name: {h}"))?,
                status: text(h, "status").with_context(|| format!("hook without a status: {h}"))?,
                mechanism: text(h, "mechanism"),
                module: text(h, "module"),
                verifier_rejected: verifier_rejected(h),
            })
        })
        .collect()
}

/// The mechanisms in a hook's `tried` list that the verifier rejected.
fn verifier_rejected(hook: &Value) -> Vec<String> {
    let tried = hook.get("tried").and_then(Value::as_array);
    tried
        .into_iter()
        .flatten()
        .filter(|t| {
            t.get("error")
                .and_then(Value::as_str)
                .is_some_and(|e| e.starts_with("rejected by the verifier"))
        })
        .map(|t| {
            let mechanism = t.get("mechanism").and_then(Value::as_str);
            mechanism.unwrap_or("?").to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"ts":5,"cpu":0,"pid":44,"tid":44,"comm":"kworker/0:1H","hook":"fentry","stack_base":"0xffffc90000380000","sp":"0xffffc90000383e10","event":"complete","x":"0xffffc90000705d58","done":3,"on_own_stack":false,"frames":["complete+0x5","zo_end_io+0x138 [racebench]"]}
{"finding":"complete-after-return","explanation":"late"}
{"ts":6,"cpu":1,"pid":7,"tid":8,"comm":"dd","hook":"tp_btf","stack_base":"0x0","sp":"0x0","event":"bio_queue","bio":"0x10","dev":"259:2"}
"#;

    #[test]
    fn parses_events_and_findings() {
        let t = Trace::parse(LINES).unwrap();
        assert_eq!(t.events.len(), 2);
        assert_eq!(t.finding_kinds(), ["complete-after-return"]);
        let c = &t.events[0];
        assert_eq!(c.kind, "complete");
        assert_eq!(c.addr("x"), Some(0xffffc90000705d58));
        assert_eq!(c.flag("on_own_stack"), Some(false));
        assert!(c.called_from("zo_end_io"));
        assert!(!c.called_from("zo_end"));
        assert!(!t.events[1].has_stack());
        assert_eq!(t.events[1].text("dev"), Some("259:2"));
    }

    #[test]
    fn reads_indeterminate_verdicts_from_the_summary() {
        let summary = "412 events in 9.0s, 37 lost (verdicts on objects alive then are indeterminate)\n\n  \
                       findings: 0\n  indeterminate verdicts (evidence possibly lost): 3\n    \
                       bio-double-complete                     2\n    \
                       lost-io-completion                      1\n\n  DEVICE ...\n";
        let by_rule = indeterminate_verdicts(summary);
        assert_eq!(by_rule.get("bio-double-complete"), Some(&2));
        assert_eq!(by_rule.get("lost-io-completion"), Some(&1));
        assert_eq!(by_rule.len(), 2);
        assert!(indeterminate_verdicts("  findings: 1\n    lost-wakeup 1\n").is_empty());
    }

    #[test]
    fn rejects_non_json() {
        assert!(Trace::parse("detector: replaying\n").is_err());
    }

    /// The shape `detector check --json` gave on 6.1 when the fentry
    /// submission program outgrew the verifier's limit.
    #[test]
    fn names_the_programs_the_verifier_rejected() {
        let check = serde_json::json!({"hooks": [
            {"name": "bio_submit", "status": "attached", "mechanism": "kprobe",
             "target": "submit_bio_noacct_nocheck", "tried": [
                {"mechanism": "fentry", "target": "submit_bio_noacct",
                 "error": "rejected by the verifier: stack depth 280+24",
                 "detail": "BPF program is too large. Processed 1000001 insn"},
                {"mechanism": "fentry", "target": "submit_bio_noacct_nocheck",
                 "error": "no such function on this kernel"}]},
            {"name": "complete", "status": "attached", "mechanism": "fentry"}]});
        let hooks = hooks_of_check(&check).unwrap();
        assert_eq!(hooks[0].verifier_rejected, vec!["fentry".to_owned()]);
        assert!(hooks[1].verifier_rejected.is_empty());
    }
}
