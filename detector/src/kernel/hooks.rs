//! The one table that decides how each kernel event is hooked, and which
//! rules each hook feeds.
//!
//! Every hook lists its candidates best first: fentry/fexit (cheapest, typed
//! arguments), then kprobe/kretprobe, then a tracepoint where one exists
//! (BTF-typed, then raw). The loader takes the first candidate the running
//! kernel accepts and `detector check` prints the choice and the reasons the
//! better ones failed.

use std::sync::LazyLock;

use serde::Serialize;

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    TpBtf,
    RawTracepoint,
}

impl Mechanism {
    pub const ALL: [Mechanism; 6] = [
        Self::Fentry,
        Self::Fexit,
        Self::Kprobe,
        Self::Kretprobe,
        Self::TpBtf,
        Self::RawTracepoint,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::Kprobe => "kprobe",
            Self::Kretprobe => "kretprobe",
            Self::TpBtf => "tp_btf",
            Self::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// One way to attach a hook: a program in the eBPF object and its target
/// (kernel function or tracepoint name).
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub mechanism: Mechanism,
    pub target: &'static str,
    pub program: &'static str,
}

/// A kernel event detector wants to see.
#[derive(Debug)]
pub struct HookSpec {
    /// Name users see in `detector check` (`bio_endio`, `bio_endio:exit`).
    pub name: &'static str,
    /// Kernel module providing the targets; hooks wait for it to load.
    pub module: Option<&'static str>,
    pub candidates: &'static [Candidate],
    /// Not attached when this other hook is: it would only repeat what that
    /// one reports, at extra cost per I/O.
    pub redundant_with: Option<&'static str>,
    /// What the hook reports.
    pub what: &'static str,
    /// The target comes and goes between kernel versions and is never
    /// inlined away (an exported function): a kernel without it cannot call
    /// it, so a rule does not need the hook there. Any other absent target
    /// (a static function such as md's `super_written` may be inlined into
    /// its callers) leaves the rule blind, not satisfied.
    pub optional: bool,
}

const fn c(mechanism: Mechanism, target: &'static str, program: &'static str) -> Candidate {
    Candidate {
        mechanism,
        target,
        program,
    }
}

use Mechanism::*;

macro_rules! entry {
    ($name:expr, $target:expr, $fentry:expr, $kprobe:expr, $what:expr) => {
        HookSpec {
            name: $name,
            module: None,
            candidates: {
                const C: &[Candidate] = &[c(Fentry, $target, $fentry), c(Kprobe, $target, $kprobe)];
                C
            },
            redundant_with: None,
            what: $what,
            optional: false,
        }
    };
}

macro_rules! exit {
    ($name:expr, $target:expr, $fexit:expr, $kretprobe:expr, $what:expr) => {
        HookSpec {
            name: $name,
            module: None,
            candidates: {
                const C: &[Candidate] =
                    &[c(Fexit, $target, $fexit), c(Kretprobe, $target, $kretprobe)];
                C
            },
            redundant_with: None,
            what: $what,
            optional: false,
        }
    };
}

macro_rules! tracepoint {
    ($name:literal, $tp:literal, $what:literal) => {
        tracepoint!($name, $tp, None, $what)
    };
    ($name:literal, $tp:literal, $redundant:expr, $what:literal) => {
        HookSpec {
            name: $name,
            module: None,
            candidates: {
                const C: &[Candidate] = &[
                    // Raw first: its arguments are plain loads from the
                    // context, where tp_btf's typed pointers must be
                    // copied out through a helper (about 10-20 ns a run
                    // on the hooks that run most, docs/performance.md).
                    c(RawTracepoint, $tp, concat!("raw_", $tp)),
                    c(TpBtf, $tp, concat!("tp_", $tp)),
                ];
                C
            },
            redundant_with: $redundant,
            what: $what,
            optional: false,
        }
    };
}

/// A tracepoint whose program, as tp_btf, loads the pid of a task an
/// argument points to straight from the typed pointer (no helper call,
/// `Hooked::task_tid`), where a raw tracepoint must copy it out through
/// `bpf_probe_read_kernel`: tp_btf first.
macro_rules! task_tracepoint {
    ($name:literal, $tp:literal, $what:literal) => {
        HookSpec {
            name: $name,
            module: None,
            candidates: {
                const C: &[Candidate] = &[
                    c(TpBtf, $tp, concat!("tp_", $tp)),
                    c(RawTracepoint, $tp, concat!("raw_", $tp)),
                ];
                C
            },
            redundant_with: None,
            what: $what,
            optional: false,
        }
    };
}

macro_rules! md {
    ($name:literal, $target:literal, $kind:ident, $program:literal, $what:literal) => {
        HookSpec {
            name: $name,
            module: Some("md_mod"),
            candidates: {
                const C: &[Candidate] = &[c($kind, $target, $program)];
                C
            },
            redundant_with: None,
            what: $what,
            optional: false,
        }
    };
}

macro_rules! waits {
    ($hooks:ident, $($sym:literal),+ $(,)?) => {
        $(
            // Exported from kernel/sched/completion.c; variants were added
            // over the years (wait_for_completion_state in 5.18).
            $hooks.push(HookSpec {
                optional: true,
                ..entry!(
                    $sym,
                    $sym,
                    concat!("enter_", $sym),
                    concat!("kprobe_", $sym),
                    "a task starts waiting on a completion"
                )
            });
            $hooks.push(HookSpec {
                optional: true,
                ..exit!(
                    concat!($sym, ":exit"),
                    $sym,
                    concat!("exit_", $sym),
                    concat!("kretprobe_", $sym),
                    "the wait returns, with its result"
                )
            });
        )+
    };
}

/// Every hook, in the order `detector check` lists them.
pub fn hooks() -> &'static [HookSpec] {
    static HOOKS: LazyLock<Vec<HookSpec>> = LazyLock::new(|| {
        let mut hooks = vec![
            HookSpec {
                name: "bio_submit",
                module: None,
                candidates: {
                    const C: &[Candidate] = &[
                        // After blk-throttle: a bio held by a cgroup's
                        // io.max is submitted when it is dispatched.
                        c(
                            Fentry,
                            "submit_bio_noacct_nocheck",
                            "enter_submit_bio_noacct_nocheck",
                        ),
                        c(Fentry, "submit_bio_noacct", "enter_submit_bio_noacct"),
                        c(
                            Kprobe,
                            "submit_bio_noacct_nocheck",
                            "kprobe_submit_bio_noacct_nocheck",
                        ),
                        c(Kprobe, "submit_bio_noacct", "kprobe_submit_bio_noacct"),
                        c(RawTracepoint, "block_bio_queue", "raw_block_bio_queue"),
                        c(TpBtf, "block_bio_queue", "tp_block_bio_queue"),
                    ];
                    C
                },
                redundant_with: None,
                what: "a bio is submitted",
                optional: false,
            },
            entry!(
                "bio_init",
                "bio_init",
                "enter_bio_init",
                "kprobe_bio_init",
                "a bio starts a new life"
            ),
            entry!(
                "bio_reset",
                "bio_reset",
                "enter_bio_reset",
                "kprobe_bio_reset",
                "a bio is reset for reuse"
            ),
            entry!(
                "bio_endio",
                "bio_endio",
                "enter_bio_endio",
                "kprobe_bio_endio",
                "a bio completes (final or chained)"
            ),
            exit!(
                "bio_endio:exit",
                "bio_endio",
                "exit_bio_endio",
                "kretprobe_bio_endio",
                "its completion handler returned"
            ),
            tracepoint!(
                "block_rq_complete",
                "block_rq_complete",
                Some("bio_endio"),
                "a request completes a byte range"
            ),
            tracepoint!(
                "block_bio_complete",
                "block_bio_complete",
                Some("bio_endio"),
                "a remapped bio completes"
            ),
            entry!(
                "del_gendisk",
                "del_gendisk",
                "enter_del_gendisk",
                "kprobe_del_gendisk",
                "a disk is being removed"
            ),
            exit!(
                "del_gendisk:exit",
                "del_gendisk",
                "exit_del_gendisk",
                "kretprobe_del_gendisk",
                "the disk is gone"
            ),
            entry!(
                "complete",
                "complete",
                "enter_complete",
                "kprobe_complete",
                "complete(x)"
            ),
            entry!(
                "complete_all",
                "complete_all",
                "enter_complete_all",
                "kprobe_complete_all",
                "complete_all(x)"
            ),
            entry!(
                "init_completion",
                "__init_swait_queue_head",
                "enter_init_swait_queue_head",
                "kprobe_init_swait_queue_head",
                "a completion is (re)initialised"
            ),
            task_tracepoint!(
                "sched_switch",
                "sched_switch",
                "a task switches out (sleep state, stack depth)"
            ),
        ];
        waits!(
            hooks,
            "wait_for_completion",
            "wait_for_completion_io",
            "wait_for_completion_timeout",
            "wait_for_completion_io_timeout",
            "wait_for_completion_interruptible",
            "wait_for_completion_interruptible_timeout",
            "wait_for_completion_killable",
            "wait_for_completion_killable_timeout",
            "wait_for_completion_state",
            "try_wait_for_completion",
            "completion_done",
        );
        hooks.extend([
            task_tracepoint!(
                "sched_waking",
                "sched_waking",
                "a sleeping task is being woken (by whom)"
            ),
            task_tracepoint!(
                "sched_wakeup",
                "sched_wakeup",
                "a sleeping task is runnable"
            ),
            tracepoint!(
                "sys_exit",
                "sys_exit",
                "a watched task returns to user space"
            ),
            tracepoint!(
                "sys_enter",
                "sys_enter",
                "a task that returned with a completion on its stack enters the kernel again"
            ),
            tracepoint!("sched_process_exit", "sched_process_exit", "a task exits"),
            tracepoint!(
                "task_rename",
                "task_rename",
                "a task is renamed: without it every record carries its task's name"
            ),
            md!(
                "md_super_write",
                "md_super_write",
                Kprobe,
                "kprobe_md_super_write",
                "md issues a superblock write"
            ),
            md!(
                "super_written",
                "super_written",
                Kprobe,
                "kprobe_super_written",
                "an md superblock write completes"
            ),
            md!(
                "md_super_wait",
                "md_super_wait",
                Kprobe,
                "kprobe_md_super_wait",
                "md waits for its superblock writes"
            ),
            md!(
                "md_super_wait:exit",
                "md_super_wait",
                Kretprobe,
                "kretprobe_md_super_wait",
                "that wait returns"
            ),
            md!(
                "__md_stop_writes",
                "__md_stop_writes",
                Kprobe,
                "kprobe_md_stop_writes",
                "array teardown: last flush"
            ),
            md!(
                "__md_stop",
                "__md_stop",
                Kprobe,
                "kprobe_md_stop",
                "array teardown: personality freed"
            ),
            md!(
                "mddev_detach",
                "mddev_detach",
                Kprobe,
                "kprobe_mddev_detach",
                "array teardown: detach"
            ),
            md!(
                "md_bitmap_free",
                "md_bitmap_free",
                Kprobe,
                "kprobe_md_bitmap_free",
                "array teardown: bitmap freed"
            ),
            md!(
                "md_kobj_release",
                "md_kobj_release",
                Kprobe,
                "kprobe_md_kobj_release",
                "array teardown: mddev freed"
            ),
        ]);
        hooks
    });
    &HOOKS
}

