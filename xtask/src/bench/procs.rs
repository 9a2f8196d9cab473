//! The tracers the bench compares, started and stopped around each
//! workload: nothing, detector (release build, `trace --quiet`), and the
//! hand-written bpftrace peer script (`xtask/bench/peer.bt`).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::util::workspace_root;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tracer {
    Untraced,
    Detector,
    Bpftrace,
}

impl Tracer {
    pub const ALL: [Tracer; 3] = [Tracer::Untraced, Tracer::Detector, Tracer::Bpftrace];
}

/// How detector is run.
pub struct DetectorBin {
    pub path: PathBuf,
    /// Whether it knows `--stats-json` (older builds do not).
    pub stats_json: bool,
    /// Whether it attaches its syscall hooks on demand (`--syscall-hooks`;
    /// older builds keep them attached).
    pub syscall_hooks: bool,
}

impl DetectorBin {
    pub fn new(path: PathBuf) -> Result<Self> {
        let help = Command::new(&path)
            .args(["trace", "--help"])
            .output()
            .with_context(|| format!("cannot run {}", path.display()))?;
        let help = String::from_utf8_lossy(&help.stdout);
        Ok(Self {
            path,
            stats_json: help.contains("--stats-json"),
            syscall_hooks: help.contains("--syscall-hooks"),
        })
    }
}

/// A running tracer.
pub struct Running {
    child: Option<Child>,
    kind: Tracer,
    stats_path: PathBuf,
    cpu_at_ready: u64,
}

/// What a detector session said at its end.
#[derive(Debug, Default, Clone)]
pub struct SessionEnd {
    /// Events read from the ring buffer (or the summary's count).
    pub events: u64,
    pub lost: u64,
    /// detector's own CPU time between attach and stop (clock ticks of
    /// /proc/PID/stat, in ns).
    pub cpu_ns: u64,
    /// `--stats-json`, when the build has it.
    pub stats: Option<serde_json::Value>,
}

/// utime + stime of `pid`, in ns.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces: fields count from its closing paren.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) * 1_000_000_000 / hz
}

