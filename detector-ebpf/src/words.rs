//! Zeroing and copying by words, where the compiler would call `memset`.
//!
//! The compiler turns any zeroing of a byte array, or of adjacent fields,
//! into a call of `memset`, which the eBPF runtime implements as a loop
//! over bytes: four instructions per byte, ~150 for a task name and ~500
//! for a request's bio list, in every record. Volatile stores are never
//! merged into such a call.

use aya_ebpf::helpers::generated as helper;
use detector_common::COMM_LEN;

/// Writes `N` zero words at `at`.
///
/// # Safety
/// `at` must be valid for writes of `N` aligned words.
#[inline(always)]
pub unsafe fn zero<const N: usize>(at: *mut u64) {
    for i in 0..N {
        unsafe { core::ptr::write_volatile(at.add(i), 0) };
    }
}

/// Copies `N` words from `from` to `to`.
///
/// # Safety
/// `from` must be valid for reads, and `to` for writes, of `N` aligned
/// words.
#[inline(always)]
pub unsafe fn copy<const N: usize>(to: *mut u64, from: *const u64) {
    for i in 0..N {
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
    }
}

/// A task name of zeros.
#[inline(always)]
pub fn no_comm() -> [u8; COMM_LEN] {
    name_filled_by(|at| unsafe { zero::<2>(at) })
}

/// `current->comm`. The helper fills the whole buffer, with zeros if it
/// fails (the reader then looks the name up).
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    name_filled_by(|at| unsafe {
        helper::bpf_get_current_comm(at.cast(), COMM_LEN as u32);
    })
}

/// The name at `src` (a task's `comm`). The helper fills the whole buffer,
/// with zeros if the read fails (not `kernel::peek`, which zeroes its
/// buffer first, through `memset`).
#[inline(always)]
pub fn comm_at(src: u64) -> [u8; COMM_LEN] {
    name_filled_by(|at| unsafe {
        helper::bpf_probe_read_kernel(at.cast(), COMM_LEN as u32, src as *const core::ffi::c_void);
    })
}

/// A task name as two words, which `fill` writes in full: built as bytes
/// (what the helpers' wrappers return), or zeroed as a whole, it would be
/// zeroed through `memset` and moved byte by byte.
#[inline(always)]
fn name_filled_by(fill: impl FnOnce(*mut u64)) -> [u8; COMM_LEN] {
    let mut words = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    fill(words.as_mut_ptr().cast());
    // SAFETY: `fill` wrote both words.
    unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(words.assume_init()) }
}
