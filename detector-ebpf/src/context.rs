//! One interface over the program contexts a handler can be reached from,
//! so that each handler is written once for fentry, kprobe and tracepoints.

use aya_ebpf::{
    EbpfContext,
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext,
    },
};
use detector_common::{ProbeConfig, config::NO_OFFSET, hook};

use crate::{
    kernel::{bump, read, task_pid_offset},
    maps::STACKS,
};

pub trait Hooked: EbpfContext {
    /// One of `detector_common::hook`.
    const HOOK: u8;

    /// The n-th argument of the hooked function or tracepoint, as a raw
    /// word: by default from the argument array the context points to,
    /// through the helper ([`word`]).
    #[inline(always)]
    fn arg_u64(&self, n: usize) -> u64 {
        word(self, n)
    }

    /// [`Hooked::arg_u64`] for an `n` known only at run time.
    #[inline(always)]
    fn arg_u64_at(&self, n: usize) -> u64 {
        self.arg_u64(n)
    }

    /// The n-th argument, a scalar (not a pointer), as a plain load from
    /// the argument array where the context allows it.
    #[inline(always)]
    fn scalar_arg(&self, n: usize) -> u64 {
        self.arg_u64(n)
    }

    /// The thread id of the task the n-th argument points to.
    #[inline(always)]
    fn task_tid(&self, n: usize, cfg: &ProbeConfig) -> u32 {
        read::<i32>(self.arg_u64(n), cfg.task.pid) as u32
    }

    /// An address on the stack the hook runs on, or 0 if unknown.
    fn sp(&self) -> u64;

    /// Id of the current kernel stack in `STACKS`, or a negative error.
    fn stack_id(&self) -> i32;

    /// The hooked function's return value, for return hooks of a function
    /// taking `nargs` arguments; 0 elsewhere.
    #[inline(always)]
    fn ret_u64(&self, _nargs: usize) -> u64 {
        0
    }
}

macro_rules! stack_id_via_helper {
    () => {
        #[inline(always)]
        fn stack_id(&self) -> i32 {
            use aya_ebpf::programs::tracing::StackIdContext as _;
            match self.get_stackid(&STACKS, 0) {
                Ok(id) => id as i32,
                Err(err) => {
                    bump(detector_common::counter::STACK_ERRORS);
                    err
                }
            }
        }
    };
}

/// The n-th word of an argument array context, read as a plain number.
///
/// BTF-typed contexts hand pointers to the verifier as typed kernel
/// pointers, which it then restricts (no arithmetic with unknown offsets,
/// no comparisons in some kernels). Handlers only ever pass these values to
/// `bpf_probe_read_kernel` or compare them as numbers, so they read them
/// through the helper, which yields an untyped scalar.
#[inline(always)]
fn word(ctx: &(impl EbpfContext + ?Sized), n: usize) -> u64 {
    word_at(ctx.as_ptr() as *const u64, n)
}

#[inline(always)]
fn word_at(args: *const u64, n: usize) -> u64 {
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(args.wrapping_add(n)) }.unwrap_or(0)
}

/// [`word`] for a context that also loads typed pointers straight from
/// its arguments (tp_btf, [`Hooked::task_tid`]): its address goes through
/// `black_box`, or the compiler shares `ctx + 8n` between the helper call
/// and the typed load of the same argument, and the verifier refuses the
/// load through the sum ("dereference of modified ctx ptr").
#[inline(always)]
fn word_apart(ctx: &(impl EbpfContext + ?Sized), n: usize) -> u64 {
    word_at(core::hint::black_box(ctx.as_ptr() as *const u64), n)
}

// For BTF-typed and raw tracepoints, fentry and fexit the context is the
// argument array the kernel built on the current stack (bpf_trace_run*, the
// trampoline frame), so its address says how deep that stack is.
macro_rules! args_on_stack {
    ($ty:ty, $hook:expr) => {
        args_on_stack!($ty, $hook, {});
    };
    ($ty:ty, $hook:expr, { $($extra:item)* }) => {
        impl Hooked for $ty {
            const HOOK: u8 = $hook;

            #[inline(always)]
            fn sp(&self) -> u64 {
                self.as_ptr() as u64
            }

            stack_id_via_helper!();

            $($extra)*
        }
    };
}

