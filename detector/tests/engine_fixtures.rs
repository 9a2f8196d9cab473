//! Replays of interleavings, one per file in `tests/fixtures/engine`
//! (described in its README.md): each seed's bad interleaving gives exactly
//! its finding with the right evidence, and the benign interleavings around
//! it give none.

mod common;

use common::{Replay, jitter, load, replay, replay_fixture};
use detector::engine::FindingKind::{self, *};
use detector::engine::{Context, ObjectKind, Rule, Severity};
use detector::event::{Addr, Dev, EventKind, StackId};

/// Every fixture and the exact findings it must give.
const EXPECTED: &[(&str, &[FindingKind])] = &[
    (
        "onstack_seed000_complete_after_return",
        &[CompleteAfterReturn],
    ),
    (
        "onstack_seed000_complete_after_return_seen_again",
        &[CompleteAfterReturn],
    ),
    (
        "onstack_seed000_unsynchronized",
        &[UnsynchronizedOnstackComplete],
    ),
    ("onstack_fixed_wait_then_complete", &[]),
    ("onstack_complete_before_wait", &[]),
    ("onstack_timeout_late_complete", &[CompleteAfterReturn]),
    (
        "onstack_timeout_then_complete_in_frame",
        &[UnsynchronizedOnstackComplete],
    ),
    ("onstack_timeout_then_wait_again", &[]),
    ("onstack_reentered_frame", &[]),
    ("onstack_timeout_then_synchronous_cancel", &[]),
    (
        "onstack_woken_by_someone_else",
        &[UnsynchronizedOnstackComplete],
    ),
    ("onstack_try_wait", &[]),
    ("onstack_irq_over_owner", &[UnsynchronizedOnstackComplete]),
    ("onstack_own_complete", &[]),
    ("onstack_unknown_stack", &[]),
    ("onstack_lost_events", &[]),
    ("lost_wakeup_seed004", &[LostWakeup]),
    ("lost_wakeup_seed004_slow_end_io", &[LostWakeup]),
    ("lost_wakeup_woken", &[]),
    ("lost_wakeup_waits_for_others_io", &[]),
    ("lost_wakeup_not_iowait", &[]),
    ("lost_wakeup_no_own_io", &[]),
    ("lost_wakeup_completed_long_before", &[]),
    ("lost_wakeup_lost_events", &[]),
    ("lost_wakeup_range_completion", &[]),
    ("lost_wakeup_kthread_next_sleep", &[]),
    ("lost_wakeup_task_never_seen_asleep", &[]),
    ("lost_wakeup_new_syscall_sleep_full", &[]),
    ("lost_wakeup_new_syscall_sleep", &[]),
    ("lost_wakeup_seed004_after_async_io", &[LostWakeup]),
    ("lost_wakeup_kthread_after_idle", &[LostWakeup]),
    ("lost_wakeup_kthread_after_idle_same_disk", &[]),
    ("lost_wakeup_seed004_submitted_unwatched", &[]),
    ("lost_wakeup_seed004_detached_before_sleep", &[]),
    ("lost_wakeup_seed004_detached_while_asleep", &[LostWakeup]),
    (
        "md_seed003_teardown_inflight",
        &[MdTeardownInflight, MdWriteAfterTeardown],
    ),
    ("md_clean_stop", &[]),
    ("md_wait_inside_stop", &[]),
    ("md_level_change", &[]),
    (
        "md_pending_unreadable",
        &[MdTeardownInflight, MdWriteAfterTeardown],
    ),
    ("md_write_before_trace", &[]),
    ("md_restart_after_stop", &[]),
    ("bio_seed002_double_complete", &[BioDoubleComplete]),
    ("bio_chained", &[]),
    ("bio_resubmitted_and_reused", &[]),
    ("bio_address_reused_unseen", &[]),
    ("bio_flush_sequence_tracepoints", &[]),
    ("bio_endio_never_queued", &[]),
    ("bio_double_complete_lost_events", &[]),
    (
        "bio_complete_after_del_gendisk",
        &[BioCompleteAfterTeardown],
    ),
    ("bio_drained_inside_del_gendisk", &[]),
    (
        "bio_complete_after_del_gendisk_no_exit_hook",
        &[BioCompleteAfterTeardown],
    ),
    ("stuck_seed001_nested", &[StuckCompletionHandler]),
    ("stuck_late_exit", &[StuckCompletionHandler]),
    ("stuck_fast_handlers", &[]),
    ("stuck_missed_exit", &[]),
    ("stuck_exit_without_entry", &[]),
    ("lost_io_never_completes", &[LostIoCompletion]),
    ("lost_io_resubmitted", &[]),
    ("lost_io_unobservable_device", &[]),
    ("lost_io_range_completed", &[]),
    ("lost_io_range_completed_twice", &[]),
    ("lost_io_range_completed_partition", &[]),
    (
        "reorder_unsynchronized_out_of_order",
        &[UnsynchronizedOnstackComplete],
    ),
    ("reorder_benign_out_of_order", &[]),
    ("bio_integrity_read_verified", &[]),
    (
        "bio_integrity_read_then_double_complete",
        &[BioDoubleComplete],
    ),
    ("bio_reused_dm_thin_unprovisioned", &[]),
    ("bio_reused_passthrough_other_disk", &[]),
    ("bio_reused_split_front", &[]),
    ("bio_failed_in_submission_after_del_gendisk", &[]),
    (
        "bio_complete_after_del_gendisk_submitter_gone",
        &[BioCompleteAfterTeardown],
    ),
    (
        "lost_io_stall_recovers",
        &[LostIoCompletion, LateIoCompletion],
    ),
    (
        "lost_io_stall_requeued",
        &[LostIoCompletion, LateIoCompletion],
    ),
    ("lost_wakeup_own_completion_then_page_lock", &[]),
    ("lost_wakeup_irq_completion_then_page_lock", &[]),
    ("lost_wakeup_irq_completion_then_mempool", &[]),
    ("lost_wakeup_irq_completion_then_dio_wait", &[LostWakeup]),
    ("lost_wakeup_sleep_without_stack", &[]),
    ("stuck_handler_sleeps_in_workqueue", &[]),
    (
        "stuck_handler_spins_in_workqueue",
        &[StuckCompletionHandler],
    ),
    (
        "onstack_timeout_late_irq_complete_later_irq_wakes",
        &[CompleteAfterReturn],
    ),
    ("onstack_timeout_late_irq_complete_same_irq_wakes", &[]),
    ("onstack_irq_from_user_above_frame", &[CompleteAfterReturn]),
    ("onstack_irq_from_user_over_frame", &[CompleteAfterReturn]),
    ("onstack_irq_from_user_hooks_detached", &[]),
    ("onstack_reentered_then_own_complete", &[]),
    ("bio_end_io_hooked_and_restored", &[]),
    (
        "bio_end_io_restored_then_double_complete",
        &[BioDoubleComplete],
    ),
    ("bio_chain_children_end_together", &[]),
    ("md_freed_array_address_reused", &[]),
    ("bio_chain_count_raised_between_calls", &[]),
];

