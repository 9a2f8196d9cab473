//! Bio and request lifecycle: submission, completion, `bio_endio` entry and
//! exit, and disk removal.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, raw_tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext,
    },
};
use detector_common::{
    BioComplete, BioEndio, BioQueue, BioRef, DiskEvent, Header, ProbeConfig, RQ_MAX_BIOS,
    RqComplete,
    config::{NO_OFFSET, held_age_row},
    counter, header_flag, hook, kind,
};

use super::done;
use crate::{
    context::Hooked,
    diag::{may_log, site},
    emit::{Stack, header, in_task_context, note_named, reserve, submit, submit_unnamed},
    kernel::{
        BioFields, CopiedBioAndBdev, CopiedSmall, Fields, Peeked, SMALL_WORDS, Scratch, config,
        current_task, disk_dev, on_stack, read, room_for,
    },
    maps::{ENTRY_ARGS, flag, insert_or_count, scratch},
    pairing::{self, Pairing},
    tasks::{flags_of, note_episode, note_onstack, set_flags},
    words,
};

// ---- submission ---------------------------------------------------------

/// `block_bio_queue(struct bio *bio)` (5.11+; checked on 6.1 and 6.18).
#[btf_tracepoint(function = "block_bio_queue")]
pub fn tp_block_bio_queue(ctx: BtfTracePointContext) -> u32 {
    done(try_bio_queue(&ctx, header_flag::DISK_RELATIVE))
}

#[raw_tracepoint(tracepoint = "block_bio_queue")]
pub fn raw_block_bio_queue(ctx: RawTracePointContext) -> u32 {
    done(try_bio_queue(&ctx, header_flag::DISK_RELATIVE))
}

/// `void submit_bio_noacct_nocheck(struct bio *bio, ...)` (5.19+; checked
/// on 6.1 and 6.18): every submission once it passed the block layer's
/// checks, partition remapping and blk-throttle. A bio that a cgroup's
/// `io.max` holds back reaches it only when the throttle dispatches it, so
/// the time it waited there by design is not taken for a stall; stacked
/// drivers' resubmissions pass here too.
#[fentry(function = "submit_bio_noacct_nocheck")]
pub fn enter_submit_bio_noacct_nocheck(ctx: FEntryContext) -> u32 {
    done(try_bio_queue(&ctx, header_flag::DISK_RELATIVE))
}

#[kprobe]
pub fn kprobe_submit_bio_noacct_nocheck(ctx: ProbeContext) -> u32 {
    done(try_bio_queue(&ctx, header_flag::DISK_RELATIVE))
}

/// `void submit_bio_noacct(struct bio *bio)`: every submission, including
/// stacked drivers' resubmissions (checked on 6.1 and 6.18), before
/// partition remapping; for kernels without `submit_bio_noacct_nocheck`.
#[fentry(function = "submit_bio_noacct")]
pub fn enter_submit_bio_noacct(ctx: FEntryContext) -> u32 {
    done(try_bio_queue(&ctx, 0))
}

#[kprobe]
pub fn kprobe_submit_bio_noacct(ctx: ProbeContext) -> u32 {
    done(try_bio_queue(&ctx, 0))
}

#[inline(always)]
fn try_bio_queue<C: Hooked>(ctx: &C, flags: u8) -> Option<()> {
    let cfg = config()?;
    let bio = ctx.arg_u64(0);
    let span = cfg.bio.span;
    match room_for(Scratch::of(scratch::BIO_QUEUE), span) {
        Some(room) => emit_queue(
            ctx,
            cfg,
            flags,
            bio,
            &CopiedBioAndBdev::read(&room, bio, span),
        ),
        None => emit_queue(ctx, cfg, flags, bio, &Peeked(bio)),
    }
}

