//! What each BPF program costs, from the kernel's own accounting
//! (`kernel.bpf_stats_enabled=1`: run count and run time per program), for
//! the programs one process holds.

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::output;

const SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the kernel's BPF statistics on for its lifetime.
pub struct StatsEnabled {
    before: String,
}

impl StatsEnabled {
    pub fn new() -> Self {
        let before = std::fs::read_to_string(SWITCH).unwrap_or_default();
        let _ = std::fs::write(SWITCH, "1");
        Self { before }
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SWITCH, self.before.trim());
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgCost {
    pub runs: u64,
    pub ns: u64,
}

/// Program name -> totals so far, for the programs `pid` holds open.
pub fn snapshot(pid: u32) -> BTreeMap<String, ProgCost> {
    let ids = prog_ids(pid);
    let Ok(json) = output(Command::new("bpftool").args(["prog", "show", "--json"])) else {
        return BTreeMap::new();
    };
    let progs: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let mut out: BTreeMap<String, ProgCost> = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let Some(id) = p["id"].as_u64() else { continue };
        if !ids.contains(&id) {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("?").to_owned();
        let cost = out.entry(name).or_default();
        cost.runs += p["run_cnt"].as_u64().unwrap_or(0);
        cost.ns += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    out
}

/// Ids of the BPF programs among `pid`'s open files.
fn prog_ids(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return vec![];
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// What ran between two snapshots.
pub fn delta(
    before: &BTreeMap<String, ProgCost>,
    after: &BTreeMap<String, ProgCost>,
) -> BTreeMap<String, ProgCost> {
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).cloned().unwrap_or_default();
            let d = ProgCost {
                runs: a.runs.saturating_sub(b.runs),
                ns: a.ns.saturating_sub(b.ns),
            };
            (name.clone(), d)
        })
        .filter(|(_, d)| d.runs > 0)
        .collect()
}

/// Adds `more` into `total`.
pub fn add(total: &mut BTreeMap<String, ProgCost>, more: &BTreeMap<String, ProgCost>) {
    for (name, c) in more {
        let t = total.entry(name.clone()).or_default();
        t.runs += c.runs;
        t.ns += c.ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_keep_what_ran() {
        let cost = |runs, ns| ProgCost { runs, ns };
        let before = BTreeMap::from([("a".to_owned(), cost(10, 100))]);
        let after = BTreeMap::from([
            ("a".to_owned(), cost(15, 160)),
            ("b".to_owned(), cost(0, 0)),
        ]);
        let d = delta(&before, &after);
        assert_eq!(d, BTreeMap::from([("a".to_owned(), cost(5, 60))]));
        let mut total = BTreeMap::new();
        add(&mut total, &d);
        add(&mut total, &d);
        assert_eq!(total["a"], cost(10, 120));
    }
}
