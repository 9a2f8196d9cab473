//! md (module `md_mod`): superblock writes and array teardown.
//!
//! aya cannot load fentry programs against module BTF, so these are kprobes
//! only; userspace attaches them when `md_mod` is (or becomes) loaded.
//! Checked on Debian 6.1's md_mod.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use detector_common::{MdEvent, ProbeConfig, config::NO_OFFSET, counter, kind, teardown};

use super::done;
use crate::{
    context::Hooked,
    emit::{Stack, header, reserve, submit},
    kernel::{config, read},
    maps::{ENTRY_ARGS, MD_WRITES, insert_or_count},
};

/// `ENTRY_ARGS` slot for `md_super_wait`.
const SLOT_SUPER_WAIT: u64 = 2;
/// `ENTRY_ARGS` slots for `md_super_write`'s sector and rdev, kept until
/// the bio it builds is submitted (by the same task, before it returns).
const SLOT_SUPER_WRITE_SECTOR: u64 = 4;
const SLOT_SUPER_WRITE_RDEV: u64 = 5;

#[inline(always)]
fn entry_key(slot: u64) -> u64 {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    ((tid as u64) << 8) | slot
}

#[inline(always)]
fn pending_writes(cfg: &ProbeConfig, mddev: u64) -> i32 {
    if mddev == 0 || cfg.md.mddev_pending_writes == NO_OFFSET {
        return -1;
    }
    read(mddev, cfg.md.mddev_pending_writes)
}

/// The fields of an `MdEvent` a hook knows; the rest are zero.
#[derive(Clone, Copy, Default)]
struct Md {
    mddev: u64,
    rdev: u64,
    bio: u64,
    sector: u64,
    size: u32,
    stage: u8,
    status: u8,
}

#[inline(always)]
fn emit<C: Hooked>(ctx: &C, cfg: &ProbeConfig, kind: u16, md: Md) -> Option<()> {
    let header = header(ctx, cfg, kind, Stack::Take);
    let mut entry = reserve::<MdEvent>()?;
    // Volatile: a teardown's zero fields would otherwise become one
    // `memset` call (see `words`).
    unsafe {
        core::ptr::write_volatile(
            entry.as_mut_ptr(),
            MdEvent {
                header,
                mddev: md.mddev,
                rdev: md.rdev,
                bio: md.bio,
                sector: md.sector,
                size: md.size,
                pending_writes: pending_writes(cfg, md.mddev),
                stage: md.stage,
                status: md.status,
                _pad: 0,
                _pad2: 0,
            },
        )
    };
    submit(entry, cfg);
    Some(())
}

/// `void md_super_write(struct mddev *mddev, struct md_rdev *rdev,
/// sector_t sector, int size, struct page *page)`: bumps
/// `mddev->pending_writes` and submits without waiting.
#[kprobe]
pub fn kprobe_md_super_write(ctx: ProbeContext) -> u32 {
    done(try_super_write(&ctx))
}

#[inline(always)]
fn try_super_write(ctx: &ProbeContext) -> Option<()> {
    let cfg = config()?;
    let md = Md {
        mddev: ctx.arg_u64(0),
        rdev: ctx.arg_u64(1),
        sector: ctx.arg_u64(2),
        size: ctx.arg_u64(3) as u32,
        ..Md::default()
    };
    let full = counter::ARGS_FULL;
    insert_or_count(
        &ENTRY_ARGS,
        entry_key(SLOT_SUPER_WRITE_SECTOR),
        md.sector,
        full,
    );
    insert_or_count(&ENTRY_ARGS, entry_key(SLOT_SUPER_WRITE_RDEV), md.rdev, full);
    emit(ctx, cfg, kind::MD_SUPER_WRITE, md)
}

/// Called for every bio submission: a bio submitted by a task inside
/// `md_super_write`, for the same rdev (`bi_private`), is that write's, and
/// its sector is remembered for `super_written`. (`md_super_write` may
/// return early without a bio, for a faulty rdev: the rdev check keeps its
/// stale entry from claiming an unrelated bio.) Returns whether it is.
#[inline(always)]
pub fn note_submission(cfg: &ProbeConfig, bio: u64, private: u64) -> bool {
    if cfg.md.rdev_mddev == NO_OFFSET {
        return false; // md_mod is not loaded
    }
    let rdev_key = entry_key(SLOT_SUPER_WRITE_RDEV);
    let sector_key = entry_key(SLOT_SUPER_WRITE_SECTOR);
    let (Some(&rdev), Some(&sector)) = (unsafe { ENTRY_ARGS.get(rdev_key) }, unsafe {
        ENTRY_ARGS.get(sector_key)
    }) else {
        return false;
    };
    if private != rdev {
        return false;
    }
    let _ = ENTRY_ARGS.remove(rdev_key);
    let _ = ENTRY_ARGS.remove(sector_key);
    insert_or_count(&MD_WRITES, bio, sector, counter::ARGS_FULL);
    true
}