/// The hook named `name`.
pub fn hook(name: &str) -> Option<&'static HookSpec> {
    hooks().iter().find(|h| h.name == name)
}

/// A rule of the engine and the hooks it depends on.
#[derive(Debug)]
pub struct RuleSpec {
    /// The rule's name in `detector check` and `--disable-rule`.
    pub name: &'static str,
    /// The finding kinds it reports.
    pub findings: &'static [&'static str],
    /// Hooks it cannot work without: every group needs one attached hook.
    /// A hook whose target this kernel does not have at all counts as
    /// satisfied (nothing can call a function that does not exist).
    pub needs: &'static [&'static [&'static str]],
    /// Hooks whose absence leaves it working with less precision.
    pub improves: &'static [&'static str],
    /// What is lost without `improves`.
    pub degraded: &'static str,
}

const WAIT_HOOKS: &[&[&str]] = &[
    &["wait_for_completion"],
    &["wait_for_completion:exit"],
    &["wait_for_completion_io"],
    &["wait_for_completion_io:exit"],
    &["wait_for_completion_timeout"],
    &["wait_for_completion_timeout:exit"],
    &["wait_for_completion_io_timeout"],
    &["wait_for_completion_io_timeout:exit"],
    &["wait_for_completion_interruptible"],
    &["wait_for_completion_interruptible:exit"],
    &["wait_for_completion_interruptible_timeout"],
    &["wait_for_completion_interruptible_timeout:exit"],
    &["wait_for_completion_killable"],
    &["wait_for_completion_killable:exit"],
    &["wait_for_completion_killable_timeout"],
    &["wait_for_completion_killable_timeout:exit"],
    &["wait_for_completion_state"],
    &["wait_for_completion_state:exit"],
    &["try_wait_for_completion:exit"],
    &["completion_done:exit"],
    &["complete"],
    &["init_completion"],
    &["sched_switch"],
];

