//! The two runs in the Debian guest: `vm-test --benign` (part of `cargo
//! xtask test`) and `vm-test --blktests DIR` (the longer run).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::util::{build_detector_release, run as run_cmd, workspace_root};
use crate::vm::debian_guest::{self, GuestDir};
use crate::vm::{ATTACH_TIMEOUT_SECS, VmTestArgs, benign, blktests};

/// A benign guest: three sessions, each 10-80 s of attaching (more on a
/// busy host) plus about a minute of work.
const BENIGN_TIMEOUT_SECS: u64 = 1200;
/// blktests' guest: seven groups, about an hour under emulation.
const BLKTESTS_TIMEOUT_SECS: u64 = 4 * 3600;

pub fn benign(args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let selected = benign::select(&args.workloads)?;
    let cache = workspace_root().join(".vm-cache");
    let parent = cache.join(benign::GUEST);
    let (guests, shares) = if args.rejudge {
        last_benign_run(&parent)?
    } else {
        let boot = debian_guest::prepare(&cache)?;
        let detector = build_detector_release()?;
        if parent.exists() {
            fs::remove_dir_all(&parent)
                .with_context(|| format!("removing {}", parent.display()))?;
        }
        let jobs = args.jobs.map_or_else(crate::vm::default_jobs, usize::from);
        let shares = benign::split(&selected, jobs);
        let mut guests = Vec::new();
        for (i, share) in shares.iter().enumerate() {
            let guest = GuestDir::fresh(&parent, &format!("guest-{}", i + 1))?;
            guest.stage(
                &detector,
                "benign",
                &benign::settings(share, ATTACH_TIMEOUT_SECS),
            )?;
            let names: Vec<&str> = share.iter().map(|w| w.name).collect();
            fs::write(guest.dir.join("plan.txt"), names.join(" ") + "\n")?;
            guests.push(guest);
        }
        eprintln!(
            "vm: booting {} with Debian {} in {} guest(s) for {} benign workload(s) (prepared in {:.0?})",
            boot.kernel.release,
            crate::vm::rootfs::SUITE,
            guests.len(),
            selected.len(),
            started.elapsed()
        );
        let timeout = Duration::from_secs(args.timeout.unwrap_or(BENIGN_TIMEOUT_SECS));
        std::thread::scope(|scope| -> Result<()> {
            let running: Vec<_> = guests
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let boot = &boot;
                    scope.spawn(move || g.boot(boot, &format!("debian{}", i + 1), timeout))
                })
                .collect();
            for (guest, r) in guests.iter().zip(running) {
                let outcome = r
                    .join()
                    .map_err(|_| anyhow::anyhow!("a guest's thread panicked"))??;
                fs::write(guest.dir.join("outcome.txt"), outcome_text(&outcome))?;
            }
            Ok(())
        })?;
        (guests, shares)
    };
    let detector = build_detector_release()?;
    let outcomes = guests
        .iter()
        .map(read_outcome)
        .collect::<Result<Vec<_>>>()?;
    let runs: Vec<benign::GuestRun> = guests
        .iter()
        .zip(&outcomes)
        .zip(shares)
        .map(|((guest, outcome), workloads)| benign::GuestRun {
            guest,
            outcome,
            workloads,
        })
        .collect();
    if let Some(keep) = &args.keep_log {
        let logs: Vec<String> = guests
            .iter()
            .map(|g| fs::read_to_string(g.log()).unwrap_or_default())
            .collect();
        fs::write(keep, logs.join("\n"))
            .with_context(|| format!("writing the serial logs to {}", keep.display()))?;
    }
    benign::judge(&runs, &detector, &parent.join("report.json"))?;
    eprintln!(
        "vm: benign suite passed in {:.0?} (detector attached in: {})",
        started.elapsed(),
        benign::attach_times(&runs)?
    );
    Ok(())
}

