//! Ring-buffer bytes to [`Event`]s. Never panics: bad bytes give a
//! [`DecodeError`] that says what was wrong and where.

use std::mem::size_of;

use compact_str::CompactString;
use detector_common as wire;
use detector_common::{hook, kind, teardown, wait};

use super::{Addr, Dev, Event, EventKind, Hook, StackId, TeardownStage, WaitVariant};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {needed}-byte header")]
    ShortHeader { len: usize, needed: usize },
    #[error("unknown record kind {kind} (at byte offset 0)")]
    UnknownKind { kind: u16 },
    #[error("{kind_name} record has {len} bytes, expected {expected}")]
    WrongSize {
        kind_name: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("unknown hook type {hook} at byte offset {offset}")]
    UnknownHook { hook: u8, offset: usize },
    #[error("{field} has invalid value {value} at byte offset {offset}")]
    BadField {
        field: &'static str,
        value: u64,
        offset: usize,
    },
}

/// Reads a `T` from the start of `bytes`, which must be exactly its size.
fn read_exact<T: Copy>(bytes: &[u8], kind_name: &'static str) -> Result<T, DecodeError> {
    if bytes.len() != size_of::<T>() {
        return Err(DecodeError::WrongSize {
            kind_name,
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    // SAFETY: the length matches, and every `T` used here is a `#[repr(C)]`
    // struct of integers and integer arrays, for which any bit pattern is a
    // valid value. `read_unaligned` copes with the buffer's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn comm(raw: &[u8; wire::COMM_LEN]) -> CompactString {
    // Task names are almost always ASCII: then the 16 bytes, taken as one
    // word, give the length and need no UTF-8 validation (a third of
    // decoding's instructions went to the general path).
    let word = u128::from_le_bytes(*raw);
    const LOW: u128 = u128::from_le_bytes([0x01; wire::COMM_LEN]);
    const HIGH: u128 = u128::from_le_bytes([0x80; wire::COMM_LEN]);
    if word & HIGH == 0 {
        // The lowest byte flagged is the first NUL (a borrow can only flag
        // bytes above it).
        let nul = word.wrapping_sub(LOW) & !word & HIGH;
        let end = (nul.trailing_zeros() / 8) as usize;
        let ascii = &raw[..end.min(raw.len())];
        // SAFETY: every byte is below 0x80, so this is ASCII.
        return CompactString::new(unsafe { std::str::from_utf8_unchecked(ascii) });
    }
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match std::str::from_utf8(&raw[..end]) {
        Ok(text) => CompactString::new(text),
        Err(_) => CompactString::from_utf8_lossy(&raw[..end]),
    }
}

fn hook_of(raw: u8) -> Result<Hook, DecodeError> {
    Ok(match raw {
        hook::TP_BTF => Hook::TpBtf,
        hook::RAW_TRACEPOINT => Hook::RawTracepoint,
        hook::TRACEPOINT => Hook::Tracepoint,
        hook::FENTRY => Hook::Fentry,
        hook::FEXIT => Hook::Fexit,
        hook::KPROBE => Hook::Kprobe,
        hook::KRETPROBE => Hook::Kretprobe,
        _ => {
            return Err(DecodeError::UnknownHook {
                hook: raw,
                offset: std::mem::offset_of!(wire::Header, hook),
            });
        }
    })
}

fn wait_variant(raw: u8, offset: usize) -> Result<WaitVariant, DecodeError> {
    Ok(match raw {
        wait::PLAIN => WaitVariant::Plain,
        wait::IO => WaitVariant::Io,
        wait::TIMEOUT => WaitVariant::Timeout,
        wait::IO_TIMEOUT => WaitVariant::IoTimeout,
        wait::INTERRUPTIBLE => WaitVariant::Interruptible,
        wait::KILLABLE => WaitVariant::Killable,
        wait::TRY => WaitVariant::Try,
        wait::INTERRUPTIBLE_TIMEOUT => WaitVariant::InterruptibleTimeout,
        wait::KILLABLE_TIMEOUT => WaitVariant::KillableTimeout,
        wait::STATE => WaitVariant::State,
        wait::DONE => WaitVariant::Done,
        _ => {
            return Err(DecodeError::BadField {
                field: "wait variant",
                value: raw.into(),
                offset,
            });
        }
    })
}

fn teardown_stage(raw: u8, offset: usize) -> Result<TeardownStage, DecodeError> {
    Ok(match raw {
        teardown::MD_STOP_WRITES => TeardownStage::StopWrites,
        teardown::MD_STOP => TeardownStage::Stop,
        teardown::MDDEV_DETACH => TeardownStage::Detach,
        teardown::BITMAP_FREE => TeardownStage::BitmapFree,
        teardown::KOBJ_RELEASE => TeardownStage::KobjRelease,
        _ => {
            return Err(DecodeError::BadField {
                field: "teardown stage",
                value: raw.into(),
                offset,
            });
        }
    })
}

fn opt_addr(raw: u64) -> Option<Addr> {
    (raw != 0).then_some(Addr(raw))
}

/// `pending_writes` is -1 when the program could not read it.
fn pending(raw: i32) -> Option<i32> {
    (raw >= 0).then_some(raw)
}

fn kind_name(kind: u16) -> &'static str {
    match kind {
        kind::BIO_QUEUE => "bio_queue",
        kind::RQ_COMPLETE => "rq_complete",
        kind::BIO_COMPLETE => "bio_complete",
        kind::BIO_ENDIO => "bio_endio",
        kind::BIO_ENDIO_EXIT => "bio_endio_exit",
        kind::BIO_INIT => "bio_init",
        kind::COMPLETE => "complete",
        kind::COMPLETE_ALL => "complete_all",
        kind::COMPLETION_INIT => "completion_init",
        kind::WAIT_ENTER => "wait_enter",
        kind::WAIT_EXIT => "wait_exit",
        kind::MD_SUPER_WRITE => "md_super_write",
        kind::MD_SUPER_WRITTEN => "md_super_written",
        kind::MD_SUPER_WAIT => "md_super_wait",
        kind::MD_SUPER_WAIT_EXIT => "md_super_wait_exit",
        kind::MD_TEARDOWN => "md_teardown",
        kind::DEL_GENDISK => "del_gendisk",
        kind::DEL_GENDISK_EXIT => "del_gendisk_exit",
        kind::SCHED_SWITCH => "sched_switch",
        kind::SCHED_WAKING => "sched_waking",
        kind::SCHED_WAKEUP => "sched_wakeup",
        kind::SYS_EXIT => "sys_exit",
        kind::SYS_ENTER => "sys_enter",
        kind::TASK_EXIT => "task_exit",
        _ => "unknown",
    }
}

/// Whether a ring-buffer record left its task's name out
/// (`header_flag::COMM_OMITTED`): [`decode`] then gives an empty `comm`,
/// which the reader fills in (`kernel::names`).
pub fn comm_omitted(bytes: &[u8]) -> bool {
    bytes
        .get(core::mem::offset_of!(wire::Header, flags))
        .is_some_and(|f| f & wire::header_flag::COMM_OMITTED != 0)
}

/// Whether the record is a completion whose bios' submissions the
/// programs may still hold (`SUBMISSIONS_HELD`).
pub fn submissions_held(bytes: &[u8]) -> bool {
    bytes
        .get(core::mem::offset_of!(wire::Header, flags))
        .is_some_and(|f| f & wire::header_flag::SUBMISSIONS_HELD != 0)
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<wire::Header>() {
        return Err(DecodeError::ShortHeader {
            len: bytes.len(),
            needed: size_of::<wire::Header>(),
        });
    }
    let header: wire::Header = read_exact(&bytes[..size_of::<wire::Header>()], "header")?;
    let name = kind_name(header.kind);
    if wire::record_size(header.kind).is_none() {
        return Err(DecodeError::UnknownKind { kind: header.kind });
    }
    let kind = match header.kind {
        kind::BIO_QUEUE => {
            let r: wire::BioQueue = read_exact(bytes, name)?;
            EventKind::BioQueue {
                bio: Addr(r.bio),
                dev: Dev(r.dev),
                disk: Dev(r.disk_dev),
                sector: r.sector,
                size: r.size,
                opf: r.opf,
                end_io: Addr(r.end_io),
                private: Addr(r.private),
                disk_relative: header.flags & wire::header_flag::DISK_RELATIVE != 0,
                episode_start: header.flags & wire::header_flag::EPISODE_START != 0,
                episode_unbounded: header.flags & wire::header_flag::EPISODE_UNBOUNDED != 0,
            }
        }
        kind::RQ_COMPLETE => {
            let r: wire::RqComplete = read_exact(bytes, name)?;
            let n = r.nr_bios as usize;
            if n > wire::RQ_MAX_BIOS {
                return Err(DecodeError::BadField {
                    field: "nr_bios",
                    value: n as u64,
                    offset: std::mem::offset_of!(wire::RqComplete, nr_bios),
                });
            }
            EventKind::RqComplete {
                rq: Addr(r.rq),
                disk: Dev(r.disk_dev),
                sector: r.sector,
                nr_bytes: r.nr_bytes,
                error: r.error,
                bios: r.bios[..n].iter().map(|&b| Addr(b)).collect(),
                truncated: r.truncated != 0,
            }
        }
        kind::BIO_COMPLETE => {
            let r: wire::BioComplete = read_exact(bytes, name)?;
            EventKind::BioComplete {
                bio: Addr(r.bio),
                dev: Dev(r.dev),
                disk: Dev(r.disk_dev),
                sector: r.sector,
                size: r.size,
                error: r.error,
            }
        }
        kind::BIO_ENDIO => {
            let r: wire::BioEndio = read_exact(bytes, name)?;
            EventKind::BioEndio {
                bio: Addr(r.bio),
                end_io: Addr(r.end_io),
                private: Addr(r.private),
                dev: Dev(r.dev),
                disk: Dev(r.disk_dev),
                sector: r.sector,
                size: r.size,
                status: r.status,
                flags: r.flags,
                remaining: r.remaining,
                is_final: r.is_final != 0,
                chain_depth: r.chain_depth,
                opf: r.opf,
                has_blkg: r.has_blkg != 0,
                integrity: r.integrity != 0,
            }
        }
        kind::BIO_ENDIO_EXIT => {
            let r: wire::BioRef = read_exact(bytes, name)?;
            EventKind::BioEndioExit {
                bio: opt_addr(r.bio),
            }
        }
        kind::BIO_INIT => {
            let r: wire::BioRef = read_exact(bytes, name)?;
            EventKind::BioInit { bio: Addr(r.bio) }
        }
        kind::COMPLETE
        | kind::COMPLETE_ALL
        | kind::COMPLETION_INIT
        | kind::WAIT_ENTER
        | kind::WAIT_EXIT => {
            let r: wire::CompletionEvent = read_exact(bytes, name)?;
            let x = Addr(r.x);
            let on_own_stack = r.on_own_stack != 0;
            let variant_at = std::mem::offset_of!(wire::CompletionEvent, variant);
            match header.kind {
                kind::COMPLETE => EventKind::Complete {
                    x,
                    done: r.done,
                    on_own_stack,
                },
                kind::COMPLETE_ALL => EventKind::CompleteAll {
                    x,
                    done: r.done,
                    on_own_stack,
                },
                kind::COMPLETION_INIT => EventKind::CompletionInit { x, on_own_stack },
                kind::WAIT_ENTER => {
                    let variant = wait_variant(r.variant, variant_at)?;
                    EventKind::WaitEnter {
                        x,
                        variant,
                        timeout: variant.is_timed().then_some(r.value),
                        done: r.done,
                        on_own_stack,
                    }
                }
                _ => EventKind::WaitExit {
                    x,
                    variant: wait_variant(r.variant, variant_at)?,
                    ret: r.value,
                    on_own_stack,
                },
            }
        }
        kind::MD_SUPER_WRITE
        | kind::MD_SUPER_WRITTEN
        | kind::MD_SUPER_WAIT
        | kind::MD_SUPER_WAIT_EXIT
        | kind::MD_TEARDOWN => {
            let r: wire::MdEvent = read_exact(bytes, name)?;
            let mddev = Addr(r.mddev);
            let pending_writes = pending(r.pending_writes);
            match header.kind {
                kind::MD_SUPER_WRITE => EventKind::MdSuperWrite {
                    mddev,
                    rdev: Addr(r.rdev),
                    sector: r.sector,
                    size: r.size,
                    pending_writes,
                },
                kind::MD_SUPER_WRITTEN => EventKind::MdSuperWritten {
                    mddev,
                    rdev: Addr(r.rdev),
                    bio: Addr(r.bio),
                    sector: r.sector,
                    status: r.status,
                    pending_writes,
                },
                kind::MD_SUPER_WAIT => EventKind::MdSuperWait {
                    mddev,
                    pending_writes,
                },
                kind::MD_SUPER_WAIT_EXIT => EventKind::MdSuperWaitExit {
                    mddev,
                    pending_writes,
                },
                _ => EventKind::MdTeardown {
                    mddev,
                    stage: teardown_stage(r.stage, std::mem::offset_of!(wire::MdEvent, stage))?,
                    pending_writes,
                },
            }
        }
        kind::DEL_GENDISK | kind::DEL_GENDISK_EXIT => {
            let r: wire::DiskEvent = read_exact(bytes, name)?;
            let (disk, dev) = (Addr(r.disk), Dev(r.dev));
            if header.kind == kind::DEL_GENDISK {
                EventKind::DelGendisk { disk, dev }
            } else {
                EventKind::DelGendiskExit { disk, dev }
            }
        }
        kind::SCHED_SWITCH => {
            let r: wire::SchedSwitch = read_exact(bytes, name)?;
            EventKind::SchedSwitch {
                prev_state: r.prev_state,
                prev_in_iowait: r.prev_in_iowait != 0,
                preempt: r.preempt != 0,
                prev_sp: Addr(r.prev_sp),
                next_tid: r.next_tid,
                next_comm: comm(&r.next_comm),
                next_stack_base: Addr(r.next_stack_base),
                next_saved_sp: Addr(r.next_saved_sp),
                prev_episode_over: header.flags & wire::header_flag::EPISODE_OVER != 0,
            }
        }
        kind::SCHED_WAKING | kind::SCHED_WAKEUP => {
            let r: wire::SchedWake = read_exact(bytes, name)?;
            let (target_tid, target_comm) = (r.target_tid, comm(&r.target_comm));
            if header.kind == kind::SCHED_WAKING {
                EventKind::SchedWaking {
                    target_tid,
                    target_comm,
                }
            } else {
                EventKind::SchedWakeup {
                    target_tid,
                    target_comm,
                }
            }
        }
        kind::SYS_EXIT => {
            let r: wire::SysExit = read_exact(bytes, name)?;
            EventKind::SysExit {
                nr: r.nr,
                ret: r.ret,
                enter_reported: r.enter_reported != 0,
            }
        }
        kind::SYS_ENTER => {
            let r: wire::SysExit = read_exact(bytes, name)?;
            EventKind::SysEnter { nr: r.nr }
        }
        kind::TASK_EXIT => {
            let _: wire::TaskExit = read_exact(bytes, name)?;
            EventKind::TaskExit
        }
        other => return Err(DecodeError::UnknownKind { kind: other }),
    };
    Ok(Event {
        ts: header.ts_ns,
        cpu: header.cpu,
        pid: header.pid,
        tid: header.tid,
        comm: comm(&header.comm),
        hook: hook_of(header.hook)?,
        stack_base: Addr(header.stack_base),
        sp: Addr(header.sp),
        stack: (header.stack_id >= 0).then_some(StackId(header.stack_id as u32)),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `comm` computed before its ASCII fast path.
    fn general(raw: &[u8; wire::COMM_LEN]) -> CompactString {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        CompactString::from_utf8_lossy(&raw[..end])
    }

    #[test]
    fn task_names_decode_up_to_the_first_nul() {
        let mut raw = [0u8; wire::COMM_LEN];
        raw[..3].copy_from_slice(b"fio");
        raw[4] = b'x';
        assert_eq!(comm(&raw), "fio");
        assert_eq!(comm(&[b'a'; wire::COMM_LEN]), "a".repeat(16));
        assert_eq!(comm(&[0; wire::COMM_LEN]), "");
        // A borrow from a NUL must not be taken for an earlier one.
        let mut raw = [0x01u8; wire::COMM_LEN];
        raw[5] = 0;
        assert_eq!(comm(&raw).len(), 5);
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_the_general_one(
            raw in prop::array::uniform16(prop_oneof![Just(0u8), 1u8..0x80, any::<u8>()])
        ) {
            prop_assert_eq!(comm(&raw), general(&raw));
        }
    }
}