#[inline(always)]
fn emit_queue<C: Hooked, F: BioFields>(
    ctx: &C,
    cfg: &ProbeConfig,
    flags: u8,
    bio: u64,
    fields: &F,
) -> Option<()> {
    let (dev, disk) = fields.devs(cfg);
    let mut header = header(ctx, cfg, kind::BIO_QUEUE, Stack::Take);
    let private: u64 = fields.get(cfg.bio.private);
    let submitter = note_submitter(cfg, &header, private);
    header.flags |= flags | submitter.header_flags;
    let md_write = super::md::note_submission(cfg, bio, private);
    let record = BioQueue {
        header,
        bio,
        sector: fields.get(cfg.bio.sector),
        end_io: fields.get(cfg.bio.end_io),
        private,
        dev,
        disk_dev: disk,
        size: fields.get(cfg.bio.size),
        opf: fields.get(cfg.bio.opf),
    };
    let watched = submitter.onstack || md_write;
    if pairing::may_hold(cfg, &record, submitter.task_flags, watched) {
        if pairing::hold(cfg, &record) {
            return Some(());
        }
    } else {
        pairing::ship_earlier(cfg, bio);
    }
    let mut entry = reserve::<BioQueue>()?;
    unsafe { entry.as_mut_ptr().write(record) };
    submit(entry, cfg);
    Some(())
}

/// What a submission's hook learned of its submitter.
struct Submitter {
    /// `EPISODE_START`, `EPISODE_UNBOUNDED`.
    header_flags: u8,
    /// Its `TASK_FLAGS` before this submission (0 in an interrupt).
    task_flags: u8,
    /// Its `bi_private` lies in its own stack.
    onstack: bool,
}

/// Flags the submitter (see `TASK_FLAGS`): a submission in task context
/// starts or continues its episode; one from an interrupt over it (its
/// stack pointer off the task's stack) is not its own.
#[inline(always)]
fn note_submitter(cfg: &ProbeConfig, header: &Header, private: u64) -> Submitter {
    if header.tid == 0 || !in_task_context(cfg, header) {
        return Submitter {
            header_flags: 0,
            task_flags: 0,
            onstack: false,
        };
    }
    let (at, old) = flags_of(header.tid);
    // `sys_exit` (or a kernel thread's idle sleep) cleared the bit,
    // unreported unless the task also owned an on-stack completion: the
    // engine learns of the new episode from here.
    let starts = if old & flag::EPISODE == 0 {
        header_flag::EPISODE_START
    } else {
        0
    };
    note_episode(at, old, header.ts_ns);
    set_flags(at, old, old | flag::EPISODE);
    let unbounded = unbounded_episode(cfg);
    // bi_private in the submitter's own stack: its end_io may complete
    // something in this frame (blkdev_issue_zeroout's bio batch), so where
    // the frame ends is worth seeing.
    let onstack = on_stack(cfg, header.stack_base, private);
    if onstack {
        note_onstack(header.tid, private);
    }
    Submitter {
        header_flags: starts | unbounded,
        task_flags: old,
        onstack,
    }
}

/// `EPISODE_UNBOUNDED` for a user task's submission while the syscall
/// hooks are detached: its return may go unseen. A kernel thread (no
/// `mm`) never returns, so its episodes are bounded without them; `mm` is
/// read only while they are detached.
#[inline(always)]
fn unbounded_episode(cfg: &ProbeConfig) -> u8 {
    if cfg.returns_watched != 0 {
        return 0;
    }
    let mm: u64 = read(current_task(), cfg.task.mm);
    if mm != 0 || cfg.task.mm == NO_OFFSET {
        header_flag::EPISODE_UNBOUNDED
    } else {
        0
    }
}

// ---- request / traced-bio completion -------------------------------------

/// `block_rq_complete(struct request *rq, blk_status_t error,
/// unsigned int nr_bytes)` (checked on 6.1 and 6.18).
#[btf_tracepoint(function = "block_rq_complete")]
pub fn tp_block_rq_complete(ctx: BtfTracePointContext) -> u32 {
    done(try_rq_complete(&ctx))
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn raw_block_rq_complete(ctx: RawTracePointContext) -> u32 {
    done(try_rq_complete(&ctx))
}

#[inline(always)]
fn try_rq_complete<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let rq = ctx.arg_u64(0);
    let room = Scratch::of(scratch::RQ_COMPLETE);
    let walk_room = room_for(room.as_ref().map(|r| r.second), cfg.bio.walk_span);
    let span = cfg.block.rq_span;
    match room_for(room.as_ref().map(|r| r.first), span) {
        Some(copy) => emit_rq(ctx, cfg, rq, &CopiedSmall::read(copy, rq, span), walk_room),
        None => emit_rq(ctx, cfg, rq, &Peeked(rq), walk_room),
    }
}

