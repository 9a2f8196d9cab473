//! The `sys_exit` and `sys_enter` hooks, attached only while a task may
//! need them.
//!
//! Any program on the syscall tracepoints puts every syscall of every task
//! on the kernel's slow path, traced or not: empty programs alone cost
//! `perf bench sched messaging` 12-15 % here. They serve two rules: the
//! return to user space ends a task's episode (lost-wakeup), and an
//! on-stack completion's owner leaving its frames is proven by its return
//! (onstack). So they stay attached while tasks submit I/O or own
//! on-stack completions, and are detached after a quiet spell.
//!
//! What detaching costs, and how the verdicts stay true:
//! - An episode open at the detach, or started while detached, may end
//!   unseen. The programs flag a user task's submissions while detached
//!   (`episode_unbounded`), and the engine is told of the detach by a
//!   `SyscallHooks` marker; a sleep that such an episode would otherwise
//!   report as a lost wakeup is indeterminate instead.
//! - A task reported in user space may re-enter the kernel unseen: the
//!   marker makes the engine forget that it was in user space.
//! - An owner's return goes unseen: onstack learns that its frames are
//!   gone from its later switches instead, as on a kernel without the
//!   hooks (fewer findings, never a false one).
//!
//! The first submission after a quiet spell re-attaches them; the return
//! that ends its own syscall may already have passed (attaching takes
//! milliseconds), so that episode stays unbounded until the task returns.

use std::time::Duration;

use super::attach::Probes;
use super::loss::UNKNOWN_CPU;
use crate::clock::monotonic_ns;
use crate::event::{Event, EventKind, LossCause};

/// The hooks, in the order they are attached (the reverse is detached):
/// never a reported return whose entry would go unseen.
const HOOKS: &[&str] = &["sys_enter", "sys_exit"];

/// When the hooks are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The whole session.
    Always,
    /// While a task may need them, and this long after.
    OnDemand { idle: Duration },
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(When::OnDemand, Duration::from_secs(10))
    }
}

impl Policy {
    /// `--syscall-hooks` (or `kernel.syscall-hooks`) with its idle time.
    pub fn new(when: When, idle: Duration) -> Self {
        match when {
            When::Always => Policy::Always,
            When::OnDemand => Policy::OnDemand { idle },
        }
    }
}

/// When the hooks are attached, as `trace --syscall-hooks` and the
/// service's `kernel.syscall-hooks` say it.
#[derive(
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// While a task may need them, and --syscall-hooks-idle after.
    #[default]
    OnDemand,
    /// The whole session.
    Always,
}

/// Attachments and detachments so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HookToggles {
    pub attached: bool,
    pub attaches: u64,
    pub detaches: u64,
    /// Attach or detach calls the kernel refused (the hooks then stay as
    /// they were; said in the log).
    pub failures: u64,
}

/// Decides, batch by batch, whether the hooks should be attached.
pub struct SyscallHooks {
    policy: Policy,
    thread_size: u64,
    /// CLOCK_MONOTONIC of the last event that showed a need.
    last_need: u64,
    /// Bios paired in the kernel, as of the last batch.
    paired: u64,
    pub toggles: HookToggles,
}

impl SyscallHooks {
    /// For `probes` as loaded: the hooks are attached if they could be.
    pub fn new(probes: &Probes, policy: Policy) -> Self {
        let attached = probes.is_attached("sys_exit");
        Self {
            // Without a return hook there is nothing to attach or detach.
            policy: if attached { policy } else { Policy::Always },
            thread_size: probes.config().thread_size.into(),
            last_need: monotonic_ns(),
            paired: 0,
            toggles: HookToggles {
                attached,
                ..HookToggles::default()
            },
        }
    }

