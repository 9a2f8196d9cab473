//! The event ring buffers: one per CPU.
//!
//! The programs write each record into the ring of the CPU they run on
//! (`EVENTS`, an array of ring buffers indexed by CPU id). One ring shared
//! by every CPU cost each record some 250 ns on a busy host: its lock, its
//! producer position and the headers of records still being written
//! bounced between the CPUs on every reserve. Userspace creates the rings
//! (their size is chosen at run time, which the object's inner-map
//! template cannot say) and puts them in place before any program is
//! attached.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya::Ebpf;
use aya::maps::{ArrayOfMaps, Map, MapData, MapError, RingBuf};
use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF;
use tokio::io::unix::AsyncFd;

use super::held::HeldBios;
use super::names::TaskNames;
use super::ring_progress::{Positions, Progress, Stalls};
use crate::clock::monotonic_ns;
use crate::event::decode::{comm_omitted, decode, submissions_held};
use crate::event::{Event, EventKind, LossCause};

/// One past the highest CPU id the kernel may ever use
/// (`/sys/devices/system/cpu/possible`), at least 1: the rings are
/// indexed by CPU id, and the list may have gaps.
pub fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|list| cpu_ids_end(&list))
        .unwrap_or_else(|| aya::util::nr_cpus().map_or(1, |n| n as u32))
        .max(1)
}

/// One past the highest id of a CPU list such as `0-3,8-11`.
fn cpu_ids_end(list: &str) -> Option<u32> {
    list.trim()
        .split(',')
        .map(|range| range.rsplit('-').next()?.parse::<u32>().ok())
        .try_fold(0, |end, last| Some(end.max(last? + 1)))
}

/// Each CPU's share of `total` bytes: the largest power of two within
/// `total / cpus`, and never under a page (a ring's size must be a
/// power-of-two multiple of the page size).
pub fn bytes_per_cpu(total: u32, cpus: u32, page: u32) -> u32 {
    let share = total / cpus.max(1);
    if share < page {
        return page;
    }
    1 << share.ilog2()
}

/// Unread bytes per wakeup of the reader (a producer wakes it when the
/// data waiting in its ring passes a multiple of this): `wanted`, but
/// never more than a quarter of a ring, so that a small ring still wakes
/// the reader well before it is full.
pub fn wakeup_threshold(wanted: u64, ring_bytes: u32) -> u64 {
    wanted.min(u64::from(ring_bytes) / 4)
}

/// Creates `cpus` rings of `ring_bytes` each and puts ring `i` at index
/// `i` of the object's `EVENTS`.
pub fn create(
    ebpf: &mut Ebpf,
    cpus: u32,
    ring_bytes: u32,
) -> Result<Vec<RingBuf<MapData>>, RingError> {
    let events = ebpf.map_mut("EVENTS").ok_or(RingError::NoEventsMap)?;
    let mut slots: ArrayOfMaps<&mut MapData, RingBuf<MapData>> =
        ArrayOfMaps::try_from(events).map_err(RingError::Map)?;
    (0..cpus)
        .map(|cpu| {
            let def =
                aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF as u32, 0, 0, ring_bytes, 0);
            let data = MapData::create(def, "events", None).map_err(RingError::Map)?;
            let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(RingError::Map)?;
            slots
                .set(cpu, &ring, 0)
                .map_err(|e| RingError::Insert(cpu, e))?;
            Ok(ring)
        })
        .collect()
}

/// The CPUs' rings, read together: each drain takes what every ring
/// holds and merges it by time.
pub struct RingSet {
    rings: Vec<RingBuf<MapData>>,
    /// An epoll set of the rings: readable when a producer woke any ring.
    ready: AsyncFd<OwnedFd>,
    pending: Pending,
    /// The submissions the programs hold back, when they pair bios.
    held: Option<HeldBios>,
    /// The next drain ships every held submission (the session ends).
    flush_held: bool,
    /// Per ring: its positions (unless they could not be mapped) and how
    /// far it has been read.
    progress: Vec<(Option<Positions>, Progress)>,
    /// Up to when every ring has been read, as of the last emptying drain.
    read_to: u64,
    pub stalls: Stalls,
}

