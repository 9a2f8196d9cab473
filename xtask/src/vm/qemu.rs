//! Booting a guest: qemu's software emulation (KVM is not usable on the
//! machines this runs on), serial console to a log file, results through a
//! 9p share. Single-threaded emulation: with one host thread per vCPU
//! (MTTCG), Debian's 6.1 guest hung now and then while the kernel patched
//! tracepoint static calls as detector detached.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

pub struct Boot {
    /// Prefix of its progress lines ("vm", "vm2").
    pub label: String,
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    /// Shared with the guest as mount tag "host".
    pub share: PathBuf,
    /// The serial console, written as it arrives.
    pub log: PathBuf,
    pub timeout: Duration,
    /// Appended to the kernel command line.
    pub append: String,
    /// More qemu arguments: disks, memory.
    pub extra_args: Vec<String>,
}

pub struct Outcome {
    pub elapsed: Duration,
    pub timed_out: bool,
    /// qemu's exit code (`None`: killed by a signal).
    pub code: Option<i32>,
}

/// Kernel command line: serial console; a panic or oops powers the guest
/// off at once (-no-reboot) instead of leaving it to the timeout.
const CMDLINE: &str = "console=ttyS0 panic=-1 oops=panic loglevel=6";

/// Boots and waits for the guest to power off; prints the guest's "@@"
/// progress lines as they come.
pub fn boot(b: &Boot) -> Result<Outcome> {
    let started = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(b.timeout.as_secs().to_string())
        .arg("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2G",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&b.vmlinux)
        .arg("-initrd")
        .arg(&b.initrd)
        .arg("-append")
        .arg(format!("{CMDLINE} {}", b.append).trim_end())
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=host,security_model=none",
            b.share.display()
        ))
        .args(&b.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("cannot start qemu-system-x86_64 under timeout")?;

    let mut log =
        fs::File::create(&b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let qemu_errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        log.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        if let Some(progress) = text.trim_end().strip_prefix("@@ ") {
            eprintln!(
                "{} [{:>5.1}s] {progress}",
                b.label,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let status = child.wait()?;
    let errors = qemu_errors.join().unwrap_or_default();
    if !errors.trim().is_empty() {
        writeln!(log, "\n--- qemu stderr ---\n{errors}")?;
    }
    Ok(Outcome {
        elapsed: started.elapsed(),
        // timeout(1) exits 124 when the time ran out, 137 after its KILL
        timed_out: matches!(status.code(), Some(124 | 137)),
        code: status.code(),
    })
}

/// The log's last `n` lines, for failure messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
