//! Property tests: random mixes of correct lifecycles never give a finding;
//! one injected violation among them always gives its finding and nothing
//! else; the findings do not depend on how events are delayed within the
//! reorder window or on how pushes and clock ticks are batched.
//!
//! A trace is a set of scenes, each the script of one task and the
//! interrupts that serve it (its own tid, bios, completion, md array and
//! interrupt CPU), started at random times so that scenes overlap.

mod common;

use common::build::*;
use common::{Replay, jitter, replay};
use detector::engine::{Engine, EngineConfig, Finding, FindingKind};
use detector::event::{Dev, Event, TeardownStage, WaitVariant};
use proptest::prelude::*;

/// A correct lifecycle.
#[derive(Clone, Debug)]
enum Benign {
    /// `submit_bio_wait`-style: on-stack completion, bio, wait.
    SyncIo {
        complete_first: bool,
        variant: WaitVariant,
    },
    /// A parent with chained children completing in any order.
    Chained { order: Vec<usize> },
    /// A stacked driver resubmits the in-flight bio.
    Resubmit { times: u8 },
    /// A bio completes, is reset and submitted again.
    Reuse,
    /// md teardown that waits for its superblock writes.
    MdClean { writes: u8 },
    /// Nested completion handlers that return.
    Nested { depth: u8 },
}

/// One broken lifecycle.
#[derive(Clone, Copy, Debug)]
enum Violation {
    CompleteAfterReturn,
    Unsynchronized,
    LostWakeup,
    DoubleComplete,
    MdInflight,
    Stuck,
    LostIo,
}

impl Violation {
    fn expected(self) -> &'static [FindingKind] {
        use FindingKind::*;
        match self {
            Self::CompleteAfterReturn => &[CompleteAfterReturn],
            Self::Unsynchronized => &[UnsynchronizedOnstackComplete],
            Self::LostWakeup => &[LostWakeup],
            Self::DoubleComplete => &[BioDoubleComplete],
            Self::MdInflight => &[MdTeardownInflight, MdWriteAfterTeardown],
            Self::Stuck => &[StuckCompletionHandler],
            Self::LostIo => &[LostIoCompletion],
        }
    }
}

fn succeeded(variant: WaitVariant) -> i64 {
    match variant {
        WaitVariant::Timeout | WaitVariant::IoTimeout => 100,
        WaitVariant::InterruptibleTimeout | WaitVariant::KillableTimeout => 50,
        WaitVariant::Try => 1,
        _ => 0,
    }
}

/// Scene `k`'s cast: a task, an interrupt CPU of its own, a disk.
struct Cast {
    t: Who,
    irq: Who,
    disk: Dev,
    k: u64,
}

impl Cast {
    fn new(k: usize, disk: Dev) -> Self {
        Self {
            t: task(100 + k as u32, "worker", 100 + k as u32),
            irq: irq(200 + k as u32),
            disk,
            k: k as u64,
        }
    }

    fn bio(&self, j: u64) -> u64 {
        1000 + self.k * 100 + j
    }

    fn x(&self) -> u64 {
        self.t.at(0x3a00)
    }
}

