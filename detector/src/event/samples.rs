//! One example of every event kind, with distinct values in every field:
//! for round-trip tests, fuzz seeds and documentation.

use super::{Addr, Dev, Event, EventKind, Hook, StackId, TeardownStage, WaitVariant};

fn base(i: u64, hook: Hook, kind: EventKind) -> Event {
    Event {
        ts: 1_000_000_000 + i * 1_000,
        cpu: (i % 4) as u32,
        pid: 100 + i as u32,
        tid: 200 + i as u32,
        comm: format!("task{i}").into(),
        hook,
        stack_base: Addr(0xffff_c900_0010_0000 + i * 0x4000),
        sp: Addr(0xffff_c900_0010_3e00 + i * 0x4000),
        stack: i.is_multiple_of(2).then_some(StackId(i as u32)),
        kind,
    }
}

/// A minimal event of `kind` at `ts`, from task 1 ("t") on CPU 0: the
/// starting point for tests that only care about the kind.
pub fn event(ts: u64, kind: EventKind) -> Event {
    Event {
        ts,
        cpu: 0,
        pid: 1,
        tid: 1,
        comm: "t".into(),
        hook: Hook::TpBtf,
        stack_base: Addr(0),
        sp: Addr(0),
        stack: None,
        kind,
    }
}

/// Every kernel event kind (not `Lost`, which detector makes itself).
pub fn kernel_events() -> Vec<Event> {
    let a = |n: u64| Addr(0xffff_8880_0000_0000 + n * 0x40);
    let kinds = vec![
        (
            Hook::TpBtf,
            EventKind::BioQueue {
                bio: a(1),
                dev: Dev::new(259, 1),
                disk: Dev::new(259, 0),
                sector: 2048,
                size: 4096,
                opf: 0x8801,
                end_io: Addr(0xffff_ffff_8150_0000),
                private: a(2),
                disk_relative: true,
                episode_start: true,
                episode_unbounded: true,
            },
        ),
        (
            Hook::RawTracepoint,
            EventKind::RqComplete {
                rq: a(3),
                disk: Dev::new(8, 0),
                sector: 4096,
                nr_bytes: 8192,
                error: 0,
                bios: smallvec::smallvec![a(4), a(5)],
                truncated: false,
            },
        ),
        (
            Hook::TpBtf,
            EventKind::BioComplete {
                bio: a(6),
                dev: Dev::new(253, 2),
                disk: Dev::new(253, 2),
                sector: 16,
                size: 512,
                error: -5,
            },
        ),
        (
            Hook::Fentry,
            EventKind::BioEndio {
                bio: a(7),
                end_io: Addr(0xffff_ffff_8150_0040),
                private: a(8),
                dev: Dev::new(9, 0),
                disk: Dev::new(9, 0),
                sector: 8,
                size: 1024,
                status: 10,
                flags: 0x120,
                remaining: 2,
                is_final: false,
                chain_depth: 1,
                opf: 1,
                has_blkg: true,
                integrity: false,
            },
        ),
        (Hook::Fexit, EventKind::BioEndioExit { bio: Some(a(7)) }),
        (Hook::Kretprobe, EventKind::BioEndioExit { bio: None }),
        (Hook::Kprobe, EventKind::BioInit { bio: a(9) }),
        (
            Hook::Fentry,
            EventKind::Complete {
                x: a(10),
                done: 0,
                on_own_stack: false,
            },
        ),
        (
            Hook::Kprobe,
            EventKind::CompleteAll {
                x: a(11),
                done: 3,
                on_own_stack: true,
            },
        ),
        (
            Hook::Fentry,
            EventKind::CompletionInit {
                x: a(12),
                on_own_stack: true,
            },
        ),
        (
            Hook::Fentry,
            EventKind::WaitEnter {
                x: a(13),
                variant: WaitVariant::IoTimeout,
                timeout: Some(250),
                done: 0,
                on_own_stack: true,
            },
        ),
        (
            Hook::Kprobe,
            EventKind::WaitEnter {
                x: a(14),
                variant: WaitVariant::Io,
                timeout: None,
                done: 1,
                on_own_stack: false,
            },
        ),
        (
            Hook::Fexit,
            EventKind::WaitExit {
                x: a(15),
                variant: WaitVariant::KillableTimeout,
                ret: -512,
                on_own_stack: true,
            },
        ),
        (
            Hook::Kretprobe,
            EventKind::WaitExit {
                x: a(16),
                variant: WaitVariant::Try,
                ret: 1,
                on_own_stack: false,
            },
        ),
        (
            Hook::Kprobe,
            EventKind::MdSuperWrite {
                mddev: a(17),
                rdev: a(18),
                sector: 8,
                size: 4096,
                pending_writes: Some(0),
            },
        ),
        (
            Hook::Kprobe,
            EventKind::MdSuperWritten {
                mddev: a(17),
                rdev: a(18),
                bio: a(19),
                sector: 8,
                status: 0,
                pending_writes: Some(1),
            },
        ),
        (
            Hook::Kprobe,
            EventKind::MdSuperWait {
                mddev: a(17),
                pending_writes: None,
            },
        ),
        (
            Hook::Kretprobe,
            EventKind::MdSuperWaitExit {
                mddev: a(17),
                pending_writes: Some(0),
            },
        ),
        (
            Hook::Kprobe,
            EventKind::MdTeardown {
                mddev: a(17),
                stage: TeardownStage::Detach,
                pending_writes: Some(1),
            },
        ),
        (
            Hook::Fentry,
            EventKind::DelGendisk {
                disk: a(20),
                dev: Dev::new(251, 16),
            },
        ),
        (
            Hook::Fexit,
            EventKind::DelGendiskExit {
                disk: a(20),
                dev: Dev::new(251, 16),
            },
        ),
        (
            Hook::TpBtf,
            EventKind::SchedSwitch {
                prev_state: 2,
                prev_in_iowait: true,
                preempt: false,
                prev_sp: Addr(0xffff_c900_0010_3c00),
                next_tid: 7,
                next_comm: "kworker/0:1".into(),
                next_stack_base: Addr(0xffff_c900_0020_0000),
                next_saved_sp: Addr(0xffff_c900_0020_3d00),
                prev_episode_over: true,
            },
        ),
        (
            Hook::TpBtf,
            EventKind::SchedWaking {
                target_tid: 9,
                target_comm: "fio".into(),
            },
        ),
        (
            Hook::RawTracepoint,
            EventKind::SchedWakeup {
                target_tid: 9,
                target_comm: "fio".into(),
            },
        ),
        (
            Hook::TpBtf,
            EventKind::SysExit {
                nr: 17,
                ret: 4096,
                enter_reported: true,
            },
        ),
        (Hook::TpBtf, EventKind::SysEnter { nr: 0 }),
        (Hook::TpBtf, EventKind::TaskExit),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, (hook, kind))| base(i as u64, hook, kind))
        .collect()
}
