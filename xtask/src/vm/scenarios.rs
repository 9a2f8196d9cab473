//! The scenarios: what each reproduces and which findings it must produce.

use crate::vm::assertions::{self, Check};

pub struct Scenario {
    pub name: &'static str,
    /// What it reproduces (a seed report), or whose benign twin it is.
    pub about: &'static str,
    /// The finding kinds `detector replay` must report (a benign twin:
    /// none)...
    pub findings: &'static [&'static str],
    /// ...and those it may report besides.
    pub also: &'static [&'static str],
    /// Rules that must count an indeterminate verdict (the scenario loses
    /// events where the race's evidence lies).
    pub indeterminate: &'static [&'static str],
    /// Assertions on the recorded event stream.
    pub check: Check,
}

/// The bench's thresholds other than `--lost-io-after`, for the settings
/// that differ from [`DETECTOR_FLAGS`] in that one only (a literal, so that
/// `concat!` can build on it).
macro_rules! bench_thresholds_but_lost_io {
    () => {
        "--lost-wakeup-after 3s --stuck-handler-after 2s"
    };
}
pub(crate) use bench_thresholds_but_lost_io;

/// Thresholds the sessions (and replays) run with: each racy scenario holds
/// its bad state for clearly longer (lost_wakeup ~8 s, stuck_handler ~3 s,
/// lost_io 5 s), each twin, and every other scenario, for clearly less (the
/// onstack end_io's injected window keeps its handler busy for 1 s). The
/// look-alikes of issue 8 hold theirs clearly longer too (stall_recovers
/// 5 s, the iowait ones 5 s, sleeping_handler 3 s): they must not be taken
/// for the race.
pub const DETECTOR_FLAGS: &str = concat!(bench_thresholds_but_lost_io!(), " --lost-io-after 3s");