#[inline(always)]
fn emit_rq<C: Hooked, F: Fields>(
    ctx: &C,
    cfg: &ProbeConfig,
    rq: u64,
    rq_fields: &F,
    walk_room: Option<*mut [u64; SMALL_WORDS]>,
) -> Option<()> {
    let error = ctx.arg_u64(1) as u8 as i32;
    let nr_bytes = ctx.arg_u64(2) as u32;
    let q: u64 = rq_fields.get(cfg.block.rq_q);
    let disk: u64 = read(q, cfg.block.q_disk);
    let first: u64 = rq_fields.get(cfg.block.rq_bio);
    let sector: u64 = rq_fields.get(cfg.block.rq_sector);
    let covered = pairing::Covered {
        bytes: nr_bytes,
        sector,
    };
    let row = held_age_row::OUT_BY_REQUEST;
    let pairing = pairing::pair(cfg, first, Some(covered), error != 0, disk, row);
    if pairing == Pairing::Paired {
        return Some(());
    }
    let mut header = header(ctx, cfg, kind::RQ_COMPLETE, Stack::Take);
    let mut entry = reserve::<RqComplete>()?;
    let ev = entry.as_mut_ptr();
    let span = cfg.bio.walk_span;
    // Userspace ships the held submissions of the request's other bios
    // (and the first's, if the program could not take it out).
    let look_up_held = cfg.pair_bios != 0;
    let walk = unsafe {
        match walk_room {
            Some(room) => walk_rq(cfg, first, nr_bytes, &mut (*ev).bios, look_up_held, |bio| {
                CopiedSmall::read(room, bio, span)
            }),
            None => walk_rq(cfg, first, nr_bytes, &mut (*ev).bios, look_up_held, Peeked),
        }
    };
    if walk.held {
        header.flags |= header_flag::SUBMISSIONS_HELD;
    }
    unsafe {
        (*ev).header = header;
        (*ev).rq = rq;
        (*ev).sector = sector;
        (*ev).disk_dev = disk_dev(cfg, disk);
        (*ev).nr_bytes = nr_bytes;
        (*ev).error = error;
        (*ev).nr_bios = walk.found;
        (*ev).truncated = walk.truncated as u8;
        (*ev)._pad = 0;
    }
    submit(entry, cfg);
    if pairing == Pairing::ShipFirstOfDisk {
        pairing::note_completion_shipped(disk);
    }
    if walk.truncated && may_log(site::RQ_WALK_CUT) {
        aya_log_ebpf::debug!(
            ctx,
            "block_rq_complete: bio walk stopped at {} bios with {} bytes left; the rest are matched by sector range",
            RQ_MAX_BIOS,
            walk.left
        );
    }
    Some(())
}

/// What a walk of a request's bios found.
struct RqWalk {
    found: u16,
    /// Bytes of the completion not accounted to a bio found.
    left: u64,
    /// The walk stopped at `RQ_MAX_BIOS` with bios and bytes left.
    truncated: bool,
    /// A bio found has its submission held (looked up only if asked).
    held: bool,
}

/// Mirrors blk_update_request(): bios are ended in order while they fit
/// in `nr_bytes`; a zero-sized bio (a flush) fits even when `nr_bytes` is
/// 0. Fills `bios` from the first.
#[inline(always)]
fn walk_rq<F: Fields>(
    cfg: &ProbeConfig,
    mut bio: u64,
    nr_bytes: u32,
    bios: &mut [u64; RQ_MAX_BIOS],
    look_up_held: bool,
    fields_of: impl Fn(u64) -> F,
) -> RqWalk {
    unsafe { words::zero::<RQ_MAX_BIOS>(bios.as_mut_ptr()) };
    let mut left = nr_bytes as u64;
    let mut found: u16 = 0;
    let mut held = false;
    for slot in bios.iter_mut() {
        if bio == 0 {
            break;
        }
        let fields = fields_of(bio);
        let size = fields.get::<u32>(cfg.bio.size) as u64;
        if size > left {
            break;
        }
        *slot = bio;
        found += 1;
        held |= look_up_held && pairing::is_held(bio);
        left -= size;
        bio = fields.get(cfg.bio.next);
        if left == 0 {
            break;
        }
    }
    RqWalk {
        found,
        left,
        truncated: found as usize == RQ_MAX_BIOS && bio != 0 && left > 0,
        held,
    }
}

