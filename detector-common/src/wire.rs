//! Ring-buffer records: a common [`Header`] followed by one payload per kind.
//!
//! A record is exactly `size_of` its struct; the header's `kind` says which.
//! Addresses are kernel virtual addresses, times are `bpf_ktime_get_ns()`
//! (CLOCK_MONOTONIC), devices are kernel `dev_t` (`major << 20 | minor`).
//!
//! Padding is made of integers, not byte arrays: the programs zero a byte
//! array through a byte-by-byte `memset` call (see `detector-ebpf`'s
//! `words`).

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// Bios of one request reported by name in a [`RqComplete`]; the walk is
/// bounded for the verifier, the rest are covered by the sector range.
pub const RQ_MAX_BIOS: usize = 16;

/// Record kinds (`Header::kind`).
pub mod kind {
    /// A bio is submitted (`block_bio_queue`, `submit_bio_noacct`).
    pub const BIO_QUEUE: u16 = 1;
    /// A request finished a byte range (`block_rq_complete`).
    pub const RQ_COMPLETE: u16 = 2;
    /// A remapped bio completed (`block_bio_complete`).
    pub const BIO_COMPLETE: u16 = 3;
    /// `bio_endio` entered.
    pub const BIO_ENDIO: u16 = 4;
    /// `bio_endio` returned.
    pub const BIO_ENDIO_EXIT: u16 = 5;
    /// `complete(x)`.
    pub const COMPLETE: u16 = 6;
    /// `complete_all(x)`.
    pub const COMPLETE_ALL: u16 = 7;
    /// `init_completion(x)` (seen as `__init_swait_queue_head(&x->wait)`).
    pub const COMPLETION_INIT: u16 = 8;
    /// A `wait_for_completion*` variant entered.
    pub const WAIT_ENTER: u16 = 9;
    /// A `wait_for_completion*` variant returned.
    pub const WAIT_EXIT: u16 = 10;
    /// `md_super_write()`: a superblock write is issued.
    pub const MD_SUPER_WRITE: u16 = 11;
    /// `super_written()`: a superblock write completed.
    pub const MD_SUPER_WRITTEN: u16 = 12;
    /// `md_super_wait()` entered.
    pub const MD_SUPER_WAIT: u16 = 13;
    /// `md_super_wait()` returned.
    pub const MD_SUPER_WAIT_EXIT: u16 = 14;
    /// A step of array teardown (see [`super::teardown`]).
    pub const MD_TEARDOWN: u16 = 15;
    /// `del_gendisk()`.
    pub const DEL_GENDISK: u16 = 16;
    /// `sched_switch`.
    pub const SCHED_SWITCH: u16 = 17;
    /// `sched_waking` (runs in the waker's context).
    pub const SCHED_WAKING: u16 = 18;
    /// `sched_wakeup` (the target became runnable).
    pub const SCHED_WAKEUP: u16 = 19;
    /// `raw_syscalls:sys_exit` for a task that submitted I/O or owns a
    /// completion on its stack: it returned to user space.
    pub const SYS_EXIT: u16 = 20;
    /// `sched_process_exit`.
    pub const TASK_EXIT: u16 = 21;
    /// `bio_init()`/`bio_reset()`: a bio (re)starts its life.
    pub const BIO_INIT: u16 = 22;
    /// `del_gendisk()` returned: the disk is gone.
    pub const DEL_GENDISK_EXIT: u16 = 23;
    /// `raw_syscalls:sys_enter` for a task whose return to user space was
    /// reported with `SysExit::enter_reported`: it is back in the kernel.
    pub const SYS_ENTER: u16 = 24;
    /// Highest kind in use.
    pub const MAX: u16 = 24;
}

/// How the program that produced a record was attached (`Header::hook`).
pub mod hook {
    pub const TP_BTF: u8 = 1;
    pub const RAW_TRACEPOINT: u8 = 2;
    pub const TRACEPOINT: u8 = 3;
    pub const FENTRY: u8 = 4;
    pub const FEXIT: u8 = 5;
    pub const KPROBE: u8 = 6;
    pub const KRETPROBE: u8 = 7;
}

