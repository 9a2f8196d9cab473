use std::path::Path;

use super::*;
use crate::kernel::btf::SYS_BTF_DIR;
use crate::kernel::btf::testing::{BtfBuilder, load};

/// The types the support decision looks at, as a kernel of each era has
/// them: `prev_state` passed to sched_switch (5.18+), `bi_bdev` (5.12+),
/// `request_queue.disk` (5.15+).
fn kernel_btf(prev_state_arg: bool, bi_bdev: bool, q_disk: bool) -> Vec<u8> {
    let mut b = BtfBuilder::default();
    let int = b.int("int", 4);
    let uint = b.int("unsigned int", 4);
    let boolean = b.int("_Bool", 1);
    let task = b.strct("task_struct", 64, &[("__state", uint, 0), ("pid", int, 32)]);
    let task_ptr = b.ptr(task);
    let void_ptr = b.ptr(0);
    let disk = b.strct("gendisk", 16, &[("major", int, 0)]);
    let disk_ptr = b.ptr(disk);
    let bdev_field = if bi_bdev { "bi_bdev" } else { "bi_disk" };
    b.strct(
        "bio",
        32,
        &[("bi_next", void_ptr, 0), (bdev_field, disk_ptr, 64)],
    );
    let q_field = if q_disk { "disk" } else { "queue_flags" };
    b.strct("request_queue", 16, &[(q_field, disk_ptr, 0)]);
    let mut params = vec![void_ptr, boolean, task_ptr, task_ptr];
    if prev_state_arg {
        params.push(uint);
    }
    let proto = b.func_proto(0, &params);
    let fn_ptr = b.ptr(proto);
    b.typedef("btf_trace_sched_switch", fn_ptr);
    b.build()
}

#[test]
fn prev_state_is_found_by_the_tracepoint_prototype() {
    let (_dir, new) = load(&kernel_btf(true, true, true));
    assert_eq!(sched_switch_prev_state_arg(&new), Some(3));
    assert!(unsupported(&new, "x86_64").is_empty());

    // 5.15-5.17: no prev_state argument; the state is read from the task.
    let (_dir, old) = load(&kernel_btf(false, true, true));
    assert_eq!(sched_switch_prev_state_arg(&old), None);
    assert!(unsupported(&old, "aarch64").is_empty());
}

#[test]
fn kernels_before_the_floor_are_refused_with_the_reason() {
    let (_dir, btf) = load(&kernel_btf(false, false, false));
    let why = unsupported(&btf, "x86_64");
    assert_eq!(why.len(), 2, "{why:?}");
    assert!(
        why[0].contains("bi_bdev") && why[0].contains("5.12"),
        "{why:?}"
    );
    assert!(why[1].contains("5.15"), "{why:?}");
    let (_dir, btf) = load(&kernel_btf(true, true, true));
    let why = unsupported(&btf, "riscv64");
    assert_eq!(why.len(), 1);
    assert!(why[0].contains("riscv64"), "{why:?}");
}

#[test]
fn prev_state_shapes() {
    use ArgKind::*;
    let task = || StructPointer(Some("task_struct".into()));
    assert_eq!(
        prev_state_index(&[Integer, task(), task(), Integer]),
        Some(3)
    );
    assert_eq!(prev_state_index(&[Integer, task(), task()]), None);
    // A single task pointer is not sched_switch's shape.
    assert_eq!(prev_state_index(&[Integer, task(), Integer]), None);
}

#[test]
fn thread_size_by_arch_page_size_and_kasan() {
    assert_eq!(thread_size("x86_64", 4096, false), Some(16 << 10));
    assert_eq!(thread_size("x86_64", 4096, true), Some(32 << 10));
    assert_eq!(thread_size("aarch64", 4096, false), Some(16 << 10));
    assert_eq!(thread_size("aarch64", 16 << 10, false), Some(16 << 10));
    assert_eq!(thread_size("aarch64", 64 << 10, false), Some(64 << 10));
    assert_eq!(thread_size("aarch64", 4096, true), Some(32 << 10));
    assert_eq!(thread_size("s390x", 4096, false), None);
}

/// This host's kernel (6.18): the 5.18+ prototype, and supported.
#[test]
fn this_kernel() {
    let dir = Path::new(SYS_BTF_DIR);
    if !dir.join("vmlinux").exists() {
        eprintln!("no BTF here; skipping");
        return;
    }
    let btf = KernelBtf::load(dir).unwrap();
    assert_eq!(sched_switch_prev_state_arg(&btf), Some(3));
    let machine = crate::kernel::facts::KernelFacts::read().machine;
    if ARCHES.contains(&machine.as_str()) {
        assert_eq!(unsupported(&btf, &machine), Vec::<String>::new());
    }
}
