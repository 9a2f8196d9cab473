//! `cargo xtask bench`: what tracing costs the traced I/O, as a ratio of
//! throughputs measured back to back in one run (hosts are noisy; absolute
//! times mean little), plus each program's average run time from the
//! kernel's BPF statistics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util::{build_detector_release, output, workspace_root};

#[derive(Args)]
pub struct BenchArgs {
    /// Rounds of (untraced, traced) pairs.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// 4 KiB direct writes per measurement.
    #[arg(long, default_value_t = 20000)]
    blocks: u32,
}

/// Seconds dd takes to write `blocks` 4 KiB blocks with O_DIRECT.
fn dd_seconds(file: &Path, blocks: u32) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=4k",
            &format!("count={blocks}"),
            "oflag=direct",
            "conv=notrunc",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running dd")?;
    if !status.success() {
        bail!("dd failed: {status}");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn start_trace(bin: &Path, ready: &Path) -> Result<Child> {
    let _ = std::fs::remove_file(ready);
    let child = Command::new(bin)
        .args(["trace", "--quiet", "--ready-file"])
        .arg(ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting detector")?;
    let start = Instant::now();
    while !ready.exists() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("detector did not attach within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

fn stop_trace(child: Child) -> Result<String> {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Average nanoseconds per run of each detector program, from bpftool.
fn program_costs() -> Vec<(String, u64, f64)> {
    let Ok(json) = output(Command::new("bpftool").args(["prog", "show", "--json"])) else {
        return vec![];
    };
    let Ok(progs) = serde_json::from_str::<serde_json::Value>(&json) else {
        return vec![];
    };
    let mut out: Vec<(String, u64, f64)> = progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_owned();
            let cnt = p["run_cnt"].as_u64()?;
            let ns = p["run_time_ns"].as_u64()?;
            (cnt > 0).then(|| (name, cnt, ns as f64 / cnt as f64))
        })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.1));
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(args: BenchArgs) -> Result<()> {
    let bin = build_detector_release()?;
    let dir: PathBuf = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("data");
    let ready = dir.join("ready");
    dd_seconds(&file, args.blocks)?; // allocate the file once
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_path).unwrap_or_default();
    let _ = std::fs::write(stats_path, "1");

    let mut ratios = Vec::new();
    let mut last_summary = String::new();
    for round in 1..=args.rounds {
        let base = dd_seconds(&file, args.blocks)?;
        let trace = start_trace(&bin, &ready)?;
        let traced = dd_seconds(&file, args.blocks)?;
        let costs = program_costs();
        last_summary = stop_trace(trace)?;
        let ratio = base / traced;
        ratios.push(ratio);
        eprintln!(
            "round {round}: untraced {:.0} IOPS, traced {:.0} IOPS, ratio {ratio:.3}",
            args.blocks as f64 / base,
            args.blocks as f64 / traced
        );
        if round == args.rounds {
            eprintln!("\nprogram runs during the last traced dd (kernel.bpf_stats_enabled):");
            for (name, cnt, avg) in costs.iter().filter(|c| {
                c.0.starts_with("tp_")
                    || c.0.starts_with("raw_")
                    || c.0.starts_with("enter_")
                    || c.0.starts_with("exit_")
                    || c.0.starts_with("kprobe_")
            }) {
                eprintln!("  {name:<32} {cnt:>10} runs  {avg:>8.0} ns/run");
            }
        }
    }
    let _ = std::fs::write(stats_path, stats_before.trim());
    eprintln!(
        "\nthroughput traced/untraced (median of {}): {:.3}",
        args.rounds,
        median(ratios)
    );
    if let Some(line) = last_summary.lines().find(|l| l.contains(" lost")) {
        eprintln!("last traced session: {}", line.trim());
    }
    Ok(())
}
