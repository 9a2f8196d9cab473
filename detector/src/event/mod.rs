//! The decoded event stream: what the kernel reported, typed.
//!
//! [`Event`] is what every consumer sees: the engine, the JSON output, the
//! record file. In JSON, kernel addresses are hex strings and devices are
//! `"MAJ:MIN"` strings (jq reads numbers as doubles, which would round
//! addresses); in the binary record file they are plain integers.

pub mod decode;
pub mod display;
pub mod encode;
pub mod samples;
mod stack;
mod values;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
pub use stack::{Frame, Stack, StackId, StackTable};
pub use values::{Addr, Dev};

/// How the program that saw the event was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    TpBtf,
    RawTracepoint,
    Tracepoint,
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    /// Made by detector itself (loss markers).
    Detector,
}

/// Why events were lost: one cause per loss counter
/// (`detector_common::counter`), named as the counter is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LossCause {
    /// The ring buffer was full (records made before causes were recorded
    /// say nothing, and this was the only cause then).
    #[default]
    RingBufferFull,
    /// The per-task map of tasks whose syscall return is reported was full
    /// (programs before per-task flags; read from older recordings, in
    /// their place so that later causes keep their encoding).
    WatchedMapFull,
    /// The per-task map of sleepers whose wakeup is reported was full (as
    /// `WatchedMapFull`: older recordings only).
    SleepersMapFull,
    /// The map keeping entry arguments for exits and completions was full.
    EntryArgsMapFull,
    /// The kernel skipped a program run: another program was running on
    /// that CPU (fentry/fexit/tracepoint recursion protection; kprobes
    /// skipped while any BPF program runs, counted since Linux 6.7).
    RecursionMisses,
    /// A CPU's ring stayed stuck behind a record still being written for
    /// longer than the reader waits (`kernel::ring_progress`): its records
    /// from then on come late, and how many is not known.
    RingStalled,
    /// A cause this build does not know, read from a recording or an
    /// event file made by a newer one: still a loss (the span stays
    /// indeterminate), where failing the whole chunk would lose the rest.
    #[serde(other)]
    Unknown,
}

impl LossCause {
    /// The causes today's programs count.
    pub const ALL: [LossCause; 3] = [
        Self::RingBufferFull,
        Self::EntryArgsMapFull,
        Self::RecursionMisses,
    ];

    /// The cause counted by counter `index`, if that counter counts a loss.
    pub fn of_counter(index: u32) -> Option<Self> {
        use detector_common::counter;
        Some(match index {
            counter::DROPPED => Self::RingBufferFull,
            counter::ARGS_FULL => Self::EntryArgsMapFull,
            counter::RECURSION_MISSES => Self::RecursionMisses,
            _ => return None,
        })
    }

    /// The counter's name (`ring_buffer_full`, ...), also the JSON value.
    pub fn name(self) -> &'static str {
        let index = match self {
            Self::RingBufferFull => detector_common::counter::DROPPED,
            Self::WatchedMapFull => return "watched_map_full",
            Self::SleepersMapFull => return "sleepers_map_full",
            Self::EntryArgsMapFull => detector_common::counter::ARGS_FULL,
            Self::RecursionMisses => detector_common::counter::RECURSION_MISSES,
            Self::RingStalled => return "ring_stalled",
            Self::Unknown => return "unknown",
        };
        detector_common::counter::NAMES[index as usize]
    }
}

/// Which `wait_for_completion*` function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitVariant {
    /// `wait_for_completion`
    Plain,
    /// `wait_for_completion_io`
    Io,
    /// `wait_for_completion_timeout`
    Timeout,
    /// `wait_for_completion_io_timeout`
    IoTimeout,
    /// `wait_for_completion_interruptible`
    Interruptible,
    /// `wait_for_completion_killable`
    Killable,
    /// `try_wait_for_completion` (never sleeps)
    Try,
    /// `wait_for_completion_interruptible_timeout`
    InterruptibleTimeout,
    /// `wait_for_completion_killable_timeout`
    KillableTimeout,
    /// `wait_for_completion_state`
    State,
    /// `completion_done` (never sleeps; true once `x` was completed, and
    /// any `complete()` of it has let go of it)
    Done,
}