impl RingSet {
    /// Must run inside the tokio runtime (it registers the epoll set).
    pub fn new(rings: Vec<RingBuf<MapData>>) -> io::Result<Self> {
        // SAFETY: epoll_create1 returns a new fd that nothing else owns.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        for ring in &rings {
            let mut interest = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: both fds are open for the call; the kernel copies
            // `interest`.
            let rc = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    ring.as_raw_fd(),
                    &mut interest,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it
        // open, unchanged, for as long as it is registered.
        let ready =
            unsafe { AsyncFd::register_with_interest(epoll, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let page = super::layout::page_size() as usize;
        let progress = rings
            .iter()
            .map(|ring| {
                let positions = Positions::map(ring, page)
                    .inspect_err(|e| {
                        tracing::warn!(
                            "cannot map a ring's positions ({e}): a CPU that holds a record \
                             back can make the others' events be judged without its own"
                        )
                    })
                    .ok();
                (positions, Progress::default())
            })
            .collect();
        Ok(Self {
            rings,
            ready,
            pending: Pending::default(),
            held: None,
            flush_held: false,
            progress,
            read_to: 0,
            stalls: Stalls::default(),
        })
    }

    /// Ships the submissions the programs hold back along with the
    /// records (`HeldBios`).
    pub fn with_held(mut self, held: Option<HeldBios>) -> Self {
        self.held = held;
        self
    }

    /// Makes the next drain ship every held submission, old or not.
    pub fn flush_held(&mut self) {
        self.flush_held = true;
    }

    /// Held submissions shipped so far: (swept for their age, released by
    /// their completion).
    pub fn held_shipped(&self) -> (u64, u64) {
        self.held.as_ref().map_or((0, 0), |h| (h.swept, h.released))
    }

    /// Up to when every ring had been read at the last drain that emptied
    /// them (`ring_progress`): the records still to come are later.
    pub fn read_to(&self) -> u64 {
        self.read_to
    }

    /// Waits until a producer wakes the reader (a ring past its
    /// threshold).
    pub async fn woken(&self) {
        if let Ok(mut guard) = self.ready.readable().await {
            guard.clear_ready();
        }
    }

    /// Moves up to about `max` records into `out` in time order, their
    /// task names filled in; returns whether every ring was emptied. Each
    /// ring gives at most its share of `max`, so that a busy CPU cannot
    /// hold the others' records back for several batches. A ring that
    /// still holds more has records older than what the others gave:
    /// records past its last one wait here for the next drain, so that
    /// they are not handed on ahead of its backlog.
    pub fn drain_into(
        &mut self,
        max: usize,
        names: &mut TaskNames,
        out: &mut Vec<Event>,
        decode_errors: &mut u64,
    ) -> bool {
        let share = (max / self.rings.len().max(1)).max(1);
        let Self {
            rings,
            pending,
            held,
            flush_held,
            progress,
            ..
        } = self;
        // Held records are older than what the rings give: they need the
        // sort even from one ring.
        let mut injected = match held {
            Some(held) => held.sweep(monotonic_ns(), std::mem::take(flush_held), &mut |bytes| {
                ship_bytes(bytes, pending, decode_errors)
            }),
            None => false,
        };
        // The last time a ring with more to give reached.
        let mut cut: Option<u64> = None;
        for (ring, (_, progress)) in rings.iter_mut().zip(progress.iter_mut()) {
            let mut taken = 0;
            let mut last = 0;
            while taken < share {
                let Some(item) = ring.next() else { break };
                taken += 1;
                progress.took(item.len());
                match decode(&item) {
                    Ok(event) => {
                        last = event.ts;
                        if let Some(held) = held.as_mut().filter(|_| submissions_held(&item)) {
                            injected |= release_held(held, &event, pending, decode_errors);
                        }
                        pending.push(event, comm_omitted(&item));
                    }
                    Err(_) => *decode_errors += 1,
                }
            }
            if taken == share {
                cut = Some(cut.map_or(last, |c| c.min(last)));
            }
            progress.handed_on(last);
        }
        let several = rings.len() > 1;
        // One ring's order is the order: nothing needs to wait.
        pending.merge_into(cut.filter(|_| several), several || injected, names, out);
        if cut.is_none() {
            self.look(out);
        }
        cut.is_none()
    }

    /// Reads every ring's positions after a drain that emptied them, and
    /// sets how far they have all been read. A ring stuck past the limit
    /// leaves the span up to this look unread: its records will come late,
    /// so `out` gets a loss marker for it, ahead of the `LossChecked` that
    /// lets the engine judge that span.
    fn look(&mut self, out: &mut Vec<Event>) {
        let now = monotonic_ns();
        let mut read_to = now;
        for (cpu, (positions, progress)) in self.progress.iter_mut().enumerate() {
            if let Some(p) = positions {
                read_to = read_to.min(progress.look(p.read(), now, &mut self.stalls));
            }
            if let Some(from) = progress.take_lost_span() {
                let cause = LossCause::RingStalled;
                out.push(super::loss::lost_marker(cpu as u32, 0, from, now, cause));
            }
        }
        self.read_to = read_to;
    }
}

/// Decodes a held submission into this drain's records.
fn ship_bytes(bytes: &[u8], pending: &mut Pending, decode_errors: &mut u64) {
    match decode(bytes) {
        Ok(event) => pending.push(event, comm_omitted(bytes)),
        Err(_) => *decode_errors += 1,
    }
}

/// Ships the held submissions of the bios `completion` names, ahead of it
/// (in time: the merge sorts); returns whether there were any.
fn release_held(
    held: &mut HeldBios,
    completion: &Event,
    pending: &mut Pending,
    decode_errors: &mut u64,
) -> bool {
    let mut ship = |bytes: &[u8]| ship_bytes(bytes, pending, decode_errors);
    let mut shipped = false;
    if let EventKind::RqComplete { bios, .. } = &completion.kind {
        for bio in bios.iter() {
            shipped |= held.release(bio.0, &mut ship);
        }
    }
    shipped
}

/// One drain's records, ring after ring, until merged, and those that
/// wait for the next drain.
#[derive(Default)]
struct Pending {
    taken: Vec<Option<Event>>,
    omitted: Vec<bool>,
    order: Vec<(u64, u32)>,
}

impl Pending {
    fn push(&mut self, event: Event, omitted: bool) {
        self.omitted.push(omitted);
        self.taken.push(Some(event));
    }

    /// Hands on the records up to `cut` (all: `None`) in time order. Each
    /// ring is in time order (nearly: a program that interrupts another
    /// reserves after it but read the clock after it too); a stable sort
    /// of their times restores one order, and names are filled in that
    /// order, so that a task's naming record comes before its records on
    /// another CPU.
    fn merge_into(
        &mut self,
        cut: Option<u64>,
        sort: bool,
        names: &mut TaskNames,
        out: &mut Vec<Event>,
    ) {
        self.order.clear();
        self.order.extend(
            self.taken
                .iter()
                .enumerate()
                .filter_map(|(i, ev)| Some((ev.as_ref()?.ts, i as u32))),
        );
        if sort {
            self.order.sort_by_key(|&(ts, _)| ts);
        }
        // The batch's one allocation, with room for the loss markers the
        // reader appends after (a batch filled to its capacity would be
        // copied whole for them).
        out.reserve(self.order.len() + MARKER_ROOM);
        for &(ts, i) in &self.order {
            if cut.is_some_and(|cut| ts > cut) {
                break;
            }
            let i = i as usize;
            if let Some(mut event) = self.taken[i].take() {
                names.complete(&mut event, self.omitted[i]);
                out.push(event);
            }
        }
        self.keep_waiting();
    }

    /// Drops what was handed on, keeping the records that wait for the
    /// next drain in arrival order.
    fn keep_waiting(&mut self) {
        let mut keep = self.taken.iter().map(Option::is_some);
        self.omitted.retain(|_| keep.next().unwrap_or(false));
        self.taken.retain(Option::is_some);
    }
}

/// Loss markers a drain may append after the events (a few per CPU and
/// cause, and the loss horizon's).
const MARKER_ROOM: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the eBPF object lacks map EVENTS (build mismatch)")]
    NoEventsMap,
    #[error("cannot create an event ring buffer: {0}")]
    Map(#[source] MapError),
    #[error(
        "cannot put CPU {0}'s ring buffer into EVENTS (kernels before 5.10 need every ring \
         the size of the object's template): {1}"
    )]
    Insert(u32, #[source] MapError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_gets_a_power_of_two_share() {
        let page = 4096;
        assert_eq!(bytes_per_cpu(16 << 20, 2, page), 8 << 20);
        assert_eq!(bytes_per_cpu(16 << 20, 3, page), 4 << 20);
        assert_eq!(bytes_per_cpu(16 << 20, 1, page), 16 << 20);
        assert_eq!(bytes_per_cpu(16 << 20, 8192, page), page);
        assert_eq!(bytes_per_cpu(4096, 2, page), page);
        assert_eq!(bytes_per_cpu(1 << 20, 4, 64 << 10), 256 << 10);
        assert_eq!(bytes_per_cpu(16 << 20, 0, page), 16 << 20);
    }

