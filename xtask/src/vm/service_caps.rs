//! Which of the unit's capabilities the guest's kernel really needs.
//!
//! The service guest ran `detector check` (which loads and attaches every
//! program) and read `/proc/kallsyms` with the unit's bounding set, then
//! with each capability taken away (`caps-*.json`, `caps-*.kallsyms`). A
//! set works when it attaches as many hooks as the unit's and still sees
//! real kernel addresses (stacks in findings are symbolized from them).
//! Every capability in the unit must be needed: a set without it must not
//! work.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

/// What one bounding set gave.
struct Probe {
    attached: usize,
    symbols: u64,
}

impl Probe {
    fn read(out: &Path, name: &str) -> Result<Self> {
        let json = fs::read_to_string(out.join(format!("caps-{name}.json")))
            .with_context(|| format!("caps-{name}.json"))?;
        // A set that cannot trace at all may print no report: nothing attached.
        let attached = serde_json::from_str::<Value>(&json)
            .ok()
            .and_then(|v| v["hooks"].as_array().cloned())
            .map_or(0, |hooks| {
                hooks.iter().filter(|h| h["status"] == "attached").count()
            });
        let symbols = fs::read_to_string(out.join(format!("caps-{name}.kallsyms")))
            .with_context(|| format!("caps-{name}.kallsyms"))?
            .trim()
            .parse()
            .with_context(|| format!("caps-{name}.kallsyms is not a count"))?;
        Ok(Self { attached, symbols })
    }

    fn works_as(&self, unit: &Probe) -> bool {
        self.attached == unit.attached && self.symbols > 0
    }
}

pub fn each_capability_is_needed(out: &Path) -> Result<()> {
    let caps_text = fs::read_to_string(out.join("caps-unit.txt")).context("caps-unit.txt")?;
    let caps: Vec<&str> = caps_text.split_whitespace().collect();
    ensure!(!caps.is_empty(), "the unit has no capability bounding set");
    let unit = Probe::read(out, "unit")?;
    ensure!(
        unit.attached > 0 && unit.symbols > 0,
        "with the unit's capabilities ({}) {} hooks attached and {} kernel symbols had addresses",
        caps.join(" "),
        unit.attached,
        unit.symbols
    );
    eprintln!(
        "vm: capabilities {}: {} hooks attached, {} kernel symbols with addresses",
        caps.join(" "),
        unit.attached,
        unit.symbols
    );
    let mut unneeded = Vec::new();
    for cap in &caps {
        let without = Probe::read(out, &format!("without-{cap}"))?;
        eprintln!(
            "vm:   without {cap}: {} hooks attached, {} kernel symbols with addresses",
            without.attached, without.symbols
        );
        if without.works_as(&unit) {
            unneeded.push(*cap);
        }
    }
    ensure!(
        unneeded.is_empty(),
        "the unit's CapabilityBoundingSet has capabilities this kernel does not need: \
         without {} every hook attached and kallsyms kept its addresses",
        unneeded.join(", without ")
    );
    Ok(())
}