impl WaitVariant {
    /// The kernel function's name.
    pub fn function(self) -> &'static str {
        match self {
            Self::Plain => "wait_for_completion",
            Self::Io => "wait_for_completion_io",
            Self::Timeout => "wait_for_completion_timeout",
            Self::IoTimeout => "wait_for_completion_io_timeout",
            Self::Interruptible => "wait_for_completion_interruptible",
            Self::Killable => "wait_for_completion_killable",
            Self::Try => "try_wait_for_completion",
            Self::InterruptibleTimeout => "wait_for_completion_interruptible_timeout",
            Self::KillableTimeout => "wait_for_completion_killable_timeout",
            Self::State => "wait_for_completion_state",
            Self::Done => "completion_done",
        }
    }

    /// Whether the wait gives up after a timeout (its return value is the
    /// jiffies left, 0 meaning it timed out without a `complete`).
    pub fn is_timed(self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::IoTimeout | Self::InterruptibleTimeout | Self::KillableTimeout
        )
    }

    /// Whether a return value says the wait consumed a `complete` (rather
    /// than timing out or being interrupted by a signal).
    pub fn succeeded(self, ret: i64) -> bool {
        match self {
            Self::Plain | Self::Io => true,
            Self::Timeout | Self::IoTimeout | Self::Try | Self::Done => ret != 0,
            Self::InterruptibleTimeout | Self::KillableTimeout => ret > 0,
            Self::Interruptible | Self::Killable | Self::State => ret == 0,
        }
    }
}

/// A step of md array teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeardownStage {
    /// `__md_stop_writes`: last bitmap and superblock flush.
    StopWrites,
    /// `__md_stop`: the personality is freed.
    Stop,
    /// `mddev_detach`.
    Detach,
    /// `md_bitmap_free`.
    BitmapFree,
    /// `md_kobj_release`: the mddev itself is freed.
    KobjRelease,
}

impl TeardownStage {
    /// The kernel function's name.
    pub fn function(self) -> &'static str {
        match self {
            Self::StopWrites => "__md_stop_writes",
            Self::Stop => "__md_stop",
            Self::Detach => "mddev_detach",
            Self::BitmapFree => "md_bitmap_free",
            Self::KobjRelease => "md_kobj_release",
        }
    }
}