/// `static void super_written(struct bio *bio)`: the end_io of those writes;
/// `bio->bi_private` is the rdev, `rdev->mddev` the array. The sector is the
/// one `md_super_write` was given (drivers/md/md.c, 6.1): the bio's own has
/// been remapped to the whole disk and advanced by its completion.
#[kprobe]
pub fn kprobe_super_written(ctx: ProbeContext) -> u32 {
    done(try_super_written(&ctx))
}

#[inline(always)]
fn try_super_written(ctx: &ProbeContext) -> Option<()> {
    let cfg = config()?;
    let bio = ctx.arg_u64(0);
    let rdev: u64 = read(bio, cfg.bio.private);
    let sector = match unsafe { MD_WRITES.get(bio) } {
        Some(&sector) => {
            let _ = MD_WRITES.remove(bio);
            sector
        }
        None => read(bio, cfg.bio.sector),
    };
    let md = Md {
        mddev: read(rdev, cfg.md.rdev_mddev),
        rdev,
        bio,
        sector,
        status: read(bio, cfg.bio.status),
        ..Md::default()
    };
    emit(ctx, cfg, kind::MD_SUPER_WRITTEN, md)
}

/// `int md_super_wait(struct mddev *mddev)` (void before 5.x).
#[kprobe]
pub fn kprobe_md_super_wait(ctx: ProbeContext) -> u32 {
    done(try_super_wait(&ctx))
}

#[inline(always)]
fn try_super_wait(ctx: &ProbeContext) -> Option<()> {
    let cfg = config()?;
    let mddev = ctx.arg_u64(0);
    insert_or_count(
        &ENTRY_ARGS,
        entry_key(SLOT_SUPER_WAIT),
        mddev,
        counter::ARGS_FULL,
    );
    let md = Md {
        mddev,
        ..Md::default()
    };
    emit(ctx, cfg, kind::MD_SUPER_WAIT, md)
}

#[kretprobe]
pub fn kretprobe_md_super_wait(ctx: RetProbeContext) -> u32 {
    done(try_super_wait_exit(&ctx))
}

#[inline(always)]
fn try_super_wait_exit(ctx: &RetProbeContext) -> Option<()> {
    let cfg = config()?;
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let key = ((tid as u64) << 8) | SLOT_SUPER_WAIT;
    let mddev = unsafe { ENTRY_ARGS.get(key) }.copied()?;
    let _ = ENTRY_ARGS.remove(key);
    let md = Md {
        mddev,
        ..Md::default()
    };
    emit(ctx, cfg, kind::MD_SUPER_WAIT_EXIT, md)
}

#[inline(always)]
fn teardown_step(ctx: &ProbeContext, mddev: u64, stage: u8) -> Option<()> {
    let cfg = config()?;
    if mddev == 0 {
        return None;
    }
    let md = Md {
        mddev,
        stage,
        ..Md::default()
    };
    emit(ctx, cfg, kind::MD_TEARDOWN, md)
}

/// `void __md_stop_writes(struct mddev *mddev)`: flushes bitmap and sb.
#[kprobe]
pub fn kprobe_md_stop_writes(ctx: ProbeContext) -> u32 {
    done(teardown_step(
        &ctx,
        ctx.arg_u64(0),
        teardown::MD_STOP_WRITES,
    ))
}

/// `static void __md_stop(struct mddev *mddev)`: frees the personality.
#[kprobe]
pub fn kprobe_md_stop(ctx: ProbeContext) -> u32 {
    done(teardown_step(&ctx, ctx.arg_u64(0), teardown::MD_STOP))
}

/// `static void mddev_detach(struct mddev *mddev)`.
#[kprobe]
pub fn kprobe_mddev_detach(ctx: ProbeContext) -> u32 {
    done(teardown_step(&ctx, ctx.arg_u64(0), teardown::MDDEV_DETACH))
}

/// `void md_bitmap_free(struct bitmap *bitmap)`; the mddev is
/// `bitmap->mddev` (a NULL bitmap is a no-op there and skipped here).
#[kprobe]
pub fn kprobe_md_bitmap_free(ctx: ProbeContext) -> u32 {
    let mddev = config().map(|cfg| read::<u64>(ctx.arg_u64(0), cfg.md.bitmap_mddev));
    done(teardown_step(
        &ctx,
        mddev.unwrap_or(0),
        teardown::BITMAP_FREE,
    ))
}

/// `static void md_kobj_release(struct kobject *ko)`: the mddev's memory is
/// about to go; `ko` is `&mddev->kobj`.
#[kprobe]
pub fn kprobe_md_kobj_release(ctx: ProbeContext) -> u32 {
    let kobj = ctx.arg_u64(0);
    let mddev = config().and_then(|cfg| {
        (cfg.md.mddev_kobj != NO_OFFSET && kobj != 0).then(|| kobj - cfg.md.mddev_kobj as u64)
    });
    done(teardown_step(
        &ctx,
        mddev.unwrap_or(0),
        teardown::KOBJ_RELEASE,
    ))
}