/// Events of a benign scene, starting at `t0`, 10 us apart.
fn benign(scene: &Benign, c: &Cast, t0: u64) -> Vec<Event> {
    let mut t = t0;
    let mut next = || {
        t += 10 * US;
        t
    };
    let (task, irq, disk) = (&c.t, &c.irq, c.disk);
    let b = c.bio(0);
    let mut ev = Vec::new();
    match scene {
        Benign::SyncIo {
            complete_first,
            variant,
        } => {
            let x = c.x();
            let ret = succeeded(*variant);
            ev.push(queue(task, next(), b, disk));
            if *complete_first {
                ev.push(endio(irq, next(), b, disk, 1, 0));
                ev.push(complete(irq, next(), x));
                ev.push(endio_exit(irq, next(), b));
                if *variant != WaitVariant::Try {
                    ev.push(wait_enter(task, next(), x, *variant));
                }
                ev.push(wait_exit(task, next(), x, *variant, ret));
            } else {
                ev.push(wait_enter(task, next(), x, *variant));
                ev.push(sleep(task, next(), true));
                ev.push(endio(irq, next(), b, disk, 1, 0));
                ev.push(complete(irq, next(), x));
                ev.push(waking(irq, next(), task));
                ev.push(endio_exit(irq, next(), b));
                ev.push(switch_in(task, next()));
                ev.push(wait_exit(task, next(), x, *variant, ret));
            }
            ev.push(sys_exit(task, next()));
        }
        Benign::Chained { order } => {
            let children = order.len() as u64;
            ev.push(queue(task, next(), b, disk));
            for i in 1..=children {
                ev.push(queue_end_io(task, next(), c.bio(i), disk, CHAIN_END_IO));
            }
            // The parent's own completion is step `children`.
            let mut remaining = children as i32 + 1;
            for &step in order.iter().chain(std::iter::once(&(children as usize))) {
                let ts = next();
                if step == children as usize {
                    ev.push(endio(irq, ts, b, disk, remaining, 0));
                    ev.push(endio_exit(irq, ts + US, b));
                } else {
                    let child = c.bio(step as u64 + 1);
                    ev.push(endio_with(irq, ts, child, disk, 1, 0, CHAIN_END_IO));
                    ev.push(endio(irq, ts, b, disk, remaining, 1));
                    ev.push(endio_exit(irq, ts + US, child));
                }
                remaining -= 1;
            }
        }
        Benign::Resubmit { times } => {
            ev.push(queue(task, next(), b, disk));
            for _ in 0..*times {
                ev.push(queue(task, next(), b, disk));
            }
            ev.push(endio(irq, next(), b, disk, 1, 0));
            ev.push(endio_exit(irq, next(), b));
        }
        Benign::Reuse => {
            for _ in 0..2 {
                ev.push(bio_init(task, next(), b));
                ev.push(queue(task, next(), b, disk));
                ev.push(endio(irq, next(), b, disk, 1, 0));
                ev.push(endio_exit(irq, next(), b));
            }
        }
        Benign::MdClean { writes } => {
            let mddev = 0xffff_8880_2000_0000 + c.k * 0x1000;
            let n = *writes as i32;
            ev.push(md(
                task,
                next(),
                mddev,
                MdKind::Stage(TeardownStage::StopWrites, 0),
            ));
            for i in 0..n {
                ev.push(md(task, next(), mddev, MdKind::Write(i)));
            }
            ev.push(md(task, next(), mddev, MdKind::Wait(n)));
            for i in 0..n {
                ev.push(md(irq, next(), mddev, MdKind::Written(n - i)));
            }
            ev.push(md(task, next(), mddev, MdKind::WaitExit));
            for stage in [
                TeardownStage::Stop,
                TeardownStage::BitmapFree,
                TeardownStage::Detach,
                TeardownStage::KobjRelease,
            ] {
                ev.push(md(task, next(), mddev, MdKind::Stage(stage, 0)));
            }
        }
        Benign::Nested { depth } => {
            let depth = *depth as u64;
            for level in 0..depth {
                ev.push(queue(task, next(), c.bio(level), disk));
            }
            for level in 0..depth {
                let mut e = endio(irq, next(), c.bio(level), disk, 1, 0);
                e.sp.0 -= level * 0x100;
                ev.push(e);
            }
            for level in (0..depth).rev() {
                let mut e = endio_exit(irq, next(), c.bio(level));
                e.sp.0 -= level * 0x100;
                ev.push(e);
            }
        }
    }
    ev
}

/// Events of a violation scene starting at `t0`; its disk is its own.
fn violation(v: Violation, c: &Cast, t0: u64) -> Vec<Event> {
    let mut t = t0;
    let mut next = || {
        t += 10 * US;
        t
    };
    let (task, irq, disk) = (&c.t, &c.irq, c.disk);
    let b = c.bio(0);
    let x = c.x();
    match v {
        Violation::CompleteAfterReturn => vec![
            queue(task, next(), b, disk),
            sys_exit(task, next()),
            endio(irq, next(), b, disk, 1, 0),
            complete(irq, next(), x),
            endio_exit(irq, next(), b),
        ],
        Violation::Unsynchronized => vec![
            queue(task, next(), b, disk),
            endio(irq, next(), b, disk, 1, 0),
            complete(irq, next(), x),
            endio_exit(irq, next(), b),
            sys_exit(task, next()),
        ],
        Violation::LostWakeup => vec![
            queue(task, next(), b, disk),
            sleep(task, next(), true),
            endio(irq, next(), b, disk, 1, 0),
            endio_exit(irq, next(), b),
        ],
        Violation::DoubleComplete => vec![
            queue(task, next(), b, disk),
            endio(irq, next(), b, disk, 1, 0),
            endio_exit(irq, next(), b),
            endio(irq, next(), b, disk, 1, 0),
            endio_exit(irq, next(), b),
        ],
        Violation::MdInflight => {
            let mddev = 0xffff_8880_3000_0000;
            vec![
                md(
                    task,
                    next(),
                    mddev,
                    MdKind::Stage(TeardownStage::StopWrites, 0),
                ),
                md(task, next(), mddev, MdKind::Write(0)),
                md(task, next(), mddev, MdKind::Stage(TeardownStage::Stop, 1)),
                md(task, next(), mddev, MdKind::Stage(TeardownStage::Detach, 1)),
                md(irq, next(), mddev, MdKind::Written(1)),
            ]
        }
        Violation::Stuck => vec![
            queue(task, next(), b, disk),
            endio(irq, next(), b, disk, 1, 0),
        ],
        Violation::LostIo => vec![
            queue(task, next(), b, disk),
            queue(task, next(), c.bio(1), disk),
            endio(irq, next(), c.bio(1), disk, 1, 0),
            endio_exit(irq, next(), c.bio(1)),
        ],
    }
}

