//! Event builders for synthetic traces, with the same conventions as the
//! JSON fixtures: tasks' 16 KiB stacks at `0xffffc900000N0000`, interrupt
//! stacks at `0xffffc90001000000` and above.

use detector::event::{
    Addr, Dev, Event, EventKind, Hook, Stack, StackId, TASK_UNINTERRUPTIBLE, TeardownStage,
    WaitVariant,
};

pub const S: u64 = 1_000_000_000;
pub const MS: u64 = 1_000_000;
pub const US: u64 = 1_000;

const STACKS: u64 = 0xffff_c900_0000_0000;
const IRQ_STACKS: u64 = 0xffff_c900_0100_0000;
const IDLE: u64 = 0xffff_ffff_82a0_0000;

/// Who an event is from.
#[derive(Clone, Debug)]
pub struct Who {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub cpu: u32,
    pub base: u64,
    pub irq: bool,
}

pub fn task(tid: u32, comm: &str, cpu: u32) -> Who {
    Who {
        tid,
        pid: tid,
        comm: comm.to_owned(),
        cpu,
        base: STACKS + tid as u64 * 0x10000,
        irq: false,
    }
}

/// An interrupt on an idle CPU.
pub fn irq(cpu: u32) -> Who {
    Who {
        tid: 0,
        pid: 0,
        comm: format!("swapper/{cpu}"),
        cpu,
        base: IDLE + cpu as u64 * 0x4000,
        irq: true,
    }
}

impl Who {
    /// An address in this task's stack.
    pub fn at(&self, off: u64) -> u64 {
        self.base + off
    }

    /// An event at `ts` with the stack pointer `off` into the task's stack
    /// (interrupts: on the CPU's interrupt stack).
    pub fn ev_at(&self, ts: u64, off: u64, kind: EventKind) -> Event {
        let sp = if self.irq {
            IRQ_STACKS + self.cpu as u64 * 0x4000 + off
        } else {
            self.base + off
        };
        Event {
            ts,
            cpu: self.cpu,
            pid: self.pid,
            tid: self.tid,
            comm: self.comm.as_str().into(),
            hook: Hook::Fentry,
            stack_base: Addr(self.base),
            sp: Addr(sp),
            stack: Some(StackId(ts as u32 & 0xffff)),
            kind,
        }
    }

    /// An event deep in the task (below the frames the tests put
    /// completions in).
    pub fn ev(&self, ts: u64, kind: EventKind) -> Event {
        self.ev_at(ts, 0x3800, kind)
    }
}

pub fn bio(n: u64) -> Addr {
    Addr(0xffff_8880_0400_0000 + n * 0x100)
}

pub const END_IO: Addr = Addr(0xffff_ffff_8160_0000);
pub const CHAIN_END_IO: Addr = Addr(0xffff_ffff_8165_0000);

pub fn queue(who: &Who, ts: u64, b: u64, disk: Dev) -> Event {
    queue_end_io(who, ts, b, disk, END_IO)
}

/// The stack every built submission quotes: a direct-I/O read.
pub const SUBMIT_STACK: StackId = StackId(0x1_0001);
/// The stack every built sleep quotes: the same read waiting for its bios.
pub const SLEEP_STACK: StackId = StackId(0x1_0002);

/// The functions on [`SUBMIT_STACK`] and [`SLEEP_STACK`].
pub fn known_stacks() -> Vec<(StackId, Stack)> {
    vec![
        (
            SUBMIT_STACK,
            super::stack_of(&[
                "submit_bio",
                "__blkdev_direct_IO_simple",
                "blkdev_read_iter",
            ]),
        ),
        (
            SLEEP_STACK,
            super::stack_of(&[
                "__schedule",
                "schedule",
                "io_schedule",
                "__blkdev_direct_IO_simple",
                "blkdev_read_iter",
            ]),
        ),
    ]
}

pub fn queue_end_io(who: &Who, ts: u64, b: u64, disk: Dev, end_io: Addr) -> Event {
    let mut ev = who.ev(
        ts,
        EventKind::BioQueue {
            bio: bio(b),
            dev: disk,
            disk,
            sector: b * 8,
            size: 4096,
            opf: 1,
            end_io,
            private: Addr(0),
            disk_relative: true,
            episode_start: false,
            episode_unbounded: false,
        },
    );
    ev.stack = Some(SUBMIT_STACK);
    ev
}

pub fn endio(who: &Who, ts: u64, b: u64, disk: Dev, remaining: i32, depth: u8) -> Event {
    endio_with(who, ts, b, disk, remaining, depth, END_IO)
}

pub fn endio_with(
    who: &Who,
    ts: u64,
    b: u64,
    disk: Dev,
    remaining: i32,
    depth: u8,
    end_io: Addr,
) -> Event {
    who.ev(
        ts,
        EventKind::BioEndio {
            bio: bio(b),
            end_io,
            private: Addr(0),
            dev: disk,
            disk,
            sector: b * 8,
            size: 0,
            status: 0,
            flags: 0,
            remaining,
            is_final: remaining <= 1,
            chain_depth: depth,
            opf: 1,
            has_blkg: false,
            integrity: false,
        },
    )
}