/// The guests of the last benign run and the workloads each ran.
fn last_benign_run(parent: &Path) -> Result<(Vec<GuestDir>, Vec<Vec<&'static benign::Workload>>)> {
    let mut guests = Vec::new();
    let mut shares = Vec::new();
    for n in 1.. {
        let guest = GuestDir::existing(parent, &format!("guest-{n}"));
        let Ok(plan) = fs::read_to_string(guest.dir.join("plan.txt")) else {
            break;
        };
        let names: Vec<String> = plan.split_whitespace().map(str::to_owned).collect();
        shares.push(benign::select(&names)?);
        guests.push(guest);
    }
    if guests.is_empty() {
        anyhow::bail!("no earlier benign run in {}", parent.display());
    }
    Ok((guests, shares))
}

pub fn blktests(args: &VmTestArgs, checkout: &Path) -> Result<()> {
    let started = Instant::now();
    blktests::check_checkout(checkout)?;
    let (tests, skipped) = blktests::plan(checkout, &args.only)?;
    let cache = workspace_root().join(".vm-cache");
    fs::create_dir_all(&cache)?;
    let guest = if args.rejudge {
        GuestDir::existing(&cache, blktests::GUEST)
    } else {
        let boot = debian_guest::prepare(&cache)?;
        let detector = build_detector_release()?;
        let guest = GuestDir::fresh(&cache, blktests::GUEST)?;
        guest.stage(
            &detector,
            "blktests",
            &blktests::settings(&tests, args.quick, ATTACH_TIMEOUT_SECS),
        )?;
        // the checkout, without its earlier results; the guest copies it
        // to its own disk (tests write beside themselves)
        let copy = guest.share().join("blktests");
        run_cmd(Command::new("cp").arg("-a").arg(checkout).arg(&copy))
            .context("copying the blktests checkout")?;
        for leftover in ["results", ".git"] {
            if copy.join(leftover).exists() {
                fs::remove_dir_all(copy.join(leftover))?;
            }
        }
        eprintln!(
            "vm: booting {} with Debian for {} blktests test(s), {} skipped",
            boot.kernel.release,
            tests.len(),
            skipped.len()
        );
        let timeout = Duration::from_secs(args.timeout.unwrap_or(BLKTESTS_TIMEOUT_SECS));
        let outcome = guest.boot(&boot, "blktests", timeout)?;
        fs::write(guest.dir.join("outcome.txt"), outcome_text(&outcome))?;
        guest
    };
    let detector = build_detector_release()?;
    let outcome = read_outcome(&guest)?;
    keep_log(args, &guest)?;
    blktests::judge(&guest, &outcome, &tests, &skipped, &detector)?;
    eprintln!(
        "vm: blktests ran without findings in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// "elapsed_ms timed_out code": what `--rejudge` needs of the boot.
fn outcome_text(o: &crate::vm::qemu::Outcome) -> String {
    format!(
        "{} {} {}\n",
        o.elapsed.as_millis(),
        o.timed_out,
        o.code
            .map_or_else(|| "signal".to_owned(), |c| c.to_string())
    )
}

fn read_outcome(guest: &GuestDir) -> Result<crate::vm::qemu::Outcome> {
    let path = guest.dir.join("outcome.txt");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("{} is missing: no earlier run to judge", path.display()))?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let [ms, timed_out, code] = words[..] else {
        anyhow::bail!(
            "{}: expected 'MS TIMED_OUT CODE', got {text:?}",
            path.display()
        );
    };
    Ok(crate::vm::qemu::Outcome {
        elapsed: Duration::from_millis(
            ms.parse()
                .with_context(|| format!("{}: bad ms", path.display()))?,
        ),
        timed_out: timed_out == "true",
        code: code.parse().ok(),
    })
}

fn keep_log(args: &VmTestArgs, guest: &GuestDir) -> Result<()> {
    if let Some(keep) = &args.keep_log {
        fs::copy(guest.log(), keep)
            .with_context(|| format!("copying the serial log to {}", keep.display()))?;
    }
    Ok(())
}
