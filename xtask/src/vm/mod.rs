//! `cargo xtask vm-test`: Debian's stock kernel under qemu, running the race
//! scenarios with the test module.
//!
//! Host side: fetch and cache the kernel, headers and mdadm
//! (`.vm-cache/`), build the test module and detector, pack an initramfs,
//! boot, then judge what the guest left in the 9p share. Guest side:
//! `tests/vm/init` and the scenario scripts; the races themselves are in
//! `tests/kmod`.

mod assertions;
mod debian;
mod events;
mod fixtures;
mod initramfs;
mod kernel;
mod kmod;
mod qemu;
mod results;
mod scenarios;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util::{build_detector_release, workspace_root};
use initramfs::Initramfs;
use kernel::{Kernel, Modules};
use scenarios::{SCENARIOS, Scenario};

/// Modules the guest loads at boot: the 9p share over virtio-pci.
const BASE_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
/// Loaded later, so that `detector check` runs once without md and once with.
const MD_MODULES: &[&str] = &["md_mod", "raid1"];

/// Seconds the whole guest run may take before qemu is killed.
const DEFAULT_TIMEOUT_SECS: u64 = 480;
/// Seconds `detector trace` may take to attach under emulation.
const ATTACH_TIMEOUT_SECS: u64 = 180;

#[derive(Args, Default)]
pub struct VmTestArgs {
    /// Run only this scenario (repeatable); see --list.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Also copy the guest's serial log here (it always stays in
    /// .vm-cache/share/../guest.log).
    #[arg(long, value_name = "FILE")]
    keep_log: Option<PathBuf>,
    /// Run the scenarios without detector: checks only that the module
    /// reproduces each race.
    #[arg(long)]
    no_detector: bool,
    /// Copy each scenario's recording, gzipped, to detector/tests/fixtures/vm/
    /// as a replay fixture (with a README of what each must give).
    #[arg(long)]
    save_fixtures: bool,
    /// Kill the guest after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Judge the last guest run again (what it left in .vm-cache/share)
    /// without booting: for work on the host-side assertions.
    #[arg(long)]
    rejudge: bool,
}

pub fn run(args: VmTestArgs) -> Result<()> {
    if args.list {
        for s in SCENARIOS {
            println!("{:<32} {}", s.name, s.about);
        }
        return Ok(());
    }
    let started = Instant::now();
    let selected = select(&args.scenarios)?;
    let root = workspace_root();
    let cache = root.join(".vm-cache");
    fs::create_dir_all(&cache)?;
    let share = cache.join("share");
    let log = cache.join("guest.log");
    if args.rejudge {
        let detector = (!args.no_detector).then(|| root.join("target/release/detector"));
        if args.save_fixtures
            && let Some(detector) = &detector
        {
            let info = fs::read_to_string(share.join("guest-info.txt")).unwrap_or_default();
            let release = info.lines().next().unwrap_or("unknown").to_owned();
            let dest = root.join("detector/tests/fixtures/vm");
            fixtures::save(&share, &dest, &selected, &release, detector)?;
        }
        return results::judge(&results::Run {
            share: &share,
            log: &log,
            outcome: &qemu::Outcome {
                elapsed: Duration::ZERO,
                timed_out: false,
                code: Some(0),
            },
            scenarios: &selected,
            detector: detector.as_deref(),
        });
    }
    let release = debian::kernel_release(&cache)?;
    let kernel = Kernel {
        root: debian::unpacked(
            &cache,
            &format!("linux-image-{release}"),
            &cache.join(format!("kernel-{release}")),
        )?,
        release,
    };
    let vmlinux = kernel.vmlinux()?;
    let headers = debian::kernel_headers(&kernel.release)?;
    let mdadm = debian::unpacked(&cache, "mdadm", &cache.join("mdadm"))?.join("sbin/mdadm");
    let module = kmod::build(
        &root.join("tests/kmod"),
        &cache.join(format!("kmod-{}", kernel.release)),
        &headers,
    )?;
    let detector = if args.no_detector {
        None
    } else {
        Some(build_detector_release()?)
    };

    let initrd = cache.join("initramfs.cpio");
    build_initramfs(
        &root,
        &cache.join("initramfs"),
        &initrd,
        &kernel,
        &mdadm,
        &module,
        detector.as_deref(),
        &selected,
    )?;

    if share.exists() {
        fs::remove_dir_all(&share)?;
    }
    fs::create_dir_all(&share)?;
    eprintln!(
        "vm: booting {} with {} scenario(s){} (prepared in {:.0?})",
        kernel.release,
        selected.len(),
        if detector.is_some() {
            ""
        } else {
            ", without detector"
        },
        started.elapsed()
    );
    let outcome = qemu::boot(&qemu::Boot {
        vmlinux,
        initrd,
        share: share.clone(),
        log: log.clone(),
        timeout: Duration::from_secs(args.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
    })?;
    if let Some(keep) = &args.keep_log {
        fs::copy(&log, keep)
            .with_context(|| format!("copying the guest log to {}", keep.display()))?;
    }

    let judged = results::judge(&results::Run {
        share: &share,
        log: &log,
        outcome: &outcome,
        scenarios: &selected,
        detector: detector.as_deref(),
    });
    if args.save_fixtures
        && let Some(detector) = &detector
    {
        // also when detector's verdicts fail: the recordings are what the
        // engine's tests need to get them right
        fixtures::save(
            &share,
            &root.join("detector/tests/fixtures/vm"),
            &selected,
            &kernel.release,
            detector,
        )?;
    }
    judged?;
    eprintln!(
        "vm: all {} scenario(s) passed in {:.0?} (guest {:.0?})",
        selected.len(),
        started.elapsed(),
        outcome.elapsed
    );
    Ok(())
}

fn select(names: &[String]) -> Result<Vec<&'static Scenario>> {
    if names.is_empty() {
        return Ok(SCENARIOS.iter().collect());
    }
    let mut picked = Vec::new();
    for name in names {
        let Some(s) = scenarios::find(name) else {
            let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
            bail!("no scenario {name}; known: {}", known.join(" "));
        };
        picked.push(s);
    }
    // run order is the table's (md scenarios last)
    picked.sort_by_key(|s| SCENARIOS.iter().position(|t| t.name == s.name));
    picked.dedup_by_key(|s| s.name);
    Ok(picked)
}

