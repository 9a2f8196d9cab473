//! Builds the [`ProbeConfig`] the programs read, from the running kernel's
//! BTF. A field this kernel lacks is left at `NO_OFFSET` and listed, so that
//! `detector check` can say what is degraded instead of failing.

use detector_common::ProbeConfig;
use detector_common::config::NO_OFFSET;

use super::btf::{BtfError, KernelBtf};
use super::layout;

/// One struct member the programs read.
struct Field {
    module: Option<&'static str>,
    strct: &'static str,
    /// Alternatives, newest kernel first.
    paths: &'static [&'static str],
    set: fn(&mut ProbeConfig, u32),
}

macro_rules! field {
    ($strct:literal, [$($path:literal),+], |$cfg:ident, $v:ident| $set:expr) => {
        Field { module: None, strct: $strct, paths: &[$($path),+], set: |$cfg, $v| $set }
    };
    (md: $strct:literal, [$($path:literal),+], |$cfg:ident, $v:ident| $set:expr) => {
        Field { module: Some("md_mod"), strct: $strct, paths: &[$($path),+], set: |$cfg, $v| $set }
    };
}

const FIELDS: &[Field] = &[
    field!("task_struct", ["stack"], |c, v| c.task.stack = v),
    field!("task_struct", ["thread.sp"], |c, v| c.task.thread_sp = v),
    field!("task_struct", ["pid"], |c, v| c.task.pid = v),
    field!("task_struct", ["comm"], |c, v| c.task.comm = v),
    field!("task_struct", ["mm"], |c, v| c.task.mm = v),
    field!("bio", ["bi_next"], |c, v| c.bio.next = v),
    field!("bio", ["bi_bdev"], |c, v| c.bio.bdev = v),
    field!("bio", ["bi_opf"], |c, v| c.bio.opf = v),
    field!("bio", ["bi_flags"], |c, v| c.bio.flags = v),
    field!("bio", ["bi_status"], |c, v| c.bio.status = v),
    field!("bio", ["bi_iter.bi_sector"], |c, v| c.bio.sector = v),
    field!("bio", ["bi_iter.bi_size"], |c, v| c.bio.size = v),
    field!("bio", ["__bi_remaining"], |c, v| c.bio.remaining = v),
    field!("bio", ["bi_end_io"], |c, v| c.bio.end_io = v),
    field!("bio", ["bi_private"], |c, v| c.bio.private = v),
    field!("bio", ["bi_blkg"], |c, v| c.bio.blkg = v),
    field!("block_device", ["bd_dev"], |c, v| c.block.bdev_dev = v),
    field!("block_device", ["bd_disk"], |c, v| c.block.bdev_disk = v),
    field!("gendisk", ["major"], |c, v| c.block.disk_major = v),
    field!("gendisk", ["first_minor"], |c, v| c
        .block
        .disk_first_minor = v),
    field!("request", ["q"], |c, v| c.block.rq_q = v),
    field!("request", ["bio"], |c, v| c.block.rq_bio = v),
    field!("request", ["__sector"], |c, v| c.block.rq_sector = v),
    field!("request_queue", ["disk"], |c, v| c.block.q_disk = v),
    field!("completion", ["done"], |c, v| c.completion_done = v),
    field!("completion", ["wait"], |c, v| c.completion_wait = v),
    field!("pt_regs", ["orig_ax", "syscallno"], |c, v| c
        .pt_regs_syscall_nr =
        v),
    field!(md: "mddev", ["pending_writes"], |c, v| c.md.mddev_pending_writes = v),
    field!(md: "mddev", ["kobj"], |c, v| c.md.mddev_kobj = v),
    field!(md: "md_rdev", ["mddev"], |c, v| c.md.rdev_mddev = v),
    field!(md: "bitmap", ["mddev"], |c, v| c.md.bitmap_mddev = v),
];

/// A field the programs would read but this kernel's BTF does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingField {
    pub module: Option<&'static str>,
    pub field: String,
    pub reason: String,
}

