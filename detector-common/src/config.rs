//! What userspace tells the programs about the running kernel.
//!
//! Rust cannot emit CO-RE relocations, so every struct field the programs
//! read is located in userspace from the running kernel's BTF (vmlinux and
//! module BTF) and handed over here, in the one-entry `CONFIG` array map.
//! It is a map rather than a read-only global so that offsets inside modules
//! (md_mod) can be filled in when the module loads after the programs did.

/// Marks a field the running kernel does not have; programs skip reads of it.
pub const NO_OFFSET: u32 = u32::MAX;

/// Offsets into `struct task_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.stack`: base (lowest address) of the task's kernel stack.
    pub stack: u32,
    /// `task_struct.thread.sp`: stack pointer saved at the last switch-out.
    pub thread_sp: u32,
    /// `task_struct.pid` (the thread id).
    pub pid: u32,
    /// `task_struct.comm`.
    pub comm: u32,
    /// Byte holding the `in_iowait` bitfield.
    pub in_iowait_byte: u32,
    /// Mask of `in_iowait` within that byte (0 when unknown).
    pub in_iowait_mask: u32,
    /// `task_struct.mm`: NULL for a kernel thread, which never returns to
    /// user space.
    pub mm: u32,
    pub _pad: u32,
}

/// Offsets into `struct bio`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BioOffsets {
    pub next: u32,
    pub bdev: u32,
    pub opf: u32,
    /// `bi_flags`, an `unsigned short` on every kernel we support.
    pub flags: u32,
    /// `bi_status`, a one-byte `blk_status_t`.
    pub status: u32,
    /// `bi_iter.bi_sector` (offset of `bi_iter` plus the member's).
    pub sector: u32,
    /// `bi_iter.bi_size`.
    pub size: u32,
    /// `__bi_remaining`, the chain count (`atomic_t`).
    pub remaining: u32,
    pub end_io: u32,
    pub private: u32,
    /// Bit number of `BIO_CHAIN` in `bi_flags` (an enum value in BTF).
    pub flag_chain_bit: u32,
    /// `bi_blkg` (cgroup kernels only).
    pub blkg: u32,
    /// Bit number of `REQ_INTEGRITY` in `bi_opf` (`__REQ_INTEGRITY`).
    pub req_integrity_bit: u32,
    /// Leading bytes of a bio that hold every field above (see
    /// [`ProbeConfig::set_region_spans`]); 0: read field by field.
    pub span: u32,
    /// Leading bytes that hold `bi_next` and `bi_iter.bi_size`, all a walk
    /// of a request's bios reads (at most [`SMALL_REGION_BYTES`]).
    pub walk_span: u32,
    pub _pad: u32,
}

/// Offsets into the block layer's device and request structs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockOffsets {
    /// `block_device.bd_dev`.
    pub bdev_dev: u32,
    /// `block_device.bd_disk`.
    pub bdev_disk: u32,
    /// `gendisk.major`.
    pub disk_major: u32,
    /// `gendisk.first_minor`.
    pub disk_first_minor: u32,
    /// `request.q`.
    pub rq_q: u32,
    /// `request.bio`.
    pub rq_bio: u32,
    /// `request.__sector`.
    pub rq_sector: u32,
    /// `request_queue.disk`.
    pub q_disk: u32,
    /// Leading bytes of a `request` that hold `q`, `bio` and `__sector`
    /// (0: not within [`SMALL_REGION_BYTES`], read one by one). A
    /// `block_device`'s two fields are read one by one: on 6.1 `bd_disk`
    /// lies past the embedded `struct device`, and a choice between a
    /// copy and reads at each bio hook doubles the verifier's paths.
    pub rq_span: u32,
    pub _pad: u32,
}

/// Offsets into md (module `md_mod`); all `NO_OFFSET` until it is loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MdOffsets {
    /// `mddev.pending_writes` (`atomic_t`): superblock writes in flight.
    pub mddev_pending_writes: u32,
    /// `md_rdev.mddev`.
    pub rdev_mddev: u32,
    /// `bitmap.mddev`.
    pub bitmap_mddev: u32,
    /// `mddev.kobj`, to get from the kobject back to its mddev.
    pub mddev_kobj: u32,
}

