//! One-line human form of an event, for `detector trace --events`.

use std::fmt::Write as _;

use super::{Event, EventKind, Hook, LossCause};

/// Name of the operation in a `bi_opf` (its low 8 bits, `enum req_op`).
pub fn op_name(opf: u32) -> &'static str {
    match opf & 0xff {
        0 => "read",
        1 => "write",
        2 => "flush",
        3 => "discard",
        5 => "secure_erase",
        9 => "write_zeroes",
        10 => "zone_open",
        11 => "zone_close",
        12 => "zone_finish",
        13 => "zone_append",
        15 => "zone_reset",
        17 => "zone_reset_all",
        34 => "drv_in",
        35 => "drv_out",
        _ => "op?",
    }
}

/// `   1.234567 cpu1 dd 1234/1235  bio_queue  bio=0x... dev=254:0 ...`
/// with the time relative to `start_ns`.
pub fn line(ev: &Event, start_ns: u64) -> String {
    let rel = ev.ts.saturating_sub(start_ns);
    // Markers detector makes itself belong to no CPU.
    let cpu = match ev.hook {
        Hook::Detector => "-".to_owned(),
        _ => ev.cpu.to_string(),
    };
    let mut s = format!(
        "{:>4}.{:06} cpu{:<2} {:<16} {:>7}/{:<7} {:<18}",
        rel / 1_000_000_000,
        (rel % 1_000_000_000) / 1_000,
        cpu,
        ev.comm,
        ev.pid,
        ev.tid,
        ev.kind.name()
    );
    let _ = match &ev.kind {
        EventKind::BioQueue {
            bio,
            dev,
            sector,
            size,
            opf,
            ..
        } => write!(
            s,
            " bio={bio} dev={dev} {} sector={sector} size={size}",
            op_name(*opf)
        ),
        EventKind::RqComplete {
            disk,
            sector,
            nr_bytes,
            error,
            bios,
            truncated,
            ..
        } => write!(
            s,
            " disk={disk} sector={sector} bytes={nr_bytes} error={error} bios={}{}",
            bios.len(),
            if *truncated { "+" } else { "" }
        ),
        EventKind::BioComplete {
            bio,
            dev,
            sector,
            error,
            ..
        } => write!(s, " bio={bio} dev={dev} sector={sector} error={error}"),
        EventKind::BioEndio {
            bio,
            dev,
            status,
            is_final,
            chain_depth,
            ..
        } => write!(
            s,
            " bio={bio} dev={dev} status={status}{}{}",
            if *is_final {
                " final"
            } else {
                " (chained, not final)"
            },
            if *chain_depth > 0 { " via chain" } else { "" }
        ),
        EventKind::BioEndioExit { bio } => match bio {
            Some(bio) => write!(s, " bio={bio}"),
            None => Ok(()),
        },
        EventKind::BioInit { bio } => write!(s, " bio={bio}"),
        EventKind::Complete {
            x, on_own_stack, ..
        }
        | EventKind::CompleteAll {
            x, on_own_stack, ..
        }
        | EventKind::CompletionInit { x, on_own_stack } => write!(
            s,
            " x={x}{}",
            if *on_own_stack { " (on own stack)" } else { "" }
        ),
        EventKind::WaitEnter { x, variant, .. } => write!(s, " x={x} {}", variant.function()),
        EventKind::WaitExit {
            x, variant, ret, ..
        } => {
            write!(s, " x={x} {} ret={ret}", variant.function())
        }
        EventKind::MdSuperWrite {
            mddev,
            sector,
            pending_writes,
            ..
        } => write!(
            s,
            " mddev={mddev} sector={sector} pending={pending_writes:?}"
        ),
        EventKind::MdSuperWritten {
            mddev,
            status,
            pending_writes,
            ..
        } => write!(
            s,
            " mddev={mddev} status={status} pending={pending_writes:?}"
        ),
        EventKind::MdSuperWait {
            mddev,
            pending_writes,
        }
        | EventKind::MdSuperWaitExit {
            mddev,
            pending_writes,
        } => write!(s, " mddev={mddev} pending={pending_writes:?}"),
        EventKind::MdTeardown {
            mddev,
            stage,
            pending_writes,
        } => write!(
            s,
            " mddev={mddev} {} pending={pending_writes:?}",
            stage.function()
        ),
        EventKind::DelGendisk { dev, .. } | EventKind::DelGendiskExit { dev, .. } => {
            write!(s, " dev={dev}")
        }
        EventKind::SchedSwitch {
            prev_state,
            prev_in_iowait,
            next_tid,
            next_comm,
            ..
        } => write!(
            s,
            " state={prev_state:#x}{} -> {next_comm} {next_tid}",
            if *prev_in_iowait { " iowait" } else { "" }
        ),
        EventKind::SchedWaking {
            target_tid,
            target_comm,
        }
        | EventKind::SchedWakeup {
            target_tid,
            target_comm,
        } => write!(s, " {target_comm} {target_tid}"),
        EventKind::SysExit { nr, ret, .. } => write!(s, " nr={nr} ret={ret}"),
        EventKind::SysEnter { nr } => write!(s, " nr={nr}"),
        EventKind::TaskExit => Ok(()),
        EventKind::SyscallHooks { attached: true } => write!(s, " sys_exit/sys_enter attached"),
        EventKind::SyscallHooks { attached: false } => write!(s, " sys_exit/sys_enter detached"),
        EventKind::Lost {
            cause: LossCause::RingStalled,
            until,
            ..
        } => write!(s, " events of this CPU's stuck ring unread until {until}"),
        EventKind::Lost { count, .. } => write!(s, " {count} events lost"),
        EventKind::LossChecked { until } => write!(s, " losses accounted until {until}"),
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::kernel_events;

    #[test]
    fn every_kind_has_a_line_with_its_name() {
        for ev in kernel_events() {
            let l = line(&ev, 1_000_000_000);
            assert!(l.contains(ev.kind.name()), "{l}");
            assert!(l.contains(ev.comm.as_str()), "{l}");
        }
    }

    #[test]
    fn ops_by_name() {
        assert_eq!(op_name(0), "read");
        assert_eq!(op_name(0x8801), "write");
        assert_eq!(op_name(0xfe), "op?");
    }
}