    /// Looks at a batch of events; attaches or detaches the hooks if it is
    /// time, appending the marker that says so.
    ///
    /// `paired`: the bios paired in the kernel so far. Each was an episode's
    /// first submission, which needs the hooks as much as one shipped: an
    /// asynchronous submitter's episodes are all paired away, and without
    /// the returns nothing would be paired any more.
    pub fn after_batch(&mut self, probes: &mut Probes, events: &mut Vec<Event>, paired: u64) {
        let Policy::OnDemand { idle } = self.policy else {
            return;
        };
        let now = monotonic_ns();
        let pairing = paired > std::mem::replace(&mut self.paired, paired);
        if pairing || events.iter().any(|ev| needs_returns(ev, self.thread_size)) {
            self.last_need = now;
        }
        let want = now.saturating_sub(self.last_need) < idle.as_nanos() as u64;
        if want == self.toggles.attached {
            return;
        }
        match toggle(probes, want) {
            Ok(()) => {
                self.toggles.attached = want;
                if want {
                    self.toggles.attaches += 1;
                } else {
                    self.toggles.detaches += 1;
                }
                events.push(marker(want, monotonic_ns()));
            }
            Err(e) => {
                self.toggles.failures += 1;
                // Not again until the next quiet spell or need.
                self.last_need = now;
                tracing::warn!("cannot {} the syscall hooks: {e}", verb(want));
                if !want {
                    // A detach that stopped half way may have taken the
                    // return hook: the engine must not count on returns
                    // (a marker without a detach only costs verdicts).
                    events.push(marker(false, monotonic_ns()));
                }
            }
        }
    }
}

fn verb(on: bool) -> &'static str {
    if on { "attach" } else { "detach" }
}

/// Attaches the hooks and then says returns are watched, or says they are
/// not and then detaches them: in between, submissions are flagged
/// unbounded although their returns would be seen, never the reverse.
fn toggle(probes: &mut Probes, on: bool) -> Result<(), String> {
    let watched = |probes: &mut Probes| {
        probes
            .set_returns_watched(on)
            .map_err(|e| format!("cannot write the programs' config: {e}"))
    };
    if on {
        probes.set_attached(HOOKS, true)?;
        watched(probes)
    } else {
        watched(probes)?;
        let reversed: Vec<&str> = HOOKS.iter().rev().copied().collect();
        probes.set_attached(&reversed, false)
    }
}

/// Whether `ev` shows a task that may need its return to user space seen:
/// it started an episode of I/O (or submitted while the hooks were
/// detached), it uses a completion on a kernel stack, its bio's private
/// data is on its stack, or it was reported in user space with its next
/// entry still to be reported.
pub fn needs_returns(ev: &Event, thread_size: u64) -> bool {
    match &ev.kind {
        EventKind::BioQueue {
            episode_start,
            episode_unbounded,
            private,
            ..
        } => *episode_start || *episode_unbounded || ev.on_current_stack(*private, thread_size),
        // Reported only for completions on a stack (or under --full, when
        // the hooks stay attached anyway).
        EventKind::WaitEnter { .. }
        | EventKind::CompletionInit { .. }
        | EventKind::Complete { .. }
        | EventKind::CompleteAll { .. } => true,
        EventKind::SysExit { enter_reported, .. } => *enter_reported,
        _ => false,
    }
}

/// The marker telling the engine (and a recording) that the hooks were
/// attached or detached at `ts`.
pub fn marker(attached: bool, ts: u64) -> Event {
    Event {
        kind: EventKind::SyscallHooks { attached },
        ..super::loss::lost_marker(UNKNOWN_CPU, 0, ts, ts, LossCause::RingBufferFull)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Addr;
    use crate::event::samples::kernel_events;

    #[test]
    fn episode_starts_and_onstack_use_need_the_hooks_other_events_do_not() {
        let mut needing = Vec::new();
        for ev in kernel_events() {
            if needs_returns(&ev, 16384) {
                needing.push(ev.kind.name());
            }
        }
        needing.sort();
        needing.dedup();
        assert_eq!(
            needing,
            [
                "bio_queue",
                "complete",
                "complete_all",
                "completion_init",
                // the sample's return promises its next entry
                "sys_exit",
                "wait_enter"
            ]
        );
    }

    #[test]
    fn a_submission_in_an_episode_already_open_needs_nothing_new() {
        let mut ev = kernel_events()
            .into_iter()
            .find(|e| e.kind.name() == "bio_queue")
            .unwrap();
        if let EventKind::BioQueue {
            episode_start,
            episode_unbounded,
            private,
            ..
        } = &mut ev.kind
        {
            *episode_start = false;
            *episode_unbounded = false;
            *private = Addr(1);
        }
        assert!(!needs_returns(&ev, 16384));
    }
}