/// Which `wait_for_completion*` (`CompletionEvent::variant`).
pub mod wait {
    pub const PLAIN: u8 = 0;
    pub const IO: u8 = 1;
    pub const TIMEOUT: u8 = 2;
    pub const IO_TIMEOUT: u8 = 3;
    pub const INTERRUPTIBLE: u8 = 4;
    pub const KILLABLE: u8 = 5;
    /// `try_wait_for_completion`: never sleeps; `ret` is 1 if it consumed one.
    pub const TRY: u8 = 6;
    pub const INTERRUPTIBLE_TIMEOUT: u8 = 7;
    pub const KILLABLE_TIMEOUT: u8 = 8;
    /// `wait_for_completion_state(x, state)`.
    pub const STATE: u8 = 9;
    /// `completion_done(x)`: never sleeps; `ret` is 1 if `x` was completed.
    /// It takes `x->wait.lock`, so a true answer also means any `complete()`
    /// has finished touching `x`.
    pub const DONE: u8 = 10;
}

/// Which teardown step (`MdEvent::stage` for `MD_TEARDOWN`).
pub mod teardown {
    pub const MD_STOP: u8 = 1;
    pub const MDDEV_DETACH: u8 = 2;
    pub const BITMAP_FREE: u8 = 3;
    pub const KOBJ_RELEASE: u8 = 4;
    pub const MD_STOP_WRITES: u8 = 5;
}

/// `Header::flags` bits.
pub mod header_flag {
    /// `BIO_QUEUE`: the hook ran after partition remapping, so `sector`
    /// counts from the start of the whole disk (the `block_bio_queue`
    /// tracepoint, `submit_bio_noacct_nocheck`).
    pub const DISK_RELATIVE: u8 = 0x01;
    /// `BIO_QUEUE` in task context: the submitter's first since it last
    /// returned to user space (or since it was first seen). Its earlier
    /// episode ended at that return, which is not reported for a task that
    /// only submitted I/O: the engine starts the new episode here.
    pub const EPISODE_START: u8 = 0x02;
    /// `SCHED_SWITCH`: prev has submitted no I/O in task context since it
    /// last returned to user space (or was first seen). Its earlier
    /// episode is over, although that return was not reported.
    pub const EPISODE_OVER: u8 = 0x04;
    /// Every kind: `comm` is left out (zero). The task's name went out in
    /// an earlier record of the same thread and has not changed since
    /// (`ProbeConfig::names_once`); the reader fills it in.
    pub const COMM_OMITTED: u8 = 0x08;
    /// `BIO_QUEUE` in a user task's context while the syscall hooks were
    /// detached (`ProbeConfig::returns_watched`): the return that ends the
    /// episode this bio belongs to may go unseen, so no sleep after it
    /// can be tied to it for sure.
    pub const EPISODE_UNBOUNDED: u8 = 0x10;
    /// `RQ_COMPLETE` of several bios: one of them may have its submission
    /// still held in the kernel (`ProbeConfig::pair_bios`): the reader
    /// takes it out and ships it before this record. (A single bio's is
    /// shipped by the completion's program itself.)
    pub const SUBMISSIONS_HELD: u8 = 0x20;
}

/// `Header::stack_id` when the hook takes no stack.
pub const NO_STACK: i32 = -1;
/// `Header::stack_id` when the CPU's stack budget was spent.
pub const STACK_OVER_BUDGET: i32 = -100_000;

/// Common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u16,
    /// One of [`hook`].
    pub hook: u8,
    /// Per-kind bits: [`header_flag`].
    pub flags: u8,
    pub cpu: u32,
    pub ts_ns: u64,
    /// Process id (`tgid`) of `current`.
    pub pid: u32,
    /// Thread id of `current`.
    pub tid: u32,
    /// `current->stack`: lowest address of current's kernel stack.
    pub stack_base: u64,
    /// An address on the stack the hook ran on, at the hook: tells how deep
    /// the task was. In interrupt context it lies on the IRQ stack, outside
    /// `[stack_base, stack_base + THREAD_SIZE)`. 0 when unknown.
    pub sp: u64,
    /// Id in the `STACKS` map, or negative: [`NO_STACK`] (none wanted),
    /// [`STACK_OVER_BUDGET`], or the kernel's error.
    pub stack_id: i32,
    pub _pad1: u32,
    pub comm: [u8; COMM_LEN],
}