args_on_stack!(BtfTracePointContext, hook::TP_BTF, {
    #[inline(always)]
    fn arg_u64(&self, n: usize) -> u64 {
        word_apart(self, n)
    }

    /// A scalar argument is a plain number to the verifier too.
    #[inline(always)]
    fn scalar_arg(&self, n: usize) -> u64 {
        self.arg::<u64>(n)
    }

    /// Loaded straight from the typed pointer, at the offset the loader
    /// made a constant (`kernel::task_pid_offset`): no helper call. The
    /// kernel handles a fault in such a load (the value reads 0). `n` must
    /// be a constant: the verifier allows only constant offsets into the
    /// context.
    #[inline(always)]
    fn task_tid(&self, n: usize, cfg: &ProbeConfig) -> u32 {
        let offset = task_pid_offset();
        if offset == NO_OFFSET {
            return read::<i32>(word_apart(self, n), cfg.task.pid) as u32;
        }
        // The argument as the typed pointer the verifier knows it for.
        let task = self.arg::<*const u8>(n);
        unsafe { core::ptr::read_volatile(task.add(offset as usize).cast::<i32>()) as u32 }
    }
});
args_on_stack!(RawTracePointContext, hook::RAW_TRACEPOINT, {
    /// A raw tracepoint's arguments are untyped words: a plain load from
    /// the context, which the verifier allows, instead of a helper call.
    #[inline(always)]
    fn arg_u64(&self, n: usize) -> u64 {
        self.arg::<u64>(n)
    }

    /// The verifier allows only constant offsets into the context, and a
    /// raw tracepoint refuses a program that may read past its last
    /// argument: an index known only at run time is read through the
    /// helper.
    #[inline(always)]
    fn arg_u64_at(&self, n: usize) -> u64 {
        word(self, n)
    }
});
args_on_stack!(FEntryContext, hook::FENTRY);
args_on_stack!(FExitContext, hook::FEXIT, {
    /// fexit's context holds the arguments followed by the return value
    /// (absent for `void` functions: callers must not ask then).
    #[inline(always)]
    fn ret_u64(&self, nargs: usize) -> u64 {
        word(self, nargs)
    }
});

/// The stack pointer saved in a kprobe's `pt_regs`.
#[inline(always)]
fn regs_sp(ctx: &impl EbpfContext) -> u64 {
    let regs = ctx.as_ptr() as *const aya_ebpf::bindings::pt_regs;
    #[cfg(bpf_target_arch = "x86_64")]
    let sp = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(&raw const (*regs).rsp) };
    #[cfg(bpf_target_arch = "aarch64")]
    let sp = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(&raw const (*regs).sp) };
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    let sp: Result<u64, i64> = {
        let _ = regs;
        Ok(0)
    };
    sp.unwrap_or(0)
}

impl Hooked for ProbeContext {
    const HOOK: u8 = hook::KPROBE;

    #[inline(always)]
    fn arg_u64(&self, n: usize) -> u64 {
        self.arg(n).unwrap_or(0)
    }

    #[inline(always)]
    fn sp(&self) -> u64 {
        regs_sp(self)
    }

    stack_id_via_helper!();
}

impl Hooked for RetProbeContext {
    const HOOK: u8 = hook::KRETPROBE;

    /// A return probe sees no arguments; handlers use `ENTRY_ARGS`.
    #[inline(always)]
    fn arg_u64(&self, _n: usize) -> u64 {
        0
    }

    #[inline(always)]
    fn sp(&self) -> u64 {
        regs_sp(self)
    }

    stack_id_via_helper!();

    #[inline(always)]
    fn ret_u64(&self, _nargs: usize) -> u64 {
        self.ret()
    }
}
