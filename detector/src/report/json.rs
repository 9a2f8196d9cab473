//! Findings as JSON: one object per finding, `finding` holding its kind
//! (event lines never have that field, so `jq 'select(.finding)'` picks
//! findings out of a mixed stream). Addresses are `"0x..."` strings and
//! devices `"MAJ:MIN"`, as in event lines; stacks are arrays of symbolized
//! frames (`"bio_endio+0x1d"`, `"super_written+0x3c [md_mod]"`).

use serde_json::{Map, Value, json};

use super::frames;
use crate::engine::{Finding, secs};
use crate::event::{StackId, StackTable};

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