/// `BIO_QUEUE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BioQueue {
    pub header: Header,
    pub bio: u64,
    pub sector: u64,
    pub end_io: u64,
    pub private: u64,
    /// `bio->bi_bdev->bd_dev` (may be a partition).
    pub dev: u32,
    /// The whole disk's `dev_t`, as requests report it.
    pub disk_dev: u32,
    pub size: u32,
    pub opf: u32,
}

/// A slot of the held-submission table (`HELD_SLOTS`, shared with the
/// reader through `mmap`): `state` (`config::held_state`) says whose
/// `record` is; only its owner of the moment (`BUSY`, set by compare and
/// exchange) writes the record or relies on what it reads there (the
/// reader glances at unowned records' times, as hints).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldSlot {
    pub state: u64,
    pub record: BioQueue,
}

/// `RQ_COMPLETE`: `nr_bytes` from `sector` on `disk_dev` are done.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RqComplete {
    pub header: Header,
    pub rq: u64,
    pub sector: u64,
    pub disk_dev: u32,
    pub nr_bytes: u32,
    pub error: i32,
    /// Number of valid entries in `bios`.
    pub nr_bios: u16,
    /// 1 when the walk stopped at `RQ_MAX_BIOS` before covering `nr_bytes`.
    pub truncated: u8,
    pub _pad: u8,
    /// Bios this call completes in full, in request order.
    pub bios: [u64; RQ_MAX_BIOS],
}

/// `BIO_COMPLETE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BioComplete {
    pub header: Header,
    pub bio: u64,
    pub sector: u64,
    pub dev: u32,
    pub disk_dev: u32,
    pub size: u32,
    pub error: i32,
}

/// `BIO_ENDIO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BioEndio {
    pub header: Header,
    pub bio: u64,
    pub end_io: u64,
    pub private: u64,
    pub sector: u64,
    pub dev: u32,
    pub disk_dev: u32,
    pub size: u32,
    /// `__bi_remaining` on entry.
    pub remaining: i32,
    /// `bi_opf`: the operation (low 8 bits) and flags.
    pub opf: u32,
    pub flags: u16,
    pub status: u8,
    /// 1 when this call runs the bio's `bi_end_io` (its final completion):
    /// a chained bio's earlier calls only drop `__bi_remaining`.
    pub is_final: u8,
    /// 0 for the bio passed to `bio_endio`; n for the n-th parent the
    /// kernel completes in the same call by following `bio_chain_endio`.
    pub chain_depth: u8,
    /// 1 when `bi_blkg` was set on entry. `bio_uninit()` clears it on the
    /// final completion, so a bio completed before shows 0, while a new
    /// bio at the same address (a clone, a split) usually shows 1 again.
    pub has_blkg: u8,
    /// 1 when `REQ_INTEGRITY` was set on entry: a successful read then
    /// defers to integrity verification, which calls `bio_endio` again.
    pub integrity: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// `BIO_ENDIO_EXIT`, `BIO_INIT`: a bare bio pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BioRef {
    pub header: Header,
    /// The bio, or 0 when the hook cannot see arguments (kretprobe).
    pub bio: u64,
}

/// `COMPLETE`, `COMPLETE_ALL`, `COMPLETION_INIT`, `WAIT_ENTER`, `WAIT_EXIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionEvent {
    pub header: Header,
    /// The `struct completion` address.
    pub x: u64,
    /// `WAIT_EXIT`: the function's return value; `WAIT_ENTER`: the timeout
    /// argument in jiffies for timed variants. 0 otherwise.
    pub value: i64,
    /// `x->done` on entry.
    pub done: u32,
    /// One of [`wait`] for waits; 0 otherwise.
    pub variant: u8,
    /// 1 when `x` lies inside the calling task's own kernel stack.
    pub on_own_stack: u8,
    pub _pad: u16,
}