/// Everything the programs need to know about the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub task: TaskOffsets,
    pub bio: BioOffsets,
    pub block: BlockOffsets,
    pub md: MdOffsets,
    /// `completion.done`.
    pub completion_done: u32,
    /// `completion.wait`: `__init_swait_queue_head` sees `&x->wait`, not `x`.
    pub completion_wait: u32,
    /// Size of a task's kernel stack (THREAD_SIZE); it is not in BTF and
    /// is derived from the architecture, page size and KASAN.
    pub thread_size: u32,
    /// `pt_regs.orig_ax` (x86) / `pt_regs.syscallno` (arm64): the syscall nr.
    pub pt_regs_syscall_nr: u32,
    /// Kernel stacks each CPU may take per second (0: no limit). Walking a
    /// stack costs more than everything else an event does, and I/O-rate
    /// events (submissions, completions, I/O sleeps) would otherwise take one
    /// each; past the budget events go without a stack (counted).
    pub stack_budget: u32,
    /// Index of `prev_state` among `sched_switch`'s arguments (3 since 5.18),
    /// or `NO_OFFSET` when the tracepoint does not pass it: the programs
    /// then read `prev->__state` ([`ProbeConfig::task_state`]).
    pub sched_switch_prev_state_arg: u32,
    /// Address of `bio_chain_endio`, to follow chained bios (0 if unknown).
    pub bio_chain_endio: u64,
    /// Bytes of unread ring-buffer data past which a producer wakes the
    /// reader: the record that takes the data past a multiple of it does
    /// ([`wakes_reader`]). The others are submitted silently and the
    /// reader's drain timer picks them up: a wakeup per event costs more
    /// than the I/O.
    pub wakeup_threshold: u64,
    /// `task_struct.__state`, for kernels whose `sched_switch` does not
    /// pass `prev_state` (before 5.18).
    pub task_state: u32,
    /// 1: report everything the hooks see, unfiltered (`trace --full`, for
    /// debugging); 0: only what a rule may need (detector-ebpf's
    /// `TASK_FLAGS`).
    pub full: u32,
    /// 1: a task's name goes out in its first record only, and again after
    /// a rename (the `task_rename` hook, attached, forgets it); later
    /// records carry `COMM_OMITTED`. 0 (the hook is missing): in every
    /// record.
    pub names_once: u32,
    /// 1 while the `sys_exit` and `sys_enter` hooks run, so that every
    /// return to user space clears the task's episode. 0 while they are
    /// detached (userspace attaches them only while a task may need
    /// them: with any program on them, every syscall on the host takes
    /// the kernel's slow path): a user task's submissions then carry
    /// `EPISODE_UNBOUNDED`, since the return that would end the episode
    /// they start may go unseen.
    pub returns_watched: u32,
    /// 1: a healthy bio's submission and completion may be paired in the
    /// kernel and neither shipped (detector-ebpf's `pairing`); userspace
    /// ships what stays held past its age limit, and what a shipped
    /// completion's `SUBMISSIONS_HELD` names. 0 under `--full`, where
    /// `bio_endio` is hooked (a double completion needs every life seen),
    /// before 5.15 (`request_queue.disk`), where the flush bits are
    /// unknown, and where the map cannot be read in batches or an entry
    /// looked up and deleted in one step.
    pub pair_bios: u32,
    /// `REQ_PREFLUSH | REQ_FUA` in `bio.bi_opf` (from BTF's
    /// `enum req_flag_bits`; 0 when unknown, and then nothing is paired):
    /// a request in a flush sequence reports its bios to
    /// `block_rq_complete` before it ends them, so such bios are never held.
    pub req_flush_fua_mask: u32,
}

/// Upper bounds (inclusive) of the bio in-flight time histogram's buckets,
/// in ns: 50 µs (a fast NVMe completion) to 30 s (the SCSI command
/// timeout), about three per decade. The kernel counts the bios it pairs
/// into these (`PAIRED_TIMES`) and userspace exports the same buckets.
pub const IO_BUCKET_NS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    30_000_000_000,
];

/// Slots of the held-submission table (`HELD_SLOTS`), a power of two.
/// Each bio may be held in one of two ([`held_slots`]); a submission
/// whose two are taken is shipped at once.
pub const HELD_SLOTS: u32 = 8192;

