//! The engine under sustained load: a quarter of a million events of
//! correct I/O from 64 threads, with bio addresses reused as slabs do,
//! must leave no finding, nothing undecided and nothing behind. Its speed
//! is measured by `cargo bench -p detector --bench engine`.

mod common;

use common::busy::busy_host;
use common::replay;
use detector::engine::stats::Live;

#[test]
fn a_busy_host_of_correct_io_gives_no_finding_and_leaves_nothing_behind() {
    let r = replay(busy_host(20_000));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.stats.events, 240_000);
    assert!(r.stats.indeterminate.is_empty(), "{:?}", r.stats);
    let Live {
        bios_in_flight,
        open_handlers,
        onstack_completions,
        sleepers_judged,
        buffered_events,
        ..
    } = r.stats.live;
    assert_eq!(
        (
            bios_in_flight,
            open_handlers,
            onstack_completions,
            sleepers_judged,
            buffered_events
        ),
        (0, 0, 0, 0, 0),
        "{:?}",
        r.stats
    );
}
