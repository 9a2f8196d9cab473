//! `detector run` on this host's kernel, with the real programs around it:
//! a fake systemd notify socket, bpftool, a real Prometheus server (Debian's
//! package) with detector's alert rules, and the journal's native protocol.
//!
//! Privileged (root, BPF, mount namespaces) and sharing kernel state, so
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask test` runs them one at
//! a time (`--ignored --test-threads=1`). Other detectors may run on this
//! host: programs are told apart by the process holding them.

#[path = "../daemon/mod.rs"]
mod daemon;
mod journal;
mod lifecycle;
mod prometheus;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon::{Daemon, Options, wait_for};
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

/// A live `detector run` with `extra` in its `[log]` table and `env`;
/// waits until it says it is ready unless systemd's socket tells.
fn live_daemon(dir: &Path, extra: &str, env: Vec<(String, String)>) -> Daemon {
    let notified = env.iter().any(|(k, _)| k == "NOTIFY_SOCKET");
    let d = Daemon::start(
        dir,
        Options {
            extra,
            env,
            ..Options::default()
        },
    );
    if !notified {
        d.wait_log("ready:");
    }
    d
}
