//! `detector run --replay`: the daemon's pipeline fed with a VM bench
//! recording (real findings from Debian's stock kernel) at its recorded
//! pace. Findings are stored before they are counted, logged with their
//! fields, rendered by `detector findings` exactly as `trace` shows them,
//! and neither lost nor doubled across a kill -9 and a torn last line.
//! Needs no privileges (nothing is attached).

mod daemon;

use std::time::Duration;

use daemon::{Daemon, Options, http_get, metric_sum, recording, replay_ids, replay_output};

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;

fn findings_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(daemon::BIN)
        .arg("findings")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn replayed_findings_are_stored_counted_logged_and_rendered_as_trace_does() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path(), "onstack");
    let want = replay_ids(&rec);
    assert_eq!(want.len(), 2, "the recording gives two findings");
    let d = Daemon::start(
        dir.path(),
        Options {
            replay: Some(&rec),
            ..Options::default()
        },
    );
    // Counted means on disk: the file holds at least what the metrics
    // count, whenever we look.
    let mut seen = 0.0;
    while seen < 2.0 {
        let m = d.wait_metrics("a finding counted", |m| {
            metric_sum(m, "detector_findings_total", "") > seen
        });
        seen = metric_sum(&m, "detector_findings_total", "");
        let stored = d.stored_ids().len() as f64;
        assert!(stored >= seen, "{seen} counted, {stored} stored");
    }
    let m = d.metrics().unwrap();
    assert_eq!(
        metric_sum(&m, "detector_findings_total", "rule=\"onstack-completion\""),
        2.0
    );
    assert!(metric_sum(&m, "detector_events_total", "kind=\"complete\"") > 0.0);
    let (status, page) = http_get(&d.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/metrics\""), "{page}");
    assert_eq!(http_get(&d.addr, "/nope").unwrap().0, 404);
    assert_eq!(http_get(&d.addr, "/metrics/x").unwrap().0, 404);

    let findings = d.findings.clone();
    let (status, log) = d.stop_with(SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert_eq!(
        daemon::stored_ids(&findings),
        want,
        "the replay's ids, in order"
    );
    // Each finding logged once, with its fields.
    for (id, kind) in want
        .iter()
        .zip(["unsynchronized-onstack-complete", "complete-after-return"])
    {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
        assert_eq!(lines.len(), 1, "{id}: {log}");
        assert!(
            lines[0].contains(&format!("finding=\"{kind}\"")),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("rule=\"onstack-completion\""),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    }

    // `detector findings` renders them as `detector replay` (and `trace`)
    // do, each under a line saying when, where and which.
    let path = findings.to_str().unwrap();
    let (ok, text, err) = findings_cli(&[path]);
    assert!(ok, "{err}");
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(headers.len(), 2, "{text}");
    for (header, id) in headers.iter().zip(&want) {
        assert!(header.ends_with(&format!(", id {id}")), "{header}");
        assert!(header.contains(" on "), "{header}");
    }
    let rendered: String = text
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("# "))
        .collect();
    assert_eq!(rendered, replay_output(&rec, false));

    let (ok, json, _) = findings_cli(&["--json", path]);
    assert!(ok);
    assert_eq!(json, std::fs::read_to_string(&findings).unwrap());
    let count = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push(path);
        findings_cli(&all)
            .1
            .lines()
            .filter(|l| l.starts_with("# "))
            .count()
    };
    assert_eq!(count(&["--rule", "complete-after-return"]), 1);
    assert_eq!(count(&["--rule", "onstack-completion"]), 2);
    assert_eq!(count(&["--rule", "lost-wakeup"]), 0);
    // Findings are dated when they happened (the recording's clock), not
    // when they were stored.
    let times: Vec<std::time::SystemTime> = json
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            humantime::parse_rfc3339(v["wall_time"].as_str().unwrap()).unwrap()
        })
        .collect();
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_nanos(t).to_string();
    assert_eq!(count(&["--since", &at(times[0])]), 2);
    assert_eq!(count(&["--since", &at(times[1])]), 1);
    let later = times[1] + Duration::from_secs(1);
    assert_eq!(count(&["--since", &at(later)]), 0);
    assert_eq!(count(&["--since", "2000-01-01T00:00:00Z"]), 2);
}

#[test]
fn a_killed_daemon_restarts_without_losing_or_doubling_findings() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path(), "double_complete");
    let want = replay_ids(&rec);
    assert_eq!(want.len(), 1);
    let port = daemon::free_port();
    let start = || {
        Daemon::start(
            dir.path(),
            Options {
                replay: Some(&rec),
                port,
                ..Options::default()
            },
        )
    };
    let d = start();
    d.wait_metrics("the finding counted", |m| {
        metric_sum(m, "detector_findings_total", "") >= 1.0
    });
    let findings = d.findings.clone();
    let (status, _) = d.stop_with(SIGKILL, Duration::from_secs(5));
    assert!(!status.success());
    assert_eq!(daemon::stored_ids(&findings), want);

    // Power loss in the middle of the next write: a torn last line.
    let torn = "{\"finding\":\"bio-double-complete\",\"id\":\"0123";
    let mut text = std::fs::read_to_string(&findings).unwrap();
    text.push_str(torn);
    std::fs::write(&findings, &text).unwrap();
    let (_, listing, err) = findings_cli(&[findings.to_str().unwrap()]);
    assert!(err.contains("cut short"), "readers report it: {err}");
    assert_eq!(listing.lines().filter(|l| l.starts_with("# ")).count(), 1);

    // The restarted daemon sets the torn line aside, continues the file,
    // and does not store the replayed finding a second time.
    let d = start();
    d.wait_log("replay finished");
    let (status, log) = d.stop_with(SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert!(log.contains("the last line was cut short"), "{log}");
    assert!(log.contains("already in"), "{log}");
    assert_eq!(
        daemon::stored_ids(&findings),
        want,
        "none lost, none doubled"
    );
    let aside = dir.path().join("findings.jsonl.torn-1");
    assert_eq!(std::fs::read_to_string(aside).unwrap(), torn);
    let (ok, _, err) = findings_cli(&[findings.to_str().unwrap()]);
    assert!(ok && err.is_empty(), "{err}");
}