/// `block_bio_complete(struct request_queue *q, struct bio *bio)`: fires for
/// bios the block layer marked for completion tracing (remapped ones).
#[btf_tracepoint(function = "block_bio_complete")]
pub fn tp_block_bio_complete(ctx: BtfTracePointContext) -> u32 {
    done(try_bio_complete(&ctx))
}

#[raw_tracepoint(tracepoint = "block_bio_complete")]
pub fn raw_block_bio_complete(ctx: RawTracePointContext) -> u32 {
    done(try_bio_complete(&ctx))
}

#[inline(always)]
fn try_bio_complete<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let bio = ctx.arg_u64(1);
    let span = cfg.bio.span;
    match room_for(Scratch::of(scratch::BIO_COMPLETE), span) {
        Some(room) => emit_bio_complete(ctx, cfg, bio, &CopiedBioAndBdev::read(&room, bio, span)),
        None => emit_bio_complete(ctx, cfg, bio, &Peeked(bio)),
    }
}

#[inline(always)]
fn emit_bio_complete<C: Hooked, F: BioFields>(
    ctx: &C,
    cfg: &ProbeConfig,
    bio: u64,
    fields: &F,
) -> Option<()> {
    let error = fields.get::<u8>(cfg.bio.status) as i32;
    let (pairing, gendisk) = if cfg.pair_bios != 0 {
        let gendisk: u64 = read(ctx.arg_u64(0), cfg.block.q_disk);
        let row = held_age_row::OUT_BY_BIO;
        (
            pairing::pair(cfg, bio, None, error != 0, gendisk, row),
            gendisk,
        )
    } else {
        (Pairing::Ship, 0)
    };
    if pairing == Pairing::Paired {
        return Some(());
    }
    let (dev, disk) = fields.devs(cfg);
    let header = header(ctx, cfg, kind::BIO_COMPLETE, Stack::Skip);
    let mut entry = reserve::<BioComplete>()?;
    unsafe {
        entry.as_mut_ptr().write(BioComplete {
            header,
            bio,
            sector: fields.get(cfg.bio.sector),
            dev,
            disk_dev: disk,
            size: fields.get(cfg.bio.size),
            error,
        })
    };
    submit(entry, cfg);
    if pairing == Pairing::ShipFirstOfDisk {
        pairing::note_completion_shipped(gendisk);
    }
    Some(())
}

// ---- bio_endio ------------------------------------------------------------

/// `void bio_endio(struct bio *bio)` (checked on 6.1 and 6.18).
#[fentry(function = "bio_endio")]
pub fn enter_bio_endio(ctx: FEntryContext) -> u32 {
    done(try_bio_endio(&ctx))
}

#[kprobe]
pub fn kprobe_bio_endio(ctx: ProbeContext) -> u32 {
    done(try_bio_endio(&ctx))
}

/// How many `bio_chain_endio` parents one `bio_endio` call is followed
/// through; deeper chains are reported up to here.
const MAX_CHAIN: u8 = 4;

#[inline(always)]
fn try_bio_endio<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let bio = ctx.arg_u64(0);
    let header = header(ctx, cfg, kind::BIO_ENDIO, Stack::Take);
    // Counted whether or not the records fit: the exit counts it down.
    handler_depth(header.tid, true);
    let span = cfg.bio.span;
    let room = room_for(Scratch::of(scratch::BIO_ENDIO), span);
    let unreported = match room {
        Some(room) => walk_chain(cfg, bio, header, |bio| {
            CopiedBioAndBdev::read(&room, bio, span)
        }),
        None => walk_chain(cfg, bio, header, Peeked),
    };
    // After the first record's place is taken (or its loss counted).
    note_named(cfg, &header);
    if unreported != 0 && may_log(site::CHAIN_CUT) {
        aya_log_ebpf::warn!(
            ctx,
            "bio_endio: chain walk cut short after {} parents; parent bio {:x} and above are not reported",
            MAX_CHAIN,
            unreported
        );
    }
    Some(())
}

