//! Which rules the attached hooks leave active: the second half of
//! `detector check`, also printed when a trace starts.

use serde::Serialize;

use super::attach::{HookOutcome, HookStatus};
use super::hooks::{Mechanism, RULES, RuleSpec, hook};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RuleState {
    Active,
    /// Works, with less precision; `missing` would restore it.
    Degraded {
        missing: Vec<&'static str>,
        effect: &'static str,
    },
    /// Cannot work: none of the hooks of some needed group is attached.
    Inactive {
        missing: Vec<&'static str>,
    },
    /// Needs a module that is not loaded; activates when it loads.
    WaitingForModule {
        module: &'static str,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleCoverage {
    pub rule: &'static str,
    pub findings: &'static [&'static str],
    #[serde(flatten)]
    pub state: RuleState,
}

impl RuleCoverage {
    pub fn usable(&self) -> bool {
        matches!(self.state, RuleState::Active | RuleState::Degraded { .. })
    }
}

fn status<'a>(outcomes: &'a [HookOutcome], name: &str) -> Option<&'a HookStatus> {
    outcomes.iter().find(|o| o.name == name).map(|o| &o.status)
}

fn attached(outcomes: &[HookOutcome], name: &str) -> bool {
    matches!(
        status(outcomes, name),
        Some(HookStatus::Attached { .. } | HookStatus::Redundant { .. })
    )
}

/// The hook's target is absent from this kernel in a way that means nothing
/// can call it (see [`HookSpec::optional`](super::hooks::HookSpec)).
fn absent(outcomes: &[HookOutcome], name: &str) -> bool {
    matches!(status(outcomes, name), Some(HookStatus::Absent))
        && hook(name).is_some_and(|h| h.optional)
}

fn cover(rule: &'static RuleSpec, outcomes: &[HookOutcome]) -> RuleCoverage {
    let all: Vec<&str> = rule.needs.iter().flat_map(|g| g.iter().copied()).collect();
    let waiting = all.iter().find_map(|name| match status(outcomes, name) {
        Some(HookStatus::WaitingForModule { module }) => Some(*module),
        _ => None,
    });
    let state = if let Some(module) = waiting {
        RuleState::WaitingForModule { module }
    } else {
        // An optional function the kernel does not have cannot be called, so
        // its hook is not needed, as long as the rule has some real hook.
        let any_attached = all.iter().any(|n| attached(outcomes, n));
        let missing: Vec<&'static str> = rule
            .needs
            .iter()
            .filter(|group| {
                !group
                    .iter()
                    .any(|n| attached(outcomes, n) || (any_attached && absent(outcomes, n)))
            })
            .flat_map(|group| group.iter().copied())
            .collect();
        if !missing.is_empty() {
            RuleState::Inactive { missing }
        } else {
            let weaker: Vec<&'static str> = rule
                .improves
                .iter()
                .copied()
                .filter(|n| !attached(outcomes, n) && !absent(outcomes, n))
                .collect();
            if weaker.is_empty() {
                RuleState::Active
            } else {
                RuleState::Degraded {
                    missing: weaker,
                    effect: rule.degraded,
                }
            }
        }
    };
    RuleCoverage {
        rule: rule.name,
        findings: rule.findings,
        state,
    }
}

/// Every rule's state given these hook outcomes.
pub fn coverage(outcomes: &[HookOutcome]) -> Vec<RuleCoverage> {
    RULES.iter().map(|r| cover(r, outcomes)).collect()
}

