//! A busy host, synthesized: correct block I/O from many tasks on many
//! disks, as a distribution kernel with every hook attached reports it.
//! For `cargo xtask bench` (engine throughput, memory per live bio, record
//! size) and the scale tests. Deterministic for a seed, streamed (ten
//! million events need no ten million in memory), and free of races: the
//! engine must find nothing in it.
//!
//! Two kinds of tasks share the CPUs:
//! - asynchronous submitters (fio with libaio, a database): each keeps
//!   `depth` bios in flight, reaps completions in batches from an
//!   interruptible sleep and submits again; thousands of bios are in
//!   flight at any time;
//! - synchronous submitters (`submit_bio_wait`): a bio, an on-stack
//!   completion waited for in an uninterruptible iowait sleep, the
//!   completion from the interrupt, the wakeup.
//!
//! Completions run in interrupts on the submitter's CPU, bios come from a
//! slab whose freed slots are reused first, and preemptions between
//! unrelated kernel threads add the scheduler noise of a real host.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use compact_str::{CompactString, format_compact};

use crate::event::{Addr, Dev, Event, EventKind, Hook, StackId, TASK_UNINTERRUPTIBLE, WaitVariant};

/// The shape of the synthetic host.
#[derive(Clone, Debug)]
pub struct BusyHost {
    /// Stop submitting once this many events were produced; what is in
    /// flight then still completes.
    pub events: u64,
    pub seed: u64,
    pub cpus: u32,
    pub disks: u32,
    pub async_tasks: u32,
    /// Bios each asynchronous task keeps in flight.
    pub depth: u32,
    pub sync_tasks: u32,
}

impl Default for BusyHost {
    fn default() -> Self {
        Self {
            events: 10_000_000,
            seed: 1,
            cpus: 32,
            disks: 12,
            async_tasks: 96,
            depth: 32,
            sync_tasks: 128,
        }
    }
}

/// The hooks of a distribution kernel (fentry, fexit and BTF
/// tracepoints), as a record header lists them: replaying the synthetic
/// host runs every rule.
pub fn distribution_hooks() -> BTreeMap<String, String> {
    let fentry = [
        "bio_endio",
        "bio_init",
        "bio_reset",
        "bio_submit",
        "complete",
        "complete_all",
        "completion_done",
        "del_gendisk",
        "init_completion",
        "try_wait_for_completion",
        "wait_for_completion",
        "wait_for_completion_interruptible",
        "wait_for_completion_interruptible_timeout",
        "wait_for_completion_io",
        "wait_for_completion_io_timeout",
        "wait_for_completion_killable",
        "wait_for_completion_killable_timeout",
        "wait_for_completion_state",
        "wait_for_completion_timeout",
    ];
    let tp_btf = [
        "sched_process_exit",
        "sched_switch",
        "sched_wakeup",
        "sched_waking",
        "sys_exit",
    ];
    let mut hooks = BTreeMap::new();
    for name in fentry {
        hooks.insert(name.to_owned(), "fentry".to_owned());
    }
    for name in [
        "bio_endio",
        "completion_done",
        "del_gendisk",
        "try_wait_for_completion",
    ]
    .into_iter()
    .chain(fentry.into_iter().filter(|n| n.starts_with("wait_for")))
    {
        hooks.insert(format!("{name}:exit"), "fexit".to_owned());
    }
    for name in tp_btf {
        hooks.insert(name.to_owned(), "tp_btf".to_owned());
    }
    for name in ["block_bio_complete", "block_rq_complete"] {
        hooks.insert(name.to_owned(), "redundant".to_owned());
    }
    hooks
}

