//! `bio_endio` calls that do not return (seed 001).
//!
//! A completion handler runs in the context that called `bio_endio`: an
//! interrupt (keyed by CPU: interrupts do not migrate, and tid 0 is shared
//! by every idle CPU) or a task (keyed by tid: a task can be preempted and
//! resume on another CPU). Calls nest: dm's `clone_endio` ends the original
//! bio from inside the clone's `bio_endio` (seed 001 shows four levels), so
//! each context holds a stack of open calls.
//!
//! Exits can go missing (a kretprobe out of instances): a call is also
//! known to have returned when its context is later seen at the same depth
//! or shallower (a stack pointer at or above the call's), and an
//! interrupt's calls when its CPU runs task code again.
//!
//! Only the innermost open call of a context is reported: the outer ones
//! are waiting for it, and its entry stack shows them all.

use std::collections::BTreeMap;

use super::Ctx;
use crate::engine::actor::{Actor, Exec as Key};
use crate::engine::bios::Bio;
use crate::engine::config::Rule;
use crate::engine::finding::{FindingBuilder, FindingKind, Object, ObjectKind, duration};
use crate::engine::hash::FastMap;
use crate::engine::loss::Seen;
use crate::event::{Addr, Dev};

#[derive(Clone, Copy, Debug)]
struct Open {
    id: u64,
    bio: Addr,
    end_io: Addr,
    dev: Dev,
    disk: Dev,
    entry: Actor,
    /// The bio's submission, when it was seen.
    submit: Option<Actor>,
    seen: Seen,
    reported: bool,
    /// Its deadline passed while a nested call was open: judged again
    /// when it is innermost.
    waiting: bool,
}

/// A `bio_endio` entry.
pub struct Entry {
    pub bio: Addr,
    pub end_io: Addr,
    pub dev: Dev,
    pub disk: Dev,
}

pub struct StuckHandler {
    after: u64,
    max_depth: usize,
    open: FastMap<Key, Vec<Open>>,
    /// (deadline, id) -> context.
    timers: BTreeMap<(u64, u64), Key>,
    next_id: u64,
    pub open_count: usize,
    /// Calls closed without their exit event.
    pub missed_exits: u64,
    pub evicted: u64,
}

