//! The human and JSON forms of findings.

mod common;

use common::replay_fixture;
use detector::engine::{Finding, FindingKind};
use detector::event::{Addr, Frame, Stack, StackId, StackTable};
use detector::report::{human, json};
use serde_json::Value;

fn frame(symbol: &str, module: Option<&str>) -> Frame {
    Frame {
        addr: Addr(0xffff_ffff_8100_0000),
        symbol: Some(symbol.to_owned()),
        offset: 0x1d,
        module: module.map(str::to_owned),
    }
}

/// Stacks for the lost-wakeup fixture: the sleep (24) and the completion (23).
fn stacks() -> StackTable {
    let mut table = StackTable::new();
    table.insert(
        StackId(24),
        Stack {
            frames: vec![
                frame("bpf_trace_run4", None),
                frame("__schedule", None),
                frame("io_schedule", None),
                frame("__blockdev_direct_IO", None),
                frame("ext3_direct_IO", Some("ext3")),
            ],
        },
    );
    table.insert(
        StackId(23),
        Stack {
            frames: vec![
                frame("blk_update_request", None),
                frame("scsi_io_completion", None),
            ],
        },
    );
    table
}

fn lost_wakeup() -> Finding {
    let r = replay_fixture("lost_wakeup_seed004");
    r.only().clone()
}

#[test]
fn the_diagram_shows_both_columns_in_time_order() {
    let f = lost_wakeup();
    let text = human::render(&f, &stacks());
    assert!(
        text.starts_with("lost-wakeup [error] at 105.000310000\n"),
        "{text}"
    );
    let header = text
        .lines()
        .find(|l| l.contains("waiter:"))
        .expect("column headers");
    let (left, right) = header.split_once(" | ").expect("two columns");
    assert!(left.contains("waiter: oracle/211"), "{header}");
    assert!(right.contains("completer: interrupt on cpu 0"), "{header}");
    // Steps appear in time order, each in its side's column.
    let submit = text.find("submits bio").unwrap();
    let completes = text.find("+0.000295 bio").unwrap();
    let sleeps = text.find("sleeps uninterruptibly").unwrap();
    let still = text.find("still asleep").unwrap();
    assert!(
        submit < completes && completes < sleeps && sleeps < still,
        "{text}"
    );
    let completes_line = text.lines().find(|l| l.contains("+0.000295 bio")).unwrap();
    let column = completes_line
        .find("| +")
        .expect("in the right-hand column");
    assert!(
        completes_line[..column].trim().is_empty(),
        "{completes_line}"
    );
    // Stacks are symbolized, without the tracing machinery.
    assert!(
        text.contains("waiter stack (oracle/211 pid 210 cpu 2"),
        "{text}"
    );
    assert!(text.contains("      io_schedule+0x1d\n"));
    assert!(text.contains("      ext3_direct_IO+0x1d [ext3]\n"));
    assert!(!text.contains("bpf_trace_run4"));
    assert!(text.contains("      blk_update_request+0x1d\n"));
}

#[test]
fn unknown_stacks_are_said_to_be_unknown() {
    let text = human::render(&lost_wakeup(), &StackTable::new());
    assert!(text.contains("(stack 24 not available)"), "{text}");
}

#[test]
fn lines_stay_within_the_diagram_width() {
    for name in [
        "md_seed003_teardown_inflight",
        "stuck_seed001_nested",
        "bio_complete_after_del_gendisk",
    ] {
        for f in replay_fixture(name).findings {
            let text = human::render(&f, &StackTable::new());
            for line in text.lines() {
                assert!(line.chars().count() <= 102, "{name}: {line:?}");
            }
        }
    }
}

#[test]
fn json_has_the_finding_field_resolved_stacks_and_parses_back() {
    let f = lost_wakeup();
    let line = json::to_line(&f, &stacks());
    assert!(!line.contains('\n'));
    let v: Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(v["finding"], "lost-wakeup");
    assert!(v.get("event").is_none(), "findings never look like events");
    assert_eq!(v["severity"], "error");
    assert_eq!(v["rule"], "lost-wakeup");
    assert_eq!(v["ts"], 105_000_310_000u64);
    assert_eq!(v["object"]["type"], "bio");
    assert_eq!(v["object"]["addr"], "0xffff888004000200");
    assert_eq!(v["object"]["dev"], "8:0");
    let waiter = &v["sides"][0];
    assert_eq!(waiter["role"], "waiter");
    assert_eq!(waiter["comm"], "oracle");
    assert_eq!(waiter["context"], "task");
    assert_eq!(waiter["stack_id"], 24);
    assert_eq!(
        waiter["stack"],
        serde_json::json!([
            "__schedule+0x1d",
            "io_schedule+0x1d",
            "__blockdev_direct_IO+0x1d",
            "ext3_direct_IO+0x1d [ext3]"
        ])
    );
    assert_eq!(v["sides"][1]["context"], "interrupt");
    let steps = v["interleaving"].as_array().unwrap();
    assert_eq!(steps.len(), f.interleaving.len());
    assert_eq!(steps[1]["role"], "completer");
    assert!(v["explanation"].as_str().unwrap().contains("iowait"));
}

#[test]
fn findings_round_trip_through_their_own_serde_form() {
    for name in [
        "onstack_seed000_complete_after_return",
        "md_seed003_teardown_inflight",
    ] {
        for f in replay_fixture(name).findings {
            let text = serde_json::to_string(&f).unwrap();
            let back: Finding = serde_json::from_str(&text).unwrap();
            assert_eq!(back, f);
        }
    }
}

#[test]
fn every_kind_renders() {
    let mut seen = std::collections::BTreeSet::new();
    for name in [
        "onstack_seed000_complete_after_return",
        "onstack_seed000_unsynchronized",
        "lost_wakeup_seed004",
        "md_seed003_teardown_inflight",
        "bio_seed002_double_complete",
        "bio_complete_after_del_gendisk",
        "stuck_seed001_nested",
        "lost_io_never_completes",
        "lost_io_stall_recovers",
    ] {
        for f in replay_fixture(name).findings {
            let text = human::render(&f, &StackTable::new());
            assert!(text.starts_with(f.kind.name()), "{text}");
            let v = json::to_json(&f, &StackTable::new());
            assert_eq!(v["finding"], f.kind.name());
            seen.insert(f.kind);
        }
    }
    assert_eq!(seen.len(), FindingKind::ALL.len());
}

/// A stored finding line reads back into what was stored: `detector
/// findings` renders it exactly as `trace` did.
#[test]
fn json_lines_read_back_into_the_same_rendering() {
    let stacks = stacks();
    let mut table_with_symbol = stacks.clone();
    table_with_symbol.insert_symbol(Addr(0xffff_ffff_8125_c200), "dm_endio+0x0".into());
    let mut checked = 0;
    for fixture in [
        "lost_wakeup_seed004",
        "stuck_seed001_nested",
        "md_seed003_teardown_inflight",
        "onstack_seed000_complete_after_return",
        "bio_seed002_double_complete",
        "lost_io_never_completes",
    ] {
        for finding in common::replay_fixture(fixture).findings {
            let line = json::to_json(&finding, &table_with_symbol);
            let text: String = line.to_string();
            let value: Value = serde_json::from_str(&text).unwrap();
            let (back, back_stacks) = json::parse(&value).unwrap();
            assert_eq!(back, finding, "{fixture}");
            assert_eq!(
                human::render(&back, &back_stacks),
                human::render(&finding, &table_with_symbol),
                "{fixture}"
            );
            assert_eq!(value["id"].as_str(), Some(finding.id().as_str()));
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} findings");
}
