//! `cargo xtask vm-test --benign`: healthy kernel behaviour must give zero
//! findings. Real workloads on real subsystems (md raid1, dm-thin, T10-PI
//! integrity, NVMe passthrough, a disk deleted under I/O, blk-throttle,
//! null_blk) run in the Debian guest, each under its own `detector trace`
//! session with every hook and the bench's thresholds (a stall on an
//! emulated disk must last 30 s: see `EMULATED_DISKS`); the host replays each
//! recording and requires no finding at all, real events (the kinds the
//! workload must cause, bios on each of its disks), and reports what was
//! lost.
//!
//! Guest side: `tests/vm/debian/benign.sh` and `benign/NAME.sh`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::vm::debian_guest::GuestDir;
use crate::vm::markers::Markers;
use crate::vm::qemu::{self, Outcome};
use crate::vm::scenarios::{DETECTOR_FLAGS, bench_thresholds_but_lost_io};
use crate::vm::tally::{Tally, finding_ts};

pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
    /// Event kinds its recording must hold (beyond bios on its disks).
    pub kinds: &'static [&'static str],
    /// The thresholds its session and replay run with.
    pub flags: &'static str,
}

/// For workloads on emulated disks: the bench's thresholds, but a stall
/// must last the default 30 s. Under emulation on a loaded 2-core host a
/// discard or a journal write on a virtio, SCSI or NVMe disk can take 4 s
/// (mkfs.xfs on dm-thin over NVMe did): a true stall of the guest's disk at
/// the bench's 3 s, and no statement about the kernel's I/O paths.
const EMULATED_DISKS: &str = concat!(bench_thresholds_but_lost_io!(), " --lost-io-after 30s");

/// In run order. Each has `tests/vm/debian/benign/<name>.sh`.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "md_raid1",
        about: "ext4 and xfs on md raid1 (bitmap): fsync and direct fio, fstrim, check, mdadm --stop",
        kinds: &[
            "bio_queue",
            "bio_endio",
            "md_super_write",
            "md_super_written",
        ],
        flags: EMULATED_DISKS,
    },
    Workload {
        name: "dm_thin",
        about: "ext4 and xfs on dm-thin over NVMe: unprovisioned reads, fio, fstrim, blkdiscard",
        kinds: &["bio_queue", "bio_endio"],
        flags: EMULATED_DISKS,
    },
    Workload {
        name: "integrity",
        about: "reads from a T10-PI disk with DIX (scsi_debug dif=1 dix=1)",
        kinds: &["bio_queue", "bio_endio"],
        flags: EMULATED_DISKS,
    },
    Workload {
        name: "nvme_passthru",
        about: "NVMe passthrough: fio io_uring_cmd on /dev/ng0n1",
        // its bios are made by blk_rq_map_user and never queued
        kinds: &["bio_init", "bio_endio"],
        flags: EMULATED_DISKS,
    },
    Workload {
        name: "disk_delete",
        about: "scsi_debug disks deleted while fio submits to them (blktests block/027's shape)",
        kinds: &["bio_queue", "del_gendisk"],
        flags: EMULATED_DISKS,
    },
    Workload {
        name: "throttle",
        about: "direct I/O held back for seconds by blk-throttle (a cgroup's io.max on null_blk)",
        kinds: &["bio_queue", "bio_endio"],
        flags: DETECTOR_FLAGS,
    },
    Workload {
        name: "null_blk",
        about: "fio bursts on null_blk, timer and inline completions",
        kinds: &["bio_queue", "bio_endio"],
        flags: DETECTOR_FLAGS,
    },
];

/// The guest's directory under `.vm-cache/`.
pub const GUEST: &str = "debian-benign";

pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The workloads named (all when none), in table order.
pub fn select(names: &[String]) -> Result<Vec<&'static Workload>> {
    if names.is_empty() {
        return Ok(WORKLOADS.iter().collect());
    }
    for name in names {
        if find(name).is_none() {
            let known: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
            bail!("no workload {name}; known: {}", known.join(" "));
        }
    }
    Ok(WORKLOADS
        .iter()
        .filter(|w| names.iter().any(|n| n == w.name))
        .collect())
}

