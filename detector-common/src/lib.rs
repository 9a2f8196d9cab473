//! Types shared by detector's eBPF programs and its userspace.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every
//! type is `#[repr(C)]`, fixed width, with explicit padding and no `bool` or
//! `usize`. Each type's size is asserted at compile time: a layout change that
//! is not mirrored on both sides fails the build instead of garbling events.
#![no_std]

pub mod config;
pub mod wire;

pub use config::ProbeConfig;
pub use wire::*;