    fn exit_at(ts: u64, tid: u32) -> Event {
        let mut ev = crate::event::samples::event(ts, crate::event::EventKind::TaskExit);
        ev.tid = tid;
        ev
    }

    fn times(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.ts).collect()
    }

    #[test]
    fn rings_are_merged_by_time_and_a_backlogged_rings_successors_wait() {
        let mut pending = Pending::default();
        let mut names = TaskNames::default();
        // Ring 0 gave 10, 20, 30 and holds more; ring 1 gave 15, 35.
        for ts in [10, 20, 30, 15, 35] {
            pending.push(exit_at(ts, 7), false);
        }
        let mut out = Vec::new();
        pending.merge_into(Some(30), true, &mut names, &mut out);
        assert_eq!(times(&out), [10, 15, 20, 30]);
        // 35 waits for ring 0's next records, and goes with them.
        for ts in [32, 40] {
            pending.push(exit_at(ts, 7), false);
        }
        out.clear();
        pending.merge_into(None, true, &mut names, &mut out);
        assert_eq!(times(&out), [32, 35, 40]);
        assert!(pending.taken.is_empty() && pending.omitted.is_empty());
    }

    #[test]
    fn names_are_filled_in_time_order_across_rings() {
        let mut pending = Pending::default();
        let mut names = TaskNames::default();
        // The naming record (ring 0, ts 10) arrives after a later record
        // of the same thread from ring 1 that left its name out.
        let mut named = exit_at(10, 9);
        named.comm = "fio".into();
        named.kind = crate::event::EventKind::SyscallHooks { attached: true };
        let mut unnamed = exit_at(20, 9);
        unnamed.comm = "".into();
        unnamed.kind = crate::event::EventKind::SyscallHooks { attached: true };
        pending.push(unnamed, true);
        pending.push(named, false);
        let mut out = Vec::new();
        pending.merge_into(None, true, &mut names, &mut out);
        assert_eq!(times(&out), [10, 20]);
        assert_eq!(out[1].comm, "fio");
    }

    #[test]
    fn cpu_lists_with_gaps_give_one_past_the_highest_id() {
        assert_eq!(cpu_ids_end("0-1\n"), Some(2));
        assert_eq!(cpu_ids_end("0"), Some(1));
        assert_eq!(cpu_ids_end("0-3,8-11"), Some(12));
        assert_eq!(cpu_ids_end("0,2,5"), Some(6));
        assert_eq!(cpu_ids_end("zero"), None);
        assert_eq!(cpu_ids_end(""), None);
    }

    #[test]
    fn small_rings_wake_the_reader_early() {
        assert_eq!(wakeup_threshold(256 << 10, 8 << 20), 256 << 10);
        assert_eq!(wakeup_threshold(256 << 10, 64 << 10), 16 << 10);
        assert_eq!(wakeup_threshold(256 << 10, 4096), 1024);
    }
}