const STACKS: u64 = 0xffff_c900_0000_0000;
const IRQ_STACKS: u64 = 0xffff_c900_0100_0000;
const IDLE: u64 = 0xffff_ffff_82a0_0000;
const SLAB: u64 = 0xffff_8881_0000_0000;
const SLAB_SLOTS: u32 = 1 << 16;
const ASYNC_END_IO: Addr = Addr(0xffff_ffff_8160_4a10);
const SYNC_END_IO: Addr = Addr(0xffff_ffff_8160_5c80);
/// Distinct kernel stacks the hooks see (ids in the stack map).
pub const STACK_IDS: u32 = 400;

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Task {
    tid: u32,
    pid: u32,
    comm: CompactString,
    cpu: u32,
    disk: u32,
    /// Async: completions not yet reaped.
    done: u32,
    reaping: bool,
}

impl Task {
    fn base(&self) -> u64 {
        STACKS + self.tid as u64 * 0x10000
    }
}

/// Something due at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Task submits (async: `n` bios; sync: one, and sleeps on it).
    Submit { task: u32, n: u32 },
    /// A bio of `task` completes in an interrupt.
    Complete { task: u32, slot: u32 },
    /// Task runs again and reaps (async) or returns from its wait (sync).
    Resume { task: u32 },
    /// Unrelated kernel threads preempt each other on `cpu`.
    Preempt { cpu: u32 },
}

/// The event stream of a [`BusyHost`].
pub struct Events {
    cfg: BusyHost,
    rng: Rng,
    tasks: Vec<Task>,
    due: BinaryHeap<Reverse<(u64, u64, Step)>>,
    seq: u64,
    free: Vec<u32>,
    out: VecDeque<Event>,
    produced: u64,
}

impl BusyHost {
    pub fn events(&self) -> Events {
        Events::new(self.clone())
    }
}

