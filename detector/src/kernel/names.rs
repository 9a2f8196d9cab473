//! Task names, which the programs send once per task
//! (`ProbeConfig::names_once`): a record whose header says
//! `COMM_OMITTED` gets the name its thread's earlier record carried.

use compact_str::CompactString;

use crate::engine::hash::FastMap;
use crate::event::{Event, EventKind};

/// Names kept at most. Exits can be lost with their records, leaving a
/// dead thread's name behind; past this the table starts over, and a name
/// missed afterwards is read from `/proc`.
const MAX_NAMES: usize = 1 << 16;

/// How long an exited thread's name is kept for its own records that
/// come later (from another CPU's ring buffer, read in a later drain).
const EXITED_KEPT_NS: u64 = 2_000_000_000;

/// The last name each thread's records carried.
#[derive(Debug, Default)]
pub struct TaskNames {
    by_tid: FastMap<u32, CompactString>,
    /// Threads that exited: the name and the exit's time, for records of
    /// theirs made before it that arrive after it. A record made after
    /// it is a new thread's (the id reused), and is not given the name.
    exited: FastMap<u32, (CompactString, u64)>,
    /// Records that left their name out.
    pub filled: u64,
    /// Names not in the table, read from `/proc` instead.
    pub from_proc: u64,
    /// Names found nowhere (the thread was gone): the event says `?`.
    pub unknown: u64,
}

impl TaskNames {
    /// Completes `event` when its record left the name out, and learns the
    /// name when it did not. A thread's exit ends its name: its thread id
    /// may go to a new task, whose first record names it. Records the
    /// thread made before its exit still get it when they come after.
    pub fn complete(&mut self, event: &mut Event, omitted: bool) {
        if omitted {
            self.filled += 1;
            event.comm = match self.by_tid.get(&event.tid) {
                Some(name) => name.clone(),
                None => match self.exited.get(&event.tid) {
                    Some((name, exit_ts)) if event.ts <= *exit_ts => name.clone(),
                    _ => self.look_up(event.pid, event.tid),
                },
            };
        } else if self.by_tid.get(&event.tid) != Some(&event.comm) {
            self.remember(event.tid, event.comm.clone());
        }
        if matches!(event.kind, EventKind::TaskExit)
            && let Some(name) = self.by_tid.remove(&event.tid)
        {
            self.forget_exited_before(event.ts.saturating_sub(EXITED_KEPT_NS));
            self.exited.insert(event.tid, (name, event.ts));
        }
    }

    /// Drops the exited threads' names kept since before `ts`, once there
    /// are a good many (a scan per exit would cost more than it frees).
    fn forget_exited_before(&mut self, ts: u64) {
        if self.exited.len() >= 1024 {
            self.exited.retain(|_, (_, exit_ts)| *exit_ts >= ts);
            if self.exited.len() >= MAX_NAMES {
                self.exited.clear();
            }
        }
    }

    /// Keeps `name` as `tid`'s, within [`MAX_NAMES`].
    fn remember(&mut self, tid: u32, name: CompactString) {
        if self.by_tid.len() >= MAX_NAMES {
            self.by_tid.clear();
        }
        self.by_tid.insert(tid, name);
    }

    /// A name the table lacks (the record that carried it was lost, or the
    /// table started over), from the thread itself while it lives.
    fn look_up(&mut self, pid: u32, tid: u32) -> CompactString {
        let path = format!("/proc/{pid}/task/{tid}/comm");
        match std::fs::read_to_string(path) {
            Ok(name) => {
                self.from_proc += 1;
                let name = CompactString::from(name.trim_end_matches('\n'));
                self.remember(tid, name.clone());
                name
            }
            Err(_) => {
                self.unknown += 1;
                CompactString::const_new("?")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::event;

    fn named(tid: u32, comm: &str, kind: EventKind) -> Event {
        let mut e = event(0, kind);
        e.pid = tid;
        e.tid = tid;
        e.comm = comm.into();
        e
    }

    #[test]
    fn an_omitted_name_is_the_one_the_thread_sent_last() {
        let mut names = TaskNames::default();
        names.complete(&mut named(7, "fio", EventKind::SysEnter { nr: 0 }), false);
        let mut later = named(7, "", EventKind::SysEnter { nr: 0 });
        names.complete(&mut later, true);
        assert_eq!(later.comm, "fio");
        let mut renamed = named(7, "fio-worker", EventKind::SysEnter { nr: 0 });
        names.complete(&mut renamed, false);
        let mut after = named(7, "", EventKind::SysEnter { nr: 0 });
        names.complete(&mut after, true);
        assert_eq!(after.comm, "fio-worker");
        assert_eq!((names.filled, names.from_proc, names.unknown), (2, 0, 0));
    }

    #[test]
    fn an_exit_frees_the_thread_id() {
        let mut names = TaskNames::default();
        names.complete(
            &mut named(u32::MAX - 1, "old", EventKind::SysEnter { nr: 0 }),
            false,
        );
        let mut exit = named(u32::MAX - 1, "", EventKind::TaskExit);
        exit.ts = 1_000;
        names.complete(&mut exit, true);
        assert_eq!(exit.comm, "old");
        // Its own record from before the exit, read after it (another
        // CPU's ring buffer): still its name.
        let mut late = named(u32::MAX - 1, "", EventKind::SysEnter { nr: 0 });
        late.ts = 900;
        names.complete(&mut late, true);
        assert_eq!(late.comm, "old");
        // A record from after the exit is a new thread's whose naming
        // record was lost. No such thread in /proc either: said, not
        // guessed.
        let mut reused = named(u32::MAX - 1, "", EventKind::SysEnter { nr: 0 });
        reused.ts = 1_100;
        names.complete(&mut reused, true);
        assert_eq!(reused.comm, "?");
        assert_eq!(names.unknown, 1);
    }

    #[test]
    fn a_name_never_sent_is_read_from_the_thread() {
        let mut names = TaskNames::default();
        let me = std::process::id();
        let mut e = named(me, "", EventKind::SysEnter { nr: 0 });
        names.complete(&mut e, true);
        let want = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert_eq!(e.comm, want.trim_end());
        assert_eq!(names.from_proc, 1);
    }
}
