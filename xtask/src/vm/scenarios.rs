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
    /// Assertions on the recorded event stream.
    pub check: Check,
}

/// Thresholds the sessions (and replays) run with: each racy scenario holds
/// its bad state for clearly longer (lost_wakeup ~8 s, stuck_handler ~3 s,
/// lost_io 5 s), each twin, and every other scenario, for clearly less (the
/// onstack end_io's injected window keeps its handler busy for 1 s).
pub const DETECTOR_FLAGS: &str =
    "--lost-wakeup-after 3s --stuck-handler-after 2s --lost-io-after 3s";

/// In run order. The md scenarios come last: md_mod is loaded (and
/// `detector check` run again) only before them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "onstack",
        about: "seed 000 (bug 29402): complete() on a completion whose stack frame returned",
        findings: &["complete-after-return"],
        // the window before the frame was left, reported or not
        also: &["unsynchronized-onstack-complete"],
        check: assertions::onstack,
    },
    Scenario {
        name: "onstack_fixed",
        about: "twin of onstack: the owner waits for every bio (commit 0aeea189)",
        findings: &[],
        also: &[],
        check: assertions::onstack_fixed,
    },
    Scenario {
        name: "lost_wakeup",
        about: "seed 004 (RH bug 451819): the last completion reads the waiter unlocked",
        findings: &["lost-wakeup"],
        also: &[],
        check: assertions::lost_wakeup,
    },
    Scenario {
        name: "lost_wakeup_fixed",
        about: "twin of lost_wakeup: the waiter is read under the lock (5eb6c7a2)",
        findings: &[],
        also: &[],
        check: assertions::lost_wakeup_fixed,
    },
    Scenario {
        name: "double_complete",
        about: "seed 002: a driver's timeout path completes a completed bio again",
        findings: &["bio-double-complete"],
        also: &[],
        check: assertions::double_complete,
    },
    Scenario {
        name: "double_complete_fixed",
        about: "twin of double_complete: the timeout path claims the command first",
        findings: &[],
        also: &[],
        check: assertions::double_complete_fixed,
    },
    Scenario {
        name: "stuck_handler",
        about: "seed 001: an end_io spins ~3 s with interrupts off on a held bit lock",
        findings: &["stuck-completion-handler"],
        also: &[],
        check: assertions::stuck_handler,
    },
    Scenario {
        name: "stuck_handler_fixed",
        about: "twin of stuck_handler: the bit lock is held for 20 ms",
        findings: &[],
        also: &[],
        check: assertions::stuck_handler_fixed,
    },
    Scenario {
        name: "lost_io",
        about: "a direct write whose bio the disk holds for 5 s",
        // the stall at the threshold, and its end when the disk lets go
        findings: &["lost-io-completion", "late-io-completion"],
        also: &[],
        check: assertions::lost_io,
    },
    Scenario {
        name: "lost_io_fixed",
        about: "twin of lost_io: the disk completes it after 300 ms",
        findings: &[],
        also: &[],
        check: assertions::lost_io_fixed,
    },
    Scenario {
        name: "complete_after_teardown",
        about: "a bio completed by a disk after del_gendisk of that disk",
        findings: &["bio-complete-after-teardown"],
        also: &[],
        check: assertions::complete_after_teardown,
    },
    Scenario {
        name: "complete_after_teardown_fixed",
        about: "twin of complete_after_teardown: completed before the removal",
        findings: &[],
        also: &[],
        check: assertions::complete_after_teardown_fixed,
    },
    Scenario {
        name: "md_clean",
        about: "twin of md_teardown: a raid1 written, clean, then stopped with nothing pending",
        findings: &[],
        also: &[],
        check: assertions::md_clean,
    },
    Scenario {
        name: "md_teardown",
        about: "seed 003: a superblock write still pending when the array is stopped",
        findings: &["md-teardown-inflight", "md-write-after-teardown"],
        also: &[],
        check: assertions::md_teardown,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}
