//! Kernel-version decisions, made in this one place from what the running
//! kernel shows (its BTF, its architecture, its page size) rather than from
//! release numbers, which distributions backport around.
//!
//! - `sched_switch` gained its `prev_state` argument in 5.18; before, the
//!   state is read from `prev->__state` (5.14+).
//! - THREAD_SIZE (a build constant, not in BTF) depends on the architecture,
//!   the page size and KASAN.
//! - The oldest layout the programs read: `bio.bi_bdev` (5.12; before, bios
//!   named their disk with `bi_disk` and `bi_partno`) and
//!   `request_queue.disk` (5.15). Older kernels are refused with the reason.

use super::btf::{ArgKind, KernelBtf};

/// What `detector check` states as supported.
pub const SUPPORTED: &str = "Linux 5.15 or newer with BTF (CONFIG_DEBUG_INFO_BTF=y), \
     on x86_64 or arm64 (aarch64); checked on 6.1 and 6.18 (x86_64)";

/// Architectures whose `pt_regs` the programs know (kprobe stack pointers).
pub const ARCHES: &[&str] = &["x86_64", "aarch64"];

/// Why detector cannot trace this kernel; empty when it can.
pub fn unsupported(btf: &KernelBtf, machine: &str) -> Vec<String> {
    let mut why = Vec::new();
    if !ARCHES.contains(&machine) {
        why.push(format!(
            "architecture {machine} is not supported (only {}): the programs know \
             only those architectures' registers and stack sizes",
            ARCHES.join(", ")
        ));
    }
    let has = |strct: &str, member: &str| btf.member(None, strct, member).is_ok();
    if !has("bio", "bi_bdev") {
        why.push(
            "struct bio has no bi_bdev: before Linux 5.12 bios name their disk with \
             bi_disk and bi_partno, which detector does not read"
                .into(),
        );
    }
    if !has("request_queue", "disk") {
        why.push(
            "struct request_queue has no disk pointer (added in Linux 5.15): request \
             completions could not be tied to their device"
                .into(),
        );
    }
    if sched_switch_prev_state_arg(btf).is_none() && !has("task_struct", "__state") {
        why.push(
            "sched_switch has no prev_state argument and task_struct no __state \
             (Linux before 5.14): sleeps could not be told from preemptions"
                .into(),
        );
    }
    why
}

/// Index of `prev_state` among `sched_switch`'s arguments (after the
/// `void *` context), or `None` when the tracepoint does not pass it
/// (before 5.18: `(bool preempt, prev, next)`; since:
/// `(bool preempt, prev, next, unsigned int prev_state)`).
///
/// The prototype's parameters are unnamed in BTF, so the argument is found
/// by shape: the first integer after the two `struct task_struct *`.
pub fn sched_switch_prev_state_arg(btf: &KernelBtf) -> Option<u32> {
    prev_state_index(&btf.tracepoint_args("sched_switch").ok()?)
}

fn prev_state_index(args: &[ArgKind]) -> Option<u32> {
    let is_task = |a: &ArgKind| matches!(a, ArgKind::StructPointer(Some(n)) if n == "task_struct");
    let last_task = args.iter().rposition(is_task)?;
    if args.iter().filter(|a| is_task(a)).count() != 2 {
        return None;
    }
    let index = last_task
        + 1
        + args[last_task + 1..]
            .iter()
            .position(|a| *a == ArgKind::Integer)?;
    u32::try_from(index).ok()
}

/// THREAD_SIZE, the size of a task's kernel stack.
///
/// - x86_64: `PAGE_SIZE << (2 + KASAN_STACK_ORDER)`: 16 KiB, 32 KiB with
///   KASAN (arch/x86/include/asm/page_64_types.h).
/// - arm64: `1 << (14 + KASAN_THREAD_SHIFT)`, but never less than a page
///   with VMAP_STACK (arch/arm64/include/asm/memory.h): 64 KiB pages give
///   64 KiB stacks.
///
/// `None` for other architectures.
pub fn thread_size(machine: &str, page_size: u64, kasan: bool) -> Option<u32> {
    let kasan = u32::from(kasan);
    let size = match machine {
        "x86_64" => (page_size << (2 + kasan)) as u32,
        "aarch64" => (1u32 << (14 + kasan)).max(page_size as u32),
        _ => return None,
    };
    Some(size)
}

/// Whether the kernel was built with KASAN (its runtime shows in BTF).
pub fn has_kasan(btf: &KernelBtf) -> bool {
    btf.has_func(None, "kasan_report")
}

/// The page size of the running kernel (as userspace sees it: the same).
pub fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant; it cannot fail for _SC_PAGESIZE.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests;