/// The two slots of the held-submission table where `bio`'s submission
/// may be held: a multiplicative hash of its address (slab objects, so
/// the low bits say little), two windows of the product's high bits, the
/// second moved off the first when they meet. Two choices keep a clash
/// rare at the depths a busy host keeps in flight (a new bio finds both
/// taken with odds of about (held / slots) squared).
pub const fn held_slots(bio: u64) -> [u32; 2] {
    const BITS: u32 = HELD_SLOTS.trailing_zeros();
    const MASK: u64 = HELD_SLOTS as u64 - 1;
    let h = (bio >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let first = (h >> (64 - BITS)) as u32;
    let mut second = ((h >> (64 - 2 * BITS)) & MASK) as u32;
    if second == first {
        second ^= 1;
    }
    [first, second]
}

/// A held-submission slot's `state`: empty, or owned for a moment by
/// whoever writes or reads its record (a program or the reader), or else
/// the address of the bio whose submission it holds (never 0 or 1).
pub mod held_state {
    pub const EMPTY: u64 = 0;
    pub const BUSY: u64 = 1;
}

/// Held submissions are counted by age (`HELD_AGES`): in and out per
/// slot of `1 << HELD_AGE_SHIFT` ns (2.1 ms) of their submission time,
/// over [`HELD_AGE_SLOTS`] slots that wrap (34 ms), so that the reader
/// looks through `HELD_SLOTS` only when some entry may be old.
pub const HELD_AGE_SHIFT: u32 = 21;
pub const HELD_AGE_SLOTS: usize = 16;

/// The `HELD_AGES` slot of a submission made at `ts_ns`.
pub const fn held_age_slot(ts_ns: u64) -> usize {
    (ts_ns >> HELD_AGE_SHIFT) as usize & (HELD_AGE_SLOTS - 1)
}

/// `HELD_AGES` rows of [`HELD_AGE_SLOTS`] counts each, one per program
/// that writes it: a program never runs nested in itself on a CPU (the
/// kernel skips such a run), but the completion hooks interrupt the
/// submission hook, and a count lost to that would be wrong for good.
pub mod held_age_row {
    /// Entries held (by the submission hook).
    pub const HELD: usize = 0;
    /// Entries the submission hook took out again (an earlier submission
    /// of the bio shipped, or its own insert refused).
    pub const OUT_BY_SUBMISSION: usize = 1;
    /// Entries `block_rq_complete` took out (paired or shipped).
    pub const OUT_BY_REQUEST: usize = 2;
    /// Entries `block_bio_complete` took out.
    pub const OUT_BY_BIO: usize = 3;
    pub const COUNT: usize = 4;
}

/// Entries of `PAIRED_TIMES`: for each bucket of [`IO_BUCKET_NS`] and one
/// past the last, a count (at `2 * i`) and a sum of ns (at `2 * i + 1`).
pub const PAIRED_TIME_SLOTS: usize = 2 * (IO_BUCKET_NS.len() + 1);

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 32);
const _: () = assert!(core::mem::size_of::<BioOffsets>() == 64);
const _: () = assert!(core::mem::size_of::<BlockOffsets>() == 40);
const _: () = assert!(core::mem::size_of::<MdOffsets>() == 16);
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 216);

impl ProbeConfig {
    /// A config with every offset unknown: programs read nothing.
    pub const UNKNOWN: Self = Self {
        task: TaskOffsets {
            stack: NO_OFFSET,
            thread_sp: NO_OFFSET,
            pid: NO_OFFSET,
            comm: NO_OFFSET,
            in_iowait_byte: NO_OFFSET,
            in_iowait_mask: 0,
            mm: NO_OFFSET,
            _pad: 0,
        },
        bio: BioOffsets {
            next: NO_OFFSET,
            bdev: NO_OFFSET,
            opf: NO_OFFSET,
            flags: NO_OFFSET,
            status: NO_OFFSET,
            sector: NO_OFFSET,
            size: NO_OFFSET,
            remaining: NO_OFFSET,
            end_io: NO_OFFSET,
            private: NO_OFFSET,
            flag_chain_bit: NO_OFFSET,
            blkg: NO_OFFSET,
            req_integrity_bit: NO_OFFSET,
            span: 0,
            walk_span: 0,
            _pad: 0,
        },
        block: BlockOffsets {
            bdev_dev: NO_OFFSET,
            bdev_disk: NO_OFFSET,
            disk_major: NO_OFFSET,
            disk_first_minor: NO_OFFSET,
            rq_q: NO_OFFSET,
            rq_bio: NO_OFFSET,
            rq_sector: NO_OFFSET,
            q_disk: NO_OFFSET,
            rq_span: 0,
            _pad: 0,
        },
        md: MdOffsets {
            mddev_pending_writes: NO_OFFSET,
            rdev_mddev: NO_OFFSET,
            bitmap_mddev: NO_OFFSET,
            mddev_kobj: NO_OFFSET,
        },
        completion_done: NO_OFFSET,
        completion_wait: NO_OFFSET,
        thread_size: 0,
        pt_regs_syscall_nr: NO_OFFSET,
        stack_budget: 0,
        sched_switch_prev_state_arg: NO_OFFSET,
        bio_chain_endio: 0,
        wakeup_threshold: 0,
        task_state: NO_OFFSET,
        full: 0,
        names_once: 0,
        returns_watched: 1,
        pair_bios: 0,
        req_flush_fua_mask: 0,
    };

