//! `bio_endio` calls that keep their CPU and do not return (seed 001).
//!
//! The handler table (`handlers`) knows which `bio_endio` calls are open in
//! which context. A call is reported once it has *run* for
//! `stuck_handler_after`: in interrupt context it cannot leave its CPU, so
//! that is the time since it started; in task context (a workqueue, a
//! thread completing its own I/O) the time its task was switched out, asleep
//! or preempted, does not count. A handler that sleeps for seconds holds
//! up whatever waits for it, but it is not spinning and it does not wedge
//! a CPU: that is not this finding.
//!
//! Only the innermost open call of a context is reported: the outer ones
//! are waiting for it, and its entry stack shows them all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{Ctx, Interest, Invariant};
use crate::engine::actor::{Actor, Exec};
use crate::engine::config::{EngineConfig, Rule};
use crate::engine::facts::{Fact, FactTag};
use crate::engine::finding::{FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::handlers::Call;
use crate::engine::hash::FastMap;
use crate::engine::stats::EngineStats;
use crate::engine::world::World;

#[derive(Clone, Copy, Debug)]
struct Watch {
    call: Call,
    /// The bio's submission, when it was seen.
    submit: Option<Actor>,
    /// Time on CPU before `running_since`.
    ran: u64,
    /// Back on CPU since (None while its task is switched out).
    running_since: Option<u64>,
    /// Time spent switched out.
    off: u64,
    switched_out_at: u64,
    deadline: Option<u64>,
    /// Its deadline passed while a nested call was open: judged again when
    /// it is innermost.
    waiting: bool,
    reported: bool,
}

impl Watch {
    fn ran_until(&self, now: u64) -> u64 {
        self.ran + self.running_since.map_or(0, |s| now.saturating_sub(s))
    }
}

#[derive(Default)]
pub struct StuckHandler {
    watches: FastMap<u64, Watch>,
    /// (deadline, call id), earliest first. Every call sets a deadline and
    /// most return well before it, so entries are not taken out when a
    /// deadline is dropped or moved: an entry counts only while its watch
    /// still has that deadline (see [`StuckHandler::armed`]), and the
    /// others are skipped when they reach the top. The top is always a
    /// live entry, so it is the next deadline.
    timers: BinaryHeap<Reverse<(u64, u64)>>,
}

impl StuckHandler {
    fn entered(&mut self, call: &Call, w: &World, cfg: &EngineConfig) {
        let submit = w
            .bios
            .get(call.bio)
            .filter(|b| b.submitted())
            .map(|b| b.queued());
        let deadline = call.entry.ts.saturating_add(cfg.stuck_handler_after_ns);
        self.watches.insert(
            call.id,
            Watch {
                call: *call,
                submit,
                ran: 0,
                running_since: Some(call.entry.ts),
                off: 0,
                switched_out_at: 0,
                deadline: Some(deadline),
                waiting: false,
                reported: false,
            },
        );
        self.timers.push(Reverse((deadline, call.id)));
    }

    /// Whether timer entry `(at, id)` stands: its call is watched and still
    /// has that deadline. An entry may be there twice (a deadline dropped,
    /// then set to the same time again): judging a call at a deadline
    /// leaves nothing for a second look at that deadline to do.
    fn armed(&self, at: u64, id: u64) -> bool {
        self.watches
            .get(&id)
            .is_some_and(|w| w.deadline == Some(at))
    }

    /// Drops the entries at the top that no longer stand.
    fn drop_stale_timers(&mut self) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if self.armed(at, id) {
                break;
            }
            self.timers.pop();
        }
    }

    fn returned(&mut self, call: &Call, ts: u64, seen_exit: bool, w: &World, ctx: &mut Ctx<'_>) {
        let Some(watch) = self.watches.remove(&call.id) else {
            return;
        };
        if seen_exit && !watch.reported && watch.ran_until(ts) >= ctx.cfg.stuck_handler_after_ns {
            self.report(&watch, ts, true, w, ctx);
        }
        // The context's next call out may have waited for this one.
        let exec = Exec::of(&call.entry);
        if let Some(id) = w.handlers.innermost_id(exec)
            && let Some(outer) = self.watches.get_mut(&id)
            && outer.waiting
        {
            outer.waiting = false;
            let due = outer
                .deadline
                .unwrap_or(ts)
                .max(ts)
                .max(outer.call.entry.ts);
            outer.deadline = Some(due);
            self.timers.push(Reverse((due, id)));
        }
    }

    /// Task `tid`, inside open calls, switched out (`off`) or back in.
    fn switched(&mut self, tid: u32, ts: u64, off: bool, cfg: &EngineConfig) {
        // Few calls are open at once: a scan is cheaper than an index by
        // task kept up to date on every call.
        let task = Exec::Task(tid);
        for (&id, watch) in &mut self.watches {
            if Exec::of(&watch.call.entry) != task {
                continue;
            }
            if off {
                if let Some(since) = watch.running_since.take() {
                    watch.ran += ts.saturating_sub(since);
                    watch.switched_out_at = ts;
                }
                watch.deadline = None;
            } else if watch.running_since.is_none() {
                watch.running_since = Some(ts);
                watch.off += ts.saturating_sub(watch.switched_out_at);
                let left = cfg.stuck_handler_after_ns.saturating_sub(watch.ran);
                let due = ts.saturating_add(left);
                watch.deadline = Some(due);
                self.timers.push(Reverse((due, id)));
            }
        }
    }

    fn fire_due(&mut self, now: u64, w: &World, ctx: &mut Ctx<'_>) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Only an entry that stands (see `armed`).
            let Some(watch) = self.watches.get_mut(&id) else {
                continue;
            };
            if watch.deadline != Some(at) {
                continue;
            }
            watch.deadline = None;
            if watch.reported || watch.running_since.is_none() {
                continue;
            }
            if w.handlers.innermost_id(Exec::of(&watch.call.entry)) != Some(id) {
                // A nested call is open: it is the one stuck, or it will
                // return and leave this one to be judged when innermost.
                watch.deadline = Some(at);
                watch.waiting = true;
                continue;
            }
            if watch.ran_until(at) < ctx.cfg.stuck_handler_after_ns {
                continue;
            }
            watch.reported = true;
            let watch = *watch;
            self.report(&watch, at, false, w, ctx);
        }
    }

    fn report(&self, o: &Watch, at: u64, returned: bool, w: &World, ctx: &mut Ctx<'_>) {
        let call = &o.call;
        ctx.report(Rule::StuckCompletionHandler, &w.loss, call.seen, || {
            let mut object = Object::new(ObjectKind::Bio, call.bio);
            object.dev = Some(call.dev);
            object.disk = (call.disk != call.dev).then_some(call.disk);
            object.end_io = (!call.end_io.is_null()).then_some(call.end_io);
            let mut b = FindingBuilder::new(FindingKind::StuckCompletionHandler, at, object);
            let handler = b.side("handler", &call.entry);
            if let Some(submit) = &o.submit {
                let submitter = b.side("submitter", submit);
                b.act(
                    submitter,
                    submit,
                    format!("submits bio {} to {}", call.bio, call.dev),
                );
            }
            b.act(
                handler,
                &call.entry,
                format!(
                    "bio_endio({}) on cpu {}: calls end_io {}",
                    call.bio, call.entry.cpu, call.end_io
                ),
            );
            let ran = duration(o.ran_until(at));
            let off = if o.off > 0 {
                format!(" (switched out for {} of it)", duration(o.off))
            } else {
                String::new()
            };
            let took = duration(at.saturating_sub(call.entry.ts));
            let state = if returned {
                format!("bio_endio returns after {took}{off}")
            } else {
                format!("bio_endio still running after {took}{off}")
            };
            b.step(handler, at, state, None);
            let (context, consequence) = if call.entry.irq {
                (
                    "in interrupt context",
                    "a handler spinning in an interrupt holds its CPU with interrupts off and \
                     ends in a hard lockup (the watchdog fires at 10 s)",
                )
            } else {
                (
                    "in task context, without being switched out",
                    "a handler spinning in a task starves its CPU (the soft-lockup watchdog \
                     fires at 20 s) and every completion queued behind it",
                )
            };
            b.finish(format!(
                "the completion handler of bio {} (end_io {}) on cpu {} {} {ran} {context}: \
                 {consequence}; look for the lock or bit it waits on in its stack",
                call.bio,
                call.end_io,
                call.entry.cpu,
                if returned {
                    "ran for"
                } else {
                    "has been running for"
                },
            ))
        });
    }
}

