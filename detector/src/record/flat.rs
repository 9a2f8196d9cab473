//! Reading an event record into one flat struct, then building the
//! [`Event`]. `Event`'s own `Deserialize` (a flattened, internally tagged
//! enum) makes serde buffer every record into an intermediate tree first:
//! that was most of a replay's time. The bytes are the same CBOR; only
//! the way they are read changes. Fields a newer writer adds are skipped.

use compact_str::CompactString;
use serde::Deserialize;

use super::Record;
use crate::event::{
    Addr, Dev, Event, EventKind, EventTag, Hook, LossCause, Stack, StackId, TeardownStage,
    WaitVariant,
};

/// What [`super::Record`] holds, with events read flat.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "read one at a time on the stack: boxing would allocate per event"
)]
pub(super) enum FlatRecord {
    Event(FlatEvent),
    Stack { id: StackId, stack: Stack },
    Symbol { addr: Addr, name: String },
}

/// Every field any event kind has. In binary records addresses and
/// devices are plain integers (`del_gendisk`'s `disk` is an address, the
/// bio events' a device: both fit a `u64`).
#[derive(Deserialize)]
pub(super) struct FlatEvent {
    ts: u64,
    cpu: u32,
    pid: u32,
    tid: u32,
    comm: CompactString,
    hook: Hook,
    stack_base: Addr,
    sp: Addr,
    #[serde(default)]
    stack: Option<StackId>,
    /// The `event` field: which kind, without allocating its name.
    event: EventTag,
    bio: Option<u64>,
    dev: Option<u32>,
    disk: Option<u64>,
    sector: Option<u64>,
    size: Option<u32>,
    opf: Option<u32>,
    end_io: Option<u64>,
    private: Option<u64>,
    disk_relative: Option<bool>,
    episode_start: Option<bool>,
    episode_unbounded: Option<bool>,
    attached: Option<bool>,
    rq: Option<u64>,
    nr_bytes: Option<u32>,
    error: Option<i32>,
    bios: Option<Vec<u64>>,
    truncated: Option<bool>,
    status: Option<u8>,
    flags: Option<u16>,
    remaining: Option<i32>,
    is_final: Option<bool>,
    chain_depth: Option<u8>,
    has_blkg: Option<bool>,
    integrity: Option<bool>,
    enter_reported: Option<bool>,
    cause: Option<LossCause>,
    x: Option<u64>,
    done: Option<u32>,
    on_own_stack: Option<bool>,
    variant: Option<WaitVariant>,
    timeout: Option<i64>,
    ret: Option<i64>,
    mddev: Option<u64>,
    rdev: Option<u64>,
    pending_writes: Option<i32>,
    stage: Option<TeardownStage>,
    prev_state: Option<u32>,
    prev_in_iowait: Option<bool>,
    preempt: Option<bool>,
    prev_sp: Option<u64>,
    next_tid: Option<u32>,
    next_comm: Option<CompactString>,
    next_stack_base: Option<u64>,
    next_saved_sp: Option<u64>,
    prev_episode_over: Option<bool>,
    target_tid: Option<u32>,
    target_comm: Option<CompactString>,
    nr: Option<i64>,
    count: Option<u64>,
    until: Option<u64>,
}

/// A required field, or the name of the one missing.
fn need<T>(value: Option<T>, field: &'static str) -> Result<T, &'static str> {
    value.ok_or(field)
}

impl FlatRecord {
    /// The record, or the name of a field its kind needs and lacks.
    pub(super) fn into_record(self) -> Result<Record, &'static str> {
        Ok(match self {
            FlatRecord::Event(ev) => Record::Event(ev.into_event()?),
            FlatRecord::Stack { id, stack } => Record::Stack { id, stack },
            FlatRecord::Symbol { addr, name } => Record::Symbol { addr, name },
        })
    }
}

