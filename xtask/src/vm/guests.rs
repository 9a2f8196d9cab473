//! Splitting a run over several guests. qemu's single-threaded emulation
//! keeps one host core busy per guest, and most of a scenario's time is
//! detector attaching under emulation, so guests booted side by side cut the
//! bench's time by about the number of cores.
//!
//! Each guest runs a contiguous share of the scenarios in their table order
//! (the md scenarios last); each loads md_mod in its first md scenario. The
//! first guest runs `detector check` before md_mod is loaded, the last one
//! after.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::vm::scenarios::{self, Scenario};

pub struct Guest {
    /// 1-based, as in the progress lines.
    pub number: usize,
    /// `.vm-cache/guest-N`: its initramfs, serial log and 9p share.
    pub dir: PathBuf,
    pub scenarios: Vec<&'static Scenario>,
    /// The `detector check` phases it runs: "base" (before md_mod), "md".
    pub checks: Vec<&'static str>,
}

impl Guest {
    pub fn share(&self) -> PathBuf {
        self.dir.join("share")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("guest.log")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }

    /// Its init reported the end of its run (`status` in the share is
    /// `done` or `failed`, not `running` or absent).
    pub fn finished(&self) -> bool {
        let status = fs::read_to_string(self.share().join("status")).unwrap_or_default();
        matches!(status.trim(), "done" | "failed")
    }

    /// Remembers what it ran, for `--rejudge`.
    pub fn save_plan(&self) -> Result<()> {
        let names: Vec<&str> = self.scenarios.iter().map(|s| s.name).collect();
        let plan = format!("{}\n{}\n", names.join(" "), self.checks.join(" "));
        fs::write(self.dir.join("plan.txt"), plan)?;
        Ok(())
    }
}

/// `scenarios` (in run order) over at most `jobs` guests, in `cache`.
pub fn split(cache: &Path, scenarios: &[&'static Scenario], jobs: usize) -> Vec<Guest> {
    let jobs = jobs.clamp(1, scenarios.len().max(1));
    let per_guest = scenarios.len().div_ceil(jobs).max(1);
    // no scenario still boots one guest, for its checks
    let shares: Vec<&[&'static Scenario]> = if scenarios.is_empty() {
        vec![&[]]
    } else {
        scenarios.chunks(per_guest).collect()
    };
    let mut guests: Vec<Guest> = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| Guest {
            number: i + 1,
            dir: cache.join(format!("guest-{}", i + 1)),
            scenarios: share.to_vec(),
            checks: Vec::new(),
        })
        .collect();
    guests[0].checks.push("base");
    guests
        .last_mut()
        .expect("one guest at least")
        .checks
        .push("md");
    guests
}

/// The guests of the last run, as their plans say.
pub fn last_run(cache: &Path) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    for number in 1.. {
        let dir = cache.join(format!("guest-{number}"));
        let Ok(plan) = fs::read_to_string(dir.join("plan.txt")) else {
            break;
        };
        let mut lines = plan.lines();
        let mut picked = Vec::new();
        for name in lines.next().unwrap_or_default().split_whitespace() {
            picked.push(
                scenarios::find(name)
                    .with_context(|| format!("{}: unknown scenario {name}", dir.display()))?,
            );
        }
        let checks = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| ["base", "md"].into_iter().find(|k| *k == c))
            .collect();
        guests.push(Guest {
            number,
            dir,
            scenarios: picked,
            checks,
        });
    }
    if guests.is_empty() {
        bail!(
            "no earlier run to judge in {} (run cargo xtask vm-test first)",
            cache.display()
        );
    }
    Ok(guests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::scenarios::SCENARIOS;

    fn names(g: &Guest) -> Vec<&str> {
        g.scenarios.iter().map(|s| s.name).collect()
    }

    #[test]
    fn every_scenario_runs_once_in_order_and_the_checks_run_first_and_last() {
        let all: Vec<&Scenario> = SCENARIOS.iter().collect();
        for jobs in 1..=4 {
            let guests = split(Path::new("/c"), &all, jobs);
            assert_eq!(guests.len(), jobs);
            let ran: Vec<&str> = guests.iter().flat_map(names).collect();
            let want: Vec<&str> = all.iter().map(|s| s.name).collect();
            assert_eq!(ran, want);
            assert_eq!(guests[0].checks.first(), Some(&"base"));
            assert_eq!(guests.last().unwrap().checks.last(), Some(&"md"));
        }
    }

    #[test]
    fn never_more_guests_than_scenarios_and_always_one() {
        let two: Vec<&Scenario> = SCENARIOS.iter().take(2).collect();
        assert_eq!(split(Path::new("/c"), &two, 8).len(), 2);
        let none = split(Path::new("/c"), &[], 2);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].checks, ["base", "md"]);
    }
}
