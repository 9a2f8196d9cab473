//! The task table: each thread's kernel stack, where its stack pointer was
//! last seen, whether it sleeps, and the per-task state of the rules.
//!
//! A task is known from any event it was current for (its `stack_base`) and
//! from `sched_switch` records that switch to it. The table also answers
//! "whose stack holds this address", which is how a `complete()` from an
//! interrupt finds the owner of an on-stack completion.

use std::collections::{BTreeMap, VecDeque};

use super::actor::Actor;
use super::hash::FastMap;
use super::loss::Seen;
use crate::event::Addr;

/// What an event says about where its task's own frames are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObsKind {
    /// Running in the kernel with its stack pointer here: every frame below
    /// (at lower addresses) is gone.
    Frames(u64),
    /// Returned to user space: no kernel frame is left.
    User,
    /// Exiting: no frame will be used again.
    Exit,
}

impl ObsKind {
    /// Whether this proves the task has left a frame holding `addr`.
    pub fn left(self, addr: u64) -> bool {
        match self {
            Self::Frames(sp) => sp > addr,
            Self::User | Self::Exit => true,
        }
    }
}

/// An observation of a task's frames, with the event it came from.
#[derive(Clone, Copy, Debug)]
pub struct Obs {
    pub kind: ObsKind,
    pub actor: Actor,
    /// The event's name, for diagrams.
    pub what: &'static str,
    pub seen: Seen,
}

/// The task is in a sleep it has to be woken from.
#[derive(Clone, Copy, Debug)]
pub struct Sleep {
    /// The `sched_switch` that put it to sleep (its stack is the sleep stack).
    pub actor: Actor,
    pub uninterruptible: bool,
    pub iowait: bool,
}

/// A submission the task has not been seen returning from.
#[derive(Clone, Copy, Debug)]
pub struct OpenSubmit {
    pub bio: Addr,
    /// Where the submission hook ran: the task is back above the call once
    /// seen with its stack pointer higher.
    pub sp: u64,
}

/// Submissions remembered per task; the oldest are dropped beyond.
const OPEN_SUBMITS: usize = 16;

#[derive(Debug, Default)]
pub struct Task {
    /// Lowest address of the kernel stack (0: unknown).
    pub base: u64,
    pub last_obs: Option<Obs>,
    /// The latest observation that came with a kernel stack: where the
    /// task was, for diagrams.
    pub last_stacked: Option<Obs>,
    /// Asleep since (only sleeps it must be woken from are tracked).
    pub sleep: Option<Sleep>,
    /// Bumped each time it returns to user space: what it submits between
    /// two returns belongs to one episode (lost-wakeup).
    pub episode: u32,
    /// It submitted I/O in task context during the current episode.
    pub episode_io: bool,
    /// Since when the current episode's end may go unseen (its submission
    /// came while the syscall hooks were detached, or they were detached
    /// while it was open): a sleep from then on cannot be tied to it.
    pub unbounded_since: Option<u64>,
    /// In user space, as far as the kernel side tracks it (its return was
    /// reported along with a promise to report its next syscall entry):
    /// an event with its stack meanwhile is an interrupt taken from user
    /// mode, which runs on the task's kernel stack.
    pub in_user: bool,
    /// Its submissions still running: a bio that completes inside its own
    /// submission (an I/O error from the submission path) was never in
    /// flight at the device.
    pub open_submits: Vec<OpenSubmit>,
    /// For eviction order.
    fifo_life: u32,
}

impl Task {
    /// The task is inside its `submit_bio` call for `bio`.
    pub fn submitting(&self, bio: Addr) -> bool {
        self.open_submits.iter().any(|s| s.bio == bio)
    }

    pub fn submit_started(&mut self, bio: Addr, sp: u64) {
        if sp == 0 {
            return;
        }
        if self.open_submits.len() == OPEN_SUBMITS {
            self.open_submits.remove(0);
        }
        self.open_submits.push(OpenSubmit { bio, sp });
    }

    /// It returned to user space (or exits): what it submits from now on
    /// is another episode, and every call it was in has returned. Known
    /// from a reported return, or later, from the kernel's word that it
    /// returned unreported (`episode_start`, `prev_episode_over`).
    pub fn end_episode(&mut self) {
        self.episode = self.episode.wrapping_add(1);
        self.episode_io = false;
        self.unbounded_since = None;
        self.open_submits.clear();
    }

    /// Whether a sleep that began at `ts` may belong to a later episode
    /// than the current one, its return having gone unseen.
    pub fn episode_unbounded_at(&self, ts: u64) -> bool {
        self.unbounded_since.is_some_and(|since| since <= ts)
    }

    /// The task was seen as `obs` says: calls below that are over.
    pub fn observed(&mut self, obs: &Obs) {
        if matches!(obs.kind, ObsKind::User | ObsKind::Exit) {
            self.end_episode();
        } else if !self.open_submits.is_empty() {
            self.open_submits.retain(|s| !obs.kind.left(s.sp));
        }
        self.last_obs = Some(*obs);
        if obs.actor.stack.is_some() && matches!(obs.kind, ObsKind::Frames(_)) {
            self.last_stacked = Some(*obs);
        }
    }
}

/// Why a task's state is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retire {
    /// It exited (or its tid or stack now belongs to another task): every
    /// frame it had is gone.
    Gone,
    /// Evicted for room: nothing is known any more.
    Evicted,
}

pub struct Tasks {
    thread_size: u64,
    max: usize,
    tasks: FastMap<u32, Task>,
    /// Stack base -> tid, to find whose stack an address is in.
    by_base: BTreeMap<u64, u32>,
    fifo: VecDeque<(u32, u32)>,
    next_life: u32,
    pub evicted: u64,
}

