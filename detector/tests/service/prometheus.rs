//! A real Prometheus server scraping detector, with detector's alert rules.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::daemon::{self, Daemon, Options, http_get, recording, wait_for};
use super::{LONG, SIGTERM, direct_io, scratch_dir};

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (cargo xtask setup installs prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

impl Prometheus {
    fn start(dir: &Path, targets: &[&str]) -> Self {
        let port = daemon::free_port();
        let rules = packaging().join("alerts.yml");
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{}'\n\
                 scrape_configs:\n  - job_name: detector\n    static_configs:\n      - targets: [{}]\n",
                rules.display(),
                targets.join(", ")
            ),
        )
        .unwrap();
        promtool(&["check", "config", config.to_str().unwrap()], dir);
        promtool(&["check", "rules", "alerts.yml"], &packaging());
        promtool(&["test", "rules", "alerts.test.yml"], &packaging());
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus (cargo xtask setup installs it)");
        let p = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        wait_for(
            LONG,
            "Prometheus to be ready",
            || http_get(&p.addr, "/-/ready").filter(|(s, _)| *s == 200),
            || p.log_text(),
        );
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/v1/query`: the result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .unwrap_or((0, String::new()));
        assert!(status == 200 || status == 0, "{promql}: {status} {body}");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of the single series `promql` returns.
    fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    fn alerts(&self) -> Vec<Value> {
        http_get(&self.addr, "/api/v1/alerts")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }
}

#[test]
#[ignore = "needs root, a live kernel and Debian's prometheus; run by cargo xtask test"]
fn prometheus_scrapes_live_metrics_and_alerts_on_a_replayed_finding() {
    let dir = scratch_dir();
    let live_dir = dir.path().join("live");
    let replay_dir = dir.path().join("replay");
    std::fs::create_dir_all(&live_dir).unwrap();
    std::fs::create_dir_all(&replay_dir).unwrap();
    let (live_port, replay_port) = (daemon::free_port(), daemon::free_port());
    let live_target = format!("127.0.0.1:{live_port}");
    let replay_target = format!("127.0.0.1:{replay_port}");
    let prom = Prometheus::start(dir.path(), &[&live_target, &replay_target]);

    let live = Daemon::start(
        &live_dir,
        Options {
            port: live_port,
            ..Options::default()
        },
    );
    live.wait_log("ready:");
    let up = |target: &str| prom.value(&format!("up{{job=\"detector\",instance=\"{target}\"}}"));
    wait_for(
        LONG,
        "Prometheus to scrape the live daemon",
        || (up(&live_target) == Some(1.0)).then_some(()),
        || prom.log_text(),
    );
    let bio_queue =
        format!("sum(detector_events_total{{instance=\"{live_target}\",kind=\"bio_queue\"}})");
    let before = prom.value(&bio_queue).unwrap_or(0.0);
    direct_io(&live_dir.join("data"), 256);
    wait_for(
        LONG,
        "Prometheus to see dd's writes",
        || prom.value(&bio_queue).filter(|v| *v >= before + 256.0),
        || live.log_text(),
    );

    // A recorded lost wakeup (Debian's kernel, the VM bench) played back at
    // its pace: Prometheus sees the counter at 0, then 1, and alerts.
    let rec = recording(&replay_dir, "lost_wakeup");
    let replay = Daemon::start(
        &replay_dir,
        Options {
            replay: Some(&rec),
            port: replay_port,
            ..Options::default()
        },
    );
    let alert = wait_for(
        LONG,
        "the DetectorFinding alert to fire",
        || {
            prom.alerts()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "DetectorFinding" && a["state"] == "firing")
        },
        || format!("{}\n{}", replay.log_text(), prom.log_text()),
    );
    let labels = &alert["labels"];
    assert_eq!(labels["rule"], "lost-wakeup", "{alert}");
    assert_eq!(labels["severity"], "error", "{alert}");
    assert_eq!(labels["host"], "127.0.0.1", "{alert}");
    assert_eq!(labels["instance"], replay_target.as_str(), "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("lost-wakeup")),
        "{alert}"
    );
    assert_eq!(
        prom.value(&format!(
            "detector_findings_total{{instance=\"{replay_target}\",rule=\"lost-wakeup\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(up(&live_target), Some(1.0));
    // The live host found nothing: no finding alert for it (its rules
    // missing hooks on this kernel are pending alerts of their own).
    assert!(
        prom.alerts()
            .iter()
            .all(|a| a["labels"]["alertname"] != "DetectorFinding"
                || a["labels"]["instance"] != live_target.as_str()),
        "{:?}",
        prom.alerts()
    );
    let (status, log) = replay.stop_with(SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{log}");
    let (status, log) = live.stop_with(SIGTERM, Duration::from_secs(15));
    assert!(status.success(), "{log}");
}