/// bio_endio() loops instead of recursing when the finished bio was
/// chained (bi_end_io == bio_chain_endio): the parent completes inside
/// this call without a bio_endio() of its own. Reports `bio` and each such
/// parent; returns a parent found but left unreported when the walk ends
/// (0: none).
#[inline(always)]
fn walk_chain<F: BioFields>(
    cfg: &ProbeConfig,
    mut bio: u64,
    header: Header,
    fields_of: impl Fn(u64) -> F,
) -> u64 {
    let mut unreported: u64 = 0;
    for depth in 0..MAX_CHAIN {
        unreported = 0;
        let fields = fields_of(bio);
        let end_io: u64 = fields.get(cfg.bio.end_io);
        let private: u64 = fields.get(cfg.bio.private);
        let is_final = emit_endio(cfg, bio, &fields, end_io, private, depth, header);
        if !is_final || cfg.bio_chain_endio == 0 || end_io != cfg.bio_chain_endio || private == 0 {
            break;
        }
        bio = private;
        unreported = bio;
    }
    unreported
}

/// Emits one `BIO_ENDIO`; returns whether this call is the bio's final one.
#[inline(always)]
fn emit_endio<F: BioFields>(
    cfg: &ProbeConfig,
    bio: u64,
    fields: &F,
    end_io: u64,
    private: u64,
    depth: u8,
    header: Header,
) -> bool {
    let flags: u16 = fields.get(cfg.bio.flags);
    let remaining: i32 = fields.get(cfg.bio.remaining);
    // bio_remaining_done(): a chained bio is done when its count drops to 0.
    // Read before the kernel's decrement: two children ending on two CPUs
    // may both read 2; userspace counts the calls to see the last one.
    let chained = cfg.bio.flag_chain_bit < 16 && flags & (1 << cfg.bio.flag_chain_bit) != 0;
    let is_final = !chained || remaining == 1;
    let opf: u32 = fields.get(cfg.bio.opf);
    // A shift past the word is no bit (NO_OFFSET: the kernel has none).
    let integrity = opf.checked_shr(cfg.bio.req_integrity_bit).unwrap_or(0) & 1;
    let blkg: u64 = fields.get(cfg.bio.blkg);
    let (dev, disk) = fields.devs(cfg);
    let Some(mut entry) = reserve::<BioEndio>() else {
        return is_final;
    };
    unsafe {
        entry.as_mut_ptr().write(BioEndio {
            header,
            bio,
            end_io,
            private,
            sector: fields.get(cfg.bio.sector),
            dev,
            disk_dev: disk,
            size: fields.get(cfg.bio.size),
            remaining,
            opf,
            flags,
            status: fields.get(cfg.bio.status),
            is_final: is_final as u8,
            chain_depth: depth,
            has_blkg: (blkg != 0) as u8,
            integrity: integrity as u8,
            _pad: 0,
            _pad2: 0,
        })
    };
    submit_unnamed(entry, cfg);
    is_final
}

#[fexit(function = "bio_endio")]
pub fn exit_bio_endio(ctx: FExitContext) -> u32 {
    done(try_bio_endio_exit(&ctx))
}

#[kretprobe]
pub fn kretprobe_bio_endio(ctx: RetProbeContext) -> u32 {
    done(try_bio_endio_exit(&ctx))
}

/// The pointer only: on exit, the bio may already be freed by its end_io.
#[inline(always)]
fn try_bio_endio_exit<C: Hooked>(ctx: &C) -> Option<()> {
    handler_depth(aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32, false);
    emit_bio_ref(ctx, kind::BIO_ENDIO_EXIT)
}

/// Counts an open `bio_endio` call of `tid` in or out (`flag::HANDLER_MASK`):
/// while one is open, the task's switches say when the handler is off the
/// CPU (stuck-completion-handler). In an interrupt the count lands on the
/// interrupted task, for the interrupt's length: a few extra events.
#[inline(always)]
fn handler_depth(tid: u32, enter: bool) {
    if tid == 0 {
        return;
    }
    let (at, old) = flags_of(tid);
    let new = match (enter, old & flag::HANDLER_MASK) {
        (_, flag::HANDLER_MASK) => old,
        (true, _) => old + flag::HANDLER_ONE,
        (false, 0) => old,
        (false, _) => old - flag::HANDLER_ONE,
    };
    set_flags(at, old, new);
}

