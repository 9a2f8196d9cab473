//! Scale figures: record size on a live busy host; the engine's speed on
//! one core and its memory per tracked bio, from the synthetic busy host
//! (`detector/examples/scale.rs`); replay speed end to end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::Plan;
use super::fio::{self, Op, Target, TargetKind};
use super::procs::{self, DetectorBin};
use super::table::{Row, si};
use crate::util::{output, run as run_cmd, workspace_root};

/// The CPU single-core figures are pinned to (the last one).
fn last_cpu() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n - 1).to_string()
}

fn scale_tool() -> Result<PathBuf> {
    let root = workspace_root();
    run_cmd(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "detector",
        "--example",
        "scale",
    ]))?;
    Ok(root.join("target/release/examples/scale"))
}

fn json_of(cmd: &mut Command) -> Result<Value> {
    let text = output(cmd)?;
    serde_json::from_str(text.trim()).with_context(|| format!("not JSON: {text}"))
}

fn pinned(program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["--cpu-list", &last_cpu()]).arg(program);
    cmd
}

/// Seconds `detector replay FILE` takes on one core.
fn replay_seconds(bin: &DetectorBin, file: &Path) -> Result<f64> {
    let start = Instant::now();
    let out = pinned(&bin.path)
        .arg("replay")
        .arg(file)
        .output()
        .context("running detector replay")?;
    if !out.status.success() {
        anyhow::bail!(
            "detector replay {} failed:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A live recording of fio on the tmpfs loop: bytes per event on disk,
/// and how fast it replays. With `--full`, as a recording kept for
/// debugging: by default fio's I/O is paired in the kernel, and the few
/// events left would measure the file's header, not its events.
pub fn live_recording(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Vec<Row>> {
    let target = Target::new(TargetKind::TmpfsLoop, dir)?;
    let file = dir.join("busy-host.rec");
    let file_arg = file.to_string_lossy().into_owned();
    let running = procs::start_detector(bin, dir, &["--full", "--record", &file_arg])?;
    fio::iops(&target, Op::RandRead, plan.fio_seconds, 0)?;
    let end = running.stop()?;
    let bytes = std::fs::metadata(&file)?.len() as f64;
    let per_event = bytes / end.events.max(1) as f64;
    let secs = replay_seconds(bin, &file)?;
    let _ = std::fs::remove_file(&file);
    Ok(vec![
        Row::new(
            format!(
                "record file bytes per event, live busy host ({} events of fio on the tmpfs loop, \
                 `--full`)",
                si(end.events as f64)
            ),
            per_event,
            format!("{per_event:.1} B"),
        )
        .goal("<= 32 B")
        .sane(0.5..1e4),
        Row::new(
            "replay of that recording, one core",
            end.events as f64 / secs,
            format!("{} events/s", si(end.events as f64 / secs)),
        )
        .goal("as fast as before"),
    ])
}

/// The synthetic busy host: written, replayed by the engine alone and by
/// `detector replay`, and the engine's memory per bio.
pub fn synthetic(plan: &Plan, bin: &DetectorBin, dir: &Path) -> Result<Vec<Row>> {
    let tool = scale_tool()?;
    let file = dir.join("synthetic.rec");
    let written = json_of(
        Command::new(&tool)
            .arg("write")
            .arg(&file)
            .arg(plan.synthetic_events.to_string()),
    )?;
    let events = written["events"].as_f64().unwrap_or(f64::NAN);
    let engine = json_of(pinned(&tool).arg("engine").arg(&file))?;
    // Builds from before record format 2 cannot read the file.
    let replay = match replay_seconds(bin, &file) {
        Ok(secs) => (events / secs, format!("{} events/s", si(events / secs))),
        Err(_) if !bin.stats_json => (1.0, "n/a (reads record format 1 only)".into()),
        Err(e) => return Err(e),
    };
    let memory = json_of(
        Command::new(&tool)
            .arg("memory")
            .arg(plan.memory_busy_events.to_string()),
    )?;
    let _ = std::fs::remove_file(&file);
    let eps = engine["engine_events_per_s"].as_f64().unwrap_or(f64::NAN);
    let per_bio = memory["bytes_per_bio"].as_f64().unwrap_or(f64::NAN);
    let bytes = written["bytes_per_event"].as_f64().unwrap_or(f64::NAN);
    Ok(vec![
        Row::new(
            format!(
                "engine throughput, one core (synthetic busy host: {} events, up to {} bios in flight)",
                si(events),
                engine["most_bios_in_flight"]
            ),
            eps,
            format!(
                "{} events/s ({:.0} ns/event), {} findings",
                si(eps),
                engine["engine_ns_per_event"].as_f64().unwrap_or(f64::NAN),
                engine["findings"]
            ),
        ),
        Row::new(
            "`detector replay` of the synthetic recording, one core (read, decode, engine)",
            replay.0,
            replay.1,
        ),
        Row::new(
            format!(
                "engine heap per tracked bio ({} bios added in flight)",
                memory["bios_added"]
            ),
            per_bio,
            format!("{per_bio:.0} B"),
        )
        .goal("<= 200 B"),
        Row::new(
            "synthetic recording bytes per event",
            bytes,
            format!("{bytes:.1} B"),
        )
        .goal("<= 32 B"),
    ])
}
