//! `detector run` on this host's kernel, with the real programs around it:
//! a fake systemd notify socket, bpftool, a real Prometheus server (Debian's
//! package) with detector's alert rules, and the journal's native protocol.
//!
//! Privileged (root, BPF, mount namespaces) and sharing kernel state, so
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask test` runs them one at
//! a time (`--ignored --test-threads=1`). Other detectors may run on this
//! host: programs are told apart by the process holding them.

mod daemon;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Daemon, Options, http_get, metric, metric_sum, recording, wait_for};
use serde_json::Value;

const SIGHUP: i32 = libc::SIGHUP;
const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;
const LONG: Duration = Duration::from_secs(90);

/// A scratch directory on a real disk (tmpfs has no block I/O).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Writes `blocks` 4 KiB blocks with O_DIRECT into `file`.
fn direct_io(file: &Path, blocks: u32) {
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=4k", &format!("count={blocks}"), "oflag=direct"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Ids of the BPF programs `pid` holds (program and link descriptors name
/// them in their fdinfo; this bpftool cannot list holders).
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Which of `ids` the kernel still has.
fn still_loaded(ids: &BTreeSet<u64>) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    progs
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .filter(|id| ids.contains(id))
        .collect()
}

/// The kernel drops a dead process's programs with its file descriptors;
/// the last references go after an RCU grace period.
fn assert_all_unloaded(ids: &BTreeSet<u64>, log: &str) {
    wait_for(
        Duration::from_secs(30),
        "the programs to be unloaded",
        || still_loaded(ids).is_empty().then_some(()),
        || format!("still loaded: {:?}\n{log}", still_loaded(ids)),
    );
}

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

fn live_daemon(dir: &Path, extra: &str, notify: Option<&NotifySocket>) -> Daemon {
    let mut env = Vec::new();
    if let Some(n) = notify {
        env.push(("NOTIFY_SOCKET".into(), n.path.display().to_string()));
        // Pings every half second.
        env.push(("WATCHDOG_USEC".into(), "1000000".into()));
    }
    let d = Daemon::start(
        dir,
        Options {
            extra,
            env,
            ..Options::default()
        },
    );
    // When NOTIFY_SOCKET is set the test waits for READY=1 instead.
    if notify.is_none() {
        d.wait_log("ready:");
    }
    d
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn lifecycle_readiness_watchdog_reload_and_stop() {
    let dir = scratch_dir();
    let mut notify = NotifySocket::bind(dir.path());
    let d = live_daemon(dir.path(), "", Some(&notify));
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

    let d = live_daemon(dir.path(), "", None);
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

    let d = live_daemon(dir.path(), "", None);
    let ours = programs_of(d.child.id());
    assert!(!ours.is_empty());
    assert!(!d.log_text().contains("cut short"), "{}", d.log_text());
    let (status, log) = d.stop_with(SIGTERM, Duration::from_secs(15));
    assert!(status.success(), "{log}");
    assert_all_unloaded(&ours, &log);
    assert_eq!(std::fs::read_to_string(&findings).unwrap(), lines);
    assert_eq!(daemon::stored_ids(&findings), before);
}

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

/// Fields of a native journal protocol datagram: `KEY=value` lines, or
/// `KEY\n` + 64-bit little-endian length + value + `\n`.
fn journal_fields(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let Some(end) = data.iter().position(|&b| b == b'\n' || b == b'=') else {
            break;
        };
        let key = String::from_utf8_lossy(&data[..end]).into_owned();
        if data[end] == b'=' {
            let rest = &data[end + 1..];
            let n = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            fields.push((key, String::from_utf8_lossy(&rest[..n]).into_owned()));
            data = rest.get(n + 1..).unwrap_or_default();
        } else {
            let rest = &data[end + 1..];
            let Some(len) = rest.get(..8) else { break };
            let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
            let Some(value) = rest.get(8..8 + len) else {
                break;
            };
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            data = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

#[test]
#[ignore = "needs root (a mount namespace); run by cargo xtask test"]
fn findings_reach_the_journal_with_their_fields() {
    let dir = scratch_dir();
    let sockets = dir.path().join("journal");
    std::fs::create_dir_all(&sockets).unwrap();
    let journal = UnixDatagram::bind(sockets.join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let rec = recording(dir.path(), "double_complete");
    let id = daemon::replay_ids(&rec).pop().unwrap();
    let port = daemon::free_port();
    std::fs::write(
        dir.path().join("d.toml"),
        daemon::config_text(dir.path(), port, daemon::VM_THRESHOLDS, "")
            .replace("format = \"plain\"", "format = \"auto\""),
    )
    .unwrap();
    // systemd connects stderr to the journal and says so in JOURNAL_STREAM
    // (the stream's device and inode).
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    // In a private mount namespace, the journal's socket is ours.
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
             mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
        )
        .arg(&sockets)
        .arg(daemon::BIN)
        .args(["run", "--config"])
        .arg(dir.path().join("d.toml"))
        .arg("--replay")
        .arg(&rec)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let start = Instant::now();
    let mut entries: Vec<Vec<(String, String)>> = Vec::new();
    let finding = loop {
        if let Some(e) = entries
            .iter()
            .find(|e| e.iter().any(|(k, v)| k == "FINDING_ID" && *v == id))
        {
            break e.clone();
        }
        assert!(
            start.elapsed() < LONG,
            "no journal entry for finding {id}; got {entries:?}\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        if let Ok(n) = journal.recv(&mut buf) {
            entries.push(journal_fields(&buf[..n]));
        }
    };
    // SAFETY: kill(2) on our own child (unshare exec'd into detector).
    unsafe { libc::kill(child.id() as i32, SIGTERM) };
    assert!(child.wait().unwrap().success());
    let field = |k: &str| {
        finding
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("RULE"), "bio-double-complete", "{finding:?}");
    assert_eq!(field("FINDING"), "bio-double-complete");
    assert_eq!(field("SEVERITY"), "critical");
    assert_eq!(field("PRIORITY"), "3", "error level: {finding:?}");
    assert_eq!(field("SYSLOG_IDENTIFIER"), "detector");
    assert!(
        field("MESSAGE").starts_with("bio-double-complete [critical] bio 0x"),
        "{finding:?}"
    );
    assert!(field("OBJECT").starts_with("bio 0x"));
    assert!(!field("PIDS").is_empty());
    // Everything went to the journal; nothing was printed twice on stderr.
    let printed = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!printed.contains(&id), "{printed}");
    assert!(
        entries.iter().any(|e| e
            .iter()
            .any(|(k, v)| k == "MESSAGE" && v.starts_with("ready:"))),
        "{entries:?}"
    );
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn kernel_diagnostics_reach_the_log_rate_limited() {
    let dir = scratch_dir();
    let start = Instant::now();
    let d = live_daemon(
        dir.path(),
        "level = \"info,detector::probes=debug\"\n",
        None,
    );
    // Many small direct writes submitted at once merge into requests of
    // more bios than the programs walk: the request walk is cut short.
    let fio = Command::new("fio")
        .args([
            "--name=merge",
            "--size=64M",
            "--bs=4k",
            "--rw=write",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=128",
            "--iodepth_batch_submit=128",
            // Enough to merge, little enough for a debug build on a busy
            // host to catch up with before it is stopped.
            "--number_ios=20000",
        ])
        .arg(format!("--filename={}", dir.path().join("fio").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("fio (cargo xtask setup installs it)");
    assert!(fio.success());
    d.wait_log("bio walk stopped at 16 bios");
    let (status, log) = d.stop_with(SIGTERM, Duration::from_secs(60));
    let elapsed = start.elapsed().as_secs() + 1;
    assert!(status.success(), "{log}");
    let lines = log.matches("bio walk stopped").count() as u64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    // One line per second per CPU at most, however many requests.
    assert!(
        lines <= elapsed * cpus,
        "{lines} lines in about {elapsed}s on {cpus} CPUs: not rate-limited\n{log}"
    );
}