pub fn endio_exit(who: &Who, ts: u64, b: u64) -> Event {
    let mut ev = who.ev(ts, EventKind::BioEndioExit { bio: Some(bio(b)) });
    ev.hook = Hook::Fexit;
    ev
}

pub fn bio_init(who: &Who, ts: u64, b: u64) -> Event {
    who.ev(ts, EventKind::BioInit { bio: bio(b) })
}

pub fn complete(who: &Who, ts: u64, x: u64) -> Event {
    who.ev(
        ts,
        EventKind::Complete {
            x: Addr(x),
            done: 0,
            on_own_stack: false,
        },
    )
}

pub fn wait_enter(who: &Who, ts: u64, x: u64, variant: WaitVariant) -> Event {
    who.ev_at(
        ts,
        0x3700,
        EventKind::WaitEnter {
            x: Addr(x),
            variant,
            timeout: variant.is_timed().then_some(250),
            done: 0,
            on_own_stack: true,
        },
    )
}

pub fn wait_exit(who: &Who, ts: u64, x: u64, variant: WaitVariant, ret: i64) -> Event {
    let mut ev = who.ev_at(
        ts,
        0x3700,
        EventKind::WaitExit {
            x: Addr(x),
            variant,
            ret,
            on_own_stack: true,
        },
    );
    ev.hook = Hook::Fexit;
    ev
}

/// `who` switches out; `d_iowait` for an uninterruptible iowait sleep,
/// otherwise an interruptible one.
pub fn sleep(who: &Who, ts: u64, d_iowait: bool) -> Event {
    let mut ev = who.ev_at(
        ts,
        0x3400,
        EventKind::SchedSwitch {
            prev_state: if d_iowait { TASK_UNINTERRUPTIBLE } else { 1 },
            prev_in_iowait: d_iowait,
            preempt: false,
            prev_sp: Addr(who.at(0x3400)),
            next_tid: 0,
            next_comm: format!("swapper/{}", who.cpu).into(),
            next_stack_base: Addr(IDLE + who.cpu as u64 * 0x4000),
            next_saved_sp: Addr(0),
            prev_episode_over: false,
        },
    );
    ev.hook = Hook::TpBtf;
    ev.stack = Some(SLEEP_STACK);
    ev
}

/// The idle task of `who`'s CPU switches to `who`.
pub fn switch_in(who: &Who, ts: u64) -> Event {
    let idle = Who {
        irq: false,
        ..irq(who.cpu)
    };
    let mut ev = idle.ev_at(
        ts,
        0x3f00,
        EventKind::SchedSwitch {
            prev_state: 0,
            prev_in_iowait: false,
            preempt: false,
            prev_sp: Addr(idle.at(0x3f00)),
            next_tid: who.tid,
            next_comm: who.comm.as_str().into(),
            next_stack_base: Addr(who.base),
            next_saved_sp: Addr(who.at(0x3400)),
            prev_episode_over: false,
        },
    );
    ev.hook = Hook::TpBtf;
    ev.stack = None;
    ev
}

pub fn waking(waker: &Who, ts: u64, target: &Who) -> Event {
    let mut ev = waker.ev(
        ts,
        EventKind::SchedWaking {
            target_tid: target.tid,
            target_comm: target.comm.as_str().into(),
        },
    );
    ev.hook = Hook::TpBtf;
    ev.stack = None;
    ev
}

pub fn sys_exit(who: &Who, ts: u64) -> Event {
    let mut ev = who.ev_at(
        ts,
        0x3f80,
        EventKind::SysExit {
            nr: 16,
            ret: 0,
            enter_reported: false,
        },
    );
    ev.hook = Hook::TpBtf;
    ev.stack = None;
    ev
}

pub fn md(who: &Who, ts: u64, mddev: u64, kind: MdKind) -> Event {
    let mddev = Addr(mddev);
    let rdev = Addr(0xffff_8880_1000_1000);
    let kind = match kind {
        MdKind::Write(pending) => EventKind::MdSuperWrite {
            mddev,
            rdev,
            sector: 8,
            size: 4096,
            pending_writes: Some(pending),
        },
        MdKind::Written(pending) => EventKind::MdSuperWritten {
            mddev,
            rdev,
            bio: bio(999),
            sector: 8,
            status: 0,
            pending_writes: Some(pending),
        },
        MdKind::Wait(pending) => EventKind::MdSuperWait {
            mddev,
            pending_writes: Some(pending),
        },
        MdKind::WaitExit => EventKind::MdSuperWaitExit {
            mddev,
            pending_writes: Some(0),
        },
        MdKind::Stage(stage, pending) => EventKind::MdTeardown {
            mddev,
            stage,
            pending_writes: Some(pending),
        },
    };
    let mut ev = who.ev(ts, kind);
    ev.hook = Hook::Kprobe;
    ev
}

#[derive(Clone, Copy, Debug)]
pub enum MdKind {
    Write(i32),
    Written(i32),
    Wait(i32),
    WaitExit,
    Stage(TeardownStage, i32),
}

pub fn lost(ts: u64, count: u64, until: u64) -> Event {
    detector::kernel::reader::lost_marker(0, count, ts, until)
}

/// Unrelated activity on CPU `cpu`, so that event time moves on.
pub fn tick(ts: u64, cpu: u32) -> Event {
    sleep(&task(900 + cpu, "ticker", cpu), ts, false)
}