    /// Sets the spans through which the programs fetch a bio or a request
    /// in one read instead of a read per field: a kernel read through the
    /// helper costs about as much as the copy of a hundred bytes, and a bio
    /// hook made ten of them. A struct with a field unknown, beyond
    /// [`BIO_REGION_BYTES`] or [`SMALL_REGION_BYTES`], or off its natural
    /// alignment keeps span 0 and is read field by field (see
    /// [`region_span`]). The span ends at the last field read, never past
    /// the struct.
    pub fn set_region_spans(&mut self) {
        let b = self.bio;
        self.bio.span = region_span(
            BIO_REGION_BYTES,
            &[
                (b.next, 8),
                (b.bdev, 8),
                (b.opf, 4),
                (b.flags, 2),
                (b.status, 1),
                (b.sector, 8),
                (b.size, 4),
                (b.remaining, 4),
                (b.end_io, 8),
                (b.private, 8),
                (b.blkg, 8),
            ],
        );
        self.bio.walk_span = region_span(SMALL_REGION_BYTES, &[(b.next, 8), (b.size, 4)]);
        let k = self.block;
        self.block.rq_span = region_span(
            SMALL_REGION_BYTES,
            &[(k.rq_q, 8), (k.rq_bio, 8), (k.rq_sector, 8)],
        );
    }
}

/// Bytes the programs copy of a bio at most in one read. Region sizes are
/// powers of two: a field's offset is masked with `size - width` so that
/// the verifier sees an aligned access inside the copy.
pub const BIO_REGION_BYTES: u32 = 128;
/// The same for a `request`, and for the two fields of each bio a
/// request's walk reads.
pub const SMALL_REGION_BYTES: u32 = 64;

/// The bytes from a struct's start to the end of its last `(offset, width)`
/// field, or 0 when a field is unknown (`NO_OFFSET`), does not fit a region
/// of `limit` bytes or is misaligned (the mask would then move it). The
/// programs take every field from the copy without asking whether it
/// exists: a branch per field multiplies the paths the verifier walks.
pub fn region_span(limit: u32, fields: &[(u32, u32)]) -> u32 {
    let mut span = 0;
    for &(offset, width) in fields {
        let end = offset.saturating_add(width);
        if offset == NO_OFFSET || end > limit || offset % width != 0 {
            return 0;
        }
        span = span.max(end);
    }
    span
}

/// The bytes a record of `size` bytes takes in a BPF ring buffer: its
/// 8-byte ring header, then the record, rounded up to 8.
#[inline(always)]
pub const fn ring_record_bytes(size: usize) -> u64 {
    ((size + 8 + 7) & !7) as u64
}

/// Whether the record just reserved, of `record` ring bytes, took the data
/// waiting in its ring (`waiting`, the record included) past a multiple of
/// `threshold` ([`ProbeConfig::wakeup_threshold`]): only such a record
/// wakes the reader. Waking it for every record once past the threshold,
/// until it drained, cost the traced I/O nearly as much as a wakeup per
/// event: each queued the ring's `irq_work` anew, a self-interrupt (in a
/// VM, a VM exit). Every multiple, not just the first: a crossing is
/// missed when a program that interrupted the producer reserved in
/// between, and a reader that fell behind is then still woken once per
/// threshold's worth of data (it drains a woken ring empty, and drains on
/// a short timer anyway).
#[inline(always)]
pub const fn wakes_reader(waiting: u64, record: u64, threshold: u64) -> bool {
    let threshold = if threshold == 0 { 1 } else { threshold };
    waiting >= threshold && waiting.saturating_sub(record) / threshold != waiting / threshold
}

