use super::*;

/// A kernel with kvm loaded above where racebench used to be: racebench was
/// unloaded before its frames were symbolized.
const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 T bio_endio
ffffffff81000200 t bio_chain_endio
ffffffff81000300 T submit_bio
ffffffff81e00000 T _etext
ffffffff82000000 D some_data
ffffffff83000000 B _end
ffffffffc0100000 t kvm_mmu_page_fault\t[kvm]
ffffffffc0100400 t kvm_arch_vcpu_ioctl\t[kvm]
ffffffffc0101000 b nx_hugepage_mitigation_hard_disabled\t[kvm]
ffffffffc0300000 t super_written\t[md_mod]
ffffffffc0300200 t md_super_write\t[md_mod]
ffffffffc0400000 t bpf_trampoline_6442\t[bpf]
ffffffffc0401000 t bpf_prog_1a2b3c4d5e6f_enter_bio_endio\t[bpf]
";

const MODULES: &str = "\
kvm 8192 0 - Live 0xffffffffc0100000
md_mod 200704 1 raid1, Live 0xffffffffc0300000
";

fn table() -> Kallsyms {
    Kallsyms::parse(KALLSYMS, MODULES)
}

fn shown(addr: u64) -> String {
    table().frame(addr).to_string()
}

#[test]
fn vmlinux_and_loaded_module_functions_resolve() {
    assert_eq!(shown(0xffffffff81000105), "bio_endio+0x5");
    assert_eq!(shown(0xffffffffc0300010), "super_written+0x10 [md_mod]");
    assert_eq!(shown(0xffffffffc0100404), "kvm_arch_vcpu_ioctl+0x4 [kvm]");
}

#[test]
fn a_frame_of_an_unloaded_module_is_unknown_not_a_neighbour() {
    // Past kvm's last function and its data symbol, in no module's range.
    let addr = 0xffffffffc0101000 + 0x4c16f;
    let frame = table().frame(addr);
    assert_eq!(frame.symbol, None);
    assert_eq!(frame.to_string(), format!("{:#x} [unknown module]", addr));
    // Just below md_mod, in no loaded module.
    assert_eq!(
        table().frame(0xffffffffc02fff00).module.as_deref(),
        Some(UNKNOWN_MODULE)
    );
}

#[test]
fn a_module_symbol_does_not_cover_another_module() {
    // md_mod unloaded: its symbols are still in this (stale) snapshot, but
    // the module list says nothing is there now.
    let t = Kallsyms::parse(KALLSYMS, "kvm 8192 0 - Live 0xffffffffc0100000\n");
    assert_eq!(
        t.frame(0xffffffffc0300010).to_string(),
        "0xffffffffc0300010 [unknown module]"
    );
    assert!(t.stale(MODULES));
    assert!(!t.stale("kvm 8192 0 - Live 0xffffffffc0100000\n"));
}

#[test]
fn data_and_addresses_past_text_are_not_functions() {
    // Past _etext, in vmlinux data: no symbol, and not a module.
    let frame = table().frame(0xffffffff82000010);
    assert_eq!((frame.symbol, frame.module), (None, None));
    // A text symbol is bounded by the next symbol of any kind.
    assert_eq!(
        table().frame(0xffffffffc0101010).to_string(),
        "0xffffffffc0101010 [kvm]"
    );
}

#[test]
fn bpf_images_resolve_as_bpf() {
    assert_eq!(shown(0xffffffffc0400040), "bpf_trampoline_6442+0x40 [bpf]");
    assert_eq!(
        shown(0xffffffffc0401020),
        "bpf_prog_1a2b3c4d5e6f_enter_bio_endio+0x20 [bpf]"
    );
}

#[test]
fn garbage_lines_are_skipped() {
    let t = Kallsyms::parse(
        "not a line\nzzzz T x\n0000000000000000 T hidden\n",
        "junk\n",
    );
    assert_eq!(t.frame(0xffffffff81000000).symbol, None);
}

#[test]
fn a_function_wins_over_a_section_marker_at_its_address() {
    // Both orders kallsyms may list them in.
    for text in [
        "ffffffff81000000 T _stext\nffffffff81000400 T __sched_text_start\nffffffff81000400 T io_schedule_timeout\nffffffff81e00000 T _etext\n",
        "ffffffff81000000 T _stext\nffffffff81000400 T io_schedule_timeout\nffffffff81000400 T __sched_text_start\nffffffff81e00000 T _etext\n",
    ] {
        let t = Kallsyms::parse(text, "");
        assert_eq!(
            t.frame(0xffffffff8100044c).to_string(),
            "io_schedule_timeout+0x4c"
        );
    }
}
