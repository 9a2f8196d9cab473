//! Submitted bios that never complete.
//!
//! A bio is judged `lost_io_after` past its latest (re)submission, if it has
//! shown no completion activity at all: a `bio_endio` that was not final
//! (a chained bio waiting for its children) means the device answered, and
//! the children are judged on their own. A resubmission (stacking,
//! splitting, requeue) restarts the clock.
//!
//! Completions must be observable on the bio's disk, or every bio there
//! would look lost: with `bio_endio` hooked they always are; with
//! tracepoints only, a disk counts once a completion was seen for a bio
//! submitted to it (bio-based devices on kernels that never trace their
//! completions stay unjudged). Unjudged bios are counted as indeterminate.

use super::Ctx;
use crate::engine::bios::{Bio, Bios};
use crate::engine::config::Rule;
use crate::engine::finding::{FindingBuilder, FindingKind, duration};

pub fn next_deadline(bios: &Bios, after: u64) -> Option<u64> {
    bios.quiet
        .first_key_value()
        .map(|((ts, _), _)| ts.saturating_add(after))
}

/// Judges bios whose deadline is at or before `now`.
pub fn fire(now: u64, bios: &mut Bios, endio_hooked: bool, ctx: &mut Ctx<'_>) {
    let after = ctx.cfg.lost_io_after_ns;
    while let Some((&key, &addr)) = bios.quiet.first_key_value() {
        let deadline = key.0.saturating_add(after);
        if deadline > now {
            break;
        }
        bios.quiet.remove(&key);
        let Some(bio) = bios.get(addr).copied().filter(|b| b.life == key.1) else {
            continue;
        };
        if !bio.in_flight() || bio.lost_reported || bio.endio_activity {
            continue;
        }
        bios.mark_lost_reported(addr);
        if !endio_hooked && !bios.disk(bio.disk).completions_seen {
            if ctx.enabled(Rule::LostIoCompletion) {
                ctx.indeterminate(Rule::LostIoCompletion);
            }
            continue;
        }
        let tainted = ctx.tainted(bio.seen);
        ctx.report(Rule::LostIoCompletion, tainted, || finding(&bio, deadline));
    }
}

fn finding(bio: &Bio, at: u64) -> crate::engine::finding::Finding {
    let mut b = FindingBuilder::new(FindingKind::LostIoCompletion, at, bio.object(bio.end_io));
    let submitter = b.side("submitter", &bio.queued);
    b.act(
        submitter,
        &bio.queued,
        format!(
            "submits bio {} to {} (sector {}, {} bytes)",
            bio.addr, bio.dev, bio.sector, bio.size
        ),
    );
    if bio.resubmits > 0 {
        b.step(
            submitter,
            bio.last_queued,
            format!("resubmitted ({} time(s) in all)", bio.resubmits),
            None,
        );
    }
    let waited = duration(at.saturating_sub(bio.last_queued));
    b.step(submitter, at, format!("no completion after {waited}"), None);
    b.finish(format!(
        "bio {} submitted to {} by {} has had no completion for {waited}: the driver lost it \
         (or the device is hung or retrying); whoever waits for it waits forever",
        bio.addr,
        bio.dev,
        bio.queued.who()
    ))
}
