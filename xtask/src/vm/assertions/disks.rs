//! Issue 8's scenarios on real disks and drivers (scsi_debug, dm-thin,
//! dm-zero, dm-linear, loop): what the kernel did that a tracer may take
//! for a race. Each check proves the behaviour really happened, with the
//! scenario's own devices (noted by its steps beside the module's verdict).

use std::collections::HashMap;

use anyhow::{Context as _, Result, ensure};

use super::{Ctx, Life, bio_lives, life_of, module_addr, module_number, module_word, stack_shows};
use crate::vm::events::Event;

/// `REQ_OP_MASK` of `bi_opf`, and the read operation.
const REQ_OP_MASK: i64 = 0xff;
const REQ_OP_READ: i64 = 0;

fn is_read(e: &Event) -> bool {
    e.int("opf")
        .is_some_and(|opf| opf & REQ_OP_MASK == REQ_OP_READ)
}

/// The bios `comm` submitted to disk `dev` ("MAJ:MIN"), reads only if
/// `reads`.
fn submitted_by<'a>(ctx: &Ctx<'a>, comm: &str, dev: &str, reads: bool) -> Vec<&'a Event> {
    ctx.trace
        .of_kind("bio_queue")
        .filter(|e| e.comm == comm && e.text("disk") == Some(dev) && (!reads || is_read(e)))
        .collect()
}

/// dd's direct reads from the scsi_debug disk, each with every bio_endio
/// of its life; as many as the steps say dd read.
fn dd_reads<'a, 'b>(
    ctx: &Ctx<'a>,
    lives: &'b HashMap<u64, Vec<Life<'a>>>,
) -> Result<Vec<(&'a Event, &'b [&'a Event])>> {
    let disk = module_word(ctx, "disk ")?;
    let want = module_number(ctx, "reads ")? as usize;
    let reads = submitted_by(ctx, "dd", disk, true);
    ensure!(
        reads.len() == want,
        "expected dd's {want} reads from {disk}, saw {}",
        reads.len()
    );
    reads
        .into_iter()
        .map(|q| {
            let life =
                life_of(lives, q).with_context(|| format!("no life begins at {}", q.describe()))?;
            Ok((q, life.endios.as_slice()))
        })
        .collect()
}

/// integrity_reads: every read bio is ended twice: by the request's
/// completion, then by kintegrityd's work item (bio_integrity_verify_fn,
/// which tail-calls bio_endio: its caller on the stack is the workqueue).
pub fn integrity_reads(ctx: &Ctx) -> Result<()> {
    ensure!(
        module_word(ctx, "read_verify ")? == "1",
        "read_verify is not on"
    );
    let lives = bio_lives(ctx.trace);
    for (q, endios) in dd_reads(ctx, &lives)? {
        ensure!(
            endios.len() == 2,
            "expected 2 bio_endio of dd's read, saw {} after {}",
            endios.len(),
            q.describe()
        );
        let (first, second) = (endios[0], endios[1]);
        stack_shows(first, "blk_update_request")?;
        ensure!(
            second.comm.starts_with("kworker") && !second.called_from("blk_update_request"),
            "the second bio_endio is not a work item's: {}",
            second.describe()
        );
        stack_shows(second, "process_one_work")?;
    }
    Ok(())
}

/// integrity_reads_noverify: one bio_endio per read bio.
pub fn integrity_reads_noverify(ctx: &Ctx) -> Result<()> {
    ensure!(
        module_word(ctx, "read_verify ")? == "0",
        "read_verify is not off"
    );
    let lives = bio_lives(ctx.trace);
    for (q, endios) in dd_reads(ctx, &lives)? {
        ensure!(
            endios.len() == 1,
            "expected 1 bio_endio of dd's read, saw {} after {}",
            endios.len(),
            q.describe()
        );
    }
    Ok(())
}

/// The bio_endio calls with `end_io` that ended a bio at an address where
/// the one before ended too, with no submission or initialisation seen in
/// between: address reuse the tracer cannot see. `after_submission`: only
/// where that one before had been seen submitted.
fn unsubmitted_reuses<'a>(
    lives: &HashMap<u64, Vec<Life<'a>>>,
    end_io: u64,
    after_submission: bool,
) -> Vec<&'a Event> {
    let mut reuses: Vec<&Event> = lives
        .values()
        .flatten()
        .filter(|l| {
            !after_submission
                || l.start
                    .is_some_and(|s| s.kind == "bio_queue" && s.addr("end_io") == Some(end_io))
        })
        .flat_map(|l| {
            l.endios
                .iter()
                .copied()
                .filter(|e| e.addr("end_io") == Some(end_io))
                .skip(1)
        })
        .collect();
    reuses.sort_by_key(|e| e.ts);
    reuses
}