/// The config for this kernel, and what it lacks. md fields are filled only
/// when md_mod's BTF is loaded (see [`KernelBtf::load_module`]).
pub fn probe_config(
    btf: &KernelBtf,
    machine: &str,
    wakeup_threshold: u64,
) -> (ProbeConfig, Vec<MissingField>) {
    let mut cfg = ProbeConfig::UNKNOWN;
    let mut missing = Vec::new();
    for field in FIELDS {
        if let Some(module) = field.module
            && !btf.has_module(module)
        {
            continue;
        }
        let mut last_err: Option<BtfError> = None;
        let found =
            field
                .paths
                .iter()
                .find_map(|path| match btf.member(field.module, field.strct, path) {
                    Ok(loc) => Some(loc.byte_offset),
                    Err(e) => {
                        last_err = Some(e);
                        None
                    }
                });
        match found {
            Some(offset) => (field.set)(&mut cfg, offset),
            None => missing.push(MissingField {
                module: field.module,
                field: format!("{}.{}", field.strct, field.paths.join("|")),
                reason: last_err.map(|e| e.to_string()).unwrap_or_default(),
            }),
        }
    }
    match btf.member(None, "task_struct", "in_iowait") {
        Ok(loc) => {
            cfg.task.in_iowait_byte = loc.byte_offset;
            // A plain (non-bitfield) member would be a whole byte.
            let (bit, _) = loc.bitfield.unwrap_or((0, 8));
            cfg.task.in_iowait_mask = 1 << bit;
        }
        Err(e) => missing.push(MissingField {
            module: None,
            field: "task_struct.in_iowait".into(),
            reason: e.to_string(),
        }),
    }
    match btf.enum_value("BIO_CHAIN") {
        Some(bit) if (0..16).contains(&bit) => cfg.bio.flag_chain_bit = bit as u32,
        _ => missing.push(MissingField {
            module: None,
            field: "enum BIO_CHAIN".into(),
            reason: "not in BTF (chained bios' intermediate completions look final)".into(),
        }),
    }
    match btf.enum_value("__REQ_INTEGRITY") {
        Some(bit) if (0..32).contains(&bit) => cfg.bio.req_integrity_bit = bit as u32,
        _ => missing.push(MissingField {
            module: None,
            field: "enum __REQ_INTEGRITY".into(),
            reason: "not in BTF (integrity-verified reads look completed twice)".into(),
        }),
    }
    cfg.req_flush_fua_mask = flush_fua_mask(btf);
    cfg.sched_switch_prev_state_arg = layout::sched_switch_prev_state_arg(btf).unwrap_or(NO_OFFSET);
    if cfg.sched_switch_prev_state_arg == NO_OFFSET {
        match btf.member(None, "task_struct", "__state") {
            Ok(loc) => cfg.task_state = loc.byte_offset,
            Err(e) => missing.push(MissingField {
                module: None,
                field: "task_struct.__state".into(),
                reason: format!("{e} (and sched_switch does not pass prev_state)"),
            }),
        }
    }
    cfg.thread_size = thread_size(btf, machine);
    cfg.wakeup_threshold = wakeup_threshold;
    cfg.set_region_spans();
    (cfg, missing)
}

/// `REQ_PREFLUSH | REQ_FUA` (`enum req_flag_bits`); 0 when either is
/// unknown, which turns pairing in the kernel off.
fn flush_fua_mask(btf: &KernelBtf) -> u32 {
    let bit = |name| btf.enum_value(name).filter(|b| (0..32).contains(b));
    match (bit("__REQ_PREFLUSH"), bit("__REQ_FUA")) {
        (Some(flush), Some(fua)) => (1u32 << flush) | (1u32 << fua),
        _ => 0,
    }
}

/// THREAD_SIZE for this kernel (see [`layout::thread_size`]); 16 KiB on an
/// architecture detector does not support (it refuses to trace there).
pub fn thread_size(btf: &KernelBtf, machine: &str) -> u32 {
    layout::thread_size(machine, layout::page_size(), layout::has_kasan(btf)).unwrap_or(16 << 10)
}

/// Whether every offset a group of programs needs is known.
pub fn all_known(offsets: &[u32]) -> bool {
    offsets.iter().all(|&o| o != NO_OFFSET)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::kernel::btf::SYS_BTF_DIR;

    #[test]
    fn this_kernel_has_every_vmlinux_field() {
        let dir = Path::new(SYS_BTF_DIR);
        if !dir.join("vmlinux").exists() {
            eprintln!("no BTF here; skipping");
            return;
        }
        let btf = KernelBtf::load(dir).unwrap();
        let machine = crate::kernel::facts::KernelFacts::read().machine;
        let (cfg, missing) = probe_config(&btf, &machine, 4096);
        let vmlinux_missing: Vec<_> = missing.iter().filter(|m| m.module.is_none()).collect();
        assert!(vmlinux_missing.is_empty(), "missing: {vmlinux_missing:?}");
        assert_ne!(cfg.task.in_iowait_mask, 0);
        assert_eq!(cfg.completion_wait, 8);
        assert_eq!(cfg.wakeup_threshold, 4096);
        assert!(cfg.thread_size >= 16 * 1024);
        // 6.18 passes prev_state to sched_switch: no need for __state.
        assert_eq!(cfg.sched_switch_prev_state_arg, 3);
        // Every field read of a bio and a request lies in
        // its first bytes here: each is fetched in one read.
        assert!(cfg.bio.span > cfg.bio.private, "{:?}", cfg.bio);
        assert!(cfg.bio.walk_span > cfg.bio.size, "{:?}", cfg.bio);
        assert!(cfg.block.rq_span > cfg.block.rq_sector, "{:?}", cfg.block);
        // md is not loaded (or not available) on this host: its offsets stay unknown.
        if !btf.has_module("md_mod") {
            assert_eq!(cfg.md.mddev_pending_writes, NO_OFFSET);
        }
    }
}