/// Whether `child` exits within `limit` (it is not reaped: its output
/// can still be read).
fn exited_within(child: &mut Child, limit: Duration) -> Result<bool> {
    let start = Instant::now();
    while start.elapsed() < limit {
        // SAFETY: siginfo_t is plain data; zeroes are a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only looks at our own child and
        // writes into `info`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info`; si_pid is 0 while the child runs.
        if rc == 0 && unsafe { info.si_pid() } != 0 {
            return Ok(true);
        }
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

fn wait_for(path: &Path, child: &mut Child, what: &str) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before it was ready: {status}");
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!("{what} was not ready within 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// detector with `extra` arguments, once every hook is attached.
pub fn start_detector(bin: &DetectorBin, dir: &Path, extra: &[&str]) -> Result<Running> {
    let ready = dir.join("detector.ready");
    let stats_path = dir.join("detector.stats.json");
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&stats_path);
    let mut cmd = Command::new(&bin.path);
    cmd.args(["trace", "--quiet", "--ready-file"]).arg(&ready);
    if bin.stats_json {
        cmd.arg("--stats-json").arg(&stats_path);
    }
    let mut child = cmd
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting detector")?;
    wait_for(&ready, &mut child, "detector")?;
    let cpu_at_ready = cpu_ns(child.id());
    Ok(Running {
        child: Some(child),
        kind: Tracer::Detector,
        stats_path,
        cpu_at_ready,
    })
}

/// The bpftrace peer, once its probes are attached.
pub fn start_bpftrace() -> Result<Running> {
    let script = workspace_root().join("xtask/bench/peer.bt");
    ensure_tracefs()?;
    // Line-buffered: its "Attaching" line must arrive through the pipe.
    let mut child = Command::new("bpftrace")
        .args(["-B", "line"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace (cargo xtask setup installs it)")?;
    let stdout = child.stdout.take().context("bpftrace's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // bpftrace says "Attaching N probes..." once they are attached.
    match lines.next() {
        Some(Ok(line)) if line.starts_with("Attaching") => {}
        other => {
            let _ = child.kill();
            bail!("bpftrace did not attach: {other:?}");
        }
    }
    // Keep draining what it prints so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Running {
        child: Some(child),
        kind: Tracer::Bpftrace,
        stats_path: PathBuf::new(),
        cpu_at_ready: 0,
    })
}

/// bpftrace finds tracepoints through tracefs, which may not be mounted
/// (detector's BTF tracepoints do not need it).
fn ensure_tracefs() -> Result<()> {
    let events = Path::new("/sys/kernel/tracing/events/block");
    if events.exists() {
        return Ok(());
    }
    crate::util::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

pub fn start(tracer: Tracer, bin: &DetectorBin, dir: &Path) -> Result<Running> {
    match tracer {
        Tracer::Untraced => Ok(Running {
            child: None,
            kind: Tracer::Untraced,
            stats_path: PathBuf::new(),
            cpu_at_ready: 0,
        }),
        Tracer::Detector => start_detector(bin, dir, &[]),
        Tracer::Bpftrace => start_bpftrace(),
    }
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it holds a BPF link on the `sys_exit` tracepoint now (its
    /// fds' `fdinfo`: what the kernel has attached).
    pub fn holds_sys_exit(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return false;
        };
        dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .any(|info| {
                info.lines()
                    .any(|l| l.starts_with("tp_name:") && l.ends_with("sys_exit"))
            })
    }

    /// Waits up to `within` for it to detach `sys_exit`; whether it did.
    pub fn wait_sys_exit_detached(&self, within: Duration) -> bool {
        let start = Instant::now();
        while self.holds_sys_exit() {
            if start.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Stops the tracer (SIGINT, as Ctrl-C) and reads what it said.
    pub fn stop(mut self) -> Result<SessionEnd> {
        let Some(child) = self.child.take() else {
            return Ok(SessionEnd::default());
        };
        let cpu = cpu_ns(child.id()).saturating_sub(self.cpu_at_ready);
        let mut child = child;
        // SIGINT, as Ctrl-C; bpftrace now and then misses it while it
        // starts up, so after a grace period it gets SIGTERM, then SIGKILL.
        let grace = match self.kind {
            Tracer::Detector => Duration::from_secs(120),
            _ => Duration::from_secs(10),
        };
        for (signal, wait) in [
            (libc::SIGINT, grace),
            (libc::SIGTERM, Duration::from_secs(10)),
            (libc::SIGKILL, Duration::from_secs(10)),
        ] {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, signal) };
            if exited_within(&mut child, wait)? {
                break;
            }
        }
        let out = child.wait_with_output()?;
        if self.kind != Tracer::Detector {
            return Ok(SessionEnd::default());
        }
        if !out.status.success() {
            bail!(
                "detector failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stats: Option<serde_json::Value> = std::fs::read_to_string(&self.stats_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let (events, lost) = match &stats {
            Some(s) => (
                s["reader"]["events"].as_u64().unwrap_or(0),
                s["reader"]["dropped"].as_u64().unwrap_or(0),
            ),
            None => summary_counts(&stderr).context("no summary in detector's output")?,
        };
        Ok(SessionEnd {
            events,
            lost,
            cpu_ns: cpu,
            stats,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// "N events in Xs, M lost" from the summary detector prints.
fn summary_counts(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr.lines().find(|l| l.contains(" events in "))?;
    let events = line.split_whitespace().next()?.parse().ok()?;
    let lost = line
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((events, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let text = "detector: tracing\n\n3812 events in 6.0s, 12 lost (verdicts ...)\n";
        assert_eq!(summary_counts(text), Some((3812, 12)));
        assert_eq!(summary_counts("nothing"), None);
    }

    #[test]
    fn own_cpu_time_is_read() {
        // Burn a little CPU so that at least a tick is accounted.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_ns(std::process::id()) > 0);
    }
}
