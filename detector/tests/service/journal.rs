//! What reaches the log: findings as journal fields, the programs'
//! diagnostics through aya-log.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{self, recording};
use super::{LONG, SIGTERM, live_daemon, scratch_dir};

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
        Vec::new(),
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
