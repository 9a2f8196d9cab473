//! [`Event`] back to ring-buffer bytes: what the programs would have sent.
//! Used to test the decoder and to seed its fuzzer.

use std::mem::size_of;

use detector_common as wire;
use detector_common::{hook, kind, teardown, wait};

use super::{Event, EventKind, Hook, TeardownStage, WaitVariant};

/// Events that never come from the kernel (loss markers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} events are made by detector, not sent by the kernel")]
pub struct NotAKernelEvent(pub &'static str);

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the wire types are `#[repr(C)]` integers with explicit
    // padding, so every byte of the value is initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn flag_if(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn comm(s: &str) -> [u8; wire::COMM_LEN] {
    let mut out = [0u8; wire::COMM_LEN];
    let n = s.len().min(wire::COMM_LEN - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

fn hook_byte(h: Hook) -> Result<u8, NotAKernelEvent> {
    Ok(match h {
        Hook::TpBtf => hook::TP_BTF,
        Hook::RawTracepoint => hook::RAW_TRACEPOINT,
        Hook::Tracepoint => hook::TRACEPOINT,
        Hook::Fentry => hook::FENTRY,
        Hook::Fexit => hook::FEXIT,
        Hook::Kprobe => hook::KPROBE,
        Hook::Kretprobe => hook::KRETPROBE,
        Hook::Detector => return Err(NotAKernelEvent("detector-made")),
    })
}

fn wait_byte(v: WaitVariant) -> u8 {
    match v {
        WaitVariant::Plain => wait::PLAIN,
        WaitVariant::Io => wait::IO,
        WaitVariant::Timeout => wait::TIMEOUT,
        WaitVariant::IoTimeout => wait::IO_TIMEOUT,
        WaitVariant::Interruptible => wait::INTERRUPTIBLE,
        WaitVariant::Killable => wait::KILLABLE,
        WaitVariant::Try => wait::TRY,
        WaitVariant::InterruptibleTimeout => wait::INTERRUPTIBLE_TIMEOUT,
        WaitVariant::KillableTimeout => wait::KILLABLE_TIMEOUT,
        WaitVariant::State => wait::STATE,
        WaitVariant::Done => wait::DONE,
    }
}

fn stage_byte(s: TeardownStage) -> u8 {
    match s {
        TeardownStage::StopWrites => teardown::MD_STOP_WRITES,
        TeardownStage::Stop => teardown::MD_STOP,
        TeardownStage::Detach => teardown::MDDEV_DETACH,
        TeardownStage::BitmapFree => teardown::BITMAP_FREE,
        TeardownStage::KobjRelease => teardown::KOBJ_RELEASE,
    }
}

fn completion(
    header: wire::Header,
    x: u64,
    value: i64,
    done: u32,
    variant: u8,
    own: bool,
) -> Vec<u8> {
    bytes_of(&wire::CompletionEvent {
        header,
        x,
        value,
        done,
        variant,
        on_own_stack: own as u8,
        _pad: 0,
    })
}

#[expect(clippy::too_many_arguments, reason = "one argument per wire field")]
fn md(
    header: wire::Header,
    mddev: u64,
    rdev: u64,
    bio: u64,
    sector: u64,
    size: u32,
    pending: Option<i32>,
    stage: u8,
    status: u8,
) -> Vec<u8> {
    bytes_of(&wire::MdEvent {
        header,
        mddev,
        rdev,
        bio,
        sector,
        size,
        pending_writes: pending.unwrap_or(-1),
        stage,
        status,
        _pad: 0,
        _pad2: 0,
    })
}

/// The ring-buffer record the kernel would have sent for `ev`.
pub fn encode(ev: &Event) -> Result<Vec<u8>, NotAKernelEvent> {
    let k = |kind: u16| -> Result<wire::Header, NotAKernelEvent> {
        Ok(wire::Header {
            kind,
            hook: hook_byte(ev.hook)?,
            flags: 0,
            cpu: ev.cpu,
            ts_ns: ev.ts,
            pid: ev.pid,
            tid: ev.tid,
            stack_base: ev.stack_base.0,
            sp: ev.sp.0,
            stack_id: ev.stack.map_or(-1, |s| s.0 as i32),
            _pad1: 0,
            comm: comm(&ev.comm),
        })
    };
    Ok(match &ev.kind {
        EventKind::BioQueue {
            bio,
            dev,
            disk,
            sector,
            size,
            opf,
            end_io,
            private,
            disk_relative,
            episode_start,
            episode_unbounded,
        } => bytes_of(&wire::BioQueue {
            header: wire::Header {
                flags: flag_if(*disk_relative, wire::header_flag::DISK_RELATIVE)
                    | flag_if(*episode_start, wire::header_flag::EPISODE_START)
                    | flag_if(*episode_unbounded, wire::header_flag::EPISODE_UNBOUNDED),
                ..k(kind::BIO_QUEUE)?
            },
            bio: bio.0,
            sector: *sector,
            end_io: end_io.0,
            private: private.0,
            dev: dev.0,
            disk_dev: disk.0,
            size: *size,
            opf: *opf,
        }),
        EventKind::RqComplete {
            rq,
            disk,
            sector,
            nr_bytes,
            error,
            bios,
            truncated,
        } => {
            let mut list = [0u64; wire::RQ_MAX_BIOS];
            for (slot, bio) in list.iter_mut().zip(bios) {
                *slot = bio.0;
            }
            bytes_of(&wire::RqComplete {
                header: k(kind::RQ_COMPLETE)?,
                rq: rq.0,
                sector: *sector,
                disk_dev: disk.0,
                nr_bytes: *nr_bytes,
                error: *error,
                nr_bios: bios.len().min(wire::RQ_MAX_BIOS) as u16,
                truncated: *truncated as u8,
                _pad: 0,
                bios: list,
            })
        }
        EventKind::BioComplete {
            bio,
            dev,
            disk,
            sector,
            size,
            error,
        } => bytes_of(&wire::BioComplete {
            header: k(kind::BIO_COMPLETE)?,
            bio: bio.0,
            sector: *sector,
            dev: dev.0,
            disk_dev: disk.0,
            size: *size,
            error: *error,
        }),
        EventKind::BioEndio {
            bio,
            end_io,
            private,
            dev,
            disk,
            sector,
            size,
            status,
            flags,
            remaining,
            is_final,
            chain_depth,
            opf,
            has_blkg,
            integrity,
        } => bytes_of(&wire::BioEndio {
            header: k(kind::BIO_ENDIO)?,
            bio: bio.0,
            end_io: end_io.0,
            private: private.0,
            sector: *sector,
            dev: dev.0,
            disk_dev: disk.0,
            size: *size,
            remaining: *remaining,
            opf: *opf,
            flags: *flags,
            status: *status,
            is_final: *is_final as u8,
            chain_depth: *chain_depth,
            has_blkg: *has_blkg as u8,
            integrity: *integrity as u8,
            _pad: 0,
            _pad2: 0,
        }),
        EventKind::BioEndioExit { bio } => bytes_of(&wire::BioRef {
            header: k(kind::BIO_ENDIO_EXIT)?,
            bio: bio.map_or(0, |b| b.0),
        }),
        EventKind::BioInit { bio } => bytes_of(&wire::BioRef {
            header: k(kind::BIO_INIT)?,
            bio: bio.0,
        }),
        EventKind::Complete {
            x,
            done,
            on_own_stack,
        } => completion(k(kind::COMPLETE)?, x.0, 0, *done, 0, *on_own_stack),
        EventKind::CompleteAll {
            x,
            done,
            on_own_stack,
        } => completion(k(kind::COMPLETE_ALL)?, x.0, 0, *done, 0, *on_own_stack),
        EventKind::CompletionInit { x, on_own_stack } => {
            completion(k(kind::COMPLETION_INIT)?, x.0, 0, 0, 0, *on_own_stack)
        }
        EventKind::WaitEnter {
            x,
            variant,
            timeout,
            done,
            on_own_stack,
        } => completion(
            k(kind::WAIT_ENTER)?,
            x.0,
            timeout.unwrap_or(0),
            *done,
            wait_byte(*variant),
            *on_own_stack,
        ),
        EventKind::WaitExit {
            x,
            variant,
            ret,
            on_own_stack,
        } => completion(
            k(kind::WAIT_EXIT)?,
            x.0,
            *ret,
            0,
            wait_byte(*variant),
            *on_own_stack,
        ),
        EventKind::MdSuperWrite {
            mddev,
            rdev,
            sector,
            size,
            pending_writes,
        } => md(
            k(kind::MD_SUPER_WRITE)?,
            mddev.0,
            rdev.0,
            0,
            *sector,
            *size,
            *pending_writes,
            0,
            0,
        ),
        EventKind::MdSuperWritten {
            mddev,
            rdev,
            bio,
            sector,
            status,
            pending_writes,
        } => md(
            k(kind::MD_SUPER_WRITTEN)?,
            mddev.0,
            rdev.0,
            bio.0,
            *sector,
            0,
            *pending_writes,
            0,
            *status,
        ),
        EventKind::MdSuperWait {
            mddev,
            pending_writes,
        } => md(
            k(kind::MD_SUPER_WAIT)?,
            mddev.0,
            0,
            0,
            0,
            0,
            *pending_writes,
            0,
            0,
        ),
        EventKind::MdSuperWaitExit {
            mddev,
            pending_writes,
        } => md(
            k(kind::MD_SUPER_WAIT_EXIT)?,
            mddev.0,
            0,
            0,
            0,
            0,
            *pending_writes,
            0,
            0,
        ),
        EventKind::MdTeardown {
            mddev,
            stage,
            pending_writes,
        } => md(
            k(kind::MD_TEARDOWN)?,
            mddev.0,
            0,
            0,
            0,
            0,
            *pending_writes,
            stage_byte(*stage),
            0,
        ),
        EventKind::DelGendisk { disk, dev } => bytes_of(&wire::DiskEvent {
            header: k(kind::DEL_GENDISK)?,
            disk: disk.0,
            dev: dev.0,
            _pad: 0,
        }),
        EventKind::DelGendiskExit { disk, dev } => bytes_of(&wire::DiskEvent {
            header: k(kind::DEL_GENDISK_EXIT)?,
            disk: disk.0,
            dev: dev.0,
            _pad: 0,
        }),
        EventKind::SchedSwitch {
            prev_state,
            prev_in_iowait,
            preempt,
            prev_sp,
            next_tid,
            next_comm,
            next_stack_base,
            next_saved_sp,
            prev_episode_over,
        } => bytes_of(&wire::SchedSwitch {
            header: wire::Header {
                flags: flag_if(*prev_episode_over, wire::header_flag::EPISODE_OVER),
                ..k(kind::SCHED_SWITCH)?
            },
            prev_sp: prev_sp.0,
            next_saved_sp: next_saved_sp.0,
            next_stack_base: next_stack_base.0,
            next_tid: *next_tid,
            prev_state: *prev_state,
            prev_in_iowait: *prev_in_iowait as u8,
            preempt: *preempt as u8,
            _pad: 0,
            _pad2: 0,
            next_comm: comm(next_comm),
        }),
        EventKind::SchedWaking {
            target_tid,
            target_comm,
        } => bytes_of(&wire::SchedWake {
            header: k(kind::SCHED_WAKING)?,
            target_tid: *target_tid,
            _pad: 0,
            target_comm: comm(target_comm),
        }),
        EventKind::SchedWakeup {
            target_tid,
            target_comm,
        } => bytes_of(&wire::SchedWake {
            header: k(kind::SCHED_WAKEUP)?,
            target_tid: *target_tid,
            _pad: 0,
            target_comm: comm(target_comm),
        }),
        EventKind::SysExit {
            nr,
            ret,
            enter_reported,
        } => bytes_of(&wire::SysExit {
            header: k(kind::SYS_EXIT)?,
            enter_reported: *enter_reported as u8,
            _pad: 0,
            _pad2: 0,
            _pad3: 0,
            nr: *nr,
            ret: *ret,
        }),
        EventKind::SysEnter { nr } => bytes_of(&wire::SysExit {
            header: k(kind::SYS_ENTER)?,
            nr: *nr,
            ret: 0,
            enter_reported: 0,
            _pad: 0,
            _pad2: 0,
            _pad3: 0,
        }),
        EventKind::TaskExit => bytes_of(&k(kind::TASK_EXIT)?),
        EventKind::Lost { .. } => return Err(NotAKernelEvent("lost")),
        EventKind::LossChecked { .. } => return Err(NotAKernelEvent("loss_checked")),
        EventKind::SyscallHooks { .. } => return Err(NotAKernelEvent("syscall_hooks")),
    })
}