/// Names of every fixture file.
pub fn fixture_names() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".jsonl").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn check(name: &str, expected: &[FindingKind]) -> Replay {
    let r = replay_fixture(name);
    assert_eq!(r.kinds(), expected, "{name}: {:#?}", r.findings);
    r
}

#[test]
fn every_fixture_has_an_expectation() {
    for name in fixture_names() {
        assert!(
            EXPECTED.iter().any(|(n, _)| *n == name),
            "{name}.jsonl has no expectation"
        );
    }
}

#[test]
fn every_fixture_gives_exactly_its_findings() {
    let mut failures = Vec::new();
    for (name, expected) in EXPECTED {
        let r = replay_fixture(name);
        if r.kinds() != *expected {
            failures.push(format!(
                "{name}: expected {expected:?}, got {:?}",
                r.kinds()
            ));
        }
        // Benign interleavings are judged, not merely unjudged.
        let judged_benign = [
            "onstack_fixed_wait_then_complete",
            "onstack_complete_before_wait",
            "lost_wakeup_woken",
            "md_clean_stop",
            "bio_chained",
            "stuck_fast_handlers",
        ];
        if judged_benign.contains(name) && !r.stats.indeterminate.is_empty() {
            failures.push(format!("{name}: indeterminate {:?}", r.stats.indeterminate));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Addresses the fixtures use (see README.md).
const ZEROOUT_X: Addr = Addr(0xffff_c900_0065_3a00);

fn bio(n: u64) -> Addr {
    Addr(0xffff_8880_0400_0000 + n * 0x100)
}

#[test]
fn seed000_complete_after_return_quotes_both_sides() {
    let r = check(
        "onstack_seed000_complete_after_return",
        &[CompleteAfterReturn],
    );
    let f = r.only();
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.object.kind, ObjectKind::Completion);
    assert_eq!(f.object.addr, ZEROOUT_X);
    assert_eq!(f.object.owner_tid, Some(101));
    let roles: Vec<_> = f.sides.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(roles, ["owner", "completer"]);
    assert_eq!((f.sides[0].comm.as_str(), f.sides[0].tid), ("zeroout", 101));
    // The owner is quoted where it was in the frame: submitting the bio.
    assert_eq!(f.sides[0].stack, Some(StackId(10)));
    assert_eq!(f.sides[1].context, Context::Interrupt);
    assert_eq!((f.sides[1].cpu, f.sides[1].stack), (3, Some(StackId(12))));
    // The complete() is the offending event.
    assert_eq!(f.ts, 100_000_310_000);
    // Owner in the frame, owner leaves, complete(), confirmation.
    let columns: Vec<_> = f.interleaving.iter().map(|s| s.side).collect();
    assert_eq!(columns, [0, 0, 1, 0]);
    assert!(f.interleaving[1].text.contains("user space"));
    assert!(
        f.interleaving[2]
            .text
            .contains("complete(0xffffc90000653a00)")
    );
}

#[test]
fn seed000_seen_again_confirms_at_once() {
    let r = check(
        "onstack_seed000_complete_after_return_seen_again",
        &[CompleteAfterReturn],
    );
    let last = r.only().interleaving.last().unwrap();
    assert_eq!(last.ts, 100_000_500_000);
    assert!(last.text.contains("above the completion"), "{}", last.text);
}

#[test]
fn seed000_unsynchronized_is_reported_when_the_frame_is_left() {
    let r = check(
        "onstack_seed000_unsynchronized",
        &[UnsynchronizedOnstackComplete],
    );
    let f = r.only();
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.ts, 100_000_115_000, "at the owner's return to user space");
    assert_eq!(f.sides[1].stack, Some(StackId(12)));
    assert!(f.explanation.contains("without waiting"));
}

#[test]
fn timed_out_wait_shows_in_the_diagram() {
    let r = check("onstack_timeout_late_complete", &[CompleteAfterReturn]);
    let texts: Vec<_> = r
        .only()
        .interleaving
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("wait_for_completion_timeout(") && t.contains("returns 0")),
        "{texts:#?}"
    );
}