impl Events {
    fn new(cfg: BusyHost) -> Self {
        let mut rng = Rng(cfg.seed);
        let mut free: Vec<u32> = (0..SLAB_SLOTS).collect();
        for i in (1..free.len()).rev() {
            free.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut tasks = Vec::new();
        for i in 0..cfg.async_tasks + cfg.sync_tasks {
            let is_async = i < cfg.async_tasks;
            let tid = 3000 + i * 3;
            tasks.push(Task {
                tid,
                pid: if is_async { 3000 + (i / 4) * 12 } else { tid },
                comm: if is_async {
                    "fio".into()
                } else {
                    format_compact!("kworker/u{}:{}", cfg.cpus * 2, i % 9)
                },
                cpu: i % cfg.cpus,
                disk: i % cfg.disks,
                done: 0,
                reaping: false,
            });
        }
        let mut events = Self {
            rng,
            tasks,
            due: BinaryHeap::new(),
            seq: 0,
            free,
            out: VecDeque::new(),
            produced: 0,
            cfg,
        };
        let start = 100_000_000_000;
        for task in 0..events.tasks.len() as u32 {
            let at = start + events.rng.below(200_000);
            let n = if task < events.cfg.async_tasks {
                events.cfg.depth
            } else {
                1
            };
            events.schedule(at, Step::Submit { task, n });
        }
        for cpu in 0..events.cfg.cpus {
            let at = start + events.rng.below(50_000);
            events.schedule(at, Step::Preempt { cpu });
        }
        events
    }

    fn schedule(&mut self, at: u64, step: Step) {
        self.seq += 1;
        self.due.push(Reverse((at, self.seq, step)));
    }

    fn submitting(&self) -> bool {
        self.produced < self.cfg.events
    }

    fn is_async(&self, task: u32) -> bool {
        task < self.cfg.async_tasks
    }

    fn dev(&self, task: u32) -> (Dev, Dev) {
        let d = self.tasks[task as usize].disk;
        (Dev::new(259, d * 4 + 1), Dev::new(259, d * 4))
    }

    fn stack(&mut self) -> Option<StackId> {
        Some(StackId(self.rng.below(STACK_IDS as u64) as u32 + 1))
    }

    /// An event of `task` at `ts`, its stack pointer `off` into its stack.
    fn of_task(&mut self, task: u32, ts: u64, off: u64, hook: Hook, kind: EventKind) -> Event {
        let stack = self.stack();
        let t = &self.tasks[task as usize];
        Event {
            ts,
            cpu: t.cpu,
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.clone(),
            hook,
            stack_base: Addr(t.base()),
            sp: Addr(t.base() + off),
            stack,
            kind,
        }
    }

    /// An event in an interrupt that arrived while `cpu` was idle.
    fn of_irq(&mut self, cpu: u32, ts: u64, hook: Hook, kind: EventKind) -> Event {
        let stack = self.stack();
        Event {
            ts,
            cpu,
            pid: 0,
            tid: 0,
            comm: format_compact!("swapper/{cpu}"),
            hook,
            stack_base: Addr(IDLE + cpu as u64 * 0x4000),
            sp: Addr(IRQ_STACKS + cpu as u64 * 0x4000 + 0x3e00 - self.rng.below(0x200)),
            stack,
            kind,
        }
    }

    fn switch_out(&mut self, task: u32, ts: u64, iowait: bool) -> Event {
        let t = &self.tasks[task as usize];
        let (cpu, prev_sp) = (t.cpu, t.base() + 0x3400);
        let mut ev = self.of_task(
            task,
            ts,
            0x3400,
            Hook::TpBtf,
            EventKind::SchedSwitch {
                prev_state: if iowait { TASK_UNINTERRUPTIBLE } else { 1 },
                prev_in_iowait: iowait,
                preempt: false,
                prev_sp: Addr(prev_sp),
                next_tid: 0,
                next_comm: format_compact!("swapper/{cpu}"),
                next_stack_base: Addr(IDLE + cpu as u64 * 0x4000),
                next_saved_sp: Addr(0),
                // The only switches out not into iowait are asynchronous
                // submitters', back from io_submit.
                prev_episode_over: !iowait,
            },
        );
        ev.stack = None;
        ev
    }

    fn switch_in(&mut self, task: u32, ts: u64) -> Event {
        let t = &self.tasks[task as usize];
        let (cpu, tid, comm, base) = (t.cpu, t.tid, t.comm.clone(), t.base());
        let idle = IDLE + cpu as u64 * 0x4000;
        Event {
            ts,
            cpu,
            pid: 0,
            tid: 0,
            comm: format_compact!("swapper/{cpu}"),
            hook: Hook::TpBtf,
            stack_base: Addr(idle),
            sp: Addr(idle + 0x3f00),
            stack: None,
            kind: EventKind::SchedSwitch {
                prev_state: 0,
                prev_in_iowait: false,
                preempt: false,
                prev_sp: Addr(idle + 0x3f00),
                next_tid: tid,
                next_comm: comm,
                next_stack_base: Addr(base),
                next_saved_sp: Addr(base + 0x3400),
                prev_episode_over: false,
            },
        }
    }

    fn sys_exit(&mut self, task: u32, ts: u64, nr: i64) -> Event {
        let mut ev = self.of_task(
            task,
            ts,
            0x3f80,
            Hook::TpBtf,
            EventKind::SysExit {
                nr,
                ret: 0,
                enter_reported: false,
            },
        );
        ev.stack = None;
        ev
    }

    /// A new bio of `task` from the slab: `bio_init`, then `submit_bio`
    /// (the first of its syscall says so: its return was not reported).
    fn submit_bio(&mut self, task: u32, ts: u64, end_io: Addr, episode_start: bool) -> u32 {
        let slot = self
            .free
            .pop()
            .expect("more slab slots than bios in flight");
        let bio = Addr(SLAB + slot as u64 * 0x100);
        let (dev, disk) = self.dev(task);
        let big = self.rng.below(10) == 0;
        let size = if big { 128 << 10 } else { 4096 };
        let sector = self.rng.below(1 << 28) * 8;
        let ev = self.of_task(task, ts, 0x3200, Hook::Fentry, EventKind::BioInit { bio });
        self.out.push_back(ev);
        let opf = if self.rng.below(3) == 0 { 0x8801 } else { 0 };
        let private = Addr(0xffff_8882_0000_0000 + self.rng.below(1 << 20) * 0x40);
        let queue = EventKind::BioQueue {
            bio,
            dev,
            disk,
            sector,
            size,
            opf,
            end_io,
            private,
            // as submit_bio_noacct_nocheck sees it
            disk_relative: true,
            episode_start,
            episode_unbounded: false,
        };
        let ev = self.of_task(task, ts + 40, 0x3100, Hook::Fentry, queue);
        self.out.push_back(ev);
        // Little's law: thousands in flight at a few hundred thousand
        // bios per second means deep queues, milliseconds each.
        let latency = if end_io == SYNC_END_IO {
            100_000 + self.rng.below(2_000_000)
        } else {
            2_000_000 + self.rng.below(if big { 60_000_000 } else { 24_000_000 })
        };
        self.schedule(ts + latency, Step::Complete { task, slot });
        slot
    }

    /// The completion handler of the bio in `slot`, in an interrupt.
    fn endio(&mut self, task: u32, slot: u32, ts: u64, end_io: Addr) {
        let cpu = self.tasks[task as usize].cpu;
        let bio = Addr(SLAB + slot as u64 * 0x100);
        let (dev, disk) = self.dev(task);
        let ev = self.of_irq(
            cpu,
            ts,
            Hook::Fentry,
            EventKind::BioEndio {
                bio,
                end_io,
                private: Addr(0),
                dev,
                disk,
                sector: 0,
                size: 0,
                status: 0,
                flags: 0x0200,
                remaining: 1,
                is_final: true,
                chain_depth: 0,
                opf: 1,
                has_blkg: true,
                integrity: false,
            },
        );
        self.out.push_back(ev);
    }

    fn endio_exit(&mut self, task: u32, slot: u32, ts: u64) {
        let cpu = self.tasks[task as usize].cpu;
        let bio = Addr(SLAB + slot as u64 * 0x100);
        let mut ev = self.of_irq(
            cpu,
            ts,
            Hook::Fexit,
            EventKind::BioEndioExit { bio: Some(bio) },
        );
        ev.stack = None;
        self.out.push_back(ev);
        self.free.push(slot);
    }

    /// The on-stack completion a synchronous task waits on.
    fn completion_of(&self, task: u32) -> Addr {
        Addr(self.tasks[task as usize].base() + 0x3a00)
    }

    fn step(&mut self, ts: u64, step: Step) {
        match step {
            Step::Submit { task, n } if self.is_async(task) => {
                for i in 0..n {
                    self.submit_bio(task, ts + i as u64 * 600, ASYNC_END_IO, i == 0);
                }
                // Its return from io_submit is not reported: it owns no
                // on-stack completion.
                let end = ts + n as u64 * 600;
                let ev = self.switch_out(task, end + 300, false);
                self.out.push_back(ev);
            }
            Step::Submit { task, .. } => {
                let x = self.completion_of(task);
                self.submit_bio(task, ts, SYNC_END_IO, true);
                let wait = EventKind::WaitEnter {
                    x,
                    variant: WaitVariant::Io,
                    timeout: None,
                    done: 0,
                    on_own_stack: true,
                };
                let ev = self.of_task(task, ts + 400, 0x3700, Hook::Fentry, wait);
                self.out.push_back(ev);
                let ev = self.switch_out(task, ts + 700, true);
                self.out.push_back(ev);
            }
            Step::Complete { task, slot } if self.is_async(task) => {
                self.endio(task, slot, ts, ASYNC_END_IO);
                self.endio_exit(task, slot, ts + 900);
                let t = &mut self.tasks[task as usize];
                t.done += 1;
                if !t.reaping && t.done >= 4 {
                    t.reaping = true;
                    let at = ts + 3_000 + self.rng.below(20_000);
                    self.schedule(at, Step::Resume { task });
                }
            }
            Step::Complete { task, slot } => {
                self.endio(task, slot, ts, SYNC_END_IO);
                let x = self.completion_of(task);
                let cpu = self.tasks[task as usize].cpu;
                let done = EventKind::Complete {
                    x,
                    done: 0,
                    on_own_stack: false,
                };
                let ev = self.of_irq(cpu, ts + 500, Hook::Fentry, done);
                self.out.push_back(ev);
                let t = &self.tasks[task as usize];
                let wake = EventKind::SchedWaking {
                    target_tid: t.tid,
                    target_comm: t.comm.clone(),
                };
                let mut ev = self.of_irq(cpu, ts + 800, Hook::TpBtf, wake);
                ev.stack = None;
                self.out.push_back(ev);
                self.endio_exit(task, slot, ts + 1_100);
                self.schedule(ts + 4_000, Step::Resume { task });
            }
            Step::Resume { task } if self.is_async(task) => {
                let ev = self.switch_in(task, ts);
                self.out.push_back(ev);
                let t = &mut self.tasks[task as usize];
                let n = std::mem::take(&mut t.done);
                t.reaping = false;
                if self.submitting() {
                    self.step(ts + 2_500, Step::Submit { task, n });
                }
            }
            Step::Resume { task } => {
                let ev = self.switch_in(task, ts);
                self.out.push_back(ev);
                let x = self.completion_of(task);
                let wait = EventKind::WaitExit {
                    x,
                    variant: WaitVariant::Io,
                    ret: 0,
                    on_own_stack: true,
                };
                let ev = self.of_task(task, ts + 300, 0x3700, Hook::Fexit, wait);
                self.out.push_back(ev);
                let ev = self.sys_exit(task, ts + 900, 17);
                self.out.push_back(ev);
                if self.submitting() {
                    let think = 2_000_000 + self.rng.below(18_000_000);
                    self.schedule(ts + think, Step::Submit { task, n: 1 });
                }
            }
            Step::Preempt { cpu } => {
                self.preempt(cpu, ts);
                if self.submitting() {
                    let at = ts + 100_000 + self.rng.below(2_000_000);
                    self.schedule(at, Step::Preempt { cpu });
                }
            }
        }
    }

    /// A kernel thread preempted by another on `cpu`: noise no rule
    /// follows.
    fn preempt(&mut self, cpu: u32, ts: u64) {
        let a = 100 + cpu * 2;
        let b = a + 1;
        let base = |tid: u32| STACKS + tid as u64 * 0x10000;
        let kind = EventKind::SchedSwitch {
            prev_state: 0,
            prev_in_iowait: false,
            preempt: true,
            prev_sp: Addr(base(a) + 0x3c00),
            next_tid: b,
            next_comm: format_compact!("ksoftirqd/{cpu}"),
            next_stack_base: Addr(base(b)),
            next_saved_sp: Addr(base(b) + 0x3c00),
            prev_episode_over: true,
        };
        self.out.push_back(Event {
            ts,
            cpu,
            pid: a,
            tid: a,
            comm: format_compact!("kworker/{cpu}:1H"),
            hook: Hook::TpBtf,
            stack_base: Addr(base(a)),
            sp: Addr(base(a) + 0x3c00),
            stack: None,
            kind,
        });
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        // A step's events span a few microseconds: every step due before
        // the next event goes first, so that the stream is in time order.
        loop {
            let next_due = self.due.peek().map(|Reverse((at, _, _))| *at);
            match (self.out.front(), next_due) {
                (Some(ev), Some(at)) if at <= ev.ts => {}
                (Some(_), _) => break,
                (None, Some(_)) => {}
                (None, None) => return None,
            }
            let Reverse((at, _, step)) = self.due.pop()?;
            self.step(at, step);
            self.out.make_contiguous().sort_by_key(|e| e.ts);
        }
        let ev = self.out.pop_front()?;
        self.produced += 1;
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let host = BusyHost {
            events: 5_000,
            ..BusyHost::default()
        };
        let a: Vec<Event> = host.events().collect();
        let b: Vec<Event> = host.events().collect();
        assert_eq!(a, b);
        assert!(a.len() >= 5_000);
    }
}
