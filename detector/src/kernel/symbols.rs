//! Kernel symbols: addresses of a few functions the programs compare
//! against, and which module an address belongs to.
//!
//! Names come from blazesym (kallsyms); module ownership comes from
//! `/proc/modules`, whose load addresses blazesym's kallsyms reader does not
//! report.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// The address of `name` in a kallsyms-format file (vmlinux symbols only),
/// or `None` if absent or hidden (addresses read as 0 without privileges).
pub fn lookup(kallsyms: &Path, name: &str) -> Option<u64> {
    let file = fs::File::open(kallsyms).ok()?;
    for line in BufReader::new(file).lines() {
        let line = line.ok()?;
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(sym)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if sym == name && parts.next().is_none() {
            let addr = u64::from_str_radix(addr, 16).ok()?;
            return (addr != 0).then_some(addr);
        }
    }
    None
}

/// A loaded module's core text and data range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRange {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// Parses `/proc/modules`: `name size refcount deps state address`.
pub fn parse_modules(text: &str) -> Vec<ModuleRange> {
    let mut out: Vec<ModuleRange> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name = f.first()?;
            let size: u64 = f.get(1)?.parse().ok()?;
            let addr = u64::from_str_radix(f.get(5)?.trim_start_matches("0x"), 16).ok()?;
            (addr != 0).then(|| ModuleRange {
                name: (*name).to_owned(),
                start: addr,
                end: addr.saturating_add(size),
            })
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

/// The module whose range holds `addr`.
pub fn module_of(modules: &[ModuleRange], addr: u64) -> Option<&str> {
    let i = modules.partition_point(|m| m.start <= addr);
    let m = modules.get(i.checked_sub(1)?)?;
    (addr < m.end).then_some(m.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_parse_and_contain() {
        let text = "md_mod 200704 1 raid1, Live 0xffffffffc0a00000\n\
                    raid1 57344 0 - Live 0xffffffffc0900000 (E)\n\
                    broken line\n\
                    hidden 4096 0 - Live 0x0000000000000000\n";
        let mods = parse_modules(text);
        assert_eq!(mods.len(), 2);
        assert_eq!(module_of(&mods, 0xffffffffc0a00010), Some("md_mod"));
        assert_eq!(module_of(&mods, 0xffffffffc0900000), Some("raid1"));
        assert_eq!(module_of(&mods, 0xffffffffc0a00000 + 200704), None);
        assert_eq!(module_of(&mods, 0xffffffff81000000), None);
    }

    #[test]
    fn lookup_reads_kallsyms_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kallsyms");
        fs::write(
            &path,
            "ffffffff81000000 T _stext\n\
             ffffffff81234560 T bio_chain_endio\n\
             ffffffffc0a01230 t super_written\t[md_mod]\n",
        )
        .unwrap();
        assert_eq!(lookup(&path, "bio_chain_endio"), Some(0xffffffff81234560));
        assert_eq!(
            lookup(&path, "super_written"),
            None,
            "module symbols are skipped"
        );
        assert_eq!(lookup(&path, "nope"), None);
    }
}
