//! The functions on the kernel stacks events quote, for rules that must
//! know what a sleeping task waits for.
//!
//! Stacks are input like events: the session hands each one to the engine
//! when it first resolves it (live, from the kernel's stack map; in replay,
//! from the record file), before any event quoting it. A verdict that
//! needs a stack nobody handed over is not reached.

use std::sync::Arc;

use super::hash::FastMap;
use crate::event::{Stack, StackId};

#[derive(Default)]
pub struct StackFunctions {
    stacks: FastMap<StackId, Arc<[Box<str>]>>,
}

impl StackFunctions {
    /// Keeps the function names of `stack`, innermost first, without the
    /// tracing machinery the hook itself added.
    pub fn learn(&mut self, id: StackId, stack: &Stack) {
        if self.stacks.contains_key(&id) {
            return;
        }
        // Compiler clones (`.isra.0`, `.constprop.0`) are the function.
        let functions: Vec<Box<str>> = stack
            .frames_without_hooks()
            .map(|f| {
                let symbol = f.symbol.as_deref().unwrap_or("?");
                symbol.split('.').next().unwrap_or(symbol).into()
            })
            .collect();
        self.stacks.insert(id, functions.into());
    }

    pub fn get(&self, id: StackId) -> Option<&[Box<str>]> {
        self.stacks.get(&id).map(|f| &f[..])
    }
}

/// Scheduler entry points a sleep goes through on its way to `__schedule`:
/// the frame above them is the code that decided to sleep.
const SCHEDULER: &[&str] = &[
    "__schedule",
    "schedule",
    "io_schedule",
    "io_schedule_timeout",
    "schedule_timeout",
    "schedule_timeout_uninterruptible",
    "schedule_timeout_killable",
    "schedule_preempt_disabled",
    "blk_io_schedule",
];

/// Waits on something other than a bio completing: a lock, a bit, a pool,
/// throttling, a completion (whose `complete()` always wakes). A task
/// asleep in one of these after its own I/O completed waits for whoever
/// holds or refills it, not for that I/O.
const NOT_IO_WAITS: &[&str] = &[
    "folio_wait_bit_common",
    "folio_wait_bit",
    "folio_wait_bit_killable",
    "__folio_lock",
    "__folio_lock_killable",
    "__folio_lock_or_retry",
    "wait_on_page_bit_common",
    "__lock_page",
    "__lock_page_killable",
    "__lock_page_or_retry",
    "bit_wait_io",
    "bit_wait_io_timeout",
    "bit_wait",
    "__wait_on_bit",
    "__wait_on_bit_lock",
    "out_of_line_wait_on_bit",
    "out_of_line_wait_on_bit_lock",
    "__wait_on_buffer",
    "mempool_alloc",
    "rq_qos_wait",
    "wbt_wait",
    "blk_mq_get_tag",
    "balance_dirty_pages",
    "__mutex_lock",
    "mutex_lock",
    "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath",
    "percpu_rwsem_wait",
    "wait_for_completion",
    "wait_for_completion_io",
    "wait_for_completion_timeout",
    "wait_for_completion_io_timeout",
    "wait_for_completion_killable",
    "wait_for_completion_state",
    "__wait_for_common",
    "wait_for_common",
    "wait_for_common_io",
    "do_wait_for_common",
];

/// How far above the scheduler the code that sleeps may sit below the
/// function that also submitted the I/O (`dio_await_one` sleeps two calls
/// below `do_blockdev_direct_IO`, which submitted).
const TIE_DEPTH: usize = 3;

/// Whether what a sleep's stack shows can be tied to I/O submitted from
/// the stack `submit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    /// The code that sleeps, or one of its close callers, is code that
    /// submitted the I/O: it waits for that I/O.
    Tied,
    /// It sleeps on a lock, bit, pool or completion, or in code unrelated
    /// to the submission.
    Unrelated,
}

/// Ties a sleep to the submission it may wait for.
pub fn tie(sleep: &[Box<str>], submit: &[Box<str>]) -> Tie {
    let waiter = sleep.iter().skip_while(|f| SCHEDULER.contains(&&***f));
    for function in waiter.take(TIE_DEPTH) {
        if NOT_IO_WAITS.contains(&&**function) {
            return Tie::Unrelated;
        }
        if submit.contains(function) {
            return Tie::Tied;
        }
    }
    Tie::Unrelated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fns(names: &[&str]) -> Vec<Box<str>> {
        names.iter().map(|&n| n.into()).collect()
    }

    #[test]
    fn a_dio_wait_is_tied_to_its_submission() {
        let sleep = fns(&[
            "__schedule",
            "schedule",
            "io_schedule",
            "dio_await_one",
            "dio_await_completion",
            "do_blockdev_direct_IO",
            "ext4_direct_IO",
        ]);
        let submit = fns(&[
            "submit_bio",
            "dio_bio_submit",
            "do_direct_IO",
            "do_blockdev_direct_IO",
            "ext4_direct_IO",
        ]);
        assert_eq!(tie(&sleep, &submit), Tie::Tied);
    }

    #[test]
    fn a_page_lock_wait_is_not() {
        let sleep = fns(&[
            "__schedule",
            "schedule",
            "io_schedule",
            "folio_wait_bit_common",
            "__folio_lock",
            "filemap_fault",
        ]);
        let submit = fns(&["submit_bio", "ext4_mpage_readpages", "filemap_fault"]);
        assert_eq!(tie(&sleep, &submit), Tie::Unrelated);
    }

    #[test]
    fn a_wait_far_above_the_submission_is_not() {
        let sleep = fns(&["schedule", "io_schedule", "a", "b", "c", "vfs_read"]);
        let submit = fns(&["submit_bio", "x", "vfs_read"]);
        assert_eq!(tie(&sleep, &submit), Tie::Unrelated);
    }
}
