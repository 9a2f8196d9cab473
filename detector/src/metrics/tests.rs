use super::*;
use crate::engine::EngineStats;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn names_follow_prometheus_rules() {
    let m = Metrics::new().unwrap();
    m.publish(&EngineStats::default(), Some(&ReaderTotals::default()));
    let text = m.encode().unwrap();
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        families += 1;
        assert!(
            name.starts_with("detector_") || name.starts_with("process_"),
            "{line}"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        } else {
            assert!(!name.ends_with("_total"), "{line}");
        }
    }
    assert!(families > 20, "{text}");
    // Every kernel counter is exported under its name: losses by cause,
    // the others one metric each.
    for (i, name) in counter::NAMES.iter().enumerate() {
        let series = if counter::is_loss(i as u32) {
            format!("detector_events_lost_total{{cause=\"{name}\"}}")
        } else {
            format!("detector_kernel_{name}_total")
        };
        assert_eq!(
            value(&text, &series),
            Some(0.0),
            "{series} missing:\n{text}"
        );
    }
}

#[test]
fn finding_series_start_at_zero() {
    let text = Metrics::new().unwrap().encode().unwrap();
    for kind in FindingKind::ALL {
        let series = format!(
            "detector_findings_total{{rule=\"{}\",severity=\"{}\"}}",
            kind.rule().name(),
            kind.severity().name()
        );
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
}

#[test]
fn engine_and_reader_state_is_copied_in() {
    let m = Metrics::new().unwrap();
    let mut stats = EngineStats::default();
    stats.live.bios_in_flight = 3;
    stats.live.tasks = 7;
    stats.evictions.tasks = 2;
    stats.lost_events = 5;
    stats.indeterminate.insert(Rule::LostWakeup, 1);
    let mut totals = ReaderTotals::default();
    totals.counters.0[counter::DROPPED as usize] = 11;
    totals.counters.0[counter::READ_ERRORS as usize] = 3;
    totals.decode_errors = 4;
    totals.names_unknown = 2;
    m.publish(&stats, Some(&totals));
    let text = m.encode().unwrap();
    for (series, want) in [
        ("detector_bios_in_flight", 3.0),
        ("detector_tracked_objects{type=\"bios_in_flight\"}", 3.0),
        ("detector_tracked_objects{type=\"tasks\"}", 7.0),
        ("detector_evictions_total{table=\"tasks\"}", 2.0),
        ("detector_engine_lost_events_total", 5.0),
        (
            "detector_verdicts_indeterminate_total{rule=\"lost-wakeup\"}",
            1.0,
        ),
        (
            "detector_verdicts_indeterminate_total{rule=\"md-teardown\"}",
            0.0,
        ),
        (
            "detector_events_lost_total{cause=\"ring_buffer_full\"}",
            11.0,
        ),
        (
            "detector_events_lost_total{cause=\"recursion_misses\"}",
            0.0,
        ),
        ("detector_kernel_read_errors_total", 3.0),
        ("detector_decode_errors_total", 4.0),
        ("detector_task_names_missed_total{found=\"unknown\"}", 2.0),
        ("detector_task_names_missed_total{found=\"proc\"}", 0.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series}:\n{text}");
    }
    // Totals only grow: a second publication moves counters to the new
    // totals, gauges follow.
    stats.live.tasks = 1;
    totals.counters.0[counter::DROPPED as usize] = 12;
    m.publish(&stats, Some(&totals));
    let text = m.encode().unwrap();
    assert_eq!(
        value(
            &text,
            "detector_events_lost_total{cause=\"ring_buffer_full\"}"
        ),
        Some(12.0)
    );
    assert_eq!(
        value(&text, "detector_tracked_objects{type=\"tasks\"}"),
        Some(1.0)
    );
}

#[test]
fn rule_states_follow_the_configuration() {
    let m = Metrics::new().unwrap();
    m.set_coverage(None, |r| r != Rule::LostIoCompletion);
    let text = m.encode().unwrap();
    let state = |rule: &str, s: &str| {
        value(
            &text,
            &format!("detector_rule_state{{rule=\"{rule}\",state=\"{s}\"}}"),
        )
    };
    assert_eq!(state("lost-io-completion", "disabled"), Some(1.0));
    assert_eq!(state("lost-io-completion", "active"), Some(0.0));
    assert_eq!(state("lost-wakeup", "active"), Some(1.0));
    assert_eq!(
        value(&text, "detector_rule_active{rule=\"lost-io-completion\"}"),
        Some(0.0)
    );
}

#[test]
fn bios_paired_in_the_kernel_join_the_in_flight_histogram() {
    let m = Metrics::new().unwrap();
    let mut totals = ReaderTotals::default();
    // Three bios of 30-40 µs (the first bucket, <= 50 µs) and one of 2 ms.
    totals.paired_times.0[0] = 3;
    totals.paired_times.0[1] = 105_000;
    totals.paired_times.0[2 * 5] = 1;
    totals.paired_times.0[2 * 5 + 1] = 2_000_000;
    m.publish(&EngineStats::default(), Some(&totals));
    // Published again with nothing new: nothing counted twice.
    m.publish(&EngineStats::default(), Some(&totals));
    let text = m.encode().unwrap();
    let series = "detector_bio_in_flight_duration_seconds";
    assert_eq!(
        value(&text, &format!("{series}_count")),
        Some(4.0),
        "{text}"
    );
    let sum = value(&text, &format!("{series}_sum")).unwrap();
    assert!((sum - 0.002105).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(&text, &format!("{series}_bucket{{le=\"0.00005\"}}")),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("{series}_bucket{{le=\"0.001\"}}")),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("{series}_bucket{{le=\"0.0025\"}}")),
        Some(4.0)
    );
}

#[test]
fn bios_timed_in_userspace_and_paired_in_the_kernel_add_up() {
    let m = Metrics::new().unwrap();
    // The engine timed two bios: 0.3 ms and 40 s (past the last bound).
    m.bio_in_flight_time.observe(0.0003);
    m.bio_in_flight_time.observe(40.0);
    let mut totals = ReaderTotals::default();
    // The kernel paired two of 0.2 ms (bucket <= 0.25 ms)...
    totals.paired_times.0[2 * 2] = 2;
    totals.paired_times.0[2 * 2 + 1] = 400_000;
    m.publish(&EngineStats::default(), Some(&totals));
    // ...and, by the next drain, one more of 0.1 ms (bucket 1: its count
    // at 2, its sum at 3): totals only grow.
    totals.paired_times.0[2] = 1;
    totals.paired_times.0[3] = 100_000;
    m.publish(&EngineStats::default(), Some(&totals));
    let text = m.encode().unwrap();
    let series = "detector_bio_in_flight_duration_seconds";
    let bucket = |le: &str| value(&text, &format!("{series}_bucket{{le=\"{le}\"}}"));
    assert_eq!(bucket("0.00005"), Some(0.0), "{text}");
    assert_eq!(bucket("0.0001"), Some(1.0), "{text}");
    assert_eq!(bucket("0.00025"), Some(3.0), "{text}");
    assert_eq!(bucket("0.0005"), Some(4.0), "{text}");
    assert_eq!(bucket("30"), Some(4.0), "{text}");
    assert_eq!(bucket("+Inf"), Some(5.0), "{text}");
    assert_eq!(value(&text, &format!("{series}_count")), Some(5.0));
    let sum = value(&text, &format!("{series}_sum")).unwrap();
    assert!((sum - 40.0008).abs() < 1e-9, "{sum}");
}