#[test]
fn unseen_returns_make_lost_wakeups_indeterminate() {
    // The task may have returned to user space and slept in a later
    // syscall: the seed's finding becomes indeterminate, not false, and
    // nothing was lost.
    for name in [
        "lost_wakeup_seed004_submitted_unwatched",
        "lost_wakeup_seed004_detached_before_sleep",
    ] {
        let r = check(name, &[]);
        assert_eq!(
            r.stats.indeterminate(Rule::LostWakeup),
            1,
            "{name}: {:?}",
            r.stats
        );
        assert_eq!(r.stats.loss_records, 0, "{name}");
    }
    // Asleep before the hooks went: it cannot have returned since.
    let r = check("lost_wakeup_seed004_detached_while_asleep", &[LostWakeup]);
    assert_eq!(r.stats.indeterminate(Rule::LostWakeup), 0);
}

#[test]
fn losses_make_verdicts_indeterminate() {
    for (name, rule) in [
        ("onstack_lost_events", Rule::OnstackCompletion),
        ("lost_wakeup_lost_events", Rule::LostWakeup),
        ("bio_double_complete_lost_events", Rule::BioDoubleComplete),
    ] {
        let r = check(name, &[]);
        assert_eq!(r.stats.indeterminate(rule), 1, "{name}: {:?}", r.stats);
        assert_eq!(r.stats.loss_records, 1, "{name}");
    }
}

