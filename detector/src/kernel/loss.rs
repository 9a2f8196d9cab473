//! Every way an event can go missing before userspace sees it, counted by
//! cause and turned into loss markers.
//!
//! The programs count what they notice themselves in the per-CPU `COUNTERS`
//! array (ring buffer full, a per-task map full). What they cannot notice,
//! because the kernel did not run them at all, the kernel counts per
//! program: `recursion_misses` in `bpf_prog_info` (a fentry, fexit or
//! tracepoint program that fires while it already runs on that CPU; since
//! Linux 6.7 also a kprobe that fires while any BPF program runs). Each
//! increase of any of them becomes an `EventKind::Lost` marker with its
//! cause, so that the engine makes objects alive then indeterminate.
//!
//! Not covered: a kprobe's own `nmissed` (kprobe re-entrance, kretprobe
//! `maxactive` exhausted) is exposed only through tracefs for tracefs-made
//! probes and through perf-event link info since 6.7, neither of which the
//! eBPF library gives access to for the probes it makes.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use aya::programs::ProgramFd;
use detector_common::counter;

use crate::event::{Addr, Event, EventKind, Hook, LossCause};

/// A program whose skipped runs are counted.
pub struct WatchedProgram {
    pub name: String,
    pub fd: ProgramFd,
    seen: u64,
}

impl WatchedProgram {
    /// Starts counting from the program's current count.
    pub fn new(name: String, fd: ProgramFd) -> Self {
        let seen = recursion_misses(fd.as_fd()).unwrap_or(0);
        Self { name, fd, seen }
    }
}

/// The programs attached now; the session adds programs attached later
/// (md hooks when md_mod loads).
pub type Programs = Arc<Mutex<Vec<WatchedProgram>>>;

/// Running totals by counter index (`detector_common::counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; counter::ALL as usize]);

/// As a map from each counter's name to its total.
impl serde::Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.named())
    }
}

impl Counts {
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }

    /// (name, total) for every counter, in index order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES.iter().copied().zip(self.0.iter().copied())
    }
}

/// How often the kernel is asked for each program's skipped runs (one
/// syscall per program; the ring-buffer counters are read every drain).
const PROGRAM_POLL_NS: u64 = 50_000_000;

pub struct LossCounters {
    counters: PerCpuArray<MapData, counter::Slots>,
    /// When programs were last asked (the start of the next marker's window).
    programs_polled: Option<u64>,
    /// Per counter index, per CPU: the value already accounted for.
    seen: Vec<Vec<u64>>,
    programs: Programs,
    pub totals: Counts,
}

impl LossCounters {
    pub fn new(counters: PerCpuArray<MapData, counter::Slots>, programs: Programs) -> Self {
        Self {
            counters,
            seen: vec![Vec::new(); counter::COUNT as usize],
            programs_polled: None,
            programs,
            totals: Counts::default(),
        }
    }

    /// Reads every counter; each increase of a loss counter since the last
    /// poll becomes a marker covering `[since, now]`. Ends with a
    /// `LossChecked` saying up to when every source has been read: the
    /// programs' skipped runs are read less often than the counters, and
    /// the rings have been read up to `read_to`.
    pub fn poll(&mut self, since: u64, now: u64, read_to: u64, out: &mut Vec<Event>) {
        self.poll_sources(since, now, out);
        let checked = self.programs_polled.unwrap_or(now).min(now).min(read_to);
        out.push(Event {
            kind: EventKind::LossChecked { until: checked },
            ..lost_marker(UNKNOWN_CPU, 0, now, now, LossCause::RingBufferFull)
        });
    }

    fn poll_sources(&mut self, since: u64, now: u64, out: &mut Vec<Event>) {
        let Ok(values) = self.counters.get(&0, 0) else {
            return;
        };
        for index in 0..counter::COUNT {
            let per_cpu: Vec<u64> = values.iter().map(|cpu| cpu[index as usize]).collect();
            let seen = &mut self.seen[index as usize];
            let deltas = per_cpu_deltas(seen, &per_cpu);
            self.totals.0[index as usize] += deltas.iter().map(|(_, n)| n).sum::<u64>();
            if let Some(cause) = LossCause::of_counter(index) {
                for (cpu, count) in deltas {
                    out.push(lost_marker(cpu, count, since, now, cause));
                }
            }
        }
        let polled = *self.programs_polled.get_or_insert(since);
        if now.saturating_sub(polled) < PROGRAM_POLL_NS {
            return;
        }
        self.programs_polled = Some(now);
        let skipped = self.poll_programs();
        if skipped > 0 {
            self.totals.0[counter::RECURSION_MISSES as usize] += skipped;
            // The kernel counts per program, not per CPU.
            out.push(lost_marker(
                UNKNOWN_CPU,
                skipped,
                polled,
                now,
                LossCause::RecursionMisses,
            ));
        }
    }

    fn poll_programs(&mut self) -> u64 {
        let Ok(mut programs) = self.programs.lock() else {
            return 0;
        };
        programs
            .iter_mut()
            .map(|p| {
                let now = recursion_misses(p.fd.as_fd()).unwrap_or(p.seen);
                let delta = now.saturating_sub(p.seen);
                p.seen = now;
                delta
            })
            .sum()
    }
}

