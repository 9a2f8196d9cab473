//! Checks on the built eBPF object's code.

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

use super::attach::PROGRAMS;

/// The symbols the programs' code refers to through relocations (the
/// functions it calls, the maps it uses), by section.
fn calls() -> Vec<(String, String)> {
    let file = object::File::parse(PROGRAMS).expect("the built eBPF object parses");
    let mut calls = Vec::new();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let name = section.name().unwrap_or("?").to_owned();
        for (_, reloc) in section.relocations() {
            if let RelocationTarget::Symbol(index) = reloc.target()
                && let Ok(symbol) = file.symbol_by_index(index)
            {
                calls.push((name.clone(), symbol.name().unwrap_or("?").to_owned()));
            }
        }
    }
    calls
}

/// The eBPF runtime's `memset` (and `memcpy`, `memmove`) is a loop over
/// bytes (four instructions a byte): a record that zeroed its task name,
/// its padding or its bio list through it spent hundreds of instructions
/// on it. detector-ebpf's `words` module says how the programs avoid the
/// calls the compiler would make.
#[test]
fn no_program_calls_the_byte_loop_memset() {
    let calls = calls();
    // The check sees the code's relocations: the programs' maps, and the
    // runtime's functions by name (`memset` is global in the object, so a
    // call to it is relocated against its name).
    assert!(
        calls.iter().any(|(_, target)| target == "EVENTS"),
        "the check reads the code's relocations: {calls:?}"
    );
    let byte_loops: Vec<_> = calls
        .iter()
        .filter(|(_, target)| matches!(target.as_str(), "memset" | "memcpy" | "memmove"))
        .collect();
    assert!(
        byte_loops.is_empty(),
        "byte loops called from {byte_loops:?}"
    );
}