/// A record carrying the bio argument alone.
#[inline(always)]
fn emit_bio_ref<C: Hooked>(ctx: &C, kind: u16) -> Option<()> {
    let cfg = config()?;
    let header = header(ctx, cfg, kind, Stack::Skip);
    let mut entry = reserve::<BioRef>()?;
    unsafe {
        entry.as_mut_ptr().write(BioRef {
            header,
            bio: ctx.arg_u64(0),
        })
    };
    submit(entry, cfg);
    Some(())
}

// ---- bio (re)initialisation ----------------------------------------------

/// `void bio_init(struct bio *bio, ...)` and `void bio_reset(struct bio *bio,
/// ...)`: a bio starts a new life at this address, whatever the previous one
/// did (checked on 6.1 and 6.18).
#[fentry(function = "bio_init")]
pub fn enter_bio_init(ctx: FEntryContext) -> u32 {
    done(try_bio_init(&ctx))
}

#[kprobe]
pub fn kprobe_bio_init(ctx: ProbeContext) -> u32 {
    done(try_bio_init(&ctx))
}

#[fentry(function = "bio_reset")]
pub fn enter_bio_reset(ctx: FEntryContext) -> u32 {
    done(try_bio_init(&ctx))
}

#[kprobe]
pub fn kprobe_bio_reset(ctx: ProbeContext) -> u32 {
    done(try_bio_init(&ctx))
}

#[inline(always)]
fn try_bio_init<C: Hooked>(ctx: &C) -> Option<()> {
    emit_bio_ref(ctx, kind::BIO_INIT)
}

// ---- disks ----------------------------------------------------------------

/// `void del_gendisk(struct gendisk *disk)` (checked on 6.1 and 6.18).
#[fentry(function = "del_gendisk")]
pub fn enter_del_gendisk(ctx: FEntryContext) -> u32 {
    done(try_del_gendisk(&ctx))
}

#[kprobe]
pub fn kprobe_del_gendisk(ctx: ProbeContext) -> u32 {
    done(try_del_gendisk(&ctx))
}

#[fexit(function = "del_gendisk")]
pub fn exit_del_gendisk(ctx: FExitContext) -> u32 {
    done(try_del_gendisk_exit(&ctx))
}

#[kretprobe]
pub fn kretprobe_del_gendisk(ctx: RetProbeContext) -> u32 {
    done(try_del_gendisk_exit(&ctx))
}

#[inline(always)]
fn try_del_gendisk<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let disk = ctx.arg_u64(0);
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    insert_or_count(
        &ENTRY_ARGS,
        ((tid as u64) << 8) | SLOT_DEL_GENDISK,
        disk,
        counter::ARGS_FULL,
    );
    pairing::note_removal(disk);
    emit_disk(ctx, cfg, kind::DEL_GENDISK, disk)
}

#[inline(always)]
fn try_del_gendisk_exit<C: Hooked>(ctx: &C) -> Option<()> {
    let cfg = config()?;
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let key = ((tid as u64) << 8) | SLOT_DEL_GENDISK;
    let stored = unsafe { ENTRY_ARGS.get(key) }.copied().unwrap_or(0);
    let _ = ENTRY_ARGS.remove(key);
    let disk = if C::HOOK == hook::KRETPROBE {
        stored
    } else {
        ctx.arg_u64(0)
    };
    emit_disk(ctx, cfg, kind::DEL_GENDISK_EXIT, disk)
}

/// `ENTRY_ARGS` slot for `del_gendisk`.
const SLOT_DEL_GENDISK: u64 = 3;

#[inline(always)]
fn emit_disk<C: Hooked>(ctx: &C, cfg: &ProbeConfig, kind: u16, disk: u64) -> Option<()> {
    let header = header(ctx, cfg, kind, Stack::Take);
    let mut entry = reserve::<DiskEvent>()?;
    unsafe {
        entry.as_mut_ptr().write(DiskEvent {
            header,
            disk,
            dev: disk_dev(cfg, disk),
            _pad: 0,
        })
    };
    submit(entry, cfg);
    Some(())
}