/// `bench/config` settings for the guest.
pub fn settings(selected: &[&Workload], attach_timeout: u64) -> String {
    let names: Vec<&str> = selected.iter().map(|w| w.name).collect();
    let mut text = format!(
        "WORKLOADS='{}'\nATTACH_TIMEOUT={attach_timeout}\n",
        names.join(" ")
    );
    for w in selected {
        let _ = writeln!(text, "FLAGS_{}='{}'", w.name, w.flags);
    }
    text
}

/// What one workload's recording showed.
struct Judged {
    problems: Vec<String>,
    report: Value,
    line: String,
}

/// One guest's share of the suite and how its boot ended.
pub struct GuestRun<'a> {
    pub guest: &'a GuestDir,
    pub outcome: &'a Outcome,
    pub workloads: Vec<&'static Workload>,
}

/// Splits the workloads over at most `jobs` guests, round robin in table
/// order, so the two heavy ones (md, dm-thin) land on different guests.
pub fn split(selected: &[&'static Workload], jobs: usize) -> Vec<Vec<&'static Workload>> {
    let jobs = jobs.clamp(1, selected.len().max(1));
    let mut shares = vec![Vec::new(); jobs];
    for (i, w) in selected.iter().enumerate() {
        shares[i % jobs].push(*w);
    }
    shares
}

/// Passes, or fails naming every problem (and the failing guests' serial
/// logs). Writes `report.json` (one object per workload) to `report`.
pub fn judge(runs: &[GuestRun], detector: &Path, report: &Path) -> Result<()> {
    let mut problems = String::new();
    let mut reports = Vec::new();
    for run in runs {
        let mut mine = String::new();
        if run.outcome.timed_out {
            writeln!(
                mine,
                "the Debian guest did not finish within its time limit"
            )?;
        } else if !run.guest.finished() {
            writeln!(
                mine,
                "the Debian guest stopped before finishing (qemu exit {:?})",
                run.outcome.code
            )?;
        }
        for w in &run.workloads {
            let judged = judge_workload(run.guest, w, detector);
            let status = if judged.problems.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            eprintln!("vm: {:<14} {status:<6} {}", w.name, judged.line);
            for p in &judged.problems {
                writeln!(mine, "{}: {p}", w.name)?;
            }
            reports.push(judged.report);
        }
        if !mine.is_empty() {
            write!(
                problems,
                "{mine}--- serial log (last 40 lines of {}) ---\n{}\n",
                run.guest.log().display(),
                qemu::log_tail(&run.guest.log(), 40)
            )?;
        }
    }
    fs::write(report, serde_json::to_string_pretty(&reports)? + "\n")?;
    eprintln!("vm: benign suite report: {}", report.display());
    if problems.is_empty() {
        return Ok(());
    }
    bail!("benign suite failed:\n{problems}")
}

fn judge_workload(guest: &GuestDir, w: &Workload, detector: &Path) -> Judged {
    let dir = guest.out().join("benign").join(w.name);
    let mut problems = Vec::new();
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    let verdict = read("verdict");
    match verdict.trim() {
        "ok" => {}
        "" if !dir.join("trace.rec").exists() => {
            let problems = vec!["the guest never ran this workload".to_owned()];
            return Judged {
                line: problems[0].clone(),
                report: json!({ "workload": w.name, "problems": problems }),
                problems,
            };
        }
        "" => problems.push("the guest never finished this workload".to_owned()),
        other => problems.push(format!("in the guest: {other}")),
    }
    if read("trace.rc").trim() != "0" {
        problems.push(format!(
            "detector trace exited with {:?} (0 expected after SIGINT); trace.err ends: {}",
            read("trace.rc").trim(),
            read("trace.err").lines().last().unwrap_or_default()
        ));
    }
    let markers = Markers::load(&dir.join("markers.tsv")).unwrap_or_default();
    let tally = match Tally::replay(
        detector,
        &dir.join("trace.rec"),
        w.flags,
        &dir.join("replay.err"),
        |_| None,
    ) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{e:#}"));
            return Judged {
                line: problems.join("; "),
                report: json!({ "workload": w.name, "problems": problems }),
                problems,
            };
        }
    };
    problems.extend(tally.error.clone());
    let devices = watched_devices(&read("devices.tsv"));
    problems.extend(sanity(w, &tally, &devices));
    let findings = findings_by_step(&tally, &markers, w.name);
    if !tally.findings.is_empty() {
        let mut text = format!(
            "{} finding(s) on healthy kernel behaviour (zero expected):",
            tally.findings.len()
        );
        for ((kind, step), (count, example)) in &findings {
            write!(text, "\n    {kind} x{count} during {step}: {example}").ok();
        }
        problems.push(text);
    }
    let line = format!(
        "{} events, {} lost, bios {}, findings {}",
        tally.events,
        tally.lost,
        devices
            .iter()
            .map(|(dev, name)| format!("{name}={}", bios_of(w, &tally, dev)))
            .collect::<Vec<_>>()
            .join(" "),
        tally.findings.len()
    );
    let report = json!({
        "workload": w.name,
        "about": w.about,
        "events": tally.events,
        "by_kind": tally.by_kind,
        "lost": tally.lost,
        "devices": devices.iter().map(|(dev, name)| json!({
            "dev": dev, "name": name, "bios": bios_of(w, &tally, dev),
        })).collect::<Vec<_>>(),
        "findings": findings.iter().map(|((kind, step), (count, example))| json!({
            "finding": kind, "step": step, "count": count, "example": example,
        })).collect::<Vec<_>>(),
        "problems": problems,
    });
    Judged {
        problems,
        report,
        line,
    }
}

/// `devices.tsv`: "MAJ:MIN<TAB>/dev/NAME" lines.
fn watched_devices(tsv: &str) -> Vec<(String, String)> {
    tsv.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(dev, name)| (dev.trim().to_owned(), name.trim().to_owned()))
        .collect()
}

