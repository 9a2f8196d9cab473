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

/// The benign suite's guest: six sessions, each 10-20 s of attaching plus
/// under a minute of work.
const BENIGN_TIMEOUT_SECS: u64 = 1200;
/// blktests' guest: seven groups, about an hour under emulation.
const BLKTESTS_TIMEOUT_SECS: u64 = 4 * 3600;

pub fn benign(args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let selected = benign::select(&args.workloads)?;
    let cache = workspace_root().join(".vm-cache");
    fs::create_dir_all(&cache)?;
    let guest = if args.rejudge {
        GuestDir::existing(&cache, benign::GUEST)
    } else {
        let boot = debian_guest::prepare(&cache)?;
        let detector = build_detector_release()?;
        let guest = GuestDir::fresh(&cache, benign::GUEST)?;
        guest.stage(
            &detector,
            "benign",
            &benign::settings(&selected, ATTACH_TIMEOUT_SECS),
        )?;
        eprintln!(
            "vm: booting {} with Debian {} for {} benign workload(s) (prepared in {:.0?})",
            boot.kernel.release,
            crate::vm::rootfs::SUITE,
            selected.len(),
            started.elapsed()
        );
        let timeout = Duration::from_secs(args.timeout.unwrap_or(BENIGN_TIMEOUT_SECS));
        let outcome = guest.boot(&boot, "debian", timeout)?;
        fs::write(guest.dir.join("outcome.txt"), outcome_text(&outcome))?;
        guest
    };
    let detector = build_detector_release()?;
    let outcome = read_outcome(&guest)?;
    keep_log(args, &guest)?;
    benign::judge(&guest, &outcome, &selected, &detector)?;
    eprintln!(
        "vm: benign suite passed in {:.0?} (attach: {})",
        started.elapsed(),
        benign::attach_times(&guest, &selected)?
    );
    Ok(())
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
            &blktests::settings(&tests, ATTACH_TIMEOUT_SECS),
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