impl StuckHandler {
    pub fn new(after: u64, max_depth: usize) -> Self {
        Self {
            after,
            max_depth: max_depth.max(1),
            open: FastMap::default(),
            timers: BTreeMap::new(),
            next_id: 0,
            open_count: 0,
            missed_exits: 0,
            evicted: 0,
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first_key_value().map(|((d, _), _)| *d)
    }

    /// A new threshold: open calls' deadlines move with it, keeping each
    /// timer's key at `entry + after` where the removals look for it.
    pub fn set_after(&mut self, after: u64) {
        let old = std::mem::replace(&mut self.after, after);
        self.timers = std::mem::take(&mut self.timers)
            .into_iter()
            .map(|((deadline, id), key)| {
                (
                    (deadline.saturating_sub(old).saturating_add(after), id),
                    key,
                )
            })
            .collect();
    }

    /// What any event says about open calls: a CPU running task code has
    /// left its interrupts; a task seen above a call's depth returned.
    pub fn observe(&mut self, actor: &Actor) {
        if self.open_count == 0 {
            return;
        }
        let now = actor.ts;
        if !actor.irq && actor.tid != 0 {
            self.close_where(Key::Cpu(actor.cpu), now, |_| true);
            if actor.sp != 0 {
                self.close_where(Key::Task(actor.tid), now, |o| actor.sp > o.entry.sp);
            }
        } else if actor.irq && actor.sp != 0 {
            self.close_where(Key::Cpu(actor.cpu), now, |o| actor.sp > o.entry.sp);
        }
    }

    fn close_where(&mut self, key: Key, now: u64, gone: impl Fn(&Open) -> bool) {
        let Some(stack) = self.open.get_mut(&key) else {
            return;
        };
        // Calls nest, so the returned ones are a suffix... except that
        // `gone` may also hold for outer calls; close from the outermost
        // one that is gone.
        let Some(first) = stack.iter().position(&gone) else {
            return;
        };
        for o in stack.drain(first..) {
            self.timers.remove(&(o.entry.ts + self.after, o.id));
            self.open_count -= 1;
            self.missed_exits += 1;
        }
        self.resume(key, now);
    }

    /// The innermost open call of `key` changed: if its deadline passed
    /// while it waited for a nested call, judge it now.
    fn resume(&mut self, key: Key, now: u64) {
        let Some(stack) = self.open.get_mut(&key) else {
            return;
        };
        let Some(top) = stack.last_mut() else {
            self.open.remove(&key);
            return;
        };
        if top.waiting {
            top.waiting = false;
            self.timers
                .insert((now.max(top.entry.ts + self.after), top.id), key);
        }
    }

    pub fn enter(&mut self, actor: &Actor, entry: Entry, bio: Option<&Bio>, seen: Seen) {
        let key = Key::of(actor);
        if actor.sp != 0 {
            // A call at the same depth or shallower means earlier calls
            // at that depth have returned.
            self.close_where(key, actor.ts, |o| o.entry.sp != 0 && actor.sp >= o.entry.sp);
        }
        let stack = self.open.entry(key).or_default();
        if stack.len() >= self.max_depth {
            let o = stack.remove(0);
            self.timers.remove(&(o.entry.ts + self.after, o.id));
            self.open_count -= 1;
            self.evicted += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        stack.push(Open {
            id,
            bio: entry.bio,
            end_io: entry.end_io,
            dev: entry.dev,
            disk: entry.disk,
            entry: *actor,
            submit: bio.map(|b| b.queued),
            seen,
            reported: false,
            waiting: false,
        });
        self.open_count += 1;
        self.timers.insert((actor.ts + self.after, id), key);
    }

    /// `bio_endio` returned in `actor`'s context (`bio` unknown for
    /// kretprobes: the innermost call returned). Returns the bio the
    /// returning call was for, if its entry was seen.
    pub fn exit(&mut self, actor: &Actor, bio: Option<Addr>, ctx: &mut Ctx<'_>) -> Option<Addr> {
        let key = Key::of(actor);
        let stack = self.open.get_mut(&key)?;
        let at = match bio {
            Some(bio) => stack.iter().rposition(|o| o.bio == bio),
            None => stack.len().checked_sub(1),
        };
        // None: entered before tracing started.
        let at = at?;
        let returned = stack.split_off(at);
        self.resume(key, actor.ts);
        self.open_count -= returned.len();
        self.missed_exits += returned.len() as u64 - 1;
        for o in &returned {
            self.timers.remove(&(o.entry.ts + self.after, o.id));
        }
        // Innermost last: the call this exit belongs to is `returned[0]`.
        let o = returned[0];
        let took = actor.ts.saturating_sub(o.entry.ts);
        if !o.reported && took >= self.after {
            self.report(&o, actor.ts, Some(actor), ctx);
        }
        Some(o.bio)
    }

    /// Reports calls still open `after` past their entry, as of `now`.
    pub fn fire(&mut self, now: u64, ctx: &mut Ctx<'_>) {
        while let Some((&(deadline, id), &key)) = self.timers.first_key_value() {
            if deadline > now {
                break;
            }
            self.timers.remove(&(deadline, id));
            let Some(stack) = self.open.get_mut(&key) else {
                continue;
            };
            let Some(at) = stack.iter().position(|o| o.id == id) else {
                continue;
            };
            if at + 1 < stack.len() {
                // A nested call is open: it is the one stuck, or it will
                // return and leave this one to be judged when innermost.
                stack[at].waiting = true;
                continue;
            }
            if stack[at].reported {
                continue;
            }
            stack[at].reported = true;
            let o = stack[at];
            self.report(&o, deadline, None, ctx);
        }
    }

    fn report(&self, o: &Open, at: u64, exit: Option<&Actor>, ctx: &mut Ctx<'_>) {
        let tainted = ctx.tainted(o.seen);
        ctx.report(Rule::StuckCompletionHandler, tainted, || {
            let mut object = Object::new(ObjectKind::Bio, o.bio);
            object.dev = Some(o.dev);
            object.disk = (o.disk != o.dev).then_some(o.disk);
            object.end_io = (!o.end_io.is_null()).then_some(o.end_io);
            let mut b = FindingBuilder::new(FindingKind::StuckCompletionHandler, at, object);
            let handler = b.side("handler", &o.entry);
            if let Some(submit) = &o.submit {
                let submitter = b.side("submitter", submit);
                b.act(
                    submitter,
                    submit,
                    format!("submits bio {} to {}", o.bio, o.dev),
                );
            }
            b.act(
                handler,
                &o.entry,
                format!(
                    "bio_endio({}) on cpu {}: calls end_io {}",
                    o.bio, o.entry.cpu, o.end_io
                ),
            );
            let took = duration(at.saturating_sub(o.entry.ts));
            let state = match exit {
                Some(_) => format!("bio_endio returns after {took}"),
                None => format!("bio_endio still running after {took}"),
            };
            b.step(handler, at, state, None);
            b.finish(format!(
                "the completion handler of bio {} (end_io {}) on cpu {} {} {took}: a handler \
                 spinning with interrupts off ends in a hard lockup (the watchdog fires at 10 s); \
                 look for the lock or bit it waits on in its stack",
                o.bio,
                o.end_io,
                o.entry.cpu,
                if exit.is_some() {
                    "ran for"
                } else {
                    "has not returned after"
                },
            ))
        });
    }
}