/// One thing the kernel did, with who did it, where and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Kernel CLOCK_MONOTONIC nanoseconds.
    pub ts: u64,
    pub cpu: u32,
    /// Process id (tgid) of the task that was current.
    pub pid: u32,
    /// Thread id of the task that was current (0: idle or interrupt on idle).
    pub tid: u32,
    /// The task's name: at most 15 bytes from the kernel, so it lives
    /// inline (no allocation per event).
    pub comm: CompactString,
    pub hook: Hook,
    /// Lowest address of the current task's kernel stack.
    pub stack_base: Addr,
    /// An address on the stack the hook ran on (see `Header::sp`); 0 if
    /// unknown. Outside `[stack_base, stack_base + thread_size)` in
    /// interrupt context.
    pub sp: Addr,
    /// The kernel stack at the hook, when the hook takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackId>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The JSON field `event` names the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A bio was submitted.
    BioQueue {
        bio: Addr,
        /// The device the bio was submitted to (may be a partition).
        dev: Dev,
        /// The whole disk.
        disk: Dev,
        sector: u64,
        size: u32,
        /// `bi_opf`: operation and flags.
        opf: u32,
        end_io: Addr,
        private: Addr,
        /// `sector` counts from the start of the whole disk: the hook ran
        /// after partition remapping (else it is relative to `dev`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disk_relative: bool,
        /// The submitter's first bio in task context since it last
        /// returned to user space (a kernel thread: went to an idle
        /// sleep): its earlier episode is over (the return itself is not
        /// reported unless a rule needs it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        episode_start: bool,
        /// Submitted by a user task while the syscall hooks were detached:
        /// the return that ends this bio's episode may go unseen, so a
        /// later sleep cannot be tied to the episode for sure.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        episode_unbounded: bool,
    },
    /// A request finished `nr_bytes` from `sector`; `bios` are the bios
    /// this completes in full, as far as the bounded walk saw.
    RqComplete {
        rq: Addr,
        disk: Dev,
        sector: u64,
        nr_bytes: u32,
        error: i32,
        #[serde(deserialize_with = "bio_list")]
        bios: BioList,
        /// The walk stopped before covering `nr_bytes`: more bios in the
        /// sector range completed than `bios` names.
        truncated: bool,
    },
    /// A bio marked for completion tracing completed (`block_bio_complete`).
    BioComplete {
        bio: Addr,
        dev: Dev,
        disk: Dev,
        sector: u64,
        size: u32,
        error: i32,
    },
    /// `bio_endio` ran for `bio`.
    BioEndio {
        bio: Addr,
        end_io: Addr,
        private: Addr,
        dev: Dev,
        disk: Dev,
        sector: u64,
        size: u32,
        status: u8,
        flags: u16,
        /// `__bi_remaining` on entry.
        remaining: i32,
        /// This call runs `bi_end_io`: the bio's final completion.
        is_final: bool,
        /// 0: the bio passed to `bio_endio`; n: its n-th chained parent,
        /// completed inside the same call.
        chain_depth: u8,
        /// `bi_opf`: the operation (low 8 bits, `REQ_OP_*`) and flags.
        #[serde(default)]
        opf: u32,
        /// `bi_blkg` was set: cleared by the final completion's
        /// `bio_uninit()`, so it marks a bio not completed since it was set
        /// up.
        #[serde(default)]
        has_blkg: bool,
        /// `REQ_INTEGRITY` was set: a successful read then defers to
        /// integrity verification, which calls `bio_endio` again.
        #[serde(default)]
        integrity: bool,
    },
    /// `bio_endio` returned (`bio` is unknown for kretprobes: the
    /// innermost open `bio_endio` of this context returned).
    BioEndioExit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bio: Option<Addr>,
    },
    /// `bio_init`/`bio_reset`: a bio starts a new life at this address;
    /// whatever the previous bio there did is over.
    BioInit { bio: Addr },
    /// `complete(x)`.
    Complete {
        x: Addr,
        done: u32,
        on_own_stack: bool,
    },
    /// `complete_all(x)`.
    CompleteAll {
        x: Addr,
        done: u32,
        on_own_stack: bool,
    },
    /// `init_completion(x)`.
    CompletionInit { x: Addr, on_own_stack: bool },
    /// A `wait_for_completion*` started.
    WaitEnter {
        x: Addr,
        variant: WaitVariant,
        /// Jiffies, for timed variants.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<i64>,
        done: u32,
        on_own_stack: bool,
    },
    /// A `wait_for_completion*` (or `try_wait_for_completion`) returned.
    WaitExit {
        x: Addr,
        variant: WaitVariant,
        ret: i64,
        on_own_stack: bool,
    },
    /// `md_super_write`: a superblock write was issued without waiting.
    MdSuperWrite {
        mddev: Addr,
        rdev: Addr,
        sector: u64,
        size: u32,
        /// `mddev->pending_writes` before this write was counted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_writes: Option<i32>,
    },
    /// `super_written`: a superblock write completed.
    MdSuperWritten {
        mddev: Addr,
        rdev: Addr,
        bio: Addr,
        sector: u64,
        status: u8,
        /// `mddev->pending_writes` before this completion was counted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_writes: Option<i32>,
    },
    /// `md_super_wait` started.
    MdSuperWait {
        mddev: Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_writes: Option<i32>,
    },
    /// `md_super_wait` returned.
    MdSuperWaitExit {
        mddev: Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_writes: Option<i32>,
    },
    /// A step of array teardown.
    MdTeardown {
        mddev: Addr,
        stage: TeardownStage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_writes: Option<i32>,
    },
    /// `del_gendisk` started: the disk is being removed. blk-mq drains
    /// in-flight requests inside the call, so completions until
    /// `DelGendiskExit` are normal.
    DelGendisk { disk: Addr, dev: Dev },
    /// `del_gendisk` returned: the disk is gone (`disk` is null and `dev`
    /// 0:0 when the hook could not see the argument).
    DelGendiskExit { disk: Addr, dev: Dev },
    /// The current task switched out.
    SchedSwitch {
        /// `TASK_*` state bits; 0 means still runnable (preempted/yield).
        prev_state: u32,
        /// Slept in `io_schedule` (counts as iowait).
        prev_in_iowait: bool,
        preempt: bool,
        /// Where the outgoing task's stack was.
        prev_sp: Addr,
        next_tid: u32,
        next_comm: CompactString,
        next_stack_base: Addr,
        /// Where the incoming task's stack was when it last switched out.
        next_saved_sp: Addr,
        /// prev has submitted no I/O since it last returned to user space,
        /// or, a kernel thread, went to an idle sleep (a return is not
        /// reported unless a rule needs it; such a sleep, never).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prev_episode_over: bool,
    },
    /// `sched_waking`: the current task is waking `target_tid` (reported
    /// only for targets seen in an uninterruptible sleep).
    SchedWaking {
        target_tid: u32,
        target_comm: CompactString,
    },
    /// `sched_wakeup`: `target_tid` is runnable again (same filter).
    SchedWakeup {
        target_tid: u32,
        target_comm: CompactString,
    },
    /// The current task returned to user space from syscall `nr` (reported
    /// once after it used an on-stack completion, or with `--full`; other
    /// returns are told by the next `BioQueue::episode_start` or
    /// `SchedSwitch::prev_episode_over`).
    SysExit {
        nr: i64,
        ret: i64,
        /// Its next syscall entry is reported too (`SysEnter`): until then
        /// it is in user space, and events on its stack are interrupts.
        #[serde(default)]
        enter_reported: bool,
    },
    /// The current task entered syscall `nr` (reported after a `SysExit`
    /// that said so).
    SysEnter { nr: i64 },
    /// The current task exits.
    TaskExit,
    /// Made by detector: the `sys_exit`/`sys_enter` hooks were attached
    /// (or detached) at `ts`. They are attached only while a task may
    /// need them, since any program on them slows every syscall on the
    /// host. Once they are detached, returns to user space go unseen: an
    /// episode open then may end unseen, and a task reported in user space
    /// may re-enter the kernel unseen.
    SyscallHooks { attached: bool },
    /// Made by detector: every loss up to `until` has been accounted for
    /// (loss markers, if any, came before this). Judging past `until`
    /// would risk judging on events a later marker says were lost.
    LossChecked { until: u64 },
    /// Made by detector: `count` events were lost (for `cause`) at some
    /// moment in `[ts, until]`. Every object with an event in that interval,
    /// or alive during it, has an indeterminate verdict.
    Lost {
        count: u64,
        until: u64,
        #[serde(default)]
        cause: LossCause,
    },
}

