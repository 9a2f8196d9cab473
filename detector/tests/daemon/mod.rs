//! Helpers for the tests of `detector run`: starting it with a generated
//! configuration, reading its metrics over HTTP, its log and its findings
//! file, and stopping it with a signal.

#![expect(dead_code, reason = "each test binary uses a different part")]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_detector");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `what` every 50 ms until it gives a value, failing after `limit`
/// with `context()` (the daemon's log, say).
pub fn wait_for<T>(
    limit: Duration,
    describe: &str,
    mut what: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = what() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {describe}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` over HTTP/1.0: (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of `series` (the metric name with its labels, as exposed).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every series of `name` whose labels contain `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A running `detector run`.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub addr: String,
    pub findings: PathBuf,
}

pub struct Options<'a> {
    pub replay: Option<&'a Path>,
    /// Extra TOML appended to the generated file.
    pub extra: &'a str,
    pub env: Vec<(String, String)>,
    pub port: u16,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            replay: None,
            extra: "",
            env: Vec::new(),
            port: free_port(),
        }
    }
}

/// The thresholds the VM recordings were made with.
pub const VM_THRESHOLDS: &str = "[thresholds]\nlost-wakeup-after = \"3s\"\nstuck-handler-after = \"2s\"\nlost-io-after = \"3s\"\n\n";

/// The configuration the tests run with: findings in `dir`, metrics on
/// `port`, plain logs; `head` goes first (thresholds).
pub fn config_text(dir: &Path, port: u16, head: &str, extra: &str) -> String {
    format!(
        "{head}[metrics]\naddress = \"127.0.0.1:{port}\"\n\n\
         [findings]\npath = \"{}\"\n\n\
         [log]\nformat = \"plain\"\n{extra}",
        dir.join("findings.jsonl").display()
    )
}

impl Daemon {
    /// Starts `detector run` in `dir` (which keeps its files across
    /// restarts).
    pub fn start(dir: &Path, opts: Options<'_>) -> Self {
        let config = dir.join("detector.toml");
        // Replays use the thresholds they were recorded with; live runs the
        // defaults (short ones would judge this busy host's slow I/O).
        let head = if opts.replay.is_some() {
            VM_THRESHOLDS
        } else {
            "[thresholds]\nlost-wakeup-after = \"5s\"\n\n"
        };
        std::fs::write(&config, config_text(dir, opts.port, head, opts.extra)).unwrap();
        // One log per start: a restarted daemon's log is read on its own.
        let log = (0..)
            .map(|n| dir.join(format!("run-{n}.log")))
            .find(|p| !p.exists())
            .expect("a free log name");
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("--config").arg(&config);
        if let Some(replay) = opts.replay {
            cmd.arg("--replay").arg(replay);
        }
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .envs(opts.env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        Self {
            child,
            dir: dir.to_owned(),
            config,
            log,
            addr: format!("127.0.0.1:{}", opts.port),
            findings: dir.join("findings.jsonl"),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics page, once it answers.
    pub fn metrics(&self) -> Option<String> {
        http_get(&self.addr, "/metrics")
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    }

    /// Waits until the metrics page answers and `ok` holds for it.
    pub fn wait_metrics(&self, describe: &str, ok: impl Fn(&str) -> bool) -> String {
        wait_for(
            Duration::from_secs(90),
            describe,
            || self.metrics().filter(|m| ok(m)),
            || self.log_text(),
        )
    }

    /// Waits until the log contains `words`.
    pub fn wait_log(&self, words: &str) {
        wait_for(
            Duration::from_secs(90),
            &format!("{words:?} in the log"),
            || self.log_text().contains(words).then_some(()),
            || self.log_text(),
        )
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends `sig` and waits for the exit, at most `limit`.
    pub fn stop_with(mut self, sig: i32, limit: Duration) -> (ExitStatus, String) {
        self.signal(sig);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log_text());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "detector run did not exit within {limit:?}\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stored findings' ids, in file order.
    pub fn stored_ids(&self) -> Vec<String> {
        stored_ids(&self.findings)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The ids of the complete lines of a findings file.
pub fn stored_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// A VM bench recording, unpacked into `dir`.
pub fn recording(dir: &Path, name: &str) -> PathBuf {
    let gz = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vm")
        .join(format!("{name}.rec.gz"));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let path = dir.join(format!("{name}.rec"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// What `detector replay` gives for a recording with the daemon's
/// thresholds: its stdout.
pub fn replay_output(recording: &Path, json: bool) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("replay").arg(recording).args([
        "--lost-wakeup-after",
        "3s",
        "--stuck-handler-after",
        "2s",
        "--lost-io-after",
        "3s",
    ]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The finding ids `detector replay --json` gives for a recording.
pub fn replay_ids(recording: &Path) -> Vec<String> {
    replay_output(recording, true)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("finding").is_some())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}