fn variant() -> impl Strategy<Value = WaitVariant> {
    prop::sample::select(vec![
        WaitVariant::Plain,
        WaitVariant::Io,
        WaitVariant::Timeout,
        WaitVariant::IoTimeout,
        WaitVariant::Interruptible,
        WaitVariant::Killable,
        WaitVariant::InterruptibleTimeout,
        WaitVariant::KillableTimeout,
        WaitVariant::State,
        WaitVariant::Try,
    ])
}

fn scene() -> impl Strategy<Value = Benign> {
    prop_oneof![
        (any::<bool>(), variant()).prop_map(|(complete_first, variant)| Benign::SyncIo {
            // Try never sleeps: it can only consume an earlier complete().
            complete_first: complete_first || variant == WaitVariant::Try,
            variant,
        }),
        (1usize..5)
            .prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            .prop_map(|order| Benign::Chained { order }),
        (1u8..4).prop_map(|times| Benign::Resubmit { times }),
        Just(Benign::Reuse),
        (0u8..4).prop_map(|writes| Benign::MdClean { writes }),
        (1u8..5).prop_map(|depth| Benign::Nested { depth }),
    ]
}

fn violation_kind() -> impl Strategy<Value = Violation> {
    prop::sample::select(vec![
        Violation::CompleteAfterReturn,
        Violation::Unsynchronized,
        Violation::LostWakeup,
        Violation::DoubleComplete,
        Violation::MdInflight,
        Violation::Stuck,
        Violation::LostIo,
    ])
}

const T0: u64 = 100 * S;

/// Scenes with their start offsets (within 2 s, so that they overlap).
fn scenes() -> impl Strategy<Value = Vec<(Benign, u64)>> {
    prop::collection::vec((scene(), 0..2 * S), 1..10)
}

/// Merges scenes into one trace in time order, with a last event far
/// enough ahead for every deadline to pass.
fn trace(benigns: &[(Benign, u64)], bad: Option<(Violation, u64)>) -> Vec<Event> {
    let mut events = Vec::new();
    for (k, (scene, start)) in benigns.iter().enumerate() {
        let cast = Cast::new(k, Dev::new(8, (k % 3) as u32));
        events.extend(benign(scene, &cast, T0 + start));
    }
    if let Some((v, start)) = bad {
        let cast = Cast::new(50, Dev::new(8, 32));
        events.extend(violation(v, &cast, T0 + start));
    }
    // Stable: events of one instant keep their order (chained bio_endio
    // records share their call's timestamp).
    events.sort_by_key(|e| e.ts);
    let end = events.last().map_or(T0, |e| e.ts);
    events.push(tick(end + 40 * S, 3));
    events
}

fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
    findings.iter().map(|f| f.kind).collect()
}

/// Pushes `events`, ticking the clock after some of them (to the newest
/// time pushed: what the reader knows at that point).
fn replay_ticking(events: &[Event], every: usize) -> Vec<Finding> {
    let mut engine = Engine::new(EngineConfig::default());
    for (id, stack) in common::build::known_stacks() {
        engine.learn_stack(id, &stack);
    }
    let mut out = Vec::new();
    let mut newest = 0;
    for (i, ev) in events.iter().enumerate() {
        newest = newest.max(ev.ts);
        out.extend(engine.push(ev.clone()));
        if i % every == 0 {
            out.extend(engine.advance(newest));
        }
    }
    out.extend(engine.finish());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn correct_lifecycles_give_no_finding(scenes in scenes()) {
        let r: Replay = replay(trace(&scenes, None));
        prop_assert!(r.findings.is_empty(), "{:#?}", r.findings);
        prop_assert!(r.stats.indeterminate.is_empty(), "{:?}", r.stats.indeterminate);
    }

    #[test]
    fn an_injected_violation_gives_its_finding(
        scenes in scenes(),
        v in violation_kind(),
        start in 0..2 * S,
    ) {
        let r = replay(trace(&scenes, Some((v, start))));
        prop_assert_eq!(r.kinds(), v.expected(), "{:#?}", r.findings);
    }

    #[test]
    fn delays_within_the_window_change_nothing(
        scenes in scenes(),
        v in prop::option::of(violation_kind()),
        start in 0..2 * S,
        seed in any::<u64>(),
    ) {
        let events = trace(&scenes, v.map(|v| (v, start)));
        let sorted = replay(events.clone()).findings;
        let shuffled = replay(jitter(&events, seed)).findings;
        prop_assert_eq!(&sorted, &shuffled);
        let ticking = replay_ticking(&jitter(&events, seed), 1 + (seed % 7) as usize);
        prop_assert_eq!(&kinds(&sorted), &kinds(&ticking));
        prop_assert_eq!(sorted, ticking);
    }
}
