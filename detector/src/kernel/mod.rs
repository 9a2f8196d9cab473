//! Everything that touches the running kernel: what it offers, loading and
//! attaching the programs, reading their ring buffer and stacks.

pub mod btf;
pub mod offsets;
pub mod stacks;
pub mod symbols;