/// The recording shows real work: the kinds the workload must cause, and
/// bios on each disk it named (by bio_queue, or for passthrough I/O, which
/// never passes submit_bio, by completions naming the disk).
fn sanity(w: &Workload, tally: &Tally, devices: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in w.kinds {
        if tally.by_kind.get(*kind).copied().unwrap_or(0) == 0 {
            problems.push(format!("no {kind} event recorded"));
        }
    }
    if devices.is_empty() {
        problems.push("the workload named no disk to check (devices.tsv)".to_owned());
    }
    for (dev, name) in devices {
        if bios_of(w, tally, dev) == 0 {
            problems.push(format!("no bio of {name} ({dev}) recorded"));
        }
    }
    problems
}

/// Bios of `dev` the recording shows: queued ones, or for a passthrough
/// workload (its bios never pass submit_bio) any event naming the disk.
fn bios_of(w: &Workload, tally: &Tally, dev: &str) -> u64 {
    let by = if w.kinds.contains(&"bio_queue") {
        &tally.bios_by_dev
    } else {
        &tally.io_by_dev
    };
    by.get(dev).copied().unwrap_or(0)
}

/// Findings by (kind, step running when it fired): count and the first
/// one's explanation.
fn findings_by_step(
    tally: &Tally,
    markers: &Markers,
    workload: &str,
) -> BTreeMap<(String, String), (u64, String)> {
    let mut by: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
    for f in &tally.findings {
        let kind = f
            .get("finding")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let step = finding_ts(f).and_then(|ts| markers.at(ts)).map_or_else(
            || format!("{workload} (outside its steps)"),
            |s| s.name.clone(),
        );
        let entry = by.entry((kind, step)).or_insert_with(|| {
            let text = f
                .get("explanation")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (0, text.to_owned())
        });
        entry.0 += 1;
    }
    by
}