/// `MD_SUPER_WRITE`, `MD_SUPER_WRITTEN`, `MD_SUPER_WAIT*`, `MD_TEARDOWN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MdEvent {
    pub header: Header,
    pub mddev: u64,
    pub rdev: u64,
    pub bio: u64,
    pub sector: u64,
    pub size: u32,
    /// `mddev->pending_writes` when the hook ran (-1 if unreadable).
    pub pending_writes: i32,
    /// One of [`teardown`] for `MD_TEARDOWN`; 0 otherwise.
    pub stage: u8,
    pub status: u8,
    pub _pad: u16,
    pub _pad2: u32,
}

/// `DEL_GENDISK`, `DEL_GENDISK_EXIT` (`disk` is 0 for kretprobes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskEvent {
    pub header: Header,
    pub disk: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// `SCHED_SWITCH`. The header describes the task switched out (`current`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedSwitch {
    pub header: Header,
    /// Where the outgoing task's stack was when it switched out.
    pub prev_sp: u64,
    /// `next->thread.sp`: where the incoming task's stack was when it last
    /// switched out.
    pub next_saved_sp: u64,
    pub next_stack_base: u64,
    pub next_tid: u32,
    /// `prev_state` as the tracepoint reports it (`TASK_*` bits).
    pub prev_state: u32,
    /// 1 when the outgoing task sleeps in `io_schedule` (`in_iowait`).
    pub prev_in_iowait: u8,
    pub preempt: u8,
    pub _pad: u16,
    pub _pad2: u32,
    pub next_comm: [u8; COMM_LEN],
}

/// `SCHED_WAKING`, `SCHED_WAKEUP`. The header describes `current` (the
/// waker, for `SCHED_WAKING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedWake {
    pub header: Header,
    pub target_tid: u32,
    pub _pad: u32,
    pub target_comm: [u8; COMM_LEN],
}

/// `SYS_EXIT`, `SYS_ENTER` (`ret` is 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysExit {
    pub header: Header,
    pub nr: i64,
    pub ret: i64,
    /// `SYS_EXIT`: the task's next syscall entry will be reported too, so
    /// until then it is known to be in user space.
    pub enter_reported: u8,
    pub _pad: u8,
    pub _pad2: u16,
    pub _pad3: u32,
}

/// `TASK_EXIT` carries the header alone.
pub type TaskExit = Header;

const _: () = assert!(core::mem::size_of::<Header>() == 64);
const _: () = assert!(core::mem::size_of::<BioQueue>() == 112);
const _: () = assert!(core::mem::size_of::<HeldSlot>() == 120);
const _: () = assert!(core::mem::size_of::<RqComplete>() == 64 + 32 + 8 * RQ_MAX_BIOS);
const _: () = assert!(core::mem::size_of::<BioComplete>() == 96);
const _: () = assert!(core::mem::size_of::<BioEndio>() == 128);
const _: () = assert!(core::mem::size_of::<BioRef>() == 72);
const _: () = assert!(core::mem::size_of::<CompletionEvent>() == 88);
const _: () = assert!(core::mem::size_of::<MdEvent>() == 112);
const _: () = assert!(core::mem::size_of::<DiskEvent>() == 80);
const _: () = assert!(core::mem::size_of::<SchedSwitch>() == 120);
const _: () = assert!(core::mem::size_of::<SchedWake>() == 88);
const _: () = assert!(core::mem::size_of::<SysExit>() == 88);

/// The size of a record of `kind`, or `None` for an unknown kind.
pub const fn record_size(kind: u16) -> Option<usize> {
    use core::mem::size_of;
    Some(match kind {
        kind::BIO_QUEUE => size_of::<BioQueue>(),
        kind::RQ_COMPLETE => size_of::<RqComplete>(),
        kind::BIO_COMPLETE => size_of::<BioComplete>(),
        kind::BIO_ENDIO => size_of::<BioEndio>(),
        kind::BIO_ENDIO_EXIT | kind::BIO_INIT => size_of::<BioRef>(),
        kind::COMPLETE
        | kind::COMPLETE_ALL
        | kind::COMPLETION_INIT
        | kind::WAIT_ENTER
        | kind::WAIT_EXIT => size_of::<CompletionEvent>(),
        kind::MD_SUPER_WRITE
        | kind::MD_SUPER_WRITTEN
        | kind::MD_SUPER_WAIT
        | kind::MD_SUPER_WAIT_EXIT
        | kind::MD_TEARDOWN => size_of::<MdEvent>(),
        kind::DEL_GENDISK | kind::DEL_GENDISK_EXIT => size_of::<DiskEvent>(),
        kind::SCHED_SWITCH => size_of::<SchedSwitch>(),
        kind::SCHED_WAKING | kind::SCHED_WAKEUP => size_of::<SchedWake>(),
        kind::SYS_EXIT | kind::SYS_ENTER => size_of::<SysExit>(),
        kind::TASK_EXIT => size_of::<TaskExit>(),
        _ => return None,
    })
}

