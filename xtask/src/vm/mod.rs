//! `cargo xtask vm-test`: Debian's stock kernel under qemu, running the race
//! scenarios with the test module.
//!
//! Host side: fetch and cache the kernel, headers and mdadm
//! (`.vm-cache/`), build the test module and detector, pack an initramfs
//! per guest, boot the guests side by side (`guests`), then judge what each
//! left in its 9p share. Guest side:
//! `tests/vm/init` and the scenario scripts; the races themselves are in
//! `tests/kmod`.

mod assertions;
mod benign;
mod blktests;
mod debian;
mod debian_guest;
mod debian_run;
mod events;
mod fixtures;
mod guests;
mod helpers;
mod initramfs;
mod kernel;
mod kmod;
mod markers;
mod mirror;
mod monitoring;
mod qemu;
mod results;
mod rootfs;
mod scenarios;
mod service;
mod service_caps;
mod service_checks;
mod tally;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util::{build_detector_release, workspace_root};
use guests::Guest;
use initramfs::Initramfs;
use kernel::{Kernel, Modules};
use scenarios::{SCENARIOS, Scenario};

/// device-mapper's command line tool, from the host (package dmsetup),
/// with its libraries.
const DMSETUP: &str = "/usr/sbin/dmsetup";

/// A set of modules the guest loads at one time, from
/// `/lib/modules/<list>.list` (with their dependencies, each module in the
/// first list that needs it).
struct ModuleSet {
    list: &'static str,
    wanted: &'static [&'static str],
    /// Put in the initramfs but left out of the list: the scenarios load
    /// them with their own parameters (`insmod /lib/modules/NAME.ko ...`).
    by_hand: &'static [&'static str],
}

/// `base` loads at boot (the 9p share over virtio-pci); `md` later, so
/// that `detector check` runs once without md and once with; `scsi` and
/// `dm` only in the scenarios that use them (`load_list` in lib.sh). The
/// crypto providers come before what needs them: the kernel would ask
/// modprobe for them (softdeps), and the guest has no modprobe.
const MODULE_SETS: &[ModuleSet] = &[
    ModuleSet {
        list: "base",
        wanted: &["virtio_pci", "9pnet_virtio", "9p"],
        by_hand: &[],
    },
    ModuleSet {
        list: "md",
        wanted: &["md_mod", "raid1"],
        by_hand: &[],
    },
    ModuleSet {
        list: "scsi",
        wanted: &[
            "crct10dif_generic",
            "crc64_rocksoft_generic",
            "sd_mod",
            "scsi_debug",
        ],
        by_hand: &["scsi_debug"],
    },
    ModuleSet {
        list: "dm",
        wanted: &["crc32c_generic", "dm_thin_pool", "dm_zero", "loop"],
        by_hand: &[],
    },
];

/// Seconds a guest may take before qemu is killed: boot and checks, then
/// per scenario (attaching takes 10-20 s under emulation, the longest
/// scenario runs ~15 s).
const BASE_TIMEOUT_SECS: u64 = 240;
const TIMEOUT_SECS_PER_SCENARIO: u64 = 90;
/// Seconds `detector trace` may take to attach under emulation.
pub(crate) const ATTACH_TIMEOUT_SECS: u64 = 180;

#[derive(Args, Default)]
pub struct VmTestArgs {
    /// Run only this scenario (repeatable); see --list.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Also copy the guests' serial logs here, one after the other (they
    /// always stay in .vm-cache/guest-N/guest.log).
    #[arg(long, value_name = "FILE")]
    keep_log: Option<PathBuf>,
    /// Guests to boot side by side, each running a share of the scenarios
    /// (each keeps one host core busy) [default: the cores, at most 4].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    jobs: Option<u16>,
    /// Run the scenarios without detector: checks only that the module
    /// reproduces each race.
    #[arg(long)]
    no_detector: bool,
    /// Copy each scenario's recording, gzipped, to DIR (default:
    /// detector/tests/fixtures/vm/) as a replay fixture, with a README and
    /// expected.json saying what each must give.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "detector/tests/fixtures/vm")]
    save_fixtures: Option<PathBuf>,
    /// Kill a guest after this many seconds [default: 240 + 90 per
    /// scenario it runs].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Judge the last run again (what its guests left in
    /// .vm-cache/guest-N/share) without booting: for work on the host-side
    /// assertions.
    #[arg(long)]
    rejudge: bool,
    /// Instead of the seed races: the benign suite of real workloads in a
    /// Debian guest (md raid1, dm-thin, integrity, NVMe passthrough, a disk
    /// deleted under I/O, blk-throttle, null_blk), which must give zero
    /// findings.
    #[arg(long, conflicts_with_all = ["scenarios", "no_detector", "save_fixtures"])]
    benign: bool,
    /// With --benign: run only this workload (repeatable); see --list.
    #[arg(long = "workload", value_name = "NAME", requires = "benign")]
    workloads: Vec<String>,
    /// Instead of the seed races: blktests from this checkout (built with
    /// `make`) in the Debian guest, detector attached, groups block, loop,
    /// scsi, md, dm, throtl and nvme (over TCP). The long run: an hour or
    /// more under emulation.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["scenarios", "no_detector", "save_fixtures", "benign"])]
    blktests: Option<PathBuf>,
    /// Instead of the seed races: detector as a service on a Debian test
    /// server (systemd as PID 1, the .deb installed with dpkg), a real race
    /// reaching the host's Prometheus and Alertmanager, then reload,
    /// kill -9 and stop.
    #[arg(long, conflicts_with_all = ["scenarios", "no_detector", "save_fixtures", "benign", "blktests"])]
    service: bool,
    /// With --blktests: only these groups or tests (repeatable), e.g.
    /// `--only loop --only block/027`.
    #[arg(long = "only", value_name = "GROUP|TEST", requires = "blktests")]
    only: Vec<String>,
    /// With --blktests: blktests' quick run (only tests marked quick or
    /// timed, timed ones cut to 20 s): the representative subset.
    #[arg(long, requires = "blktests")]
    quick: bool,
}