impl EventKind {
    /// The JSON name of this kind (the `event` field).
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.tag() as usize]
    }

    /// This kind's place in [`EventKind::NAMES`] (for counting by kind
    /// in an array).
    pub fn index(&self) -> usize {
        self.tag() as usize
    }

    /// Every kind's JSON name, in declaration order.
    pub const NAMES: &'static [&'static str] = &[
        "bio_queue",
        "rq_complete",
        "bio_complete",
        "bio_endio",
        "bio_endio_exit",
        "bio_init",
        "complete",
        "complete_all",
        "completion_init",
        "wait_enter",
        "wait_exit",
        "md_super_write",
        "md_super_written",
        "md_super_wait",
        "md_super_wait_exit",
        "md_teardown",
        "del_gendisk",
        "del_gendisk_exit",
        "sched_switch",
        "sched_waking",
        "sched_wakeup",
        "sys_exit",
        "sys_enter",
        "task_exit",
        "syscall_hooks",
        "loss_checked",
        "lost",
    ];
}

/// An [`EventKind`] without its fields: what the engine routes on, and
/// what a record's `event` field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum EventTag {
    BioQueue,
    RqComplete,
    BioComplete,
    BioEndio,
    BioEndioExit,
    BioInit,
    Complete,
    CompleteAll,
    CompletionInit,
    WaitEnter,
    WaitExit,
    MdSuperWrite,
    MdSuperWritten,
    MdSuperWait,
    MdSuperWaitExit,
    MdTeardown,
    DelGendisk,
    DelGendiskExit,
    SchedSwitch,
    SchedWaking,
    SchedWakeup,
    SysExit,
    SysEnter,
    TaskExit,
    SyscallHooks,
    LossChecked,
    Lost,
}

