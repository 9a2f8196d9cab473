//! Detection latency, live: from the time of the event that broke an
//! invariant (a finding's `ts`) to the moment detector emitted the finding
//! (its `--stats-json` percentiles). The race staged on this host is a
//! lost I/O: a loop device over a file on a FUSE file system (bindfs)
//! whose daemon is stopped, so that reads stay in flight past
//! `--lost-io-after`; the daemon then resumes and every read completes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::Plan;
use super::procs::{self, DetectorBin};
use super::table::Row;
use crate::util::{output, run as run_cmd};

/// The lost-I/O threshold for the staged reads.
const LOST_IO_AFTER: &str = "200ms";

/// A loop device over a file behind a stoppable FUSE daemon.
struct Stalling {
    back: PathBuf,
    front: PathBuf,
    daemon: Child,
    loop_dev: String,
}

impl Stalling {
    fn new(dir: &Path) -> Result<Self> {
        let back = dir.join("fuse-back");
        let front = dir.join("fuse-front");
        for d in [&back, &front] {
            let _ = Command::new("umount").arg(d).output();
            std::fs::create_dir_all(d)?;
        }
        run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
                .arg(&back),
        )?;
        // Foreground, so that it is our child and ours to stop; direct_io
        // so that reads reach the daemon instead of the page cache.
        let daemon = Command::new("bindfs")
            .args(["-f", "-o", "direct_io"])
            .arg(&back)
            .arg(&front)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bindfs (cargo xtask setup installs it)")?;
        let mut stalling = Self {
            back,
            front: front.clone(),
            daemon,
            loop_dev: String::new(),
        };
        let mounted = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_to_string("/proc/mounts")
                .is_ok_and(|m| m.contains(&*front.to_string_lossy()))
        });
        if !mounted {
            bail!("bindfs did not mount {}", front.display());
        }
        let file = front.join("disk");
        run_cmd(
            Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", file.display()))
                .args(["bs=1M", "count=16", "status=none"]),
        )?;
        stalling.loop_dev = output(Command::new("losetup").args(["-f", "--show"]).arg(&file))?
            .trim()
            .to_owned();
        Ok(stalling)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.daemon.id() as i32, sig) };
    }

    /// A direct 4 KiB read of block `block`, in the background.
    fn read(&self, block: u64) -> Result<Child> {
        Command::new("dd")
            .arg(format!("if={}", self.loop_dev))
            .args([
                "of=/dev/null",
                "iflag=direct",
                "bs=4k",
                "count=1",
                "status=none",
            ])
            .arg(format!("skip={block}"))
            .spawn()
            .context("starting dd")
    }
}

impl Drop for Stalling {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        if !self.loop_dev.is_empty() {
            let _ = Command::new("losetup")
                .args(["-d", &self.loop_dev])
                .output();
        }
        let _ = Command::new("umount").arg(&self.front).output();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = Command::new("umount").arg(&self.back).output();
    }
}

pub fn measure(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Row> {
    if !bin.stats_json {
        bail!("this detector build has no --stats-json: no latency to read");
    }
    let stalling = Stalling::new(dir)?;
    let running = procs::start_detector(bin, dir, &["--lost-io-after", LOST_IO_AFTER])?;
    // A completion first: the rule judges only devices that showed one.
    stalling.read(0)?.wait()?;
    stalling.signal(libc::SIGSTOP);
    let mut readers = Vec::new();
    for i in 0..plan.latency_findings {
        readers.push(stalling.read(1 + i as u64 * 7)?);
        // Spread the deadlines over the reader's drain period.
        std::thread::sleep(Duration::from_millis(37));
    }
    std::thread::sleep(Duration::from_millis(600));
    stalling.signal(libc::SIGCONT);
    for mut r in readers {
        r.wait()?;
    }
    let end = running.stop()?;
    drop(stalling);
    let lat = &end.stats.as_ref().context("no --stats-json output")?["detection_latency"];
    let findings = lat["findings"].as_u64().unwrap_or(0);
    let ms = |key: &str| lat[key].as_f64().unwrap_or(f64::NAN) / 1e6;
    if findings == 0 {
        bail!("the staged lost I/O gave no finding");
    }
    Ok(Row::new(
        format!(
            "detection latency p50 / p99 / max ({findings} live lost-io-completion findings, staged)"
        ),
        ms("p99_ns"),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            ms("p50_ns"),
            ms("p99_ns"),
            ms("max_ns")
        ),
    )
    .goal("p99 < 100 ms"))
}
