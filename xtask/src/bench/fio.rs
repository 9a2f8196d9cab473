//! fio, 4 KiB random direct I/O with libaio at iodepth 32, on the two
//! targets the issue names: a loop device over a file in tmpfs (the
//! kernel does all the work: the worst case for a tracer) and a file on
//! this machine's disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{output, run as run_cmd};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    RandRead,
    RandWrite,
}

impl Op {
    pub const ALL: [Op; 2] = [Op::RandRead, Op::RandWrite];

    pub fn fio_name(self) -> &'static str {
        match self {
            Op::RandRead => "randread",
            Op::RandWrite => "randwrite",
        }
    }

    fn json_side(self) -> &'static str {
        match self {
            Op::RandRead => "read",
            Op::RandWrite => "write",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    TmpfsLoop,
    DiskFile,
}

impl TargetKind {
    pub const ALL: [TargetKind; 2] = [TargetKind::TmpfsLoop, TargetKind::DiskFile];

    pub fn label(self) -> &'static str {
        match self {
            TargetKind::TmpfsLoop => "loop device on a tmpfs file",
            TargetKind::DiskFile => "file on this machine's disk",
        }
    }
}

/// Where fio does its I/O; torn down on drop.
pub struct Target {
    pub kind: TargetKind,
    pub path: PathBuf,
    mount: Option<PathBuf>,
    loop_dev: Option<String>,
}

const FILE_MB: u64 = 512;

impl Target {
    pub fn tmpfs_loop(dir: &Path) -> Result<Self> {
        let mount = dir.join("tmpfs");
        std::fs::create_dir_all(&mount)?;
        let _ = Command::new("umount").arg(&mount).output();
        run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={}m", FILE_MB + 64))
                .arg("tmpfs")
                .arg(&mount),
        )?;
        let mut target = Self {
            kind: TargetKind::TmpfsLoop,
            path: PathBuf::new(),
            mount: Some(mount.clone()),
            loop_dev: None,
        };
        let file = mount.join("backing");
        fill(&file)?;
        let dev = output(Command::new("losetup").args(["-f", "--show"]).arg(&file))?;
        let dev = dev.trim().to_owned();
        target.path = PathBuf::from(&dev);
        target.loop_dev = Some(dev);
        Ok(target)
    }

    pub fn disk_file(dir: &Path) -> Result<Self> {
        let file = dir.join("disk-file");
        let big_enough = std::fs::metadata(&file).is_ok_and(|m| m.len() >= FILE_MB << 20);
        if !big_enough {
            fill(&file)?;
        }
        Ok(Self {
            kind: TargetKind::DiskFile,
            path: file,
            mount: None,
            loop_dev: None,
        })
    }

    pub fn new(kind: TargetKind, dir: &Path) -> Result<Self> {
        match kind {
            TargetKind::TmpfsLoop => Self::tmpfs_loop(dir),
            TargetKind::DiskFile => Self::disk_file(dir),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).output();
        }
        if let Some(mount) = &self.mount {
            let _ = Command::new("umount").arg(mount).output();
        }
    }
}

/// Writes the whole file once, so that reads hit allocated blocks, and
/// waits until it is on disk (writeback must not compete with the runs).
fn fill(file: &Path) -> Result<()> {
    run_cmd(
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .args([
                "bs=1M",
                &format!("count={FILE_MB}"),
                "conv=fsync",
                "status=none",
            ]),
    )
}

/// One fio run; its IOPS. `rate_iops` caps the rate (0: as fast as it
/// goes).
pub fn iops(target: &Target, op: Op, seconds: f64, rate_iops: u64) -> Result<f64> {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=bench",
        "--ioengine=libaio",
        "--direct=1",
        "--bs=4k",
        "--iodepth=32",
        "--time_based",
        "--output-format=json",
        "--randrepeat=0",
    ])
    .arg(format!("--rw={}", op.fio_name()))
    .arg(format!("--filename={}", target.path.display()))
    .arg(format!("--size={FILE_MB}m"))
    .arg(format!("--runtime={}ms", (seconds * 1000.0) as u64));
    if rate_iops > 0 {
        cmd.arg(format!("--rate_iops={rate_iops}"));
    }
    let json = output(&mut cmd)?;
    let value: serde_json::Value = serde_json::from_str(&json)
        .with_context(|| format!("fio's JSON output does not parse: {json}"))?;
    let iops = value["jobs"][0][op.json_side()]["iops"]
        .as_f64()
        .context("no IOPS in fio's output")?;
    if iops.is_nan() || iops <= 0.0 {
        bail!("fio did no I/O on {}", target.path.display());
    }
    Ok(iops)
}
