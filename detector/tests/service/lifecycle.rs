//! The daemon's life: readiness and watchdog pings on systemd's socket,
//! SIGHUP, SIGTERM under load, kill -9 and a restart.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{self, metric, metric_sum, recording};
use super::{
    LONG, SIGHUP, SIGKILL, SIGTERM, assert_all_unloaded, direct_io, live_daemon, programs_of,
    scratch_dir, still_loaded,
};

/// A unix datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// The environment systemd gives a `Type=notify` service with
    /// `WatchdogSec=1`: pings every half second.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.path.display().to_string()),
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ]
    }

    /// Reads until a message holding `line` arrives at index `from` or
    /// later; returns its index.
    fn wait_from(&mut self, from: usize, line: &str, context: impl Fn() -> String) -> usize {
        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            let found = self
                .seen
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| m.lines().any(|l| l == line));
            if let Some((i, _)) = found {
                return i;
            }
            assert!(
                start.elapsed() < LONG,
                "no {line} on the notify socket; got {:?}\n{}",
                self.seen,
                context()
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn lifecycle_readiness_watchdog_reload_and_stop() {
    let dir = scratch_dir();
    let mut notify = NotifySocket::bind(dir.path());
    let d = live_daemon(dir.path(), "", notify.env());
    let ready = notify.wait_from(0, "READY=1", || d.log_text());
    assert!(
        notify.seen[ready]
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("events/s")),
        "{:?}",
        notify.seen
    );
    // Ready means attached: the daemon holds its programs now, and bpftool
    // lists them.
    let ours = programs_of(d.child.id());
    assert!(!ours.is_empty(), "no programs held by detector run");
    assert_eq!(still_loaded(&ours), ours);
    // Pings come from the loop that drains the ring buffer.
    let ping = notify.wait_from(ready + 1, "WATCHDOG=1", || d.log_text());
    notify.wait_from(ping + 1, "WATCHDOG=1", || d.log_text());

    // Metrics move with real I/O.
    let before = metric_sum(
        &d.wait_metrics("metrics", |_| true),
        "detector_events_total",
        "kind=\"bio_queue\"",
    );
    direct_io(&dir.path().join("data"), 256);
    let m = d.wait_metrics("dd's 256 writes counted", |m| {
        metric_sum(m, "detector_events_total", "kind=\"bio_queue\"") >= before + 256.0
    });
    assert_eq!(metric(&m, "detector_config_reload_success"), Some(1.0));
    assert!(metric_sum(&m, "detector_hooks_attached", "") > 0.0, "{m}");
    assert!(m.contains("detector_build_info{"), "{m}");
    assert!(m.contains("process_resident_memory_bytes"), "{m}");
    assert!(
        metric_sum(&m, "detector_bio_in_flight_duration_seconds_count", "") > 0.0,
        "bios timed: {m}"
    );
    // Prometheus' own linter accepts the exposition.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs prometheus)");
    {
        use std::io::Write as _;
        lint.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    }
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // SIGHUP: a new threshold applies at once; a new ring-buffer size needs
    // a restart and keeps its value.
    let text = std::fs::read_to_string(&d.config).unwrap();
    assert!(text.contains("lost-wakeup-after = \"5s\""), "{text}");
    let changed = text.replace("lost-wakeup-after = \"5s\"", "lost-wakeup-after = \"7s\"")
        + "\n[kernel]\nring-buffer-size = \"64M\"\n";
    std::fs::write(&d.config, changed).unwrap();
    let seen = notify.seen.len();
    d.signal(SIGHUP);
    d.wait_log("configuration reloaded");
    let m = d.wait_metrics("the new threshold", |m| {
        metric(m, "detector_rule_threshold_seconds{rule=\"lost-wakeup\"}") == Some(7.0)
    });
    assert_eq!(metric(&m, "detector_config_reload_success"), Some(1.0));
    let log = d.log_text();
    assert!(log.contains("lost-wakeup-after 7s"), "{log}");
    assert!(
        log.contains("kernel.ring-buffer-size: 16777216 -> 67108864 needs a restart"),
        "{log}"
    );
    let reloading = notify.wait_from(seen, "RELOADING=1", || d.log_text());
    notify.wait_from(reloading + 1, "READY=1", || d.log_text());

    // A broken file on SIGHUP keeps the running configuration.
    std::fs::write(&d.config, "[thresholds]\nlost-wakeup-after = 5s\n").unwrap();
    d.signal(SIGHUP);
    d.wait_log("configuration not reloaded");
    let m = d.wait_metrics("the failed reload", |m| {
        metric(m, "detector_config_reload_success") == Some(0.0)
    });
    assert_eq!(
        metric(&m, "detector_rule_threshold_seconds{rule=\"lost-wakeup\"}"),
        Some(7.0)
    );
    assert!(
        d.log_text().contains("line 2"),
        "says where: {}",
        d.log_text()
    );

    // SIGTERM under load: drained, flushed, detached, exit 0.
    let mut load = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", dir.path().join("load").display()))
        .args(["bs=4k", "count=200000", "oflag=direct"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let notify_path = notify.path.clone();
    let (status, log) = d.stop_with(SIGTERM, Duration::from_secs(15));
    let _ = load.kill();
    let _ = load.wait();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped:"), "{log}");
    notify.wait_from(0, "STOPPING=1", || format!("{notify_path:?}"));
    assert_all_unloaded(&ours, &log);
}

/// Stored findings as `detector replay --json` prints them: real lines.
fn stored_lines(dir: &Path) -> String {
    let rec = recording(dir, "onstack");
    daemon::replay_output(&rec, true)
        .lines()
        .filter(|l| l.contains("\"finding\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn kill_9_leaves_nothing_attached_and_the_restart_continues_the_store() {
    let dir = scratch_dir();
    let lines = stored_lines(dir.path());
    let torn = "{\"finding\":\"lost-wakeup\",\"id\":\"ab";
    let findings = dir.path().join("findings.jsonl");
    std::fs::write(&findings, format!("{lines}{torn}")).unwrap();
    let before = daemon::stored_ids(&findings);
    assert_eq!(before.len(), 2);

    let d = live_daemon(dir.path(), "", Vec::new());
    let ours = programs_of(d.child.id());
    assert!(!ours.is_empty(), "no programs held by detector run");
    assert_eq!(still_loaded(&ours), ours);
    let log = d.log_text();
    assert!(log.contains("the last line was cut short"), "{log}");
    let (status, log) = d.stop_with(SIGKILL, Duration::from_secs(5));
    assert!(!status.success());
    assert_all_unloaded(&ours, &log);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("findings.jsonl.torn-1")).unwrap(),
        torn
    );

    let d = live_daemon(dir.path(), "", Vec::new());
    let ours = programs_of(d.child.id());
    assert!(!ours.is_empty());
    assert!(!d.log_text().contains("cut short"), "{}", d.log_text());
    let (status, log) = d.stop_with(SIGTERM, Duration::from_secs(15));
    assert!(status.success(), "{log}");
    assert_all_unloaded(&ours, &log);
    assert_eq!(std::fs::read_to_string(&findings).unwrap(), lines);
    assert_eq!(daemon::stored_ids(&findings), before);
}