impl FlatEvent {
    fn into_event(self) -> Result<Event, &'static str> {
        let kind = self.kind()?;
        Ok(Event {
            ts: self.ts,
            cpu: self.cpu,
            pid: self.pid,
            tid: self.tid,
            comm: self.comm,
            hook: self.hook,
            stack_base: self.stack_base,
            sp: self.sp,
            stack: self.stack,
            kind,
        })
    }

    fn addr(value: Option<u64>, field: &'static str) -> Result<Addr, &'static str> {
        need(value, field).map(Addr)
    }

    fn dev(&self) -> Result<Dev, &'static str> {
        need(self.dev, "dev").map(Dev)
    }

    /// `disk` as a device: bio and request events.
    fn disk_dev(&self) -> Result<Dev, &'static str> {
        let disk = need(self.disk, "disk")?;
        u32::try_from(disk).map(Dev).map_err(|_| "disk")
    }

    fn kind(&self) -> Result<EventKind, &'static str> {
        let a = Self::addr;
        Ok(match self.event {
            EventTag::BioQueue => EventKind::BioQueue {
                bio: a(self.bio, "bio")?,
                dev: self.dev()?,
                disk: self.disk_dev()?,
                sector: need(self.sector, "sector")?,
                size: need(self.size, "size")?,
                opf: need(self.opf, "opf")?,
                end_io: a(self.end_io, "end_io")?,
                private: a(self.private, "private")?,
                // Absent before it was recorded: then only tracepoints
                // ran after partition remapping.
                disk_relative: self.disk_relative.unwrap_or(matches!(
                    self.hook,
                    Hook::TpBtf | Hook::RawTracepoint | Hook::Tracepoint
                )),
                // Absent before it was recorded: then every return to user
                // space of a submitter was reported.
                episode_start: self.episode_start.unwrap_or(false),
                // Absent before it was recorded: then the syscall hooks
                // stayed attached.
                episode_unbounded: self.episode_unbounded.unwrap_or(false),
            },
            EventTag::RqComplete => EventKind::RqComplete {
                rq: a(self.rq, "rq")?,
                disk: self.disk_dev()?,
                sector: need(self.sector, "sector")?,
                nr_bytes: need(self.nr_bytes, "nr_bytes")?,
                error: need(self.error, "error")?,
                bios: need(self.bios.as_ref(), "bios")?
                    .iter()
                    .map(|&b| Addr(b))
                    .collect(),
                truncated: need(self.truncated, "truncated")?,
            },
            EventTag::BioComplete => EventKind::BioComplete {
                bio: a(self.bio, "bio")?,
                dev: self.dev()?,
                disk: self.disk_dev()?,
                sector: need(self.sector, "sector")?,
                size: need(self.size, "size")?,
                error: need(self.error, "error")?,
            },
            EventTag::BioEndio => EventKind::BioEndio {
                bio: a(self.bio, "bio")?,
                end_io: a(self.end_io, "end_io")?,
                private: a(self.private, "private")?,
                dev: self.dev()?,
                disk: self.disk_dev()?,
                sector: need(self.sector, "sector")?,
                size: need(self.size, "size")?,
                status: need(self.status, "status")?,
                flags: need(self.flags, "flags")?,
                remaining: need(self.remaining, "remaining")?,
                is_final: need(self.is_final, "is_final")?,
                chain_depth: need(self.chain_depth, "chain_depth")?,
                opf: self.opf.unwrap_or(0),
                has_blkg: self.has_blkg.unwrap_or(false),
                integrity: self.integrity.unwrap_or(false),
            },
            EventTag::BioEndioExit => EventKind::BioEndioExit {
                bio: self.bio.map(Addr),
            },
            EventTag::BioInit => EventKind::BioInit {
                bio: a(self.bio, "bio")?,
            },
            EventTag::Complete | EventTag::CompleteAll => {
                let (x, done) = (a(self.x, "x")?, need(self.done, "done")?);
                let on_own_stack = need(self.on_own_stack, "on_own_stack")?;
                if matches!(self.event, EventTag::Complete) {
                    EventKind::Complete {
                        x,
                        done,
                        on_own_stack,
                    }
                } else {
                    EventKind::CompleteAll {
                        x,
                        done,
                        on_own_stack,
                    }
                }
            }
            EventTag::CompletionInit => EventKind::CompletionInit {
                x: a(self.x, "x")?,
                on_own_stack: need(self.on_own_stack, "on_own_stack")?,
            },
            EventTag::WaitEnter => EventKind::WaitEnter {
                x: a(self.x, "x")?,
                variant: need(self.variant, "variant")?,
                timeout: self.timeout,
                done: need(self.done, "done")?,
                on_own_stack: need(self.on_own_stack, "on_own_stack")?,
            },
            EventTag::WaitExit => EventKind::WaitExit {
                x: a(self.x, "x")?,
                variant: need(self.variant, "variant")?,
                ret: need(self.ret, "ret")?,
                on_own_stack: need(self.on_own_stack, "on_own_stack")?,
            },
            EventTag::MdSuperWrite => EventKind::MdSuperWrite {
                mddev: a(self.mddev, "mddev")?,
                rdev: a(self.rdev, "rdev")?,
                sector: need(self.sector, "sector")?,
                size: need(self.size, "size")?,
                pending_writes: self.pending_writes,
            },
            EventTag::MdSuperWritten => EventKind::MdSuperWritten {
                mddev: a(self.mddev, "mddev")?,
                rdev: a(self.rdev, "rdev")?,
                bio: a(self.bio, "bio")?,
                sector: need(self.sector, "sector")?,
                status: need(self.status, "status")?,
                pending_writes: self.pending_writes,
            },
            EventTag::MdSuperWait => EventKind::MdSuperWait {
                mddev: a(self.mddev, "mddev")?,
                pending_writes: self.pending_writes,
            },
            EventTag::MdSuperWaitExit => EventKind::MdSuperWaitExit {
                mddev: a(self.mddev, "mddev")?,
                pending_writes: self.pending_writes,
            },
            EventTag::MdTeardown => EventKind::MdTeardown {
                mddev: a(self.mddev, "mddev")?,
                stage: need(self.stage, "stage")?,
                pending_writes: self.pending_writes,
            },
            EventTag::DelGendisk | EventTag::DelGendiskExit => {
                let (disk, dev) = (a(self.disk, "disk")?, self.dev()?);
                if matches!(self.event, EventTag::DelGendisk) {
                    EventKind::DelGendisk { disk, dev }
                } else {
                    EventKind::DelGendiskExit { disk, dev }
                }
            }
            EventTag::SchedSwitch => EventKind::SchedSwitch {
                prev_state: need(self.prev_state, "prev_state")?,
                prev_in_iowait: need(self.prev_in_iowait, "prev_in_iowait")?,
                preempt: need(self.preempt, "preempt")?,
                prev_sp: a(self.prev_sp, "prev_sp")?,
                next_tid: need(self.next_tid, "next_tid")?,
                next_comm: need(self.next_comm.clone(), "next_comm")?,
                next_stack_base: a(self.next_stack_base, "next_stack_base")?,
                next_saved_sp: a(self.next_saved_sp, "next_saved_sp")?,
                // Absent before it was recorded: every return to user
                // space of a submitter was reported then.
                prev_episode_over: self.prev_episode_over.unwrap_or(false),
            },
            EventTag::SchedWaking | EventTag::SchedWakeup => {
                let target_tid = need(self.target_tid, "target_tid")?;
                let target_comm = need(self.target_comm.clone(), "target_comm")?;
                if matches!(self.event, EventTag::SchedWaking) {
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
            EventTag::SysExit => EventKind::SysExit {
                nr: need(self.nr, "nr")?,
                ret: need(self.ret, "ret")?,
                enter_reported: self.enter_reported.unwrap_or(false),
            },
            EventTag::SysEnter => EventKind::SysEnter {
                nr: need(self.nr, "nr")?,
            },
            EventTag::TaskExit => EventKind::TaskExit,
            EventTag::SyscallHooks => EventKind::SyscallHooks {
                attached: need(self.attached, "attached")?,
            },
            EventTag::LossChecked => EventKind::LossChecked {
                until: need(self.until, "until")?,
            },
            EventTag::Lost => EventKind::Lost {
                count: need(self.count, "count")?,
                until: need(self.until, "until")?,
                cause: self.cause.unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::kernel_events;

    /// Every kind, written as `Event` serializes and read flat, comes back
    /// equal: the flat reader knows every field of every kind.
    #[test]
    fn every_kind_reads_back_flat() {
        let lost = crate::kernel::reader::lost_marker(1, 5, 10, 20);
        for event in kernel_events().into_iter().chain([lost]) {
            let mut cbor = Vec::new();
            ciborium::into_writer(&Record::Event(event.clone()), &mut cbor).unwrap();
            let flat: FlatRecord = ciborium::from_reader(cbor.as_slice()).unwrap();
            let back = flat.into_record().unwrap();
            assert_eq!(back, Record::Event(event.clone()), "{}", event.kind.name());
            let generic: Record = ciborium::from_reader(cbor.as_slice()).unwrap();
            assert_eq!(generic, back);
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let event = kernel_events().remove(0);
        assert_eq!(event.kind.name(), "bio_queue");
        let mut cbor = Vec::new();
        ciborium::into_writer(&Record::Event(event), &mut cbor).unwrap();
        let mut value: ciborium::Value = ciborium::from_reader(cbor.as_slice()).unwrap();
        let inner = value.as_map_mut().unwrap()[0].1.as_map_mut().unwrap();
        inner.retain(|(k, _)| k.as_text() != Some("sector"));
        let mut cbor = Vec::new();
        ciborium::into_writer(&value, &mut cbor).unwrap();
        let flat: FlatRecord = ciborium::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(flat.into_record().err(), Some("sector"));
    }

    /// A loss marker whose cause a newer build added reads as a loss of
    /// an unknown cause, its count and span kept, in binary records and
    /// in JSON events alike.
    #[test]
    fn a_loss_cause_from_a_newer_build_is_still_a_loss() {
        let lost = crate::kernel::reader::lost_marker(1, 5, 10, 20);
        let mut cbor = Vec::new();
        ciborium::into_writer(&Record::Event(lost.clone()), &mut cbor).unwrap();
        let mut value: ciborium::Value = ciborium::from_reader(cbor.as_slice()).unwrap();
        let inner = value.as_map_mut().unwrap()[0].1.as_map_mut().unwrap();
        let cause = inner
            .iter_mut()
            .find(|(k, _)| k.as_text() == Some("cause"))
            .expect("a loss marker names its cause");
        cause.1 = ciborium::Value::Text("a_cause_from_later".into());
        let mut cbor = Vec::new();
        ciborium::into_writer(&value, &mut cbor).unwrap();
        let flat: FlatRecord = ciborium::from_reader(cbor.as_slice()).unwrap();
        let Record::Event(back) = flat.into_record().unwrap() else {
            panic!("not an event");
        };
        let expected = EventKind::Lost {
            count: 5,
            until: 20,
            cause: LossCause::Unknown,
        };
        assert_eq!(back.kind, expected);

        let mut json = serde_json::to_value(&lost).unwrap();
        json["cause"] = "a_cause_from_later".into();
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.kind, expected);
    }
}
