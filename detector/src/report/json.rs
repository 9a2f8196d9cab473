//! Findings as JSON: one object per finding, `finding` holding its kind
//! (event lines never have that field, so `jq 'select(.finding)'` picks
//! findings out of a mixed stream). Addresses are `"0x..."` strings and
//! devices `"MAJ:MIN"`, as in event lines; stacks are arrays of symbolized
//! frames (`"bio_endio+0x1d"`, `"super_written+0x3c [md_mod]"`).
//!
//! A line holds everything the human rendering shows, so [`parse`] turns it
//! back into a finding and the stacks it quotes: the findings store keeps
//! these lines and `detector findings` renders them as `trace` did.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::frames;
use crate::engine::{Context, Finding, FindingKind, Object, Severity, Side, Step, secs};
use crate::event::{Addr, Frame, Stack, StackId, StackTable};

/// The JSON object for `finding`.
pub fn to_json(finding: &Finding, stacks: &StackTable) -> Value {
    let sides: Vec<Value> = finding
        .sides
        .iter()
        .map(|side| {
            let mut v = json!({
                "role": side.role,
                "comm": side.comm,
                "pid": side.pid,
                "tid": side.tid,
                "cpu": side.cpu,
                "ts": side.ts,
                "context": side.context,
            });
            add_stack(&mut v, side.stack, stacks);
            v
        })
        .collect();
    let interleaving: Vec<Value> = finding
        .interleaving
        .iter()
        .map(|step| {
            let mut v = json!({
                "ts": step.ts,
                "side": step.side,
                "role": finding.sides.get(step.side).map(|s| s.role.as_str()),
                "text": step.text,
            });
            add_stack(&mut v, step.stack, stacks);
            v
        })
        .collect();
    let mut object = json!(finding.object);
    if let Some(end_io) = finding.object.end_io
        && let Some(symbol) = stacks.symbol(end_io)
    {
        object["end_io_symbol"] = json!(symbol);
    }
    json!({
        "finding": finding.kind,
        "id": finding.id(),
        "severity": finding.severity,
        "rule": finding.kind.rule(),
        "ts": finding.ts,
        "time": secs(finding.ts),
        "object": object,
        "sides": sides,
        "interleaving": interleaving,
        "explanation": finding.explanation,
    })
}

/// One line of JSON for `finding` (no trailing newline).
pub fn to_line(finding: &Finding, stacks: &StackTable) -> String {
    to_json(finding, stacks).to_string()
}

fn add_stack(v: &mut Value, id: Option<StackId>, stacks: &StackTable) {
    let (Some(id), Value::Object(map)) = (id, v) else {
        return;
    };
    insert_stack(map, id, stacks);
}

fn insert_stack(map: &mut Map<String, Value>, id: StackId, stacks: &StackTable) {
    map.insert("stack_id".into(), json!(id.0));
    let frames: Vec<Value> = frames(stacks, id)
        .unwrap_or_default()
        .into_iter()
        .map(|f| Value::String(f.to_string()))
        .collect();
    map.insert("stack".into(), Value::Array(frames));
}

/// A finding line that is not one this module writes.
#[derive(Debug, thiserror::Error)]
#[error("not a finding: {0}")]
pub struct ParseError(#[from] serde_json::Error);

#[derive(Deserialize)]
struct FindingLine {
    finding: FindingKind,
    severity: Severity,
    ts: u64,
    object: ObjectLine,
    sides: Vec<SideLine>,
    interleaving: Vec<StepLine>,
    explanation: String,
}

#[derive(Deserialize)]
struct ObjectLine {
    #[serde(flatten)]
    object: Object,
    #[serde(default)]
    end_io_symbol: Option<String>,
}

#[derive(Deserialize)]
struct SideLine {
    role: String,
    comm: String,
    pid: u32,
    tid: u32,
    cpu: u32,
    ts: u64,
    context: Context,
    #[serde(default)]
    stack_id: Option<StackId>,
    #[serde(default)]
    stack: Vec<String>,
}

#[derive(Deserialize)]
struct StepLine {
    ts: u64,
    side: usize,
    text: String,
    #[serde(default)]
    stack_id: Option<StackId>,
    #[serde(default)]
    stack: Vec<String>,
}

/// The finding a line of [`to_json`] describes, with a table holding the
/// stacks and the end_io symbol it quotes.
pub fn parse(value: &Value) -> Result<(Finding, StackTable), ParseError> {
    let line = FindingLine::deserialize(value)?;
    let mut stacks = StackTable::new();
    let mut keep_stack = |id: Option<StackId>, frames: &[String]| {
        if let Some(id) = id
            && !stacks.contains(id)
        {
            let frames = frames.iter().map(|f| parse_frame(f)).collect();
            stacks.insert(id, Stack { frames });
        }
        id
    };
    let sides = line
        .sides
        .into_iter()
        .map(|s| Side {
            stack: keep_stack(s.stack_id, &s.stack),
            role: s.role,
            comm: s.comm,
            pid: s.pid,
            tid: s.tid,
            cpu: s.cpu,
            ts: s.ts,
            context: s.context,
        })
        .collect();
    let interleaving = line
        .interleaving
        .into_iter()
        .map(|s| Step {
            stack: keep_stack(s.stack_id, &s.stack),
            ts: s.ts,
            side: s.side,
            text: s.text,
        })
        .collect();
    if let (Some(end_io), Some(symbol)) = (line.object.object.end_io, line.object.end_io_symbol) {
        stacks.insert_symbol(end_io, symbol);
    }
    let finding = Finding {
        kind: line.finding,
        severity: line.severity,
        ts: line.ts,
        object: line.object.object,
        sides,
        interleaving,
        explanation: line.explanation,
    };
    Ok((finding, stacks))
}

/// A frame as `Frame`'s `Display` wrote it: `sym+0x1d`, `sym+0x1d [mod]`,
/// or a bare address. Text in none of these forms is kept whole as the
/// symbol, so nothing is lost.
fn parse_frame(text: &str) -> Frame {
    let (body, module) = match text.strip_suffix(']').and_then(|t| t.rsplit_once(" [")) {
        Some((body, module)) => (body, Some(module.to_owned())),
        None => (text, None),
    };
    let frame = |addr, symbol, offset| Frame {
        addr,
        symbol,
        offset,
        module: module.clone(),
    };
    if let Some((symbol, offset)) = body.rsplit_once("+0x")
        && let Ok(offset) = u64::from_str_radix(offset, 16)
    {
        return frame(Addr(0), Some(symbol.to_owned()), offset);
    }
    match body
        .strip_prefix("0x")
        .map(|hex| u64::from_str_radix(hex, 16))
    {
        Some(Ok(addr)) => frame(Addr(addr), None, 0),
        _ => frame(Addr(0), Some(body.to_owned()), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_as_they_were_written() {
        for text in [
            "bio_endio+0x1d",
            "super_written+0x3c [md_mod]",
            "0xffffffffc0a01234",
            "0xffffffffc0a01234 [racebench]",
            "a+b+0x10",
        ] {
            assert_eq!(parse_frame(text).to_string(), text);
        }
        // Unknown shapes keep their text.
        assert_eq!(parse_frame("???").symbol.as_deref(), Some("???"));
    }

    #[test]
    fn non_findings_are_errors() {
        for bad in [json!({}), json!({"finding": "nope"}), json!([1, 2])] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