/// dm_thin_unprovisioned: dd's reads of the thin device; the clones of
/// provisioned blocks submitted, and clones of unprovisioned ones ended by
/// the pool's worker at the addresses of submitted ones, never submitted.
pub fn dm_thin_unprovisioned(ctx: &Ctx) -> Result<()> {
    let thin = module_word(ctx, "thin ")?;
    let want = module_number(ctx, "reads ")? as usize;
    let clone_endio = module_addr(ctx, "clone_endio ")?;
    let reads = submitted_by(ctx, "dd", thin, true);
    ensure!(
        reads.len() == want,
        "expected dd's {want} reads from {thin}, saw {}",
        reads.len()
    );
    let lives = bio_lives(ctx.trace);
    let reuses = unsubmitted_reuses(&lives, clone_endio, true);
    // half the reads are unprovisioned; the slab may hand out another
    // address now and then
    ensure!(
        reuses.len() >= want / 4,
        "only {} of the {} unprovisioned reads' clones ended at a submitted clone's address \
         without a submission",
        reuses.len(),
        want / 2
    );
    for e in &reuses {
        ensure!(
            e.comm.starts_with("kworker"),
            "a clone not ended by the pool's worker: {}",
            e.describe()
        );
        stack_shows(e, "do_worker")?;
    }
    Ok(())
}

/// dm_zero_linear: clone addresses that dm-linear submitted (to the loop
/// device) and that completed, ended again later by dm-zero with the same
/// end_io and no submission in between.
pub fn dm_zero_linear(ctx: &Ctx) -> Result<()> {
    let pairs = module_number(ctx, "pairs ")? as usize;
    let clone_endio = module_addr(ctx, "clone_endio ")?;
    for dev in [module_word(ctx, "zero ")?, module_word(ctx, "linear ")?] {
        let reads = submitted_by(ctx, "dd", dev, true);
        ensure!(
            reads.len() == pairs,
            "expected dd's {pairs} reads from {dev}, saw {}",
            reads.len()
        );
    }
    let lives = bio_lives(ctx.trace);
    let reused = unsubmitted_reuses(&lives, clone_endio, true);
    ensure!(
        !reused.is_empty(),
        "no dm-linear clone address was ended again without a submission"
    );
    for e in &reused {
        stack_shows(e, "zero_map")?;
    }
    Ok(())
}

