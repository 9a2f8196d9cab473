//! Kernel addresses to symbols, from a snapshot of kallsyms and the module
//! list, refusing to guess.
//!
//! kallsyms gives addresses without sizes, so "the nearest symbol below"
//! is only right if the address lies inside that symbol. An address in a
//! module unloaded before symbolization (or loaded after the snapshot) has
//! a nearest symbol too, in some other object, far away: the issue's
//! `nx_hugepage_mitigation_hard_disabled+0x4c16f`. Here a symbol only
//! covers an address up to the next symbol of any kind, within the object
//! that owns it (vmlinux text, a loaded module's range, a BPF image), and a
//! kernel address no loaded object covers is "[unknown module]".

use std::collections::HashMap;

use super::symbols::{ModuleRange, module_of, parse_modules};
use crate::event::{Addr, Frame};

/// The module name shown for code no loaded object covers.
pub const UNKNOWN_MODULE: &str = "unknown module";

/// kallsyms' module tag for JIT-ed BPF programs and trampolines.
const BPF: &str = "bpf";

/// The largest BPF image a symbol may cover (programs and trampolines are
/// far smaller; the next symbol usually bounds them first).
const MAX_BPF_EXTENT: u64 = 1 << 20;

/// Kernel addresses start here on every 64-bit architecture detector
/// supports; below is user space.
const KERNEL_SPACE: u64 = 0xffff_0000_0000_0000;

#[derive(Clone, Debug)]
struct Sym {
    addr: u64,
    /// Index into `names`; `None` for data symbols, which only bound.
    name: Option<u32>,
    /// Index into `owners`; `None` for vmlinux.
    owner: Option<u32>,
}

/// One snapshot of the kernel's symbols and modules.
#[derive(Debug, Default)]
pub struct Kallsyms {
    syms: Vec<Sym>,
    names: Vec<String>,
    owners: Vec<String>,
    modules: Vec<ModuleRange>,
    /// vmlinux text ranges (`_stext`..`_etext`, `_sinittext`..`_einittext`).
    vmlinux_text: Vec<(u64, u64)>,
    /// From the lowest to the highest vmlinux symbol: the kernel image.
    vmlinux_span: Option<(u64, u64)>,
    /// The `/proc/modules` text the snapshot was taken with.
    modules_text: String,
}

impl Kallsyms {
    /// Parses `/proc/kallsyms` text and `/proc/modules` text.
    pub fn parse(kallsyms: &str, modules: &str) -> Self {
        let mut out = Self {
            modules: parse_modules(modules),
            modules_text: modules.to_owned(),
            ..Self::default()
        };
        let mut owners: HashMap<String, u32> = HashMap::new();
        let mut marks: HashMap<&str, u64> = HashMap::new();
        for line in kallsyms.lines() {
            let mut f = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue; // hidden from this reader (kptr_restrict)
            }
            let owner = f.next().map(|m| m.trim_matches(|c| c == '[' || c == ']'));
            if owner.is_none() && matches!(name, "_stext" | "_etext" | "_sinittext" | "_einittext")
            {
                marks.insert(name, addr);
            }
            let text = matches!(kind, "t" | "T" | "w" | "W");
            let name = text.then(|| {
                out.names.push(name.to_owned());
                out.names.len() as u32 - 1
            });
            let owner = owner.map(|o| {
                *owners.entry(o.to_owned()).or_insert_with(|| {
                    out.owners.push(o.to_owned());
                    out.owners.len() as u32 - 1
                })
            });
            out.syms.push(Sym { addr, name, owner });
        }
        // Lookups take the last symbol at an address: put section and
        // linker markers (`__sched_text_start` shares its address with
        // `io_schedule_timeout`) before the function there.
        let names = &out.names;
        out.syms.sort_by_key(|s| {
            let real = s.name.is_some_and(|n| !is_marker(&names[n as usize]));
            (s.addr, real)
        });
        let mut vmlinux = out
            .syms
            .iter()
            .filter(|s| s.owner.is_none())
            .map(|s| s.addr);
        out.vmlinux_span = vmlinux
            .next()
            .map(|first| (first, vmlinux.next_back().unwrap_or(first)));
        for (start, end) in [("_stext", "_etext"), ("_sinittext", "_einittext")] {
            if let (Some(&s), Some(&e)) = (marks.get(start), marks.get(end)) {
                out.vmlinux_text.push((s, e));
            }
        }
        out
    }

    /// Reads the running kernel's.
    pub fn read() -> Self {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        Self::parse(&kallsyms, &read_modules())
    }

    /// Whether the module list differs from the one this snapshot saw.
    pub fn stale(&self, modules_now: &str) -> bool {
        self.modules_text != modules_now
    }

    fn in_vmlinux_text(&self, addr: u64) -> bool {
        self.vmlinux_text
            .iter()
            .any(|&(s, e)| (s..e).contains(&addr))
    }

    /// Whether `addr` lies in the kernel image (text or data).
    fn in_vmlinux(&self, addr: u64) -> bool {
        self.in_vmlinux_text(addr)
            || self
                .vmlinux_span
                .is_some_and(|(lo, hi)| (lo..=hi).contains(&addr))
    }

    /// The frame for `addr`: a symbol only when the address provably lies
    /// in it, "[unknown module]" for code no loaded object covers.
    pub fn frame(&self, addr: u64) -> Frame {
        let mut frame = Frame {
            addr: Addr(addr),
            symbol: None,
            offset: 0,
            module: None,
        };
        let loaded = module_of(&self.modules, addr);
        match self.covering(addr, loaded) {
            Some((name, offset, owner)) => {
                frame.symbol = Some(name.to_owned());
                frame.offset = offset;
                frame.module = owner.map(str::to_owned);
            }
            None if addr >= KERNEL_SPACE && !self.in_vmlinux(addr) => {
                frame.module = Some(loaded.unwrap_or(UNKNOWN_MODULE).to_owned());
            }
            None => {}
        }
        frame
    }

    /// The text symbol that covers `addr`: (name, offset, owner).
    fn covering(&self, addr: u64, loaded: Option<&str>) -> Option<(&str, u64, Option<&str>)> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let sym = &self.syms[i];
        let name = self.names.get(sym.name? as usize)?;
        // The next symbol of any kind at a higher address ends this one.
        let next = self.syms[i + 1..].iter().find(|s| s.addr > sym.addr);
        if next.is_some_and(|n| addr >= n.addr) {
            return None;
        }
        let owner = sym.owner.map(|o| self.owners[o as usize].as_str());
        let inside = match owner {
            None => self.in_vmlinux_text(addr),
            Some(BPF) => addr - sym.addr < MAX_BPF_EXTENT,
            // A module symbol covers only addresses in that module, loaded.
            Some(module) => loaded == Some(module),
        };
        inside.then_some((name.as_str(), addr - sym.addr, owner))
    }
}

/// A name the linker gives a place, not a function.
fn is_marker(name: &str) -> bool {
    matches!(
        name,
        "_text" | "_stext" | "_etext" | "_sinittext" | "_einittext" | "_end"
    ) || (name.starts_with("__") && (name.ends_with("_start") || name.ends_with("_end")))
}

/// The running kernel's module list (`/proc/modules`), empty without one.
pub fn read_modules() -> String {
    std::fs::read_to_string("/proc/modules").unwrap_or_default()
}

#[cfg(test)]
mod tests;