#[test]
fn seed004_lost_wakeup_quotes_the_completion_and_the_sleep() {
    let r = check("lost_wakeup_seed004", &[LostWakeup]);
    let f = r.only();
    assert_eq!(f.object.kind, ObjectKind::Bio);
    assert_eq!(f.object.addr, bio(2), "the last completed bio");
    assert_eq!(f.object.dev, Some(Dev::new(8, 0)));
    let waiter = &f.sides[0];
    assert_eq!(
        (waiter.role.as_str(), waiter.tid, waiter.pid),
        ("waiter", 211, 210)
    );
    assert_eq!(waiter.stack, Some(StackId(24)), "the sleep stack");
    let completer = &f.sides[1];
    assert_eq!(completer.role, "completer");
    assert_eq!(completer.stack, Some(StackId(23)));
    // Reported 5 s after the sleep began (the last completion was before).
    assert_eq!(f.ts, 100_000_310_000 + 5_000_000_000);
}

#[test]
fn seed003_md_findings() {
    let r = check(
        "md_seed003_teardown_inflight",
        &[MdTeardownInflight, MdWriteAfterTeardown],
    );
    let inflight = &r.findings[0];
    assert_eq!(inflight.object.kind, ObjectKind::Mddev);
    assert_eq!(inflight.object.addr, Addr(0xffff_8880_1000_0000));
    assert_eq!(inflight.ts, 100_000_070_000, "at mddev_detach");
    assert!(inflight.explanation.contains("1 superblock write(s)"));
    let after = &r.findings[1];
    assert_eq!(after.severity, Severity::Critical);
    let roles: Vec<_> = after.sides.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(roles, ["teardown", "completion"]);
    assert_eq!(after.sides[1].stack, Some(StackId(34)));
}

#[test]
fn seed002_double_complete_quotes_both_completions() {
    let r = check("bio_seed002_double_complete", &[BioDoubleComplete]);
    let f = r.only();
    assert_eq!(f.object.addr, bio(1));
    assert_eq!(f.object.dev, Some(Dev::new(253, 0)));
    assert_eq!(f.object.end_io, Some(Addr(0xffff_ffff_8160_0000)));
    let stacks: Vec<_> = f.sides.iter().map(|s| s.stack).collect();
    assert_eq!(stacks, [Some(StackId(41)), Some(StackId(42))]);
    assert_eq!(f.sides[1].comm, "kworker/1:2");
}

#[test]
fn complete_after_del_gendisk() {
    let r = check(
        "bio_complete_after_del_gendisk",
        &[BioCompleteAfterTeardown],
    );
    let f = r.only();
    assert_eq!(f.object.disk, Some(Dev::new(7, 0)));
    assert_eq!(f.sides[0].role, "remover");
    assert_eq!(f.sides[0].stack, Some(StackId(44)));
    assert_eq!(f.sides[1].stack, Some(StackId(45)));
}

#[test]
fn seed001_reports_the_innermost_handler_once() {
    let r = check("stuck_seed001_nested", &[StuckCompletionHandler]);
    let f = r.only();
    assert_eq!(f.object.addr, bio(63), "the original bio, innermost");
    assert_eq!(f.object.end_io, Some(Addr(0xffff_ffff_8125_c200)));
    assert_eq!(f.object.dev, Some(Dev::new(252, 148)));
    let handler = &f.sides[0];
    assert_eq!((handler.role.as_str(), handler.cpu), ("handler", 23));
    assert_eq!(handler.context, Context::Interrupt);
    assert_eq!(handler.stack, Some(StackId(53)));
    assert_eq!(f.sides[1].role, "submitter");
    // Reported while still stuck, 2 s after the innermost call began.
    assert_eq!(f.ts, 100_000_006_000 + 2_000_000_000);
    assert!(
        f.interleaving
            .last()
            .unwrap()
            .text
            .contains("still running")
    );
}