/// In run order. The md scenarios come last: md_mod is loaded (and
/// `detector check` run again) only before them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "onstack",
        about: "seed 000 (bug 29402): complete() on a completion whose stack frame returned",
        findings: &["complete-after-return"],
        // the window before the frame was left, reported or not
        also: &["unsynchronized-onstack-complete"],
        indeterminate: &[],
        check: assertions::onstack,
    },
    Scenario {
        name: "onstack_fixed",
        about: "twin of onstack: the owner waits for every bio (commit 0aeea189)",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::onstack_fixed,
    },
    Scenario {
        name: "lost_wakeup",
        about: "seed 004 (RH bug 451819): the last completion reads the waiter unlocked",
        findings: &["lost-wakeup"],
        also: &[],
        indeterminate: &[],
        check: assertions::lost_wakeup,
    },
    Scenario {
        name: "lost_wakeup_fixed",
        about: "twin of lost_wakeup: the waiter is read under the lock (5eb6c7a2)",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::lost_wakeup_fixed,
    },
    Scenario {
        name: "double_complete",
        about: "seed 002: a driver's timeout path completes a completed bio again",
        findings: &["bio-double-complete"],
        also: &[],
        indeterminate: &[],
        check: assertions::double_complete,
    },
    Scenario {
        name: "double_complete_fixed",
        about: "twin of double_complete: the timeout path claims the command first",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::double_complete_fixed,
    },
    Scenario {
        name: "stuck_handler",
        about: "seed 001: an end_io spins ~3 s with interrupts off on a held bit lock",
        findings: &["stuck-completion-handler"],
        also: &[],
        indeterminate: &[],
        check: assertions::stuck_handler,
    },
    Scenario {
        name: "stuck_handler_fixed",
        about: "twin of stuck_handler: the bit lock is held for 20 ms",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::stuck_handler_fixed,
    },
    Scenario {
        name: "lost_io",
        about: "a direct write whose bio the disk holds for 5 s",
        // the stall at the threshold, and its end when the disk lets go
        findings: &["lost-io-completion", "late-io-completion"],
        also: &[],
        indeterminate: &[],
        check: assertions::lost_io,
    },
    Scenario {
        name: "lost_io_fixed",
        about: "twin of lost_io: the disk completes it after 300 ms",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::lost_io_fixed,
    },
    Scenario {
        name: "complete_after_teardown",
        about: "a bio completed by a disk after del_gendisk of that disk",
        findings: &["bio-complete-after-teardown"],
        also: &[],
        indeterminate: &[],
        check: assertions::complete_after_teardown,
    },
    Scenario {
        name: "complete_after_teardown_fixed",
        about: "twin of complete_after_teardown: completed before the removal",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::complete_after_teardown_fixed,
    },
    // Issue 8: what real kernels do that looks like a race, and race
    // shapes the seed scenarios do not cover. Case numbers are the issue's.
    Scenario {
        name: "integrity_reads",
        about: "issue 8 case 1: direct reads from a T10-PI disk (scsi_debug dif=1 dix=1): bio-integrity ends each read bio twice",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::disks::integrity_reads,
    },
    Scenario {
        name: "integrity_reads_noverify",
        about: "twin of integrity_reads with read_verify off: one bio_endio per read",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::disks::integrity_reads_noverify,
    },
    Scenario {
        name: "dm_thin_unprovisioned",
        about: "issue 8 case 2: dm-thin reads, every other block unprovisioned: those clones are ended by the pool worker, never submitted, at submitted clones' addresses",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::disks::dm_thin_unprovisioned,
    },
    Scenario {
        name: "dm_zero_linear",
        about: "issue 8 case 2: dm-zero's clones, ended in its map function, reuse dm-linear's clone addresses",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::disks::dm_zero_linear,
    },
    Scenario {
        name: "split_reuse",
        about: "issue 8 case 2: 64 KiB direct reads split to 4 KiB: split fronts are never submitted and reuse addresses",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::disks::split_reuse,
    },
    Scenario {
        name: "delete_during_io",
        about: "issue 8 case 3: a scsi_debug disk deleted while direct I/O is submitted to it: bios fail inside their own submission",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::disks::delete_during_io,
    },
    Scenario {
        name: "double_complete_lost_events",
        about: "issue 8 case 4: double_complete traced with an 8 KiB ring buffer and a burst of events between the two completions",
        findings: &[],
        also: &[],
        indeterminate: &["bio-double-complete"],
        check: assertions::hooks::double_complete_lost_events,
    },
    Scenario {
        name: "stall_recovers",
        about: "issue 8 case 5: a disk holds 16 bios 5 s (a transport stall), then completes them all with status 0",
        // the stall at the threshold, while they are pending, and its end
        // when they complete
        findings: &["lost-io-completion", "late-io-completion"],
        also: &[],
        indeterminate: &[],
        check: assertions::lookalikes::stall_recovers,
    },
    Scenario {
        name: "iowait_folio_lock",
        about: "issue 8 case 6: a task whose bios completed inline sleeps in io_schedule on a folio lock a kthread holds 5 s",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::lookalikes::iowait_folio_lock,
    },
    Scenario {
        name: "iowait_timeout",
        about: "issue 8 case 6: a task whose bios completed inline sleeps 5 s in io_schedule_timeout",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::lookalikes::iowait_timeout,
    },
    Scenario {
        name: "sleeping_handler",
        about: "issue 8 case 7: an end_io in a workqueue sleeps 3 s in msleep (off the CPU, nothing spins)",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::lookalikes::sleeping_handler,
    },
    Scenario {
        name: "late_complete_irq",
        about: "issue 8 case 8: an owner gives up in wait_for_completion_timeout and returns; a timer interrupt completes its dead frame; a later one on that CPU wakes it",
        findings: &["complete-after-return"],
        also: &["unsynchronized-onstack-complete"],
        indeterminate: &[],
        check: assertions::late_irq::late_complete_irq,
    },
    Scenario {
        name: "late_complete_irq_fixed",
        about: "twin of late_complete_irq: after the timed wait gives up, the owner waits for the interrupt's complete()",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::late_irq::late_complete_irq_fixed,
    },
    Scenario {
        name: "irq_in_user",
        about: "issue 8 case 9: an interrupt taken while the owner runs in user mode completes the owner's dead on-stack completion",
        findings: &["complete-after-return"],
        also: &["unsynchronized-onstack-complete"],
        indeterminate: &[],
        check: assertions::late_irq::irq_in_user,
    },
    Scenario {
        name: "irq_in_user_fixed",
        about: "twin of irq_in_user: the owner waits for the interrupt's complete() before returning to user mode",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::late_irq::irq_in_user_fixed,
    },
    Scenario {
        name: "endio_swap",
        about: "issue 8 case 10: a stacking driver hooks and restores bi_end_io; the bio is then completed twice",
        findings: &["bio-double-complete"],
        also: &[],
        indeterminate: &[],
        check: assertions::hooks::endio_swap,
    },
    Scenario {
        name: "endio_swap_fixed",
        about: "twin of endio_swap: hooked, restored, completed once",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::hooks::endio_swap_fixed,
    },
    Scenario {
        name: "md_clean",
        about: "twin of md_teardown: a raid1 written, clean, then stopped with nothing pending",
        findings: &[],
        also: &[],
        indeterminate: &[],
        check: assertions::md_clean,
    },
    Scenario {
        name: "md_teardown",
        about: "seed 003: a superblock write still pending when the array is stopped",
        findings: &["md-teardown-inflight", "md-write-after-teardown"],
        also: &[],
        indeterminate: &[],
        check: assertions::md_teardown,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}