impl VmTestArgs {
    /// `vm-test --service` as `cargo xtask test` runs it.
    pub fn service_test() -> Self {
        Self {
            service: true,
            ..Self::default()
        }
    }

    /// `vm-test --benign` as `cargo xtask test` runs it.
    pub fn benign_suite() -> Self {
        Self {
            benign: true,
            ..Self::default()
        }
    }
}

pub fn run(args: VmTestArgs) -> Result<()> {
    if args.list {
        for s in SCENARIOS {
            println!("{:<32} {}", s.name, s.about);
        }
        println!("\nbenign workloads (--benign --workload NAME):");
        for w in benign::WORKLOADS {
            println!("{:<32} {}", w.name, w.about);
        }
        return Ok(());
    }
    if args.benign {
        return debian_run::benign(&args);
    }
    if args.service {
        return service::run(args.timeout);
    }
    if let Some(dir) = &args.blktests {
        return debian_run::blktests(&args, dir);
    }
    let started = Instant::now();
    let selected = select(&args.scenarios)?;
    let root = workspace_root();
    let cache = root.join(".vm-cache");
    fs::create_dir_all(&cache)?;
    if args.rejudge {
        return rejudge(&args, &root, &cache);
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
    let helpers = helpers::build(&root.join("tests/vm/helpers"), &cache.join("helpers"))?;
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

    let jobs = args.jobs.map_or_else(default_jobs, usize::from);
    let guests = guests::split(&cache, &selected, jobs);
    forget_last_run(&cache)?;
    let img = initramfs_base(
        &root,
        &cache.join("initramfs"),
        &kernel,
        &Binaries {
            mdadm: &mdadm,
            helpers: &helpers,
            module: &module,
            detector: detector.as_deref(),
        },
    )?;
    for guest in &guests {
        fs::create_dir_all(guest.share())?;
        write_config(&img, guest, detector.is_some())?;
        img.pack(&guest.initrd())?;
        guest.save_plan()?;
    }
    eprintln!(
        "vm: booting {} in {} guest(s) with {} scenario(s){} (prepared in {:.0?})",
        kernel.release,
        guests.len(),
        selected.len(),
        if detector.is_some() {
            ""
        } else {
            ", without detector"
        },
        started.elapsed()
    );
    let most = guests.iter().map(|g| g.scenarios.len()).max().unwrap_or(0) as u64;
    let timeout = Duration::from_secs(
        args.timeout
            .unwrap_or(BASE_TIMEOUT_SECS + TIMEOUT_SECS_PER_SCENARIO * most),
    );
    let outcomes = boot_all(&guests, &vmlinux, timeout)?;
    if let Some(keep) = &args.keep_log {
        keep_logs(&guests, keep)?;
    }

    let runs: Vec<results::GuestRun> = guests
        .iter()
        .zip(&outcomes)
        .map(|(guest, outcome)| results::GuestRun { guest, outcome })
        .collect();
    let judged = results::judge(&runs, detector.as_deref());
    if let Some(dest) = &args.save_fixtures
        && let Some(detector) = &detector
    {
        // also when detector's verdicts fail: the recordings are what the
        // engine's tests need to get them right
        fixtures::save(&guests, &root.join(dest), &kernel.release, detector)?;
    }
    judged?;
    let slowest = outcomes.iter().map(|o| o.elapsed).max().unwrap_or_default();
    eprintln!(
        "vm: all {} scenario(s) passed in {:.0?} (slowest guest {:.0?})",
        selected.len(),
        started.elapsed(),
        slowest
    );
    Ok(())
}

/// One guest per core (each keeps one busy), at most four.
pub(crate) fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

/// Removes the last run's guests, so that `--rejudge` never mixes runs.
fn forget_last_run(cache: &Path) -> Result<()> {
    for entry in fs::read_dir(cache)? {
        let path = entry?.path();
        let is_guest = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("guest-"));
        if is_guest && path.is_dir() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Boots every guest at once and waits for all of them.
fn boot_all(guests: &[Guest], vmlinux: &Path, timeout: Duration) -> Result<Vec<qemu::Outcome>> {
    let boots: Vec<qemu::Boot> = guests
        .iter()
        .map(|g| qemu::Boot {
            label: if guests.len() == 1 {
                "vm".to_owned()
            } else {
                format!("vm{}", g.number)
            },
            vmlinux: vmlinux.to_path_buf(),
            initrd: g.initrd(),
            share: g.share(),
            log: g.log(),
            timeout,
            append: String::new(),
            extra_args: Vec::new(),
        })
        .collect();
    std::thread::scope(|scope| {
        let running: Vec<_> = boots
            .iter()
            .map(|b| scope.spawn(move || qemu::boot(b)))
            .collect();
        running
            .into_iter()
            .map(|r| {
                r.join()
                    .map_err(|_| anyhow::anyhow!("a guest's thread panicked"))?
            })
            .collect()
    })
}

/// Every guest's serial log in one file.
fn keep_logs(guests: &[Guest], keep: &Path) -> Result<()> {
    let mut all = String::new();
    for g in guests {
        let log = fs::read(g.log()).unwrap_or_default();
        all.push_str(&format!("===== guest {} =====\n", g.number));
        all.push_str(&String::from_utf8_lossy(&log));
    }
    fs::write(keep, all).with_context(|| format!("writing the guest logs to {}", keep.display()))
}

/// `--rejudge`: the host-side checks again on what the last run's guests
/// left, without booting.
fn rejudge(args: &VmTestArgs, root: &Path, cache: &Path) -> Result<()> {
    let guests = guests::last_run(cache)?;
    let detector = (!args.no_detector).then(|| root.join("target/release/detector"));
    if let Some(dest) = &args.save_fixtures
        && let Some(detector) = &detector
    {
        let info = fs::read_to_string(guests[0].share().join("guest-info.txt")).unwrap_or_default();
        let release = info.lines().next().unwrap_or("unknown").to_owned();
        fixtures::save(&guests, &root.join(dest), &release, detector)?;
    }
    let finished = qemu::Outcome {
        elapsed: Duration::ZERO,
        timed_out: false,
        code: Some(0),
    };
    let runs: Vec<results::GuestRun> = guests
        .iter()
        .map(|guest| results::GuestRun {
            guest,
            outcome: &finished,
        })
        .collect();
    results::judge(&runs, detector.as_deref())
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

/// The programs the guests get besides busybox.
struct Binaries<'a> {
    mdadm: &'a Path,
    /// tests/vm/helpers, built static.
    helpers: &'a [PathBuf],
    /// The test module (tests/kmod).
    module: &'a Path,
    detector: Option<&'a Path>,
}

/// Everything the guests share: init, scripts, busybox, mdadm, dmsetup,
/// the helpers, detector, the modules. Each guest's `/bench/config` is
/// written before packing.
fn initramfs_base(root: &Path, tree: &Path, kernel: &Kernel, bins: &Binaries) -> Result<Initramfs> {
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
    img.binary(bins.mdadm, "/sbin/mdadm")?;
    img.binary(Path::new(DMSETUP), "/sbin/dmsetup")?;
    for helper in bins.helpers {
        let name = helper
            .file_name()
            .and_then(|n| n.to_str())
            .context("helper name")?;
        img.file(helper, &format!("/usr/bin/{name}"), 0o755)?;
    }
    if let Some(detector) = bins.detector {
        img.binary(detector, "/usr/bin/detector")?;
    }

    let modules = Modules::scan(&kernel.modules_dir())?;
    let mut loaded = HashSet::new();
    for set in MODULE_SETS {
        let mut list = String::new();
        for ko in modules.load_order(set.wanted, &mut loaded)? {
            let file = ko
                .file_name()
                .and_then(|n| n.to_str())
                .context("module name")?;
            img.file(&ko, &format!("/lib/modules/{file}"), 0o644)?;
            let name = file.trim_end_matches(".ko").replace('-', "_");
            if !set.by_hand.contains(&name.as_str()) {
                list.push_str(file);
                list.push('\n');
            }
        }
        if set.list == "base" {
            // the test module loads with the base set: its disks are md's members
            img.file(bins.module, "/lib/modules/racebench.ko", 0o644)?;
            list.push_str("racebench.ko\n");
        }
        img.write(&format!("/lib/modules/{}.list", set.list), &list, 0o644)?;
    }
    Ok(img)
}

/// `/bench/config`: what this guest runs.
fn write_config(img: &Initramfs, guest: &Guest, detector: bool) -> Result<()> {
    let names: Vec<_> = guest.scenarios.iter().map(|s| s.name).collect();
    img.write(
        "/bench/config",
        &format!(
            "SCENARIOS='{}'\nCHECKS='{}'\nDETECTOR={}\nDETECTOR_FLAGS='{}'\nATTACH_TIMEOUT={}\n",
            names.join(" "),
            guest.checks.join(" "),
            u8::from(detector),
            scenarios::DETECTOR_FLAGS,
            ATTACH_TIMEOUT_SECS,
        ),
        0o644,
    )
}
