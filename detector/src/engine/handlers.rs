//! Open `bio_endio` calls, per execution context.
//!
//! A completion handler runs in the context that called `bio_endio`: an
//! interrupt (keyed by CPU: interrupts do not migrate, and tid 0 is shared
//! by every idle CPU) or a task (keyed by tid: a task can be preempted and
//! resume on another CPU). Calls nest: dm's `clone_endio` ends the original
//! bio from inside the clone's `bio_endio` (seed 001 shows four levels), and
//! a stacking driver that hooked `bi_end_io` calls `bio_endio` again from
//! its hook. So each context holds a stack of open calls.
//!
//! Exits can go missing (a kretprobe out of instances, a program skipped
//! for recursion): a call is also known to have returned when its context
//! is later seen at the same depth or shallower (a stack pointer at or
//! above the call's), and an interrupt's calls when its CPU runs task code
//! again. Such returns are reported as not seen.

use super::actor::{Actor, Exec};
use super::facts::Fact;
use super::hash::FastMap;
use super::loss::Seen;
use crate::event::{Addr, Dev};

/// One `bio_endio` call.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub id: u64,
    pub bio: Addr,
    pub end_io: Addr,
    pub dev: Dev,
    pub disk: Dev,
    pub entry: Actor,
    pub seen: Seen,
}

pub struct Handlers {
    max_depth: usize,
    open: FastMap<Exec, Vec<Call>>,
    /// Emptied call stacks kept for reuse: most calls are the only one of
    /// their context, so a context's stack would otherwise be allocated
    /// and freed on every call.
    spare: Vec<Vec<Call>>,
    next_id: u64,
    pub open_count: usize,
    /// Calls closed without their exit event.
    pub missed_exits: u64,
    pub evicted: u64,
}

impl Handlers {
    pub fn new(max_depth: usize) -> Self {
        Self {
            max_depth: max_depth.max(1),
            open: FastMap::default(),
            spare: Vec::new(),
            // 0 is no call.
            next_id: 1,
            open_count: 0,
            missed_exits: 0,
            evicted: 0,
        }
    }

    /// The innermost open call of `exec`.
    pub fn innermost_id(&self, exec: Exec) -> Option<u64> {
        self.open.get(&exec).and_then(|s| s.last()).map(|c| c.id)
    }

    /// Whether call `id` is open in `exec`.
    pub fn call_open_in(&self, exec: Exec, id: u64) -> bool {
        self.open
            .get(&exec)
            .is_some_and(|s| s.iter().any(|c| c.id == id))
    }

    /// Whether call `id` is open in any context.
    pub fn call_open(&self, id: u64) -> bool {
        self.open_count > 0 && self.open.values().flatten().any(|c| c.id == id)
    }

    /// Whether task `tid` is inside a `bio_endio` call.
    pub fn task_busy(&self, tid: u32) -> bool {
        self.open_count > 0
            && self
                .open
                .get(&Exec::Task(tid))
                .is_some_and(|s| !s.is_empty())
    }

    /// What any event says about open calls: a CPU running task code has
    /// left its interrupts; a context seen above a call's depth returned.
    pub fn observe(&mut self, actor: &Actor, facts: &mut Vec<Fact>) {
        if self.open_count == 0 {
            return;
        }
        let now = actor.ts;
        if !actor.irq && actor.tid != 0 {
            self.close_where(Exec::Cpu(actor.cpu), now, facts, |_| true);
            if actor.sp != 0 {
                self.close_where(Exec::Task(actor.tid), now, facts, |c| actor.sp > c.entry.sp);
            }
        } else if actor.irq && actor.sp != 0 {
            self.close_where(Exec::Cpu(actor.cpu), now, facts, |c| actor.sp > c.entry.sp);
        }
    }

    fn close_where(
        &mut self,
        exec: Exec,
        now: u64,
        facts: &mut Vec<Fact>,
        gone: impl Fn(&Call) -> bool,
    ) {
        let Some(stack) = self.open.get_mut(&exec) else {
            return;
        };
        // Calls nest, so the returned ones are a suffix; `gone` may hold
        // for an outer call only, so close from the outermost one gone.
        let Some(first) = stack.iter().position(&gone) else {
            return;
        };
        let closed: Vec<Call> = stack.drain(first..).collect();
        if stack.is_empty() {
            self.put_away(exec);
        }
        self.open_count -= closed.len();
        self.missed_exits += closed.len() as u64;
        for call in closed.into_iter().rev() {
            facts.push(Fact::HandlerReturned {
                call,
                ts: now,
                seen_exit: false,
            });
        }
    }

    /// `exec` has no open call left: its (empty) stack goes to the spares.
    fn put_away(&mut self, exec: Exec) {
        if let Some(stack) = self.open.remove(&exec) {
            self.spare.push(stack);
        }
    }

    /// A `bio_endio` call starts.
    pub fn enter(&mut self, actor: &Actor, mut call: Call, facts: &mut Vec<Fact>) -> Call {
        let exec = Exec::of(actor);
        if actor.sp != 0 {
            // A call at the same depth or shallower means earlier calls at
            // that depth have returned.
            self.close_where(exec, actor.ts, facts, |c| {
                c.entry.sp != 0 && actor.sp >= c.entry.sp
            });
        }
        let spare = &mut self.spare;
        let stack = self
            .open
            .entry(exec)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        if stack.len() >= self.max_depth {
            let dropped = stack.remove(0);
            self.open_count -= 1;
            self.evicted += 1;
            facts.push(Fact::HandlerReturned {
                call: dropped,
                ts: actor.ts,
                seen_exit: false,
            });
        }
        call.id = self.next_id;
        self.next_id += 1;
        stack.push(call);
        self.open_count += 1;
        facts.push(Fact::HandlerEntered { call });
        call
    }

    /// `bio_endio` returned in `actor`'s context (`bio` unknown for
    /// kretprobes: the innermost call returned). Calls nested inside it
    /// whose exits were missed return with it.
    pub fn exit(&mut self, actor: &Actor, bio: Option<Addr>, facts: &mut Vec<Fact>) {
        let exec = Exec::of(actor);
        let Some(stack) = self.open.get_mut(&exec) else {
            return;
        };
        let at = match bio {
            Some(bio) => stack.iter().rposition(|c| c.bio == bio),
            None => stack.len().checked_sub(1),
        };
        // None: entered before tracing started.
        let Some(at) = at else {
            return;
        };
        let returned = stack.len() - at;
        // Innermost first: the inner ones' exits were missed.
        while stack.len() > at {
            let call = stack.pop().expect("longer than at");
            facts.push(Fact::HandlerReturned {
                call,
                ts: actor.ts,
                seen_exit: stack.len() == at,
            });
        }
        if stack.is_empty() {
            self.put_away(exec);
        }
        self.open_count -= returned;
        self.missed_exits += returned as u64 - 1;
    }
}