/// How long detector took to attach for each workload.
pub fn attach_times(runs: &[GuestRun]) -> Result<String> {
    let mut parts = Vec::new();
    for (guest, w) in runs
        .iter()
        .flat_map(|r| r.workloads.iter().map(move |w| (r.guest, w)))
    {
        let path = guest.out().join("benign").join(w.name).join("attach-ms");
        if let Ok(ms) = fs::read_to_string(&path) {
            let ms: u64 = ms
                .trim()
                .parse()
                .with_context(|| format!("{}: not a number", path.display()))?;
            parts.push(format!("{} {:.0}s", w.name, ms as f64 / 1000.0));
        }
    }
    Ok(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::workspace_root;

    #[test]
    fn every_workload_has_its_script_and_every_script_a_workload() {
        let dir = workspace_root().join("tests/vm/debian/benign");
        let mut scripts: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".sh").map(str::to_owned))
            .collect();
        scripts.sort();
        let mut names: Vec<String> = WORKLOADS.iter().map(|w| w.name.to_owned()).collect();
        names.sort();
        assert_eq!(scripts, names);
    }

    #[test]
    fn a_workload_without_bios_on_its_disk_or_its_kinds_fails() {
        let w = find("md_raid1").unwrap();
        let mut tally = Tally::default();
        tally.by_kind.insert("bio_queue".into(), 3);
        tally.bios_by_dev.insert("9:0".into(), 3);
        let devices = watched_devices("9:0\t/dev/md0\n8:0\t/dev/sda\n");
        let problems = sanity(w, &tally, &devices);
        assert!(
            problems.iter().any(|p| p.contains("/dev/sda")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("md_super_write")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.contains("/dev/md0")),
            "{problems:?}"
        );
        assert!(!sanity(w, &tally, &[]).is_empty());
    }

    #[test]
    fn findings_are_placed_in_the_step_running_then() {
        let markers =
            Markers::parse("start\tnull_blk\t10\nstart\tburst.1\t20\nend\tburst.1\t30\t0\n")
                .unwrap();
        let mut tally = Tally::default();
        for ts in [25, 26, 15, 5] {
            tally.findings.push(
                json!({"finding": "lost-wakeup", "ts": ts, "explanation": format!("at {ts}")}),
            );
        }
        let by = findings_by_step(&tally, &markers, "null_blk");
        assert_eq!(
            by[&("lost-wakeup".into(), "burst.1".into())],
            (2, "at 25".into())
        );
        assert_eq!(by[&("lost-wakeup".into(), "null_blk".into())].0, 1);
        assert_eq!(
            by[&("lost-wakeup".into(), "null_blk (outside its steps)".into())].0,
            1
        );
    }

    #[test]
    fn the_split_runs_each_workload_once_and_parts_the_heavy_ones() {
        let all: Vec<&Workload> = WORKLOADS.iter().collect();
        for jobs in 1..=8 {
            let shares = split(&all, jobs);
            assert_eq!(shares.len(), jobs.min(all.len()));
            let mut ran: Vec<&str> = shares.iter().flatten().map(|w| w.name).collect();
            ran.sort_unstable();
            let mut want: Vec<&str> = all.iter().map(|w| w.name).collect();
            want.sort_unstable();
            assert_eq!(ran, want);
        }
        let two = split(&all, 2);
        assert_eq!(two[0][0].name, "md_raid1");
        assert_eq!(two[1][0].name, "dm_thin");
    }

    #[test]
    fn selection_keeps_table_order_and_rejects_unknown_names() {
        let picked = select(&["null_blk".into(), "md_raid1".into()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|w| w.name).collect();
        assert_eq!(names, ["md_raid1", "null_blk"]);
        assert!(select(&["nope".into()]).is_err());
        assert_eq!(select(&[]).unwrap().len(), WORKLOADS.len());
    }
}