/// How a mechanism fared across all hooks: used by some hook, refused (and
/// why), or never tried.
pub fn mechanism_verdict(outcomes: &[HookOutcome], mechanisms: &[Mechanism]) -> Result<(), String> {
    if outcomes
        .iter()
        .any(|o| o.attached().is_some_and(|m| mechanisms.contains(&m)))
    {
        return Ok(());
    }
    let reason = outcomes
        .iter()
        .flat_map(|o| &o.tried)
        .find(|a| mechanisms.contains(&a.mechanism) && !a.target_missing)
        .map(|a| a.error.clone())
        .unwrap_or_else(|| "not tried".into());
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::hooks::hooks;

    fn outcomes(f: impl Fn(&str) -> HookStatus) -> Vec<HookOutcome> {
        hooks()
            .iter()
            .map(|h| HookOutcome {
                name: h.name,
                module: h.module,
                status: f(h.name),
                tried: vec![],
            })
            .collect()
    }

    fn state(cov: &[RuleCoverage], rule: &str) -> RuleState {
        cov.iter().find(|c| c.rule == rule).unwrap().state.clone()
    }

    #[test]
    fn everything_attached_means_everything_active() {
        let all = outcomes(|_| HookStatus::Attached {
            mechanism: Mechanism::Fentry,
            target: "x",
        });
        assert!(coverage(&all).iter().all(|c| c.state == RuleState::Active));
    }

    /// This host: tracepoints only.
    #[test]
    fn tracepoints_only() {
        let tp = [
            "bio_submit",
            "block_rq_complete",
            "block_bio_complete",
            "sched_switch",
            "sched_waking",
            "sched_wakeup",
            "sys_exit",
            "sched_process_exit",
        ];
        let o = outcomes(|n| {
            if tp.contains(&n) {
                HookStatus::Attached {
                    mechanism: Mechanism::TpBtf,
                    target: "x",
                }
            } else if n.starts_with("md") || n.contains("md_") || n == "super_written" {
                HookStatus::WaitingForModule { module: "md_mod" }
            } else {
                HookStatus::Failed
            }
        });
        let cov = coverage(&o);
        assert!(matches!(
            state(&cov, "onstack-completion"),
            RuleState::Inactive { .. }
        ));
        assert!(matches!(
            state(&cov, "stuck-completion-handler"),
            RuleState::Inactive { .. }
        ));
        assert!(matches!(
            state(&cov, "lost-io-completion"),
            RuleState::Degraded { .. }
        ));
        assert!(matches!(
            state(&cov, "lost-wakeup"),
            RuleState::Degraded { .. }
        ));
        assert!(matches!(
            state(&cov, "md-teardown"),
            RuleState::WaitingForModule { .. }
        ));
    }

    #[test]
    fn an_absent_wait_variant_is_not_needed() {
        let o = outcomes(|n| {
            if n.starts_with("wait_for_completion_state") {
                HookStatus::Absent
            } else {
                HookStatus::Attached {
                    mechanism: Mechanism::Kprobe,
                    target: "x",
                }
            }
        });
        assert_eq!(
            state(&coverage(&o), "onstack-completion"),
            RuleState::Active
        );
    }

    /// md's `super_written` is static: a kernel whose BTF and kallsyms lack
    /// it may have inlined it, and superblock writes still complete, unseen.
    #[test]
    fn an_absent_static_function_leaves_its_rule_inactive() {
        let o = outcomes(|n| {
            if n == "super_written" {
                HookStatus::Absent
            } else {
                HookStatus::Attached {
                    mechanism: Mechanism::Kprobe,
                    target: "x",
                }
            }
        });
        assert_eq!(
            state(&coverage(&o), "md-teardown"),
            RuleState::Inactive {
                missing: vec!["super_written"]
            }
        );
        // An absent improving hook degrades instead of passing unnoticed.
        let o = outcomes(|n| {
            if n == "__md_stop_writes" {
                HookStatus::Absent
            } else {
                HookStatus::Attached {
                    mechanism: Mechanism::Kprobe,
                    target: "x",
                }
            }
        });
        assert!(matches!(
            state(&coverage(&o), "md-teardown"),
            RuleState::Degraded { .. }
        ));
    }

    #[test]
    fn all_absent_is_not_active() {
        let o = outcomes(|_| HookStatus::Absent);
        assert!(coverage(&o).iter().all(|c| !c.usable()));
    }
}