// SAFETY: plain-old-data, `#[repr(C)]`, integers only, no implicit padding
// (the size assertions above pin the layout).
#[cfg(feature = "user")]
unsafe impl aya::Pod for ProbeConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_record_that_crosses_a_multiple_of_the_threshold_wakes_the_reader() {
        let rec = ring_record_bytes(112);
        assert_eq!(rec, 120);
        assert_eq!(ring_record_bytes(1), 16);
        assert!(!wakes_reader(1000, rec, 1024));
        assert!(wakes_reader(1024, rec, 1024));
        assert!(wakes_reader(1100, rec, 1024));
        assert!(!wakes_reader(1024 + rec, rec, 1024));
        // Past the first multiple, the next ones still wake it (a crossing
        // missed, a reader behind).
        assert!(wakes_reader(2048 + 10, rec, 1024));
        assert!(!wakes_reader(2048 + rec, rec, 1024));
        assert!(wakes_reader(1 << 20, rec, 1024));
        assert!(!wakes_reader((1 << 20) + 500, rec, 1024));
        // A record larger than the threshold crosses it from an empty ring.
        assert!(wakes_reader(rec, rec, 64));
        // No threshold: every record wakes it.
        assert!(wakes_reader(rec, rec, 0));
        assert!(wakes_reader(2 * rec, rec, 0));
    }

    #[test]
    fn span_ends_at_the_last_field_read() {
        assert_eq!(region_span(64, &[(8, 8), (0, 8), (40, 4)]), 44);
        assert_eq!(region_span(64, &[(NO_OFFSET, 8), (16, 4)]), 0);
        assert_eq!(region_span(64, &[(NO_OFFSET, 8)]), 0);
    }

    #[test]
    fn a_field_past_the_region_or_misaligned_means_field_by_field() {
        // 6.1's block_device: bd_disk lies after the embedded struct device.
        assert_eq!(region_span(64, &[(36, 4), (896, 8)]), 0);
        assert_eq!(region_span(128, &[(120, 8)]), 128);
        assert_eq!(region_span(64, &[(120, 8)]), 0);
        assert_eq!(region_span(128, &[(124, 8)]), 0);
        assert_eq!(region_span(64, &[(0, 8), (44, 8)]), 0);
        assert_eq!(region_span(128, &[(u32::MAX - 8, 8)]), 0);
    }

    /// `struct bio` as on 6.1 (x86_64).
    fn bio_6_1() -> ProbeConfig {
        let mut cfg = ProbeConfig::UNKNOWN;
        cfg.bio = BioOffsets {
            next: 0,
            bdev: 8,
            opf: 16,
            flags: 20,
            status: 24,
            sector: 32,
            size: 40,
            remaining: 28,
            end_io: 56,
            private: 64,
            flag_chain_bit: 7,
            blkg: 72,
            req_integrity_bit: 16,
            span: 0,
            walk_span: 0,
            _pad: 0,
        };
        cfg
    }

    #[test]
    fn a_bio_is_copied_only_with_every_field_in_the_copy() {
        let mut cfg = bio_6_1();
        cfg.set_region_spans();
        assert_eq!((cfg.bio.span, cfg.bio.walk_span), (80, 44));
        // A kernel without cgroups has no bi_blkg: bios are read field by
        // field, but a request's walk still copies what it reads.
        let mut cfg = bio_6_1();
        cfg.bio.blkg = NO_OFFSET;
        cfg.set_region_spans();
        assert_eq!((cfg.bio.span, cfg.bio.walk_span), (0, 44));
        let mut cfg = bio_6_1();
        cfg.bio.private = 200;
        cfg.set_region_spans();
        assert_eq!(cfg.bio.span, 0);
    }

    #[test]
    fn masking_an_accepted_offset_keeps_it() {
        // What the programs do to show the verifier an aligned access.
        for limit in [SMALL_REGION_BYTES, BIO_REGION_BYTES] {
            for width in [1u32, 2, 4, 8] {
                for offset in 0..2 * limit {
                    if region_span(limit, &[(offset, width)]) != 0 {
                        assert_eq!(offset & (limit - width), offset);
                    }
                }
            }
        }
    }
}
