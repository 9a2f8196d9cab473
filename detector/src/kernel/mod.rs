//! Everything that touches the running kernel: what it offers, loading and
//! attaching the programs, reading their ring buffer and stacks.

pub mod attach;
pub mod btf;
pub mod coverage;
pub mod facts;
pub mod held;
pub mod hooks;
pub mod kallsyms;
pub mod layout;
pub mod loss;
pub mod names;
pub mod offsets;
#[cfg(test)]
mod program_code;
pub mod reader;
pub mod ring_progress;
pub mod rings;
pub mod stacks;
pub mod symbols;
pub mod syscall_hooks;
pub mod taskmaps;