#[expect(clippy::too_many_arguments, reason = "one call site, each input named")]
fn build_initramfs(
    root: &Path,
    tree: &Path,
    archive: &Path,
    kernel: &Kernel,
    mdadm: &Path,
    module: &Path,
    detector: Option<&Path>,
    scenarios: &[&Scenario],
) -> Result<()> {
    let img = Initramfs::new(tree)?;
    let guest = root.join("tests/vm");
    img.file(&guest.join("init"), "/init", 0o755)?;
    img.file(&guest.join("lib.sh"), "/bench/lib.sh", 0o644)?;
    for entry in fs::read_dir(guest.join("scenarios"))? {
        let path = entry?.path();
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            img.file(&path, &format!("/bench/scenarios/{name}"), 0o644)?;
        }
    }
    // busybox-static: no libraries to bring
    img.file(Path::new("/bin/busybox"), "/bin/busybox", 0o755)?;
    img.binary(mdadm, "/sbin/mdadm")?;
    if let Some(detector) = detector {
        img.binary(detector, "/usr/bin/detector")?;
    }

    let modules = Modules::scan(&kernel.modules_dir())?;
    let mut loaded = HashSet::new();
    let base = modules.load_order(BASE_MODULES, &mut loaded)?;
    let md = modules.load_order(MD_MODULES, &mut loaded)?;
    let mut base_list = String::new();
    let mut md_list = String::new();
    for (list, kos) in [(&mut base_list, &base), (&mut md_list, &md)] {
        for ko in kos {
            let name = ko
                .file_name()
                .and_then(|n| n.to_str())
                .context("module name")?;
            img.file(ko, &format!("/lib/modules/{name}"), 0o644)?;
            list.push_str(name);
            list.push('\n');
        }
    }
    // the test module loads with the base set: its disks are md's members
    img.file(module, "/lib/modules/racebench.ko", 0o644)?;
    base_list.push_str("racebench.ko\n");
    img.write("/lib/modules/base.list", &base_list, 0o644)?;
    img.write("/lib/modules/md.list", &md_list, 0o644)?;

    let names: Vec<_> = scenarios.iter().map(|s| s.name).collect();
    img.write(
        "/bench/config",
        &format!(
            "SCENARIOS='{}'\nDETECTOR={}\nDETECTOR_FLAGS='{}'\nATTACH_TIMEOUT={}\n",
            names.join(" "),
            u8::from(detector.is_some()),
            scenarios::DETECTOR_FLAGS,
            ATTACH_TIMEOUT_SECS,
        ),
        0o644,
    )?;
    img.pack(archive)
}
