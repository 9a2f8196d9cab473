//! A bio completes once per life (seed 002).
//!
//! `bio-double-complete`: a second *final* `bio_endio` of one bio with no
//! submission or `bio_init`/`bio_reset` in between. Only `bio_endio` can
//! show it: the completion tracepoints are not per-call facts (a request in
//! a flush sequence reports its bios to `block_rq_complete` twice, once for
//! the data and once at the end, and `block_bio_complete` fires once per bio
//! whatever happens), so a repeat from them is ignored.
//!
//! The kernel itself calls `bio_endio` twice on one bio, and new bios
//! appear at old addresses without any call we can see; the bio table
//! (`bios::Bios::complete`) tells those apart and hands this rule only
//! what is left:
//! - integrity-verified reads: the first call defers `bi_end_io` to
//!   kintegrityd (`__bio_integrity_endio`), whose worker frees the payload,
//!   clearing `REQ_INTEGRITY`, and calls `bio_endio` again;
//! - stacking drivers that hook `bi_end_io`: the hook restores the saved
//!   `bi_end_io` and calls `bio_endio` again from inside the first call;
//!   a third call, with the restored handler, is a double completion;
//! - a new bio at a completed bio's address (dm clones of unprovisioned
//!   thin blocks, dm-zero, split halves, passthrough bios): another
//!   `bi_end_io`, `bi_private`, device or position, or a `bi_blkg` set up
//!   again after the final completion's `bio_uninit()` cleared it.
//!
//! A life first seen completing (no submission seen) is only judged when
//! `bi_blkg` says so: set at its first completion, clear at the second.

use super::{Ctx, Interest, Invariant};
use crate::engine::bios::{Completion, Done};
use crate::engine::config::Rule;
use crate::engine::facts::{Fact, FactTag};
use crate::engine::finding::{FindingBuilder, FindingKind, duration};
use crate::engine::world::World;

pub struct BioDoubleComplete;

impl BioDoubleComplete {
    fn completed_again(&self, kept: &Done, again: &Completion, w: &World, ctx: &mut Ctx<'_>) {
        let (bio, first) = (&kept.bio, kept.done);
        ctx.report(Rule::BioDoubleComplete, &w.loss, bio.seen, || {
            let object = bio.object(first.end_io);
            let mut b = FindingBuilder::new(FindingKind::BioDoubleComplete, again.actor.ts, object);
            let one = b.side("first completion", &first.actor);
            let two = b.side("second completion", &again.actor);
            if bio.submitted() {
                b.act(one, &bio.queued(), bio.submitted_by());
            }
            b.act(
                one,
                &first.actor,
                format!("bio_endio({}): final, status {}", bio.addr, first.status),
            );
            let nothing_between = if bio.submitted() {
                "no resubmission in between"
            } else {
                "bi_blkg cleared by the first: not set up again"
            };
            b.act(
                two,
                &again.actor,
                format!(
                    "bio_endio({}) again: final, status {} ({nothing_between})",
                    bio.addr, again.status
                ),
            );
            b.finish(format!(
                "bio {} ran its final completion twice ({} apart) without being submitted \
                 again: its end_io {} ran on a bio its owner may already have freed and reused \
                 (memory corruption far from the culprit)",
                bio.addr,
                duration(again.actor.ts.saturating_sub(first.actor.ts)),
                first.end_io
            ))
        });
    }
}

impl Invariant for BioDoubleComplete {
    fn interest(&self) -> Interest {
        Interest {
            events: &[],
            facts: &[FactTag::CompletedAgain],
            deadlines: false,
        }
    }

    fn on_fact(&mut self, fact: &Fact, w: &mut World, ctx: &mut Ctx<'_>) {
        if let Fact::CompletedAgain { first, again } = fact {
            self.completed_again(first, again, w, ctx);
        }
    }
}