impl Tasks {
    pub fn new(thread_size: u64, max: usize) -> Self {
        Self {
            thread_size,
            max: max.max(1),
            tasks: FastMap::default(),
            by_base: BTreeMap::new(),
            fifo: VecDeque::new(),
            next_life: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn get(&self, tid: u32) -> Option<&Task> {
        self.tasks.get(&tid)
    }

    pub fn get_mut(&mut self, tid: u32) -> Option<&mut Task> {
        self.tasks.get_mut(&tid)
    }

    /// The syscall hooks were detached at `ts`: from then on any task may
    /// return to user space, and come back, unseen. Open episodes become
    /// unbounded, and no task is known to be in user space any more (an
    /// event on its stack is taken for its own again, as without the
    /// hooks).
    pub fn returns_unwatched(&mut self, ts: u64) {
        for task in self.tasks.values_mut() {
            task.in_user = false;
            if task.episode_io && task.unbounded_since.is_none() {
                task.unbounded_since = Some(ts);
            }
        }
    }

    /// Records that `tid` runs on the stack at `base`. Tasks whose state
    /// must be dropped (the previous holder of this tid or stack, or one
    /// evicted for room) are pushed to `retired`.
    pub fn touch(&mut self, tid: u32, base: u64, retired: &mut Vec<(u32, Task, Retire)>) {
        if tid == 0 {
            return;
        }
        if let Some(task) = self.tasks.get_mut(&tid) {
            if base == 0 || task.base == base {
                return;
            }
            if task.base == 0 {
                task.base = base;
                self.claim_base(tid, base, retired);
                return;
            }
            // Same tid, another stack: the thread we knew is gone.
            let old = self.remove(tid).expect("present");
            retired.push((tid, old, Retire::Gone));
        }
        self.insert(tid, base, retired);
    }

    fn insert(&mut self, tid: u32, base: u64, retired: &mut Vec<(u32, Task, Retire)>) {
        while self.tasks.len() >= self.max {
            let Some((victim, life)) = self.fifo.pop_front() else {
                break;
            };
            if self.tasks.get(&victim).is_some_and(|t| t.fifo_life == life) {
                let task = self.remove(victim).expect("present");
                self.evicted += 1;
                retired.push((victim, task, Retire::Evicted));
            }
        }
        let life = self.next_life;
        self.next_life = self.next_life.wrapping_add(1);
        self.tasks.insert(
            tid,
            Task {
                base,
                fifo_life: life,
                ..Task::default()
            },
        );
        self.fifo.push_back((tid, life));
        if self.fifo.len() > 2 * self.tasks.len() + 1024 {
            let tasks = &self.tasks;
            self.fifo
                .retain(|(tid, life)| tasks.get(tid).is_some_and(|t| t.fifo_life == *life));
        }
        if base != 0 {
            self.claim_base(tid, base, retired);
        }
    }

    fn claim_base(&mut self, tid: u32, base: u64, retired: &mut Vec<(u32, Task, Retire)>) {
        if let Some(previous) = self.by_base.insert(base, tid)
            && previous != tid
            && let Some(old) = self.tasks.get(&previous)
            && old.base == base
        {
            // A stack is only reused after its task is gone.
            let old = self.remove(previous).expect("present");
            self.by_base.insert(base, tid);
            retired.push((previous, old, Retire::Gone));
        }
    }

    /// Drops `tid` (it exited).
    pub fn remove(&mut self, tid: u32) -> Option<Task> {
        let task = self.tasks.remove(&tid)?;
        if task.base != 0 && self.by_base.get(&task.base) == Some(&tid) {
            self.by_base.remove(&task.base);
        }
        Some(task)
    }

    /// The task whose kernel stack holds `addr`.
    pub fn owner_of(&self, addr: u64) -> Option<u32> {
        let (&base, &tid) = self.by_base.range(..=addr).next_back()?;
        (addr < base.saturating_add(self.thread_size)).then_some(tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_lookup_and_reuse() {
        let mut tasks = Tasks::new(0x4000, 16);
        let mut retired = Vec::new();
        tasks.touch(10, 0x10000, &mut retired);
        tasks.touch(11, 0x20000, &mut retired);
        assert_eq!(tasks.owner_of(0x13ff0), Some(10));
        assert_eq!(tasks.owner_of(0x14000), None);
        assert_eq!(tasks.owner_of(0x20010), Some(11));
        assert!(retired.is_empty());
        // Task 12 runs on 10's old stack: 10 is gone.
        tasks.touch(12, 0x10000, &mut retired);
        assert_eq!(retired.len(), 1);
        assert_eq!((retired[0].0, retired[0].2), (10, Retire::Gone));
        assert_eq!(tasks.owner_of(0x13ff0), Some(12));
        // Tid 11 on another stack: a new thread with a recycled tid.
        retired.clear();
        tasks.touch(11, 0x30000, &mut retired);
        assert_eq!(retired.len(), 1);
        assert_eq!(tasks.owner_of(0x20010), None);
        assert_eq!(tasks.owner_of(0x30010), Some(11));
    }

    #[test]
    fn eviction_is_bounded_and_counted() {
        let mut tasks = Tasks::new(0x4000, 4);
        let mut retired = Vec::new();
        for tid in 1..=10 {
            tasks.touch(tid, tid as u64 * 0x10000, &mut retired);
        }
        assert_eq!(tasks.len(), 4);
        assert_eq!(tasks.evicted, 6);
        assert_eq!(retired.len(), 6);
        assert!(retired.iter().all(|r| r.2 == Retire::Evicted));
        assert_eq!(tasks.owner_of(0x10010), None);
        assert_eq!(tasks.owner_of(0xa0010), Some(10));
    }
}
