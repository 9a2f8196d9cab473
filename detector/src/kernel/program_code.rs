//! Checks on the built eBPF object's code.

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

use super::attach::PROGRAMS;

/// The functions the programs call through relocations, by section.
fn calls() -> Vec<(String, String)> {
    let file = object::File::parse(PROGRAMS).expect("the built eBPF object parses");
    let mut calls = Vec::new();
    for section in file.sections() {
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

/// The eBPF runtime's `memset` is a loop over bytes (four instructions a
/// byte): a record that zeroed its task name, its padding or its bio list
/// through it spent hundreds of instructions on it. detector-ebpf's `words`
/// module says how the programs avoid the calls the compiler would make.
#[test]
fn no_program_calls_the_byte_loop_memset() {
    let calls = calls();
    assert!(
        calls.iter().any(|(_, target)| target == "EVENTS"),
        "the check reads the object's relocations: {calls:?}"
    );
    let memsets: Vec<_> = calls
        .iter()
        .filter(|(_, target)| target == "memset")
        .collect();
    assert!(memsets.is_empty(), "memset called from {memsets:?}");
}