/// split_reuse: dd's 64 KiB reads, and split fronts (bi_end_io
/// bio_chain_endio) ended at addresses an earlier front used, never
/// submitted.
pub fn split_reuse(ctx: &Ctx) -> Result<()> {
    let disk = module_word(ctx, "disk ")?;
    let want = module_number(ctx, "reads ")? as usize;
    let chain_endio = module_addr(ctx, "bio_chain_endio ")?;
    ensure!(
        module_word(ctx, "max_sectors_kb ")? == "4",
        "the disk takes more than 4 KiB per request"
    );
    // the rest of each read is submitted again after every split
    let reads: Vec<&Event> = submitted_by(ctx, "dd", disk, true)
        .into_iter()
        .filter(|q| q.int("size") == Some(65536))
        .collect();
    ensure!(
        reads.len() == want,
        "expected dd's {want} reads of 64 KiB from {disk}, saw {}",
        reads.len()
    );
    let lives = bio_lives(ctx.trace);
    let fronts_seen = lives
        .values()
        .flatten()
        .flat_map(|l| &l.endios)
        .filter(|e| e.addr("end_io") == Some(chain_endio))
        .count();
    // 16 fronts per read (the last piece is the original bio)
    ensure!(
        fronts_seen >= want * 15,
        "expected {} split fronts ended, saw {fronts_seen}",
        want * 15
    );
    let reuses = unsubmitted_reuses(&lives, chain_endio, false);
    ensure!(
        !reuses.is_empty(),
        "no split front was ended at a reused address"
    );
    Ok(())
}

/// delete_during_io: the disk's del_gendisk, and bios the I/O loop
/// submitted before it (they waited in bio_queue_enter on the frozen
/// queue) that failed after it began, in their submitter's own context,
/// with an error.
pub fn delete_during_io(ctx: &Ctx) -> Result<()> {
    let disk = module_word(ctx, "disk ")?;
    let del = ctx
        .trace
        .of_kind("del_gendisk")
        .find(|e| e.text("dev") == Some(disk))
        .with_context(|| format!("no del_gendisk of {disk}"))?;
    let lives = bio_lives(ctx.trace);
    let failed_in_submission: Vec<&Event> = submitted_by(ctx, "ioloop", disk, false)
        .into_iter()
        .filter(|q| q.ts < del.ts)
        .filter_map(|q| {
            let done = *life_of(&lives, q)?.endios.first()?;
            (done.tid == q.tid && done.ts > del.ts && done.int("status").unwrap_or(0) != 0)
                .then_some(done)
        })
        .collect();
    ensure!(
        !failed_in_submission.is_empty(),
        "no bio submitted before del_gendisk ({}) failed in its submission after it began",
        del.describe()
    );
    for done in failed_in_submission {
        stack_shows(done, "blk_mq_submit_bio")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::events::Trace;

    #[test]
    fn counts_ends_at_a_reused_address_without_a_submission() {
        let lines = [
            // 0x10: submitted with end_io 0xe, ended, then ended twice more
            r#"{"ts":1,"tid":1,"event":"bio_queue","bio":"0x10","end_io":"0xe"}"#,
            r#"{"ts":2,"tid":2,"event":"bio_endio","bio":"0x10","end_io":"0xe"}"#,
            r#"{"ts":3,"tid":2,"event":"bio_endio","bio":"0x10","end_io":"0xe"}"#,
            r#"{"ts":4,"tid":2,"event":"bio_endio","bio":"0x10","end_io":"0xe"}"#,
            // 0x20: never seen submitted, ended twice
            r#"{"ts":5,"tid":2,"event":"bio_endio","bio":"0x20","end_io":"0xe"}"#,
            r#"{"ts":6,"tid":2,"event":"bio_endio","bio":"0x20","end_io":"0xe"}"#,
            // 0x30: another end_io
            r#"{"ts":7,"tid":2,"event":"bio_endio","bio":"0x30","end_io":"0xf"}"#,
            r#"{"ts":8,"tid":2,"event":"bio_endio","bio":"0x30","end_io":"0xf"}"#,
        ];
        let trace = Trace::parse(&lines.join("\n")).unwrap();
        let lives = bio_lives(&trace);
        let ts = |v: Vec<&Event>| v.iter().map(|e| e.ts).collect::<Vec<_>>();
        assert_eq!(ts(unsubmitted_reuses(&lives, 0xe, false)), [3, 4, 6]);
        assert_eq!(ts(unsubmitted_reuses(&lives, 0xe, true)), [3, 4]);
    }
}