/// Every rule, with what it needs.
pub static RULES: &[RuleSpec] = &[
    RuleSpec {
        name: "onstack-completion",
        findings: &["complete-after-return", "unsynchronized-onstack-complete"],
        // Every wait variant: a wait detector cannot see would look like a
        // missing wait, i.e. a false finding.
        needs: WAIT_HOOKS,
        improves: &[
            "complete_all",
            "sys_exit",
            "sys_enter",
            "sched_process_exit",
        ],
        degraded: "frames left by returning to user space or exiting are noticed later",
    },
    RuleSpec {
        name: "lost-wakeup",
        findings: &["lost-wakeup"],
        needs: &[
            &["bio_submit"],
            &["bio_endio", "block_rq_complete"],
            &["sched_switch"],
            &["sched_waking", "sched_wakeup"],
        ],
        improves: &["bio_endio"],
        degraded: "completions on bio-based devices (dm, md) are not seen",
    },
    RuleSpec {
        name: "md-teardown",
        findings: &["md-teardown-inflight", "md-write-after-teardown"],
        needs: &[
            &["md_super_write"],
            &["super_written"],
            &["__md_stop", "mddev_detach", "md_kobj_release"],
        ],
        improves: &["md_super_wait", "md_super_wait:exit", "__md_stop_writes"],
        degraded: "the diagram does not show md_super_wait",
    },
    RuleSpec {
        name: "bio-double-complete",
        findings: &["bio-double-complete"],
        needs: &[&["bio_endio"], &["bio_submit"]],
        improves: &["bio_init", "bio_reset"],
        degraded: "a bio freed and reused without being submitted looks like the old one",
    },
    RuleSpec {
        name: "bio-complete-after-teardown",
        findings: &["bio-complete-after-teardown"],
        needs: &[
            &["bio_endio"],
            &["bio_submit"],
            &["del_gendisk"],
            &["del_gendisk:exit"],
        ],
        improves: &[],
        degraded: "",
    },
    RuleSpec {
        name: "stuck-completion-handler",
        findings: &["stuck-completion-handler"],
        needs: &[&["bio_endio"], &["bio_endio:exit"]],
        improves: &[],
        degraded: "",
    },
    RuleSpec {
        name: "lost-io-completion",
        findings: &["lost-io-completion"],
        needs: &[&["bio_submit"], &["bio_endio", "block_rq_complete"]],
        improves: &["bio_endio"],
        degraded: "bios on devices that never reported a request completion are not judged",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_rules_refer_to_real_hooks() {
        let mut names: Vec<_> = hooks().iter().map(|h| h.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate hook names");
        for rule in RULES {
            for name in rule
                .needs
                .iter()
                .flat_map(|g| g.iter())
                .chain(rule.improves)
            {
                assert!(
                    hook(name).is_some(),
                    "rule {} names unknown hook {name}",
                    rule.name
                );
            }
        }
        for h in hooks() {
            if let Some(other) = h.redundant_with {
                assert!(
                    hook(other).is_some(),
                    "{} redundant with unknown {other}",
                    h.name
                );
            }
            assert!(!h.candidates.is_empty());
        }
    }

    /// A bio's submission is taken after blk-throttle where the kernel
    /// allows it: a bio a cgroup's io.max holds back is not yet at the
    /// device, and its stall clock must not run.
    #[test]
    fn submission_prefers_after_the_throttle() {
        let submit = hook("bio_submit").expect("bio_submit");
        let first = |m: Mechanism| {
            submit
                .candidates
                .iter()
                .find(|c| c.mechanism == m)
                .map(|c| c.target)
        };
        assert_eq!(first(Mechanism::Fentry), Some("submit_bio_noacct_nocheck"));
        assert_eq!(first(Mechanism::Kprobe), Some("submit_bio_noacct_nocheck"));
    }

    /// Candidates are ordered best first: function hooks before tracepoints
    /// (two functions of one mechanism: the better one first), raw
    /// tracepoints before BTF-typed ones (cheaper to read arguments from),
    /// except where the program loads a task's pid from its typed first
    /// argument (the wakeups).
    #[test]
    fn candidates_prefer_function_hooks() {
        let typed_first = ["sched_switch", "sched_waking", "sched_wakeup"];
        for h in hooks() {
            let typed = typed_first.contains(&h.name);
            let rank = |m: Mechanism| match m {
                Mechanism::Fentry | Mechanism::Fexit => 0,
                Mechanism::Kprobe | Mechanism::Kretprobe => 1,
                Mechanism::RawTracepoint if typed => 3,
                Mechanism::RawTracepoint => 2,
                Mechanism::TpBtf if typed => 2,
                Mechanism::TpBtf => 3,
            };
            let ranks: Vec<_> = h.candidates.iter().map(|c| rank(c.mechanism)).collect();
            assert!(
                ranks.windows(2).all(|w| w[0] <= w[1]),
                "{}: {ranks:?}",
                h.name
            );
        }
    }
}