/// Counters, by index. The first [`counter::COUNT`] are the per-CPU
/// `COUNTERS` array the programs bump; the rest are read by userspace from
/// the kernel's own accounting of the programs. Every counter has a name
/// ([`counter::NAMES`]) under which it is reported and exported.
pub mod counter {
    /// A ring-buffer reserve failed: the event is lost.
    pub const DROPPED: u32 = 0;
    /// A kernel read (`bpf_probe_read_kernel`) failed; the field is zero.
    pub const READ_ERRORS: u32 = 1;
    /// `bpf_get_stackid` failed; the event has no stack.
    pub const STACK_ERRORS: u32 = 2;
    /// A stack was not taken: the CPU's stack budget was spent.
    pub const STACKS_OVER_BUDGET: u32 = 3;
    /// `FRAMES` (where a task's on-stack completions lie) was full: the
    /// task's switches are reported until it returns to user space instead
    /// of until it is seen above those frames. Costs events, loses none.
    pub const FRAMES_FULL: u32 = 4;
    /// An event named a thread id beyond the `TASK_FLAGS` array: everything
    /// about that thread is reported, unfiltered. Costs events, loses none.
    pub const TASKS_UNFILTERED: u32 = 5;
    /// `ENTRY_ARGS` or `MD_WRITES` was full: an exit or completion event
    /// loses what its entry knew (a kretprobe exit is not reported at all).
    pub const ARGS_FULL: u32 = 6;
    /// A bio's submission and completion were paired in the kernel and
    /// neither was shipped (`ProbeConfig::pair_bios`): a healthy I/O no
    /// rule could quote. Left out by design, not lost.
    pub const BIOS_PAIRED: u32 = 7;
    /// A submission to be held found both its slots of the held table
    /// taken (by other bios, or for a moment by whoever reads or writes
    /// them): it was shipped at once instead. Costs events, loses none.
    /// (An earlier submission of the bio still held is shipped first, and
    /// is not counted.) The name is older than the table.
    pub const HELD_MAP_FULL: u32 = 8;
    /// Number of counters the programs keep (entries of `COUNTERS`).
    pub const COUNT: u32 = 9;
    /// The per-CPU counters, one word per index: one read gives them all.
    pub type Slots = [u64; COUNT as usize];
    /// Runs of detector's programs the kernel skipped because a program
    /// was already running on that CPU (`recursion_misses` in each
    /// program's `bpf_prog_info`: fentry, fexit, tp_btf and raw
    /// tracepoints; kprobes too since 6.7). Read by userspace.
    pub const RECURSION_MISSES: u32 = 9;
    /// Number of counters, kernel-kept and userspace-read.
    pub const ALL: u32 = 10;

    /// Each counter's name, by index.
    pub const NAMES: [&str; ALL as usize] = [
        "ring_buffer_full",
        "read_errors",
        "stack_errors",
        "stacks_over_budget",
        "frames_map_full",
        "tasks_unfiltered",
        "entry_args_map_full",
        "bios_paired",
        "held_map_full",
        "recursion_misses",
    ];

    /// Whether the counter counts events that never reached userspace (or
    /// reached it without what a rule needs): each increase becomes a loss
    /// marker. Events the programs leave out by design (no rule needs
    /// them, see detector-ebpf's `TASK_FLAGS`) are neither lost nor counted.
    pub const fn is_loss(index: u32) -> bool {
        matches!(index, DROPPED | ARGS_FULL | RECURSION_MISSES)
    }
}