#[test]
fn lost_io_quotes_the_submission() {
    let r = check("lost_io_never_completes", &[LostIoCompletion]);
    let f = r.only();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.object.addr, bio(1));
    assert_eq!(f.sides[0].role, "submitter");
    assert_eq!(f.sides[0].stack, Some(StackId(46)));
    assert_eq!(f.ts, 130_000_000_000);
}

/// A stall's end is measured from the bios' first submission: a requeue
/// just before completing (NVMe multipath) does not make a 50 s stall
/// look 25 ms long.
#[test]
fn a_requeued_stall_is_as_long_as_it_was() {
    let r = check(
        "lost_io_stall_requeued",
        &[LostIoCompletion, LateIoCompletion],
    );
    let late = &r.findings[1];
    assert!(
        late.explanation.contains("the slowest 50.0"),
        "{}",
        late.explanation
    );
}

#[test]
fn unobservable_devices_are_not_judged() {
    let r = check("lost_io_unobservable_device", &[]);
    assert_eq!(r.stats.indeterminate(Rule::LostIoCompletion), 1);
}

/// The range completion covers the bios it does not name only because
/// their sectors count from the whole disk: taken as partition sectors
/// (as `submit_bio_noacct` sees them), those 4 bios stay pending.
#[test]
fn partition_bios_are_range_completed_only_when_disk_relative() {
    let mut events = common::load("lost_io_range_completed_partition");
    for ev in &mut events {
        if let EventKind::BioQueue { disk_relative, .. } = &mut ev.kind {
            *disk_relative = false;
        }
    }
    assert_eq!(replay(events).kinds(), [LostIoCompletion]);
}

#[test]
fn disabled_rules_stay_silent() {
    let events = common::load("lost_wakeup_seed004");
    let cfg = detector::engine::EngineConfig::default().without(Rule::LostWakeup);
    let r = common::replay_with(events, cfg);
    assert!(r.findings.is_empty());
}

#[test]
fn fixtures_replay_deterministically_in_any_order_the_window_allows() {
    for name in fixture_names() {
        let events = load(&name);
        let first = replay(events.clone()).findings;
        assert_eq!(
            first,
            replay(events.clone()).findings,
            "{name}: not repeatable"
        );
        for seed in 0..8 {
            let shuffled = replay(jitter(&events, seed)).findings;
            assert_eq!(
                first, shuffled,
                "{name}: depends on delivery order (seed {seed})"
            );
        }
    }
}

/// The seed's teardown race with a burst of other submissions on the same
/// disk around it: `n` of them, spread over the race.
fn teardown_in_a_burst(n: u64) -> Vec<detector::event::Event> {
    let events = load("bio_complete_after_del_gendisk");
    let (first, last) = (events[0].ts, events.last().unwrap().ts);
    let mut all = events.clone();
    for i in 0..n {
        let mut other = events[0].clone();
        other.ts = first + (last - first) * i / n;
        if let EventKind::BioQueue { bio, sector, .. } = &mut other.kind {
            *bio = Addr(0xffff_8880_5000_0000 + i * 0x100);
            *sector += 8 * (i + 1);
        }
        all.push(other);
    }
    all.sort_by_key(|e| e.ts);
    all
}

#[test]
fn events_forced_out_of_a_full_reorder_buffer_leave_verdicts_indeterminate() {
    use detector::engine::EngineConfig;
    // With room for the burst, the race is found.
    let roomy = common::replay_with(teardown_in_a_burst(200), EngineConfig::default());
    assert_eq!(roomy.kinds(), [BioCompleteAfterTeardown]);
    assert_eq!(roomy.stats.forced_releases, 0);
    // A buffer too small for the window releases events before older ones
    // may have arrived: the verdict is left open, not given.
    let cfg = EngineConfig {
        max_buffered_events: 16,
        ..EngineConfig::default()
    };
    let cramped = common::replay_with(teardown_in_a_burst(200), cfg);
    assert!(cramped.stats.forced_releases > 0);
    assert_eq!(cramped.kinds(), []);
    assert_eq!(
        cramped.stats.indeterminate(Rule::BioCompleteAfterTeardown),
        1
    );
}