impl EventTag {
    /// Number of tags (for tables indexed by tag).
    pub const COUNT: usize = EventKind::NAMES.len();
}

impl EventKind {
    pub fn tag(&self) -> EventTag {
        match self {
            Self::BioQueue { .. } => EventTag::BioQueue,
            Self::RqComplete { .. } => EventTag::RqComplete,
            Self::BioComplete { .. } => EventTag::BioComplete,
            Self::BioEndio { .. } => EventTag::BioEndio,
            Self::BioEndioExit { .. } => EventTag::BioEndioExit,
            Self::BioInit { .. } => EventTag::BioInit,
            Self::Complete { .. } => EventTag::Complete,
            Self::CompleteAll { .. } => EventTag::CompleteAll,
            Self::CompletionInit { .. } => EventTag::CompletionInit,
            Self::WaitEnter { .. } => EventTag::WaitEnter,
            Self::WaitExit { .. } => EventTag::WaitExit,
            Self::MdSuperWrite { .. } => EventTag::MdSuperWrite,
            Self::MdSuperWritten { .. } => EventTag::MdSuperWritten,
            Self::MdSuperWait { .. } => EventTag::MdSuperWait,
            Self::MdSuperWaitExit { .. } => EventTag::MdSuperWaitExit,
            Self::MdTeardown { .. } => EventTag::MdTeardown,
            Self::DelGendisk { .. } => EventTag::DelGendisk,
            Self::DelGendiskExit { .. } => EventTag::DelGendiskExit,
            Self::SchedSwitch { .. } => EventTag::SchedSwitch,
            Self::SchedWaking { .. } => EventTag::SchedWaking,
            Self::SchedWakeup { .. } => EventTag::SchedWakeup,
            Self::SysExit { .. } => EventTag::SysExit,
            Self::SysEnter { .. } => EventTag::SysEnter,
            Self::TaskExit => EventTag::TaskExit,
            Self::SyscallHooks { .. } => EventTag::SyscallHooks,
            Self::LossChecked { .. } => EventTag::LossChecked,
            Self::Lost { .. } => EventTag::Lost,
        }
    }
}

/// `TASK_UNINTERRUPTIBLE` in `SchedSwitch::prev_state`.
pub const TASK_UNINTERRUPTIBLE: u32 = 0x2;

impl Event {
    /// Whether `addr` lies in the kernel stack of the task that was current.
    pub fn on_current_stack(&self, addr: Addr, thread_size: u64) -> bool {
        self.stack_base.0 != 0
            && addr.0 >= self.stack_base.0
            && addr.0 < self.stack_base.0 + thread_size
    }
}

/// The bios a request completion names: nearly always one or two, which
/// are kept inline, so that decoding a completion allocates nothing.
pub type BioList = smallvec::SmallVec<[Addr; 2]>;

/// A [`BioList`] read through a `Vec`, whose deserializer reserves no
/// more than a little up front whatever length the input claims
/// (`SmallVec`'s reserves the claimed length at once).
fn bio_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BioList, D::Error> {
    Vec::<Addr>::deserialize(d).map(|bios| bios.into_iter().collect())
}

#[cfg(test)]
mod tests;
