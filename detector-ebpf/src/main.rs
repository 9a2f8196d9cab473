//! detector's eBPF programs.
//!
//! Every program is a thin wrapper around a `try_`-style handler shared by all
//! the mechanisms that can reach the same kernel symbol (fentry, kprobe,
//! tracepoint); userspace picks which wrappers to load for the running kernel.
//! Handlers never log per event: failures bump a per-CPU counter, and the
//! rare conditions worth a line in the log go through `diag`, rate-limited.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target's `core` has no atomic fetch_add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod context;
mod diag;
mod emit;
mod kernel;
mod maps;
mod pairing;
mod probes;
mod tasks;
mod words;

// The kernel only lets GPL-compatible programs call bpf_probe_read_kernel and
// attach to fentry/fexit.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// Only for the bpf target: a host build of the whole workspace (clippy)
// links std into this crate through feature unification (detector-common's
// `user` feature pulls aya), and std brings its own.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