impl Invariant for StuckHandler {
    fn interest(&self) -> Interest {
        Interest {
            events: &[],
            facts: &[
                FactTag::HandlerEntered,
                FactTag::HandlerReturned,
                FactTag::HandlerOffCpu,
            ],
            deadlines: true,
        }
    }

    fn on_fact(&mut self, fact: &Fact, w: &mut World, ctx: &mut Ctx<'_>) {
        match fact {
            Fact::HandlerEntered { call } => self.entered(call, w, ctx.cfg),
            Fact::HandlerReturned {
                call,
                ts,
                seen_exit,
            } => self.returned(call, *ts, *seen_exit, w, ctx),
            Fact::HandlerOffCpu { tid, ts, off } => self.switched(*tid, *ts, *off, ctx.cfg),
            _ => {}
        }
        self.drop_stale_timers();
    }

    fn next_deadline(&self, _w: &World, _cfg: &EngineConfig) -> Option<u64> {
        self.timers.peek().map(|Reverse((d, _))| *d)
    }

    fn fire(&mut self, now: u64, w: &mut World, ctx: &mut Ctx<'_>) {
        self.fire_due(now, w, ctx);
        self.drop_stale_timers();
    }

    fn stats(&self, stats: &mut EngineStats) {
        stats.live.open_handlers = self.watches.len() as u64;
    }
}