/// `(cpu, increase)` for each CPU whose value grew; remembers the values.
pub fn per_cpu_deltas(seen: &mut Vec<u64>, now: &[u64]) -> Vec<(u32, u64)> {
    if seen.len() < now.len() {
        seen.resize(now.len(), 0);
    }
    let mut out = Vec::new();
    for (cpu, (&value, last)) in now.iter().zip(seen.iter_mut()).enumerate() {
        if value > *last {
            out.push((cpu as u32, value - *last));
            *last = value;
        }
    }
    out
}

/// The `cpu` of a loss marker whose CPU is not known.
pub const UNKNOWN_CPU: u32 = u32::MAX;

/// `count` events were lost (for `cause`) on `cpu` at some moment in
/// `[since, until]`.
pub fn lost_marker(cpu: u32, count: u64, since: u64, until: u64, cause: LossCause) -> Event {
    Event {
        ts: since,
        cpu,
        pid: 0,
        tid: 0,
        comm: Default::default(),
        hook: Hook::Detector,
        stack_base: Addr(0),
        sp: Addr(0),
        stack: None,
        kind: EventKind::Lost {
            count,
            until,
            cause,
        },
    }
}

/// The kernel's count of runs of the program behind `fd` that it skipped
/// (`bpf_prog_info.recursion_misses`, 5.12+; reads 0 before). aya's
/// `ProgramInfo` does not expose the field, so this asks the kernel
/// directly.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> io::Result<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    // SAFETY: both are plain C structs for which all-zero is valid (and
    // what the kernel expects in fields it does not know).
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &raw mut info as u64;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most `info_len` bytes into
    // `info`, which lives until the call returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

/// Whether this kernel lets detector count one kind of loss, and how.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LossAccounting {
    pub cause: &'static str,
    pub counted: bool,
    pub how: &'static str,
}

/// What `detector check` says about each kind of loss on this kernel.
pub fn accounting(btf: &super::btf::KernelBtf) -> Vec<LossAccounting> {
    let has = |s: &str, m: &str| btf.member(None, s, m).is_ok();
    let misses = has("bpf_prog_stats", "misses");
    let kprobe_misses = has("bpf_link_info", "perf_event.kprobe.missed");
    let programs = |cause| LossAccounting {
        cause,
        counted: true,
        how: "counted by the programs",
    };
    vec![
        programs(LossCause::RingBufferFull.name()),
        programs(LossCause::EntryArgsMapFull.name()),
        LossAccounting {
            cause: LossCause::RecursionMisses.name(),
            counted: misses,
            how: if !misses {
                "not counted by this kernel (bpf_prog_info.recursion_misses needs 5.12)"
            } else if kprobe_misses {
                "the kernel's per-program count (fentry, fexit, tracepoints and kprobes)"
            } else {
                "the kernel's per-program count (fentry, fexit, tracepoints); kprobes \
                 skipped while another BPF program runs are not counted before 6.7"
            },
        },
        LossAccounting {
            cause: "kprobe_nmissed",
            counted: false,
            how: "kprobe re-entrance and kretprobe maxactive misses are not readable \
                  through the eBPF library for the probes it creates",
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_per_cpu_become_deltas_once() {
        let mut seen = Vec::new();
        assert_eq!(per_cpu_deltas(&mut seen, &[0, 3]), vec![(1, 3)]);
        assert_eq!(per_cpu_deltas(&mut seen, &[0, 3]), vec![]);
        assert_eq!(per_cpu_deltas(&mut seen, &[2, 5]), vec![(0, 2), (1, 2)]);
        // A CPU coming online later.
        assert_eq!(per_cpu_deltas(&mut seen, &[2, 5, 1]), vec![(2, 1)]);
    }

    #[test]
    fn every_loss_counter_has_a_cause_named_after_it() {
        for index in 0..counter::ALL {
            match LossCause::of_counter(index) {
                Some(cause) => {
                    assert!(counter::is_loss(index));
                    assert_eq!(cause.name(), counter::NAMES[index as usize]);
                }
                None => assert!(!counter::is_loss(index), "{index} has no cause"),
            }
        }
        assert_eq!(
            LossCause::ALL
                .iter()
                .filter(|c| c.name().ends_with("_full") || c.name() == "recursion_misses")
                .count(),
            LossCause::ALL.len()
        );
    }

    #[test]
    fn markers_carry_their_cause_into_json() {
        let ev = lost_marker(1, 7, 100, 200, LossCause::EntryArgsMapFull);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "lost");
        assert_eq!(json["cause"], "entry_args_map_full");
        assert_eq!(json["count"], 7);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
        // Records from before causes were written read as ring-buffer loss.
        let old = serde_json::json!({
            "event": "lost", "ts": 1, "cpu": 0, "pid": 0, "tid": 0, "comm": "",
            "hook": "detector", "stack_base": "0x0", "sp": "0x0", "count": 2, "until": 3
        });
        let old: Event = serde_json::from_value(old).unwrap();
        assert!(matches!(
            old.kind,
            EventKind::Lost {
                cause: LossCause::RingBufferFull,
                ..
            }
        ));
    }
}
